// AttachmentQueue: the device side of attachments (kcnet/attachments.h, docs/ATTACHMENTS.md)
// below the Client. It owns
//   - the attachment folder: each blob's bytes in <dir>/<first 2 hex digits>/<sha256 hex>,
//     written to <dir>/tmp, fsynced, renamed into place and the folder fsynced;
//   - the store's tables of format 4 (sync/device_store.h): _att_queue, one row per
//     attachment added here (state, committed offset, failure, priority, attempts), and
//     _att_blobs, one row per blob file (size, last use, for the LRU budget);
//   - the transfers over AttachmentService (proto/kcnet/v1/attachments.proto): resumable
//     uploads in queue order and downloads on demand, which continue after a restart from
//     their partial file (<dir>/tmp/<sha256>.part, verified by the SHA-256 at the end).
// A blob file is only trusted with its _att_blobs row: rows are written after the bytes are
// durable, in the transaction of the Attachment record, so Open() removes files without a
// row (a crash in between) and rows without a file.
//
// Thread-safety: thread-safe. An upload pass runs each upload on a thread of its own, two
// at a time at most (the next starts when every byte of the running one is committed);
// downloads run on the calling thread. The Client runs one
// upload pass at a time (its serial queue) and downloads from any thread.
#ifndef KCNET_CLIENT_SDK_ATTACHMENT_QUEUE_H_
#define KCNET_CLIENT_SDK_ATTACHMENT_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/attachments.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "sync/device_store.h"
#include "sync/sqlite.h"

namespace kcnet::sdk {

// The media type the bytes' magic numbers say ("image/jpeg", "image/png", "image/webp",
// "application/pdf"), or "" when none of those.
std::string SniffMediaType(absl::string_view bytes);

// The calls of one transfer pass reach the server through this seam: a context with the
// bearer token and a deadline, registered so that a cancel (CancelSync, Close) ends the
// call at once; Release unregisters it. `Stopped()` says the pass should end.
class TransferCalls {
 public:
  virtual ~TransferCalls() = default;
  virtual kcnet::v1::AttachmentService::StubInterface* Stub() = 0;
  virtual absl::StatusOr<std::unique_ptr<grpc::ClientContext>> NewContext(
      absl::Duration deadline) = 0;
  virtual void Release(grpc::ClientContext* ctx) = 0;
  virtual bool Stopped() = 0;
};

struct AttachmentQueueOptions {
  std::string dir;      // the attachment folder (created when missing)
  bool durable = true;  // fsync files and folders (tests turn it off)
  int64_t budget_bytes = int64_t{256} << 20;
  int max_attempts = 8;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
  uint64_t seed = 0;
  // Payload bytes an upload may have sent beyond the server's committed offset: what a
  // cut can cost. The server commits every 256 KiB; one more 64 KiB chunk keeps it busy.
  int64_t max_in_flight_bytes = (256 + 64) << 10;
  // The largest chunk. A slow link gets smaller ones (down to kSmallestChunkBytes), sized
  // to about half a second of its measured rate, so that received acks (progress) come
  // often.
  int64_t chunk_bytes = 64 << 10;
};
inline constexpr int64_t kSmallestChunkBytes = 2 << 10;
// How many "busy, retry after" answers one upload waits out in a pass before it gives the
// attempt up (then the usual backoff applies).
inline constexpr int kMaxBusyWaits = 120;
// While an upload's stream is open, the longest time without a progress event: on a
// stalled link (a lost segment waits for its retransmission, an ack behind it too) the
// listener hears the same numbers again, so that an app can say "waiting for the network"
// rather than look frozen.
inline constexpr absl::Duration kProgressHeartbeat = absl::Seconds(1);

// One row of the upload queue.
struct QueueRow {
  std::string id;  // the Attachment record's UUID text
  std::string sha256;
  int64_t size = 0;
  std::string media_type;
  AttachmentState state = AttachmentState::kQueued;
  int64_t bytes_sent = 0;
  std::string failure;
  int32_t priority = 0;
  int32_t attempts = 0;
  int64_t next_try_ms = 0;
  int64_t added_ms = 0;
};

class AttachmentQueue {
 public:
  // Opens the folder beside `store` (which must outlive the queue) and tidies it: temp
  // files, blob files without a row and rows without a file are removed.
  static absl::StatusOr<std::unique_ptr<AttachmentQueue>> Open(sync::DeviceStore* store,
                                                               AttachmentQueueOptions options);

  // Stores `bytes` under their SHA-256 (hex, returned) durably, unless a file of that
  // hash is already there. The file is not trusted until AddRows() committed its row; a
  // caller whose record write fails calls Forget().
  absl::StatusOr<std::string> StoreBytes(absl::string_view bytes);
  // Inside the record's transaction (DeviceStore::Write's `also`): the queue row and the
  // blob row of a new attachment.
  static absl::Status AddRows(sync::Db& db, const std::string& id, const std::string& sha256,
                              int64_t size, const std::string& media_type, int32_t priority,
                              int64_t now_ms);
  // Removes the file of `sha256` when no row claims it (a refused AddAttachment).
  absl::Status Forget(const std::string& sha256);
  // Held around StoreBytes .. the record write .. Forget, so that two adds of the same bytes
  // do not race one's clean-up against the other's row.
  absl::Mutex& add_mu() { return add_mu_; }

