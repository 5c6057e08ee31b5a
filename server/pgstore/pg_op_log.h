// PgOpLog: the PostgreSQL record store's core: the per-bucket op log that downloads read
// from a cursor, with exactly-once pushes, group commit, and commits of other instances
// on the same database reported to this one.
//
// Ordering (docs/POSTGRES.md): a reader polling `op > cursor` must never miss an op, yet
// PostgreSQL sequence values are handed out before commit, so a smaller id could become
// visible after a larger one. Every writing transaction therefore locks the head rows of
// the buckets it writes (kcnet_bucket_head, sorted by bucket: no deadlock) before it draws
// op ids, and PostgreSQL makes a transaction visible before it releases its locks: the
// next writer of a bucket draws its ids only once the previous one is visible. Within a
// bucket, ids become visible in order; across buckets nothing is promised (cursors are
// per bucket). ReadSince() also stops at the bucket's head (its checkpoint).
//
// Exactly once: a push from a device carries (device_id, seq). In the same transaction as
// its ops, the device's last sequence moves to seq, and a refusal to remember for it is
// stored; a push whose seq is not above the last is a duplicate: nothing is written and
// the refusal remembered for it (if any) is handed back.
//
// Group commit: pushes arriving while another group commits wait and are then committed
// together in one transaction (one commit, one WAL flush), in arrival order, each answered
// as if alone, and only once durable. The transaction's statements go in two libpq
// pipelines (options.pipeline; sequentially otherwise, for comparison).
//
// Many instances: after each commit the instance sends one NOTIFY (channel kcnet_commits,
// payload: the last op only), coalesced to at most one per notify_interval and never
// inside the write transaction; every instance LISTENs, and on a notification, every
// poll_interval (the safety net) and after every reconnect it re-reads the bucket heads
// and calls the commit listener with the buckets that moved.
//
// Thread-safety: thread-safe. Writes go through one writer connection; reads use a small
// pool of reader connections; the watcher has its own connection and thread.
#ifndef KCNET_SERVER_PGSTORE_PG_OP_LOG_H_
#define KCNET_SERVER_PGSTORE_PG_OP_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/pgstore/pg_conn.h"

namespace kcnet::pgstore {

struct PgOpLogOptions {
  // The province of a bucket (the op log's partition key). Null: every bucket in 0.
  std::function<int32_t(int64_t bucket)> province_of;
  int reader_connections = 2;
  // Send each group's statements in libpq pipeline mode (two round trips per group).
  bool pipeline = true;
  // Watch other instances' commits (LISTEN/NOTIFY plus polling); off: local commits only.
  bool watch = true;
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration notify_interval = absl::Milliseconds(20);
};

struct PgOp {
  int64_t bucket = 0;
  uint32_t type = 0;
  std::string id;
  std::string body;
};

struct PgStoredOp {
  uint64_t op = 0;
  int64_t bucket = 0;
  uint32_t type = 0;
  std::string id;
  std::string body;
};

// A device's batch (exactly once by (device_id, seq)), or a server-side write when
// device_id is empty.
struct PgPush {
  std::string device_id;
  uint64_t seq = 0;
  std::vector<PgOp> ops;
  // Non-empty: remembered for (device_id, seq) and handed back when it is replayed.
  std::string refusal;
};

struct PgPushResult {
  bool duplicate = false;
  std::vector<uint64_t> ops;  // the op id of each op, in order (empty for a duplicate)
  std::string refusal;        // a duplicate's remembered refusal
};

class PgOpLog {
 public:
  // Connects, migrates the schema (pg_schema.h) and starts the watcher.
  static absl::StatusOr<std::unique_ptr<PgOpLog>> Open(const std::string& conninfo,
                                                       PgOpLogOptions options = {});
  ~PgOpLog();
  PgOpLog(const PgOpLog&) = delete;
  PgOpLog& operator=(const PgOpLog&) = delete;

