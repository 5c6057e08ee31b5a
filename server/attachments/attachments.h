// Attachments: the server side of attachment bytes (proto/kcnet/v1/attachments.proto,
// docs/ATTACHMENTS.md), without gRPC: upload sessions (Begin, chunk by chunk, durable
// commits, the final SHA-256), ranged reads for downloads, quotas, and the garbage
// collector's thread. MakeAttachmentService (attachment_service.h) puts gRPC around it.
//
// Who may do what: Begin needs the Attachment record to be on the server and visible to
// the caller (else NOT_FOUND, as for a missing one); its owner's province is the session's.
// "Already have it" only when that province holds the blob (uploaded for it before), so a
// province cannot probe another's files by hash. A download needs a live attachment
// record naming the hash that the caller may see, whose province holds the blob.
//
// Durability: a chunk is written to the session's staged bytes (UploadStaging: by default
// the temp file DATA_DIR/uploads/ID.part) at once; at least every 256 KiB (and at a flush,
// at the end of the bytes) a commit starts: on a committer thread, the staged bytes are
// made durable (fdatasync, or chunk rows on PostgreSQL) and the committed offset written
// to the AttachmentDb, while the stream goes on receiving. A commit starts as soon as
// StagedUpload::min_commit_bytes wait for one (64 KiB on files, 256 KiB on PostgreSQL) and
// the session has a commit slot free (two on files, whose fdatasyncs may overlap; one on
// PostgreSQL); when none is free, one starts as a running one ends, for every byte
// received by then (group commit). A stream whose bytes run two commit
// intervals past the committed offset waits for the running commits. The stream hears of each
// commit when it is durable (its OnCommit), never before. When a stream ends, what it received is
// committed before Detach returns. After a restart a session resumes at its committed offset (the
// staged bytes are cut back to it); on PostgreSQL, through any instance.
//
// Thread-safety: thread-safe. One stream writes to a session at a time: a new stream on
// the same session takes it over, and the old one's next chunk answers ABORTED.
#ifndef KCNET_SERVER_ATTACHMENTS_ATTACHMENTS_H_
#define KCNET_SERVER_ATTACHMENTS_ATTACHMENTS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kcnet/v1/attachments.pb.h"
#include "kcnet/v1/domain.pb.h"
#include "server/attachments/attachment_db.h"
#include "server/attachments/blob_gc.h"
#include "server/attachments/blob_store.h"
#include "server/attachments/references.h"
#include "server/attachments/sha256.h"
#include "server/attachments/upload_staging.h"
#include "server/directory/directory.h"
#include "server/rpc/logger.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server {

inline constexpr int64_t kMaxChunkBytes = 64 * 1024;
// The most a session's received bytes may run past its committed offset before the stream
// waits (the "durable at least every 256 KiB").
inline constexpr int64_t kCommitIntervalBytes = 256 * 1024;
// Threads that run commits (fsync and the offset's row) beside the streams.
inline constexpr int kCommitterThreads = 4;
// The trailing metadata key of a FAILED_PRECONDITION (wrong offset): the committed offset.
inline constexpr char kCommittedOffsetMetadata[] = "kcnet-committed-offset";
// The trailing metadata key of a busy server's RESOURCE_EXHAUSTED on an Upload stream
// (AttachmentOptions::max_upload_streams): milliseconds to wait before trying again.
inline constexpr char kRetryAfterMetadata[] = "kcnet-retry-after-ms";

struct AttachmentOptions {
  int64_t max_bytes = 25 * 1024 * 1024;  // at most model::kAttachmentMaxBytes
  // Checked by magic bytes; a subset of image/jpeg, image/png, image/webp, application/pdf.
  std::vector<std::string> media_types = {"image/jpeg", "image/png", "image/webp",
                                          "application/pdf"};
  int64_t user_quota_bytes = 0;      // 0: no quota
  int64_t province_quota_bytes = 0;  // 0: no quota
  // Upload streams served at once, server-wide (0: no limit). One more is answered at once
  // RESOURCE_EXHAUSTED with the trailer kcnet-retry-after-ms (busy_retry_after), before
  // any of its bytes is read: it bounds the memory gRPC holds for uploads (each stream at
  // full speed has up to a 64 KiB chunk in its receive buffers, about 85 KiB in all).
  int max_upload_streams = 64;
  absl::Duration busy_retry_after = absl::Seconds(1);
  absl::Duration upload_ttl = absl::Hours(24 * 7);
  absl::Duration gc_grace = absl::Hours(24);
  absl::Duration gc_interval = absl::Hours(1);  // zero: no collector thread
};

// Checks `options` (INVALID_ARGUMENT naming the option).
absl::Status CheckAttachmentOptions(const AttachmentOptions& options);

