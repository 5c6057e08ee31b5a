// fault_device: one tablet as a process, for the crash tests (tests/fault). It opens its
// DeviceStore file, writes facilities (new ones, and renames of its own) and syncs them
// with kcnet::sdk::SyncClient in a loop until --stop_file exists, so that the test can
// kill -9 it (or the server) at any point and start it again on the same store.
//
// Its log (--log, appended, one write(2) per line, so that a kill loses at most the line
// being written) tells the test what the device knows:
//   start                         the process started
//   I <n> <uuid> <name> <create>  write number n begins (create 1: a new record)
//   W <n> <seq>                   DeviceStore::Write returned: the write is acknowledged
//   P <applied> <duplicate> <refused> <conflict> <out_of_order>   one PushAck's results
//   C                             one ChangeBatch applied
//   S ok | S fail <code>          one SyncOnce ended
//   R <handbacks> <renumbered>    that sync recovered from a server restore
// A restart reads the log back to number its writes and to pick records to rename.
//
// Modes: --mode=loop (the above), --mode=final (sync until caught up, exit 0), --mode=seed
// (write --count new facilities, then like final), --mode=offline (write --count new
// facilities or renames and exit without syncing: they stay pending). --die_on=changes|push_ack
// --die_at=K: SIGKILL itself right after handling the K-th such server message (the store has
// committed it, the server has not seen the DownloadAck / the next push): a kill in the
// middle of a download or an upload. --reset_prob: at start, reset one bucket with this
// probability, so that it downloads again from scratch (the checksum repair path).
//
// Thread-safety: a single-threaded program (SyncClient's gRPC threads aside).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/sync_client.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "tests/fault/fault_util.h"

namespace kcnet::fault {
namespace {

using kcnet::v1::MutationResult;
using kcnet::v1::SyncServerMessage;

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg.substr(0, 2) != "--") continue;
    arg.remove_prefix(2);
    const size_t eq = arg.find('=');
    args[std::string(arg.substr(0, eq))] =
        eq == absl::string_view::npos ? "" : std::string(arg.substr(eq + 1));
  }
  return args;
}

class Device {
 public:
  explicit Device(std::map<std::string, std::string> args) : args_(std::move(args)) {}