  // Commits `push` (with group commit, see above). Fails as a whole (nothing stored) when
  // storage fails; INVALID_ARGUMENT (nothing stored) for a device push with seq 0.
  absl::StatusOr<PgPushResult> Append(const PgPush& push);

  // The ops of `bucket` with cursor < op <= the bucket's head, oldest first, at most `limit`.
  absl::StatusOr<std::vector<PgStoredOp>> ReadSince(int64_t bucket, uint64_t cursor, size_t limit);
  // The bucket's last committed op (0: none).
  absl::StatusOr<uint64_t> Checkpoint(int64_t bucket);
  // The last sequence committed for a device (0: none).
  absl::StatusOr<uint64_t> LastSeq(const std::string& device_id);

  struct WriteStats {
    uint64_t pushes = 0;
    uint64_t transactions = 0;
  };
  WriteStats write_stats();

  // Called after commits that changed buckets, ours (on the committing thread) and other
  // instances' (on the watcher thread), with the buckets and their highest op. A bucket
  // may be reported more than once; the listener only hands the news on, never blocks.
  using CommitListener = std::function<void(const std::vector<int64_t>& buckets, uint64_t op)>;
  void SetCommitListener(CommitListener listener);

  // Tells the other instances of a commit made beside the op log on the same database
  // (PgServerStore's): a NOTIFY carrying `op`, coalesced as the op log's own. No-op
  // without the watcher.
  void Announce(uint64_t op);

 private:
  struct Pending {
    const PgPush* push;
    absl::StatusOr<PgPushResult> result;
    bool done = false;
  };
  explicit PgOpLog(PgOpLogOptions options) : options_(std::move(options)) {}
  int32_t ProvinceOf(int64_t bucket) const;
  void CommitGroup(const std::vector<Pending*>& group) ABSL_LOCKS_EXCLUDED(write_mu_);
  absl::Status CommitGroupLocked(const std::vector<Pending*>& group,
                                 absl::flat_hash_map<int64_t, uint64_t>* heads)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status Reconnect(std::unique_ptr<PgConn>* conn);
  absl::StatusOr<std::vector<PgResult>> RunPipeline(PgConn& conn, const PgConn::Pipeline& p);
  // Runs `fn` on a free reader connection, reconnecting once if it was lost.
  absl::Status WithReader(const std::function<absl::Status(PgConn& conn)>& fn);
  void Notify(const std::vector<int64_t>& buckets, uint64_t op);
  void Watch();
  // Re-reads the heads and reports the buckets that moved since the last look.
  absl::Status CheckHeads(PgConn& conn);

  const PgOpLogOptions options_;
  std::string conninfo_;

  absl::Mutex queue_mu_;
  absl::CondVar queue_cv_;
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool leader_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex write_mu_;
  std::unique_ptr<PgConn> writer_ ABSL_GUARDED_BY(write_mu_);
  absl::flat_hash_map<int32_t, bool> partitions_ ABSL_GUARDED_BY(write_mu_);
  WriteStats stats_ ABSL_GUARDED_BY(write_mu_);

  struct Reader {
    absl::Mutex mu;
    std::unique_ptr<PgConn> conn ABSL_GUARDED_BY(mu);
  };
  std::vector<std::unique_ptr<Reader>> readers_;
  std::atomic<size_t> next_reader_{0};

  absl::Mutex listener_mu_;
  CommitListener listener_ ABSL_GUARDED_BY(listener_mu_);

  // The watcher: its wake-up pipe, the op to announce, the heads last seen.
  absl::Mutex watch_mu_;
  bool stop_ ABSL_GUARDED_BY(watch_mu_) = false;
  uint64_t to_announce_ ABSL_GUARDED_BY(watch_mu_) = 0;
  int wake_[2] = {-1, -1};
  absl::flat_hash_map<int64_t, uint64_t> seen_heads_;  // watcher thread only
  std::thread watcher_;
};

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_OP_LOG_H_