// Whether `head` (the first bytes of the content, at least 12 when there are) starts like
// `media_type`: INVALID_ARGUMENT naming media_type when not.
absl::Status CheckMagic(const std::string& media_type, absl::string_view head);

// What one chunk did.
struct ChunkResult {
  bool ack = false;  // the chunk asked (ack_received): tell the client
  int64_t committed = 0;
  int64_t received = 0;   // bytes written to the temp file (not durable past `committed`)
  bool complete = false;  // the blob is stored; the session is over
};

// What a committer thread tells the stream that owns a session: a commit became durable
// (status OK, complete false); then, once every byte is, the end of the final check
// (complete true: the blob is stored; or DATA_LOSS: the SHA-256 did not match and the
// session restarts at 0, committed 0; or another error of the commit).
struct CommitEvent {
  absl::Status status;
  int64_t committed = 0;
  int64_t received = 0;
  bool complete = false;
};
using OnCommit = std::function<void(const CommitEvent&)>;

class Attachments {
 public:
  struct Deps {
    Directory* directory = nullptr;
    sync::ServerStore* store = nullptr;
    sync::Clock* clock = nullptr;
    Logger* logger = nullptr;  // may be null
    // Brings `records_path` up to date before the references are trusted (the collector's
    // counts, a download's miss): kcnet-server on PostgreSQL, whose records_path is a
    // local mirror (RefreshedReferences). Null: the file is the record store itself.
    std::function<absl::Status()> refresh_references;
  };
  // Where the bookkeeping and the bytes live. Each one left null is the default of the
  // data dir: DATA_DIR/attachments.db, DATA_DIR/blobs, DATA_DIR/uploads. kcnet-server on
  // PostgreSQL gives all three (pgstore::OpenPgAttachmentStorage).
  struct Storage {
    std::unique_ptr<AttachmentDb> db;
    std::unique_ptr<BlobStore> blobs;
    std::unique_ptr<UploadStaging> staging;
  };
  // Opens `storage` (with the data dir's defaults), reads references from `records_path`
  // (kcnet.db, already opened by the store so it has its attachment table), and starts the
  // collector thread (unless gc_interval is zero).
  static absl::StatusOr<std::unique_ptr<Attachments>> Open(const std::string& data_dir,
                                                           const std::string& records_path,
                                                           const AttachmentOptions& options,
                                                           const Deps& deps, Storage storage = {});
  ~Attachments();  // Stop()s

  // Stops the collector thread. Idempotent.
  void Stop();

  absl::StatusOr<kcnet::v1::BeginUploadResponse> Begin(const Principal& caller,
                                                       const kcnet::v1::BeginUploadRequest& req);
  absl::StatusOr<kcnet::v1::UploadState> GetUpload(const Principal& caller,
                                                   const std::string& upload_id);

  // Admits one more Upload stream (OK), or RESOURCE_EXHAUSTED when max_upload_streams are
  // open. Each admitted stream calls EndUploadStream once when it ends.
  absl::Status AdmitUploadStream();
  void EndUploadStream();
  absl::Duration busy_retry_after() const { return options_.busy_retry_after; }

  // A stream's hold on one session. Attach on the stream's first chunk; Write each chunk;
  // Detach when the stream ends (commits what was received). `on_commit` is called on a
  // committer thread, with no lock of the caller's held, for each commit of this stream
  // (see CommitEvent), until Detach returns or another stream takes the session over; it
  // must not call back into Attachments.
  struct Stream {
    std::string upload_id;
    uint64_t generation = 0;
  };
  absl::StatusOr<Stream> Attach(const Principal& caller, const std::string& upload_id,
                                OnCommit on_commit);
  // Errors: see attachments.proto; a FAILED_PRECONDITION's message holds
  // "committed_offset=N" and *committed is N. May wait for a running commit (see above).
  absl::StatusOr<ChunkResult> Write(const Stream& stream, const kcnet::v1::UploadChunk& chunk,
                                    int64_t* committed);
  // Waits for a running commit, commits what the stream wrote and lets the session go;
  // returns the committed offset. *complete (may be null) says whether the session is over
  // because its blob is stored.
  absl::StatusOr<int64_t> Detach(const Stream& stream, bool* complete = nullptr);

  // A blob the caller may download: its size and media type. NOT_FOUND otherwise.
  struct BlobInfo {
    std::string sha256;  // hex
    int64_t size = 0;
    std::string media_type;
  };
  absl::StatusOr<BlobInfo> OpenDownload(const Principal& caller, absl::string_view sha256_raw);
  absl::StatusOr<std::string> ReadBlob(const std::string& sha256, int64_t offset, int64_t length);

