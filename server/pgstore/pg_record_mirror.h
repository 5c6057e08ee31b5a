// PgRecordMirror: a local SQLite copy of the record tables of a PostgreSQL store
// (PgServerStore's kcnet_records, every province), in the SQLite record store's own layout
// (sync::RecordStore: one table per type, `_op`, `_del`, the (bucket, _op) index and
// `_buckets`). What each kcnet-server instance derives from the records (the report
// summaries and the facility search, server/reports; the attachment references,
// server/attachments) attaches this file exactly as it attaches kcnet.db on SQLite, so it
// follows PostgreSQL with no second copy of its logic (docs/POSTGRES.md, "What follows
// PostgreSQL").
//
// Order: the summaries follow their source by one op cursor (everything at or below it is
// counted), so the mirror must only ever hold a prefix of PostgreSQL's ops: every op at or
// below its watermark, none above. Op ids come from a sequence and commit out of order, so
// CatchUp() takes a safe watermark before it copies:
//   1. S = the sequence's last value: every op id drawn so far is at most S;
//   2. lock every bucket head FOR KEY SHARE: the writers hold their buckets' heads FOR
//      UPDATE from before they draw ids until they commit (PgServerStore's ordering, the
//      technique of PgServerStore::ChangesSince), so this returns once every writer that
//      may still commit an op <= S is visible (a transaction is visible before it
//      releases its locks); the lock is released at once (its own statement);
//   3. (a wait on the in-progress transaction ids of a snapshot, which writes nothing,
//      was tried first and lost ops under concurrent writers: a writer may draw its ids
//      before it has a transaction id; pg_record_mirror_test caught it);
//   4. then, in one REPEATABLE READ snapshot, copy the rows whose op is in (watermark, S],
//      bucket by bucket through the heads and the (province, bucket, op) index, in slices
//      of options.slice_ops ops, each slice one SQLite transaction that also moves the watermark.
// A record changed again after a slice is copied at its later op (the store keeps one row
// per record), as the SQLite store's own log does.
//
// The mirror is tied to the database's incarnation (kcnet_meta): another database, or one
// restored below the mirror's watermark, empties it and copies everything again.
//
// Thread-safety: thread-safe. CatchUp() calls are serialised; the follower thread (Start)
// calls it every `poll`. Other connections may read the file at any time (WAL).
#ifndef KCNET_SERVER_PGSTORE_PG_RECORD_MIRROR_H_
#define KCNET_SERVER_PGSTORE_PG_RECORD_MIRROR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/pgstore/pg_conn.h"
#include "sync/record_store.h"
#include "sync/schema.h"
#include "sync/sqlite.h"

namespace kcnet::pgstore {

struct PgRecordMirrorOptions {
  // How often the follower thread looks for new ops (one small query when there are none).
  absl::Duration poll = absl::Milliseconds(50);
  // Ops per SQLite transaction while copying a backlog.
  uint64_t slice_ops = 100000;
};

class PgRecordMirror {
 public:
  // Connects to `conninfo` (a database PgServerStore has opened: its schema and
  // incarnation exist) and opens, creating when missing, the mirror file at `path`.
  // `schema` must outlive the mirror. Copies nothing yet (CatchUp, Start).
  static absl::StatusOr<std::unique_ptr<PgRecordMirror>> Open(const std::string& conninfo,
                                                              const std::string& path,
                                                              const sync::Schema* schema,
                                                              PgRecordMirrorOptions options = {});
  ~PgRecordMirror();  // Stop()

  // Copies every op committed on PostgreSQL up to a safe watermark (see above); returns
  // the watermark. After it returns, every op committed before the call began is here.
  absl::StatusOr<uint64_t> CatchUp();

  // Runs CatchUp() on a thread of its own every options.poll; failures go to `on_error`
  // (it retries at the next poll).
  void Start(std::function<void(const absl::Status&)> on_error);
  void Stop();

  // Every PostgreSQL op at or below it is in the file (as committed in the file).
  uint64_t watermark() const { return watermark_.load(std::memory_order_acquire); }
  // The file's last op (max of _buckets.last_op): what a follower of the file sees.
  uint64_t last_op() const { return last_op_.load(std::memory_order_acquire); }
  const std::string& path() const { return path_; }

 private:
  PgRecordMirror(std::string conninfo, std::string path, const sync::Schema* schema,
                 PgRecordMirrorOptions options);
  absl::StatusOr<PgConn*> Conn() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Empties the file's records when it mirrors another database or a newer state of it.
  absl::Status CheckIncarnation() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Step 2: returns once every writer that may commit an op <= the sequence value
  // read before the call has finished.
  absl::Status WaitForWritersInFlight(PgConn& conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies the rows with op in (from, to] read on `conn` (in its open snapshot) into the
  // file in one transaction that moves the watermark to `to`.
  absl::Status CopySlice(PgConn& conn, uint64_t from, uint64_t to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  const std::string conninfo_;
  const std::string path_;
  const sync::Schema* schema_;
  const PgRecordMirrorOptions options_;
  absl::Mutex mu_;
  std::unique_ptr<PgConn> conn_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sync::Db> db_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sync::RecordStore> records_ ABSL_GUARDED_BY(mu_);
  bool incarnation_checked_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> watermark_{0};
  std::atomic<uint64_t> last_op_{0};
  std::function<void(const absl::Status&)> on_error_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_RECORD_MIRROR_H_
