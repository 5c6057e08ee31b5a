// SyncClient: the device side of the sync stream (SyncService.Sync, docs/SYNC_CORE.md and
// the stream messages at the end of sync.proto). It drives one DeviceStore against a
// kcnet server:
//
//   Hello(device id, schema version, cursors) -> Welcome: a server restored from a backup
//   (a new incarnation, or cursors or sequences ahead of it) is recovered from first
//   (DeviceStore::ObserveServer: renumber, hand back, re-verify); subscribe the buckets
//   the device must hold; for the buckets it may no longer hold, push its pending
//   mutations first (the server may refuse them), then purge them.
//   Download: the server sends up to download_window pages ahead; the pages already
//   received are stored together (one store transaction, up to max_pages_per_transaction)
//   and acknowledged with the cursors reached; a bucket whose checksum disagrees is reset
//   and its cursor sent at 0, so the server sends it again from scratch (pages it had
//   already sent from the old cursor are skipped by the store). ScopeChange is handled
//   like Welcome.
//   Push: at most one MutationBatch in flight; its PushAck goes to
//   DeviceStore::Acknowledge, whose reports (refusals, conflicts) are collected.
//
// SyncOnce() returns when the device is caught up; RunUntil() stays connected (live
// updates) until a condition holds. Each call opens its own stream and closes it before
// returning; the DeviceStore is only used one call at a time, never held between calls.
//
// Thread-safety: thread-compatible: one SyncOnce()/RunUntil() at a time per SyncClient.
// Cancel() is thread-safe and may be called from any thread (including on_message).
#ifndef KCNET_CLIENT_SDK_SYNC_CLIENT_H_
#define KCNET_CLIENT_SDK_SYNC_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/sync.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "sync/device_store.h"

namespace kcnet::sdk {

struct SyncClientOptions {
  // The bearer token (AuthService.Login); sent as "authorization: Bearer <token>".
  // Empty: no authorization metadata (the server answers UNAUTHENTICATED).
  std::string token;
  // How long one SyncOnce() may take, from connecting to the server's final status.
  absl::Duration timeout = absl::Seconds(30);
  // Bounds of one pushed MutationBatch (the server refuses larger ones whole).
  size_t max_push_mutations = 500;
  size_t max_push_bytes = 1 << 20;
  // Before Hello, recompute every bucket's checksum (DeviceStore::VerifyBuckets) and reset
  // the damaged ones, so that this sync downloads them again. Costs a scan of the store.
  bool verify_buckets = false;
  // The schema version sent in Hello. Only tests change it.
  kcnet::v1::SchemaVersion schema_version = kcnet::v1::SCHEMA_VERSION_1;
  // RunUntil(): how often `done()` and the outbox are checked while no message arrives.
  absl::Duration live_poll_interval = absl::Milliseconds(50);
  // Download pages the server may send before the device acknowledges them
  // (Hello.download_window): the server reads the next pages while the device stores the
  // current ones. 1: one page at a time.
  uint32_t download_window = 8;
  // Pages already received are stored together, in one transaction (one commit), up to
  // this many, and acknowledged together.
  size_t max_pages_per_transaction = 4;
  // Ask for download pages deflated at zlib's fastest level (Hello.deflate_pages) instead
  // of gRPC's gzip: a little larger, much cheaper for the server to compress.
  bool deflate_pages = true;
  // Called on the syncing thread after each server message has been handled (applied to
  // the store and acknowledged). May call SyncClient::Cancel(). Optional.
  std::function<void(const kcnet::v1::SyncServerMessage&)> on_message;
};

// What one sync did. Counts cover this call only.
struct SyncResult {
  kcnet::v1::Welcome welcome;   // the server's Welcome (empty if it never came)
  size_t pushed_mutations = 0;  // mutations sent (a re-sent one counts again)
  size_t push_batches = 0;      // MutationBatch messages sent
  size_t download_batches = 0;  // ChangeBatch messages applied
  size_t received_changes = 0;  // record changes in those batches
  size_t applied_changes = 0;   // of those, the ones that changed confirmed state
  // Reports created by the acknowledgements of this call (refused mutations, mutations
  // applied with conflicts); they also stay in the store until TakeReports().
  std::vector<sync::Report> reports;
  // Buckets reset because their checksum disagreed (download or verify_buckets), in order.
  std::vector<int64_t> reset_buckets;
  std::vector<int64_t> subscribed;  // buckets of Welcome and ScopeChange.added
  std::vector<int64_t> purged;      // buckets unsubscribed (Welcome/ScopeChange.removed)
  // The device found that the server lost part of what it had synced (a restore) and
  // recovered (DeviceStore::ObserveServer); the counts say what it queued.
  sync::Recovery recovery;
  // The device's clock minus the server's at Welcome (Welcome.server_time_ms), in ms: a
  // tablet set to the wrong date shows hours here. nullopt from an older server.
  std::optional<int64_t> clock_skew_ms;
  // The device's clock had run ahead of the server's (a wrong date, since fixed) and was
  // brought back at the end of this sync (DeviceStore::RecoverClock).
  bool clock_recovered = false;
  // The status the server ended the stream with (OK after a clean half-close; the
  // client's own cancellation or deadline shows as CANCELLED / DEADLINE_EXCEEDED).
  absl::Status server_status;
};

class SyncClient {
 public:
  // `store` must outlive the client. The channel may be shared with other stubs.
  SyncClient(std::shared_ptr<grpc::Channel> channel, sync::DeviceStore* store,
             SyncClientOptions options);
  ~SyncClient();
  SyncClient(const SyncClient&) = delete;
  SyncClient& operator=(const SyncClient&) = delete;

