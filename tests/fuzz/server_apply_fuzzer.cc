// libFuzzer target: the server's handling of a device's sync messages. The input is one
// mode byte and a serialized SyncClientMessage; a push goes through Schema::ValidateChange
// and ServerStore::Apply with the business rules (model::ValidatorFor) on a fresh
// in-memory store (empty, or holding a few records), and is then downloaded into a fresh
// DeviceStore; the cursors of a Hello or DownloadAck are served by ChangesSince.
//
// Invariants (abort on violation): Apply never fails except INVALID_ARGUMENT for a batch
// over the limits; it answers every mutation; a push cannot move the server's clock past
// the skew bound; pushing the same batch again (when nothing was out of order) changes
// nothing and answers DUPLICATE or REFUSED; a device that downloads every bucket reaches
// the server's checksums.
//
// Thread-safety: single-threaded (libFuzzer calls it from one thread).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "google/protobuf/stubs/logging.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/device_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/model/rules.h"
#include "sync/server_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace kcnet::fuzz {
namespace {

using ::kcnet::v1::MutationBatch;
using ::kcnet::v1::PushAck;

constexpr char kDevice[] = "fuzz-device";

// The buckets the batch names (commune_id fields), plus the actor's two.
std::set<int64_t> BucketsOf(const MutationBatch& batch) {
  std::set<int64_t> buckets = {kCommune, kOtherCommune};
  for (const auto& m : batch.mutations()) {
    for (const auto& c : m.changes()) {
      for (const auto& f : c.fields()) {
        if (f.field() == 2 && f.value().has_int_value() && buckets.size() < 6) {
          buckets.insert(f.value().int_value());
        }
      }
    }
  }
  return buckets;
}

// Downloads `buckets` from `server` into a fresh device store and checks it converges.
void CheckDownloadConverges(sync::ServerStore& server, const sync::Schema& schema,
                            sync::Clock* clock, const std::set<int64_t>& buckets) {
  auto device = sync::DeviceStore::Open(":memory:", &schema, "fuzz-reader",
                                        {.clock = clock, .durable = false});
  KCNET_FUZZ_CHECK(device.ok(), "%s", device.status().ToString().c_str());
  for (int64_t bucket : buckets) {
    absl::Status status = (*device)->Subscribe(bucket);
    KCNET_FUZZ_CHECK(status.ok(), "%s", status.ToString().c_str());
  }
  for (int page = 0;; ++page) {
    KCNET_FUZZ_CHECK(page < 1000, "download does not end");
    auto cursors = (*device)->Cursors();
    KCNET_FUZZ_CHECK(cursors.ok(), "%s", cursors.status().ToString().c_str());
    auto batch = server.ChangesSince(*cursors, {.max_changes = 7, .max_bytes = 4096});
    KCNET_FUZZ_CHECK(batch.ok(), "%s", batch.status().ToString().c_str());
    auto result = (*device)->ApplyDownload(*batch);
    KCNET_FUZZ_CHECK(result.ok(), "%s", result.status().ToString().c_str());
    KCNET_FUZZ_CHECK(result->mismatched.empty(), "bucket %lld mismatched after download",
                     static_cast<long long>(result->mismatched.front()));
    if (!batch->more()) break;
  }
  for (int64_t bucket : buckets) {
    auto server_cp = server.Checkpoint(bucket);
    auto device_cp = (*device)->Checkpoint(bucket);
    KCNET_FUZZ_CHECK(server_cp.ok() && device_cp.ok(), "checkpoint failed");
    KCNET_FUZZ_CHECK(server_cp->checksum() == device_cp->checksum() &&
                         server_cp->records() == device_cp->records(),
                     "bucket %lld: server %s, device %s", static_cast<long long>(bucket),
                     server_cp->ShortDebugString().c_str(), device_cp->ShortDebugString().c_str());
  }
  auto damaged = (*device)->VerifyBuckets();
  KCNET_FUZZ_CHECK(damaged.ok() && damaged->empty(), "device checksums disagree with rows");
}

// Records another writer made before the push: a facility, a visit and a draft support
// request in kCommune (the seeds' ids), so that pushes meet existing records.
void Prepopulate(sync::ServerStore& server) {
  kcnet::v1::Facility facility;
  facility.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
  facility.set_commune_id(kCommune);
  facility.set_name("Cơ sở mây tre đan");
  facility.set_workers(20);
  kcnet::v1::SupportRequest request;
  request.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e71");
  request.set_commune_id(kCommune);
  request.set_facility_id(facility.id());
  request.set_author_id(7);
  request.set_status(kcnet::v1::REQUEST_STATUS_DRAFT);
  request.set_requested_amount_vnd(1000000);
  kcnet::v1::Visit visit;
  visit.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e72");
  visit.set_commune_id(kCommune);
  visit.set_facility_id(facility.id());
  MutationBatch batch;
  kcnet::v1::Mutation* m = batch.add_mutations();
  m->set_seq(1);
  const google::protobuf::Message* records[] = {&facility, &request, &visit};
  for (const google::protobuf::Message* record : records) {
    auto change = model::ToChange(*record);
    KCNET_FUZZ_CHECK(change.ok(), "%s", change.status().ToString().c_str());
    change->set_hlc(sync::HlcPack(kNowMs - 1000, 0));
    *m->add_changes() = *change;
  }
  auto ack = server.Apply({"", sync::NodeIdFor("user:1")}, batch);
  KCNET_FUZZ_CHECK(ack.ok() && ack->results(0).outcome() == kcnet::v1::MUTATION_OUTCOME_APPLIED,
                   "prepopulation failed");
}

// A download from arbitrary cursors (a Hello's or a DownloadAck's).
void CheckDownloadFrom(sync::ServerStore& server,
                       const google::protobuf::RepeatedPtrField<kcnet::v1::BucketCursor>& cursors,
                       uint8_t mode) {
  std::vector<kcnet::v1::BucketCursor> list(cursors.begin(), cursors.end());
  std::set<int64_t> asked;
  for (const auto& c : list) asked.insert(c.bucket());
  auto batch = server.ChangesSince(
      list, {.max_changes = size_t{1} + (mode & 15), .max_bytes = size_t{64} << (mode >> 4)});
  if (!batch.ok()) {
    KCNET_FUZZ_CHECK(absl::IsInvalidArgument(batch.status()), "ChangesSince failed: %s",
                     batch.status().ToString().c_str());
    return;
  }
  for (const auto& c : batch->changes()) {
    KCNET_FUZZ_CHECK(asked.count(c.bucket()) == 1, "a change of bucket %lld was not asked for",
                     static_cast<long long>(c.bucket()));
  }
}

void Run(uint8_t mode, const kcnet::v1::SyncClientMessage& message) {
  const sync::Schema& schema = model::KcnetSchema();
  if (!message.has_push()) {
    sync::FakeClock clock(kNowMs);
    auto store = sync::ServerStore::Open(":memory:", &schema, {.clock = &clock, .durable = false});
    KCNET_FUZZ_CHECK(store.ok(), "%s", store.status().ToString().c_str());
    Prepopulate(**store);
    if (message.has_hello()) CheckDownloadFrom(**store, message.hello().cursors(), mode);
    if (message.has_download_ack()) {
      CheckDownloadFrom(**store, message.download_ack().cursors(), mode);
    }
    return;
  }
  const MutationBatch& batch = message.push();

  // Shape and value checks alone.
  std::string bad_path;
  for (const auto& m : batch.mutations()) {
    for (const auto& c : m.changes())
      schema.ValidateChange(c, "changes[0]", &bad_path).IgnoreError();
  }

  sync::FakeClock clock(kNowMs);
  auto store = sync::ServerStore::Open(":memory:", &schema, {.clock = &clock, .durable = false});
  KCNET_FUZZ_CHECK(store.ok(), "%s", store.status().ToString().c_str());
  sync::ServerStore& server = **store;
  if (mode & 0x40) Prepopulate(server);

  // The mode byte picks the actor (role, user), whether the store already holds records
  // (bit 6) and whether the write is a device's push (exactly-once tracked) or a
  // server-side write (bit 7).
  model::Actor actor;
  actor.role = static_cast<kcnet::v1::Role>(mode & 7);
  actor.user_id = 7 + ((mode >> 3) & 3);
  actor.in_scope = [](int64_t commune) { return commune == kCommune || commune == kOtherCommune; };
  const bool server_write = (mode & 0x80) != 0;
  sync::Writer writer{server_write ? "" : kDevice,
                      sync::NodeIdFor(server_write ? "user:7" : kDevice)};
  const sync::MutationValidator validator = model::ValidatorFor(actor);

  absl::StatusOr<PushAck> ack = server.Apply(writer, batch, validator);
  if (!ack.ok()) {
    KCNET_FUZZ_CHECK(absl::IsInvalidArgument(ack.status()), "Apply failed: %s",
                     ack.status().ToString().c_str());
    return;
  }
  KCNET_FUZZ_CHECK(ack->results_size() == batch.mutations_size(), "%d answers to %d mutations",
                   ack->results_size(), batch.mutations_size());
  const int64_t bound_ms = kNowMs + absl::ToInt64Milliseconds(absl::Minutes(5));
  const uint64_t next = server.clock().Now();
  KCNET_FUZZ_CHECK(sync::HlcWallMs(next) <= bound_ms + 1, "a push moved the server clock to %s",
                   sync::HlcToString(next).c_str());

  bool out_of_order = false;
  for (const auto& r : ack->results()) {
    out_of_order |= r.outcome() == kcnet::v1::MUTATION_OUTCOME_OUT_OF_ORDER;
  }
  if (!server_write && !out_of_order) {
    const uint64_t op = server.last_op();
    absl::StatusOr<PushAck> again = server.Apply(writer, batch, validator);
    KCNET_FUZZ_CHECK(again.ok(), "retry failed: %s", again.status().ToString().c_str());
    KCNET_FUZZ_CHECK(server.last_op() == op, "a retried batch changed the store (op %llu -> %llu)",
                     static_cast<unsigned long long>(op),
                     static_cast<unsigned long long>(server.last_op()));
    for (int i = 0; i < again->results_size(); ++i) {
      const auto outcome = again->results(i).outcome();
      KCNET_FUZZ_CHECK(outcome == kcnet::v1::MUTATION_OUTCOME_DUPLICATE ||
                           outcome == kcnet::v1::MUTATION_OUTCOME_REFUSED,
                       "retry of mutation %d answered %d", i, static_cast<int>(outcome));
    }
  }
  CheckDownloadConverges(server, schema, &clock, BucketsOf(batch));
}

}  // namespace
}  // namespace kcnet::fuzz

// Protobuf logs every string field with bad UTF-8 it refuses to parse: too noisy here.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  kcnet::v1::SyncClientMessage message;
  if (!message.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  kcnet::fuzz::Run(data[0], message);
  return 0;
}
