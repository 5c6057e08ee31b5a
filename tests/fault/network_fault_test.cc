// Network faults (issue 6, part 2): many devices sync with the real kcnet-server through
// FaultProxy, which refuses connections, delays chunks, drops connections, cuts them in
// the middle of a message and stalls them past the client's deadline, all driven by a seeded
// generator. Each device runs many rounds (a round stands for one simulated minute in the field: a
// few writes, then one sync attempt, which may fail). After a round succeeds, the batch it pushed
// is sometimes replayed on a fresh stream straight to the server, and every mutation in it must be
// answered DUPLICATE. Duplicates the server answered to re-sent pushes (a fault lost the
// acknowledgement) are counted too. At the end the faults stop, every device syncs twice,
// and CheckConvergence checks that nothing was lost or applied twice and every replica has
// the server's checksums.
//
// Seeded: KCNET_FAULT_SEED (printed as seed=N). KCNET_FAULT_NET_DEVICES (20),
// KCNET_FAULT_NET_ROUNDS (rounds per device, 30).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/sync_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "tests/fault/fault_proxy.h"
#include "tests/fault/fault_util.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
#endif

namespace kcnet::fault {
namespace {

using kcnet::v1::MutationBatch;
using kcnet::v1::MutationResult;
using kcnet::v1::SyncServerMessage;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per device
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  // Also the connect timeout: 20 ms would fail handshakes on a loaded machine.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// Counts of one device (or all).
struct Counts {
  int64_t rounds = 0, syncs_ok = 0, syncs_failed = 0;
  int64_t applied = 0, duplicate = 0, refused = 0, conflict = 0, out_of_order = 0;
  int64_t replays = 0, replayed_mutations = 0, replay_duplicates = 0, replay_other = 0;
  void Add(const Counts& o) {
    rounds += o.rounds;
    syncs_ok += o.syncs_ok;
    syncs_failed += o.syncs_failed;
    applied += o.applied;
    duplicate += o.duplicate;
    refused += o.refused;
    conflict += o.conflict;
    out_of_order += o.out_of_order;
    replays += o.replays;
    replayed_mutations += o.replayed_mutations;
    replay_duplicates += o.replay_duplicates;
    replay_other += o.replay_other;
  }
};

// One tablet in this process: its store, its client through the proxy, and what it knows
// of its own writes (the same DeviceLog the crash tests read from files).
class Tablet {
 public:
  Tablet(int index, Account account, std::string store_path, uint64_t seed)
      : index_(index), account_(std::move(account)), store_path_(std::move(store_path)) {
    std::seed_seq seq{seed, static_cast<uint64_t>(index)};
    rng_ = absl::BitGen(seq);
  }

  std::string device_id() const { return absl::StrCat("net-dev-", index_); }

  absl::Status Open(const std::string& proxy_target, const std::string& server_target) {
    absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store = sync::DeviceStore::Open(
        store_path_, &model::KcnetSchema(), device_id(), {.durable = false});
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    direct_ = NewChannel(server_target);
    sdk::SyncClientOptions options;
    options.token = account_.token;
    options.timeout = absl::Seconds(5);
    options.max_push_mutations = 4;  // uploads of several batches
    options.on_message = [this](const SyncServerMessage& message) {
      if (!message.has_push_ack()) return;
      for (const MutationResult& r : message.push_ack().results()) {
        switch (r.outcome()) {
          case kcnet::v1::MUTATION_OUTCOME_APPLIED:
            ++counts_.applied;
            break;
          case kcnet::v1::MUTATION_OUTCOME_DUPLICATE:
            ++counts_.duplicate;
            break;
          case kcnet::v1::MUTATION_OUTCOME_REFUSED:
            ++counts_.refused;
            break;
          case kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT:
            ++counts_.conflict;
            break;
          default:
            ++counts_.out_of_order;
            break;
        }
      }
    };
    channel_ = NewChannel(proxy_target);
    client_ = std::make_unique<sdk::SyncClient>(channel_, store_.get(), options);
    return absl::OkStatus();
  }