  // Connects, says Hello, handles Welcome, pushes every pending mutation (in batches of
  // at most max_push_mutations), applies and acknowledges every download page, and
  // returns once caught up: nothing pending, no push unanswered, every subscribed bucket
  // completed by a checkpoint that matched, the last page had `more` false, and
  // UnconfirmedCount() == 0 (the device's own writes came back). Then it half-closes and
  // waits for the server's status.
  // On failure nothing already stored is undone (cursors and acknowledgements are
  // durable), and it returns: the server's status when the server ended the stream
  // (UNAUTHENTICATED, FAILED_PRECONDITION for an unsupported schema version,
  // INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...), UNAVAILABLE when the server ended it with
  // OK before the device was caught up, DEADLINE_EXCEEDED after options.timeout (the
  // message says what was still awaited), CANCELLED after Cancel(), ABORTED when the
  // server keeps answering OUT_OF_ORDER, or the DeviceStore's error. last_result() then
  // holds what was done.
  absl::StatusOr<SyncResult> SyncOnce();

  // Like SyncOnce() but stays connected (live mode: new server changes arrive as they are
  // committed, new local writes are pushed within live_poll_interval), and returns OK as
  // soon as `done()` returns true (checked after each message and every
  // live_poll_interval, once Welcome is handled), after a clean half-close. Fails like
  // SyncOnce(); DEADLINE_EXCEEDED when `done()` is still false after `timeout`.
  absl::Status RunUntil(std::function<bool()> done, absl::Duration timeout);

  // Ends the sync running now with CANCELLED, as soon as the syncing thread notices (the
  // call is cancelled at once, also while it is still connecting). With no sync running it
  // ends the next one to start, so that a cancel racing the start of a sync is not lost;
  // each sync consumes the cancellation when it ends.
  void Cancel();

  // What the last SyncOnce()/RunUntil() did, also when it failed.
  const SyncResult& last_result() const { return last_result_; }

 private:
  class Session;
  enum class Mode { kOnce, kLive };

  absl::Status Run(Mode mode, const std::function<bool()>& done, absl::Duration timeout);

  std::unique_ptr<kcnet::v1::SyncService::Stub> stub_;
  sync::DeviceStore* const store_;
  const SyncClientOptions options_;
  SyncResult last_result_;

  absl::Mutex cancel_mu_;
  grpc::ClientContext* active_ ABSL_GUARDED_BY(cancel_mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(cancel_mu_) = false;
};

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_SYNC_CLIENT_H_