  // The live attachment records of one owner (visit, request, facility) the caller may
  // see; NOT_FOUND naming owner_id when the owner is missing or out of scope.
  absl::StatusOr<std::vector<kcnet::v1::Attachment>> List(const Principal& caller,
                                                          kcnet::v1::AttachmentOwnerType type,
                                                          const std::string& owner_id);

  // One collector pass now.
  absl::StatusOr<GcReport> CollectGarbage();

  AttachmentDb& db() { return *db_; }
  BlobStore& blobs() { return *blobs_; }
  UploadStaging& staging() { return *staging_; }
  const std::string& uploads_dir() const { return uploads_dir_; }  // "" when not on files

 private:
  // A session some stream has worked on since the server started.
  struct Active {
    absl::Mutex mu;
    UploadSession session ABSL_GUARDED_BY(mu);
    // The staged bytes while a stream may write them (null: not open).
    std::unique_ptr<StagedUpload> staged ABSL_GUARDED_BY(mu);
    int64_t received ABSL_GUARDED_BY(mu) = 0;  // bytes staged (>= committed)
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
    bool attached ABSL_GUARDED_BY(mu) = false;
    bool over ABSL_GUARDED_BY(mu) = false;  // completed: the entry is going away
    // The SHA-256 of the staged first `hashed` bytes, fed as chunks arrive in order,
    // so that the final check need not read them again; -1: unknown (a session resumed
    // after a restart), the check reads the file.
    Sha256 sha ABSL_GUARDED_BY(mu);
    int64_t hashed ABSL_GUARDED_BY(mu) = -1;
    // Commits running on committer threads (at most staged->max_concurrent_syncs()), the
    // highest offset they make durable (-1: none runs), and whether another commit should
    // start when one ends (a commit was due while every slot was busy).
    int commits_running ABSL_GUARDED_BY(mu) = 0;
    int64_t committing ABSL_GUARDED_BY(mu) = -1;
    bool commit_again ABSL_GUARDED_BY(mu) = false;
    // The committed offset as last written to the AttachmentDb. Commits running at once may
    // end in any order; the row only ever moves forward (except for a restart at 0, written
    // when no commit runs).
    absl::Mutex row_mu ABSL_ACQUIRED_AFTER(mu);
    int64_t row_committed ABSL_GUARDED_BY(row_mu) = -1;
    OnCommit on_commit ABSL_GUARDED_BY(mu);  // the attached stream's
  };

  Attachments(const AttachmentOptions& options, const Deps& deps)
      : options_(options), deps_(deps) {}
  std::shared_ptr<Active> FindActive(const std::string& id);
  // The session's entry, made (and its staged bytes opened, cut to the committed offset) if
  // needed. NOT_FOUND when the session is over.
  absl::StatusOr<std::shared_ptr<Active>> Activate(const UploadSession& session);
  // Waits for a running commit, then commits the rest here.
  absl::Status CommitLocked(Active& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu);
  // Starts a commit of what `a` received on a committer thread (or asks for another one
  // after the running one).
  void StartCommitLocked(const std::shared_ptr<Active>& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->mu);
  // A committer thread: runs queued commits until Stop.
  void CommitterLoop();
  // One commit of `a` up to `target` (a committer thread; no lock held).
  void RunCommit(const std::shared_ptr<Active>& a, int64_t target);
  // Writes `offset` as the session's committed offset in the AttachmentDb; `forward_only`:
  // unless a larger one is there already (commits that ended in another order).
  absl::Status WriteCommittedRow(Active& a, const std::string& id, int64_t offset,
                                 bool forward_only);
  // The SHA-256 check and the blob's storing; `forget`: drop the entry from active_ (else
  // the caller does, with Forget, once it has told the stream).
  absl::StatusOr<ChunkResult> FinishLocked(Active& a, bool forget = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu);
  void Forget(Active& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu);
  absl::StatusOr<int64_t> ProvinceOf(int64_t org_unit_id);
  void CollectorLoop();

  const AttachmentOptions options_;
  const Deps deps_;
  std::unique_ptr<AttachmentDb> db_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<UploadStaging> staging_;
  std::unique_ptr<AttachmentReferences> references_;
  std::string uploads_dir_;

  std::atomic<int> upload_streams_{0};  // admitted and not ended

  absl::Mutex active_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(active_mu_);

  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread collector_;

  // Sessions with a commit to run, for the committer threads.
  absl::Mutex commit_mu_;
  struct QueuedCommit {
    std::shared_ptr<Active> active;
    int64_t target = 0;
  };
  std::deque<QueuedCommit> commits_ ABSL_GUARDED_BY(commit_mu_);
  bool committers_stop_ ABSL_GUARDED_BY(commit_mu_) = false;
  std::vector<std::thread> committers_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_ATTACHMENTS_H_