  // Waits until the device's channel is connected (it tries to connect now, and again
  // after each reconnect backoff), at most `timeout`: a sync on a channel still in
  // TRANSIENT_FAILURE from the faulty network fails at once with the last error.
  bool WaitForConnected(absl::Duration timeout) {
    return channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
  }

  // One simulated minute: 0-3 writes, one sync attempt, sometimes a replay.
  absl::Status Round() {
    ++counts_.rounds;
    const int writes = absl::Uniform(rng_, 0, 4);
    for (int i = 0; i < writes; ++i) {
      if (absl::Status s = WriteOne(); !s.ok()) return s;
    }
    absl::StatusOr<MutationBatch> pending = store_->PendingBatch();
    if (!pending.ok()) return pending.status();
    if (!Sync().ok()) return absl::OkStatus();
    if (pending->mutations_size() > 0 && absl::Bernoulli(rng_, 0.3)) return Replay(*pending);
    return absl::OkStatus();
  }

  absl::Status Sync() {
    absl::StatusOr<sdk::SyncResult> result = client_->SyncOnce();
    (result.ok() ? counts_.syncs_ok : counts_.syncs_failed)++;
    return result.status();
  }

  // Closes the store, so that the final check can open the file.
  void Close() {
    client_.reset();
    channel_.reset();
    store_.reset();
  }

  const Counts& counts() const { return counts_; }
  DeviceUnderCheck ForCheck() const { return {device_id(), store_path_, index_, account_, log_}; }

 private:
  absl::Status WriteOne() {
    const int64_t n = next_op_++;
    const std::string name = OpName(index_, n);
    const bool create = own_.empty() || absl::Bernoulli(rng_, 0.5);
    std::string id;
    kcnet::v1::RecordChange change;
    if (create) {
      id = FacilityId(index_ + 1000, n);
      kcnet::v1::Facility f;
      f.set_id(id);
      f.set_commune_id(account_.commune);
      f.set_name(name);
      f.set_owner_name("Trần Thị B");
      f.set_kind(kcnet::v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
      f.set_latitude(10.8);
      f.set_longitude(106.7);
      f.set_created_by(account_.user_id);
      f.set_created_ms(absl::ToUnixMillis(absl::Now()));
      absl::StatusOr<kcnet::v1::RecordChange> made = model::ToChange(f);
      if (!made.ok()) return made.status();
      change = *std::move(made);
    } else {
      id = own_[absl::Uniform<size_t>(rng_, 0, own_.size())];
      change.set_type(model::kFacilityType);
      change.set_id(*sync::UuidFromText(id));
      kcnet::v1::FieldChange* field = change.add_fields();
      field->set_field(kcnet::v1::Facility::kNameFieldNumber);
      field->mutable_value()->set_string_value(name);
    }
    absl::StatusOr<uint64_t> seq = store_->Write({std::move(change)});
    if (!seq.ok()) return seq.status();
    log_.acked_name[id] = name;
    if (create) {
      log_.acked_creates.insert(id);
      own_.push_back(id);
    }
    ++log_.acked_writes;
    log_.max_acked_seq = *seq;
    return absl::OkStatus();
  }

  // Sends an acknowledged batch again on a fresh stream, straight to the server: every
  // mutation must come back DUPLICATE.
  absl::Status Replay(const MutationBatch& batch) {
    ++counts_.replays;
    auto stub = kcnet::v1::SyncService::NewStub(direct_);
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + account_.token);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    auto stream = stub->Sync(&context);
    kcnet::v1::SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(device_id());
    hello.mutable_hello()->set_schema_version(kcnet::v1::SCHEMA_VERSION_1);
    absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> cursors = store_->Cursors();
    if (!cursors.ok()) return cursors.status();
    for (const auto& c : *cursors) *hello.mutable_hello()->add_cursors() = c;
    kcnet::v1::SyncClientMessage push;
    *push.mutable_push() = batch;
    if (!stream->Write(hello) || !stream->Write(push)) {
      return absl::UnavailableError("replay: stream closed");
    }
    SyncServerMessage in;
    bool acked = false;
    while (!acked && stream->Read(&in)) {
      if (!in.has_push_ack()) continue;
      acked = true;
      for (const MutationResult& r : in.push_ack().results()) {
        ++counts_.replayed_mutations;
        if (r.outcome() == kcnet::v1::MUTATION_OUTCOME_DUPLICATE) {
          ++counts_.replay_duplicates;
        } else {
          ++counts_.replay_other;
        }
      }
    }
    stream->WritesDone();
    while (stream->Read(&in)) {
    }
    const grpc::Status status = stream->Finish();
    if (!acked) {
      return absl::UnavailableError(absl::StrCat("replay: no PushAck: ", status.error_message()));
    }
    return absl::OkStatus();
  }

