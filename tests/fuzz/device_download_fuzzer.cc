// libFuzzer target: the device's handling of what the server sends, above all its apply
// of downloaded batches. The input is a serialized SyncServerMessage, handled by a fresh
// in-memory DeviceStore that subscribes to two buckets and holds one pending local write:
// a ChangeBatch goes to DeviceStore::ApplyDownload, a PushAck to Acknowledge, a
// ScopeChange to Subscribe/Unsubscribe. A deflated page is inflated first, as the SDK's
// reader does (sync::InflatePage, bounded here to 1 MiB): it must inflate or be refused
// with INVALID_ARGUMENT, never crash.
//
// Invariants (abort on violation): reads, checkpoints, the outbox and the reports work
// after any message; the running checksums equal the ones recomputed from the rows; a
// batch applied again changes nothing (downloads may repeat).
//
// Thread-safety: single-threaded (libFuzzer calls it from one thread).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/device_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/page_codec.h"
#include "tests/fuzz/fuzz_util.h"

namespace kcnet::fuzz {
namespace {

constexpr int64_t kBuckets[] = {kCommune, kOtherCommune};

// Every subscribed bucket's checksum and record count.
std::map<int64_t, std::pair<uint64_t, uint64_t>> Sums(sync::DeviceStore& device) {
  std::map<int64_t, std::pair<uint64_t, uint64_t>> sums;
  for (int64_t bucket : kBuckets) {
    auto cp = device.Checkpoint(bucket);
    KCNET_FUZZ_CHECK(cp.ok(), "%s", cp.status().ToString().c_str());
    sums[bucket] = {cp->checksum(), cp->records()};
  }
  return sums;
}

void ReadEverything(sync::DeviceStore& device, const kcnet::v1::ChangeBatch& batch) {
  for (const auto& c : batch.changes()) {
    device.Read(c.type(), c.id()).IgnoreError();
    device.Read(c.type(), c.id(), /*confirmed_only=*/true).IgnoreError();
  }
  for (int64_t bucket : kBuckets) device.RecomputeCheckpoint(bucket).IgnoreError();
  device.Cursors().IgnoreError();
  device.PendingBatch().IgnoreError();
  device.UnconfirmedCount().IgnoreError();
  device.ListReports().IgnoreError();
  auto damaged = device.VerifyBuckets();
  KCNET_FUZZ_CHECK(damaged.ok(), "%s", damaged.status().ToString().c_str());
  KCNET_FUZZ_CHECK(damaged->empty(), "running checksum of bucket %lld disagrees with its rows",
                   static_cast<long long>(damaged->front()));
}

void Run(const kcnet::v1::SyncServerMessage& message) {
  const kcnet::v1::ChangeBatch& batch = message.changes();
  const sync::Schema& schema = model::KcnetSchema();
  sync::FakeClock clock(kNowMs);
  auto store = sync::DeviceStore::Open(":memory:", &schema, "fuzz-device",
                                       {.clock = &clock, .durable = false});
  KCNET_FUZZ_CHECK(store.ok(), "%s", store.status().ToString().c_str());
  sync::DeviceStore& device = **store;
  for (int64_t bucket : kBuckets) {
    absl::Status status = device.Subscribe(bucket);
    KCNET_FUZZ_CHECK(status.ok(), "%s", status.ToString().c_str());
  }
  // One pending local write, so that the download meets the overlay.
  kcnet::v1::Facility facility;
  facility.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
  facility.set_commune_id(kCommune);
  facility.set_name("Xưởng mây tre đan");
  facility.set_workers(12);
  auto change = model::ToChange(facility);
  KCNET_FUZZ_CHECK(change.ok(), "%s", change.status().ToString().c_str());
  auto seq = device.Write({*change});
  KCNET_FUZZ_CHECK(seq.ok(), "%s", seq.status().ToString().c_str());

  if (message.has_push_ack()) {
    device.Acknowledge(message.push_ack()).IgnoreError();
    ReadEverything(device, batch);
    device.TakeReports().IgnoreError();
    auto pending = device.PendingCount();
    KCNET_FUZZ_CHECK(pending.ok() && *pending <= 1, "one write, %lld pending",
                     pending.ok() ? static_cast<long long>(*pending) : -1LL);
    return;
  }
  if (message.has_scope_change()) {
    for (int64_t bucket : message.scope_change().added()) device.Subscribe(bucket).IgnoreError();
    for (int64_t bucket : message.scope_change().removed()) {
      device.Unsubscribe(bucket).IgnoreError();
    }
    ReadEverything(device, batch);
    return;
  }
  auto first = device.ApplyDownload(batch);
  ReadEverything(device, batch);
  if (!first.ok()) return;
  const auto sums = Sums(device);
  auto again = device.ApplyDownload(batch);
  KCNET_FUZZ_CHECK(again.ok(), "a batch applied once fails the second time: %s",
                   again.status().ToString().c_str());
  KCNET_FUZZ_CHECK(again->applied == 0, "a repeated batch applied %zu changes", again->applied);
  KCNET_FUZZ_CHECK(Sums(device) == sums, "a repeated batch changed the checksums");
  ReadEverything(device, batch);
}

}  // namespace
}  // namespace kcnet::fuzz

// Protobuf logs every string field with bad UTF-8 it refuses to parse: too noisy here.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kcnet::v1::SyncServerMessage message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (message.has_deflated_changes()) {
    const std::string deflated = message.deflated_changes();
    absl::Status inflated =
        kcnet::sync::InflatePage(deflated, message.mutable_changes(), /*max_bytes=*/1 << 20);
    KCNET_FUZZ_CHECK(inflated.ok() || absl::IsInvalidArgument(inflated), "%s",
                     inflated.ToString().c_str());
    if (!inflated.ok()) return 0;
  }
  kcnet::fuzz::Run(message);
  return 0;
}