  absl::StatusOr<std::vector<QueueRow>> Rows();  // in upload order
  absl::StatusOr<std::optional<QueueRow>> Row(const std::string& id);
  // Whether the bytes of `sha256` are here.
  absl::StatusOr<bool> HasBlob(const std::string& sha256);
  std::string PathOf(const std::string& sha256) const;
  absl::Status SetPriority(const std::string& id, int32_t priority);
  absl::Status Retry(const std::string& id);
  // Bytes of blobs here: every blob, and the evictable ones (no queue row still needs them).
  absl::StatusOr<std::pair<int64_t, int64_t>> StorageUse();

  using Listener = std::function<void(const AttachmentProgress&)>;
  // One upload pass: every queued or uploading row whose next try is due and whose record
  // `ready(id)` says the server has (false: not yet, after the next push; NOT_FOUND: the
  // record is gone, refused by the server, and the row fails with that reason), in queue
  // order. A connection failure or Stopped() ends the pass with that status. *summary says
  // what the pass did, also when it ended early.
  absl::Status UploadAll(TransferCalls& calls,
                         const std::function<absl::StatusOr<bool>(const std::string&)>& ready,
                         const Listener& listener, AttachmentUploadSummary* summary);
  // The path of the bytes of `sha256`, downloaded first when they are not here (verified;
  // cached under the budget); `id` names the attachment in progress events.
  absl::StatusOr<std::string> Fetch(TransferCalls* calls, const std::string& id,
                                    const std::string& sha256, int64_t size,
                                    const Listener& listener);
  // After a server restore (a new incarnation, or another sign that the server lost part
  // of its history): every attachment added here that is uploaded and whose bytes are still
  // here (not evicted) is queued again from 0. Its next upload pass asks Begin, which
  // answers "already have it" (0 payload bytes) for the bytes the server kept and takes the
  // bytes again for those it lost. Returns how many rows were queued again.
  absl::StatusOr<int64_t> RequeueUploaded();
  // Removes the partial files of downloads in progress (tmp/<sha256>.part, which Open keeps
  // so that a download continues after a restart): the store's data left with a user.
  absl::Status DropDownloads();
  // Drops least recently used evictable blobs until they fit the budget (`keep` stays).
  absl::Status Evict(const std::string& keep = "");

 private:
  AttachmentQueue(sync::DeviceStore* store, AttachmentQueueOptions options);
  absl::Status Tidy();
  // Writes `bytes` to `final_path` through a temp file (fsync, rename, fsync the folder).
  absl::Status WriteDurably(absl::string_view bytes, const std::string& final_path);
  absl::Status UpdateRow(const std::string& id, AttachmentState state, int64_t bytes_sent,
                         const std::string& failure, std::optional<int32_t> attempts = std::nullopt,
                         std::optional<int64_t> next_try_ms = std::nullopt);
  // Uploads one row; the payload bytes sent are added to *payload. `committed_all` runs
  // when the server acknowledged every byte committed (before its SHA-256 check).
  // *busy_waits counts the server's "busy, retry after" answers it waited out.
  absl::Status UploadOne(TransferCalls& calls, const QueueRow& row, const Listener& listener,
                         int64_t* payload, const std::function<void()>& committed_all,
                         int64_t* busy_waits);
  // One Upload stream from `offset`. Returns the status it ended with and sets *complete
  // and *committed (the last acknowledged offset), and *retry_after when the server said
  // it is busy (RESOURCE_EXHAUSTED with the trailer kcnet-retry-after-ms; else zero).
  absl::Status StreamFrom(TransferCalls& calls, const QueueRow& row, const std::string& upload_id,
                          int64_t offset, const Listener& listener, int64_t* payload,
                          const std::function<void()>& committed_all, bool* complete,
                          int64_t* committed, absl::Duration* retry_after);
  // Waits `d` plus up to half of it again (jitter, so that the clients a busy server sent
  // away do not all come back at once); false when the pass was stopped meanwhile.
  bool WaitBusy(TransferCalls& calls, absl::Duration d);
  // The size of the next chunk: about half a second of the link at its measured rate.
  int64_t NextChunkBytes();
  // Downloads the bytes of a blob (`sha_bytes`, 32 bytes) into `part` from its current
  // length (*resumed_from says which; 0 when missing or longer than `size`), then checks the
  // whole file against the SHA-256. A cut keeps the part (UNAVAILABLE); a damaged chunk or
  // file removes it (DATA_LOSS).
  absl::Status DownloadToPart(TransferCalls* calls, const std::string& id,
                              const std::string& sha_bytes, int64_t size, const std::string& part,
                              const Listener& listener, int64_t* resumed_from);
  int64_t NowMs() const;
  absl::Duration Backoff(int attempts);

  sync::DeviceStore* const store_;
  const AttachmentQueueOptions options_;
  absl::Mutex add_mu_;
  absl::Mutex blob_mu_;   // evictions against downloads and opens
  absl::Mutex fetch_mu_;  // one download at a time (they share the .part files)
  absl::Mutex rng_mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(rng_mu_);
  // The upload link's rate in bytes/s measured from received acks (0: not yet), kept from
  // one upload to the next.
  std::atomic<double> link_bytes_per_s_{0};
};

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_ATTACHMENT_QUEUE_H_