  const int index_;
  const Account account_;
  const std::string store_path_;
  absl::BitGen rng_;
  std::unique_ptr<sync::DeviceStore> store_;
  std::shared_ptr<grpc::Channel> direct_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<sdk::SyncClient> client_;
  int64_t next_op_ = 0;
  std::vector<std::string> own_;
  DeviceLog log_;
  Counts counts_;
};

TEST(NetworkFaultTest, ManyDevicesConvergeThroughAFaultyNetwork) {
  const absl::Time started = absl::Now();
  const uint64_t seed = FaultSeed();
  std::printf("seed=%llu (replay: KCNET_FAULT_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  const int devices = EnvInt("KCNET_FAULT_NET_DEVICES", 20);
  const int rounds = EnvInt("KCNET_FAULT_NET_ROUNDS", 30);

  kcnet::testing::TempDir tmp;
  const std::string data_dir = tmp.File("server");
  absl::StatusOr<std::vector<Account>> accounts =
      SetUpDirectory(data_dir, devices, /*coordinators=*/4);
  ASSERT_TRUE(accounts.ok()) << accounts.status();
  ServerProcess server(KCNET_SERVER_PATH, data_dir, tmp.File("server.log"));
  ASSERT_TRUE(server.Start().ok()) << ReadFile(tmp.File("server.log"));

  FaultProxyOptions faults;
  faults.seed = seed;
  faults.refuse = 0.05;
  faults.delay = 0.10;
  faults.drop = 0.02;
  faults.cut = 0.02;
  faults.stall = 0.002;
  faults.max_stall = absl::Seconds(8);  // past the client's 5 s deadline
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start(server.port(), faults);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string proxy_target = absl::StrCat("127.0.0.1:", (*proxy)->port());

  std::vector<std::unique_ptr<Tablet>> tablets;
  for (int i = 0; i < devices; ++i) {
    tablets.push_back(
        std::make_unique<Tablet>(i, (*accounts)[i], tmp.File(absl::StrCat("net", i, ".db")), seed));
    ASSERT_TRUE(tablets.back()->Open(proxy_target, server.target()).ok());
  }

  // The field: every device runs its rounds on its own thread.
  absl::Mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (auto& tablet : tablets) {
    threads.emplace_back([&, t = tablet.get()] {
      for (int r = 0; r < rounds; ++r) {
        if (absl::Status s = t->Round(); !s.ok()) {
          absl::MutexLock lock(&mu);
          errors.push_back(absl::StrCat(t->device_id(), ": ", s.ToString()));
          return;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(errors.empty()) << absl::StrJoin(errors, "\n");
  const FaultProxyStats stats = (*proxy)->stats();

  // The network heals: everyone syncs until caught up, twice.
  (*proxy)->SetFaultsEnabled(false);
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& tablet : tablets) {
      absl::Status last;
      for (int attempt = 0; attempt < 30; ++attempt) {
        const absl::Time t0 = absl::Now();
        tablet->WaitForConnected(absl::Seconds(3));
        last = tablet->Sync();
        if (last.ok()) break;
        if (std::getenv("KCNET_FAULT_DEBUG") != nullptr) {
          std::printf("final %s attempt %d after %.3fs: %s\n", tablet->device_id().c_str(), attempt,
                      absl::ToDoubleSeconds(absl::Now() - t0), last.ToString().c_str());
        }
        absl::SleepFor(absl::Milliseconds(100));  // the channel's reconnect backoff
      }
      EXPECT_TRUE(last.ok()) << tablet->device_id() << " never synced cleanly: " << last;
    }
  }
  Counts total;
  std::vector<DeviceUnderCheck> checked;
  for (auto& tablet : tablets) {
    total.Add(tablet->counts());
    checked.push_back(tablet->ForCheck());
    tablet->Close();
  }
  (*proxy)->Stop();
  ASSERT_TRUE(server.Stop().ok()) << ReadFile(tmp.File("server.log"));
  const CheckReport report = CheckConvergence(data_dir, checked);
  int64_t writes = 0;
  for (const DeviceUnderCheck& d : checked) writes += d.log.acked_writes;

  std::printf(
      "network-faults: seed=%llu devices=%d rounds=%lld (%d per device) runtime=%.1fs "
      "connections=%lld conn_refused=%lld delayed=%lld dropped=%lld cut=%lld stalled=%lld "
      "chunks=%lld "
      "syncs_ok=%lld syncs_failed=%lld writes=%lld server_records=%lld applied=%lld "
      "duplicate_answers=%lld replays=%lld replayed=%lld replay_duplicates=%lld "
      "refused=%lld conflict=%lld out_of_order=%lld buckets_checked=%lld problems=%zu\n",
      static_cast<unsigned long long>(seed), devices, static_cast<long long>(total.rounds), rounds,
      absl::ToDoubleSeconds(absl::Now() - started), static_cast<long long>(stats.connections),
      static_cast<long long>(stats.refused), static_cast<long long>(stats.delayed),
      static_cast<long long>(stats.dropped), static_cast<long long>(stats.cut),
      static_cast<long long>(stats.stalled), static_cast<long long>(stats.chunks),
      static_cast<long long>(total.syncs_ok), static_cast<long long>(total.syncs_failed),
      static_cast<long long>(writes), static_cast<long long>(report.server_records),
      static_cast<long long>(total.applied), static_cast<long long>(total.duplicate),
      static_cast<long long>(total.replays), static_cast<long long>(total.replayed_mutations),
      static_cast<long long>(total.replay_duplicates), static_cast<long long>(total.refused),
      static_cast<long long>(total.conflict), static_cast<long long>(total.out_of_order),
      static_cast<long long>(report.checked_buckets), report.problems.size());
  std::fflush(stdout);
  EXPECT_TRUE(report.problems.empty()) << absl::StrJoin(report.problems, "\n");
  EXPECT_EQ(total.refused, 0);
  EXPECT_EQ(total.conflict, 0);
  EXPECT_EQ(total.replay_other, 0) << "a replayed, acknowledged mutation was not DUPLICATE";
  EXPECT_EQ(total.replay_duplicates, total.replayed_mutations);
  EXPECT_GT(stats.cut + stats.dropped + stats.refused, 0);
  EXPECT_GT(writes, 0);
  // A write's first answer is APPLIED, or was lost with its connection and the re-sent
  // push got DUPLICATE (more than once if that answer was lost too). A second APPLIED for
  // the same write would make applied exceed writes.
  EXPECT_LE(total.applied, writes);
  EXPECT_GE(total.applied + total.duplicate, writes);
}

}  // namespace
}  // namespace kcnet::fault