  int Run() {
    log_fd_ = open(Arg("log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd_ < 0) return Fail("cannot open --log");
    absl::StatusOr<DeviceLog> previous = ReadDeviceLog(Arg("log"));
    if (previous.ok()) {
      next_op_ = previous->next_op;
      own_.assign(previous->acked_creates.begin(), previous->acked_creates.end());
    }
    Log("start");
    index_ = Int("index");
    commune_ = Int("commune");
    user_id_ = Int("user_id");
    // A different stream of choices in every life of the device.
    std::seed_seq seq{static_cast<uint64_t>(Int("seed")), static_cast<uint64_t>(index_),
                      static_cast<uint64_t>(next_op_), static_cast<uint64_t>(getpid())};
    rng_ = absl::BitGen(seq);

    absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store =
        sync::DeviceStore::Open(Arg("store"), &model::KcnetSchema(), Arg("device_id"));
    if (!store.ok()) return Fail(store.status().ToString());
    store_ = *std::move(store);

    const double reset_prob = Double("reset_prob");
    if (reset_prob > 0 && absl::Bernoulli(rng_, reset_prob)) {
      absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> cursors = store_->Cursors();
      if (cursors.ok() && !cursors->empty()) {
        const int64_t bucket = (*cursors)[absl::Uniform<size_t>(rng_, 0, cursors->size())].bucket();
        if (absl::Status s = store_->ResetBucket(bucket); !s.ok()) return Fail(s.ToString());
      }
    }

    grpc::ChannelArguments channel_args;
    channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
    // Also the connect timeout: 20 ms would fail handshakes on a loaded machine.
    channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
    channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    auto channel =
        grpc::CreateCustomChannel(Arg("target"), grpc::InsecureChannelCredentials(), channel_args);
    sdk::SyncClientOptions options;
    options.token = Arg("token");
    options.timeout = absl::Milliseconds(Int("timeout_ms", 10000));
    options.max_push_mutations = static_cast<size_t>(Int("push_batch", 20));
    const std::string die_on = Arg("die_on");
    const int64_t die_at = Int("die_at");
    options.on_message = [this, die_on, die_at](const SyncServerMessage& message) {
      bool counts = false;
      if (message.has_push_ack()) {
        int64_t n[5] = {0, 0, 0, 0, 0};
        for (const MutationResult& r : message.push_ack().results()) {
          switch (r.outcome()) {
            case kcnet::v1::MUTATION_OUTCOME_APPLIED:
              ++n[0];
              break;
            case kcnet::v1::MUTATION_OUTCOME_DUPLICATE:
              ++n[1];
              break;
            case kcnet::v1::MUTATION_OUTCOME_REFUSED:
              ++n[2];
              break;
            case kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT:
              ++n[3];
              break;
            default:
              ++n[4];
              break;
          }
        }
        Log(absl::StrCat("P ", n[0], " ", n[1], " ", n[2], " ", n[3], " ", n[4]));
        counts = die_on == "push_ack";
      } else if (message.has_changes()) {
        Log("C");
        counts = die_on == "changes";
      }
      if (counts && ++messages_ == die_at) kill(getpid(), SIGKILL);
    };
    client_ = std::make_unique<sdk::SyncClient>(channel, store_.get(), options);

    const std::string mode = Arg("mode");
    if (mode == "seed") {
      for (int64_t i = 0; i < Int("count"); ++i) {
        if (absl::Status s = WriteOne(/*create=*/true); !s.ok()) return Fail(s.ToString());
      }
    }
    if (mode == "offline") {
      // Writes that stay pending: the tablet is offline (nothing is synced).
      for (int64_t i = 0; i < Int("count"); ++i) {
        const bool create = own_.empty() || absl::Bernoulli(rng_, 0.5);
        if (absl::Status s = WriteOne(create); !s.ok()) return Fail(s.ToString());
      }
      return 0;
    }
    if (mode == "final" || mode == "seed") {
      for (int attempt = 0; attempt < 300; ++attempt) {
        if (SyncOnce()) return 0;
        absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 20, 100)));
      }
      return Fail("final sync never succeeded");
    }
    const std::string stop_file = Arg("stop_file");
    const int max_burst = static_cast<int>(Int("max_burst", 8));
    while (!std::filesystem::exists(stop_file)) {
      const int burst = absl::Uniform(rng_, 0, max_burst + 1);
      for (int i = 0; i < burst; ++i) {
        const bool create = own_.empty() || absl::Bernoulli(rng_, 0.6);
        if (absl::Status s = WriteOne(create); !s.ok()) return Fail(s.ToString());
      }
      if (!SyncOnce()) absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 10, 60)));
      absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 0, Int("pause_ms", 30) + 1)));
    }
    return 0;
  }

 private:
  std::string Arg(const std::string& name) const {
    const auto it = args_.find(name);
    return it == args_.end() ? "" : it->second;
  }
  int64_t Int(const std::string& name, int64_t fallback = 0) const {
    int64_t v = fallback;
    return absl::SimpleAtoi(Arg(name), &v) ? v : fallback;
  }
  double Double(const std::string& name) const {
    double v = 0;
    return absl::SimpleAtod(Arg(name), &v) ? v : 0;
  }

  void Log(const std::string& line) {
    const std::string text = line + "\n";
    if (write(log_fd_, text.data(), text.size()) < 0) std::perror("fault_device: log");
  }
  int Fail(const std::string& why) {
    std::fprintf(stderr, "fault_device %s: %s\n", Arg("device_id").c_str(), why.c_str());
    return 1;
  }

  // One write: a new facility, or a new name for one of this device's own facilities.
  absl::Status WriteOne(bool create) {
    const int64_t n = next_op_++;
    const std::string name = OpName(index_, n);
    kcnet::v1::RecordChange change;
    std::string id;
    if (create) {
      id = FacilityId(index_, n);
      kcnet::v1::Facility f;
      f.set_id(id);
      f.set_commune_id(commune_);
      f.set_name(name);
      f.set_owner_name("Nguyễn Văn A");
      f.set_kind(kcnet::v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
      f.set_latitude(21.0);
      f.set_longitude(105.8);
      f.set_created_by(user_id_);
      f.set_created_ms(absl::ToUnixMillis(absl::Now()));
      absl::StatusOr<kcnet::v1::RecordChange> made = model::ToChange(f);
      if (!made.ok()) return made.status();
      change = *std::move(made);
    } else {
      id = own_[absl::Uniform<size_t>(rng_, 0, own_.size())];
      absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
      if (!bytes.ok()) return bytes.status();
      // A bucket reset (--reset_prob) hides its records until they download again; the
      // user can only rename what the tablet shows.
      absl::StatusOr<std::optional<kcnet::v1::RecordChange>> shown =
          store_->Read(model::kFacilityType, *bytes);
      if (!shown.ok()) return shown.status();
      if (!shown->has_value()) {
        --next_op_;
        return WriteOne(/*create=*/true);
      }
      change.set_type(model::kFacilityType);
      change.set_id(*bytes);
      kcnet::v1::FieldChange* field = change.add_fields();
      field->set_field(kcnet::v1::Facility::kNameFieldNumber);
      field->mutable_value()->set_string_value(name);
    }
    Log(absl::StrCat("I ", n, " ", id, " ", name, " ", create ? 1 : 0));
    absl::StatusOr<uint64_t> seq = store_->Write({std::move(change)});
    if (!seq.ok()) return seq.status();
    Log(absl::StrCat("W ", n, " ", *seq));
    if (create) own_.push_back(id);
    return absl::OkStatus();
  }

  bool SyncOnce() {
    absl::StatusOr<sdk::SyncResult> result = client_->SyncOnce();
    const sync::Recovery& recovery = client_->last_result().recovery;
    if (recovery.recovered) {
      Log(absl::StrCat("R ", recovery.handbacks, " ", recovery.renumbered));
    }
    if (result.ok()) {
      Log("S ok");
      return true;
    }
    Log(absl::StrCat("S fail ", absl::StatusCodeToString(result.status().code())));
    return false;
  }

  const std::map<std::string, std::string> args_;
  int log_fd_ = -1;
  int64_t next_op_ = 0;
  int64_t index_ = 0, commune_ = 0, user_id_ = 0;
  int64_t messages_ = 0;
  std::vector<std::string> own_;
  absl::BitGen rng_;
  std::unique_ptr<sync::DeviceStore> store_;
  std::unique_ptr<sdk::SyncClient> client_;
};

}  // namespace
}  // namespace kcnet::fault

int main(int argc, char** argv) {
  kcnet::fault::Device device(kcnet::fault::ParseArgs(argc, argv));
  return device.Run();
}
