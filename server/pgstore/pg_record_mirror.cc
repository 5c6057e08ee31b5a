#include "server/pgstore/pg_record_mirror.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/pgstore/pg_server_store.h"

namespace kcnet::pgstore {
namespace {

// The file's own keys in its _meta table.
constexpr char kWatermarkKey[] = "pg_watermark";
constexpr char kIncarnationKey[] = "pg_incarnation";

}  // namespace

PgRecordMirror::PgRecordMirror(std::string conninfo, std::string path, const sync::Schema* schema,
                               PgRecordMirrorOptions options)
    : conninfo_(std::move(conninfo)),
      path_(std::move(path)),
      schema_(schema),
      options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<PgRecordMirror>> PgRecordMirror::Open(
    const std::string& conninfo, const std::string& path, const sync::Schema* schema,
    PgRecordMirrorOptions options) {
  std::unique_ptr<PgRecordMirror> mirror(
      new PgRecordMirror(conninfo, path, schema, std::move(options)));
  absl::MutexLock lock(&mirror->mu_);
  // Not durable: a file that loses its last transactions at a power cut is only behind,
  // and its watermark with it (both move in the same transaction).
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path, {.durable = false});
  if (!db.ok()) return db.status();
  mirror->db_ = *std::move(db);
  absl::StatusOr<std::unique_ptr<sync::RecordStore>> records =
      sync::RecordStore::Open(mirror->db_.get(), schema, "server");
  if (!records.ok()) return records.status();
  mirror->records_ = *std::move(records);
  absl::StatusOr<std::optional<int64_t>> watermark = mirror->records_->GetMeta(kWatermarkKey);
  if (!watermark.ok()) return watermark.status();
  mirror->watermark_ = static_cast<uint64_t>(watermark->value_or(0));
  absl::StatusOr<int64_t> last =
      mirror->db_->QueryInt("SELECT coalesce(max(last_op), 0) FROM _buckets");
  if (!last.ok()) return last.status();
  mirror->last_op_ = static_cast<uint64_t>(*last);
  absl::StatusOr<PgConn*> conn = mirror->Conn();
  if (!conn.ok()) return conn.status();
  absl::Status status = mirror->CheckIncarnation();
  if (!status.ok()) return status;
  return mirror;
}

PgRecordMirror::~PgRecordMirror() { Stop(); }

absl::StatusOr<PgConn*> PgRecordMirror::Conn() {
  if (conn_ == nullptr || !conn_->ok()) {
    conn_.reset();
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo_);
    if (!conn.ok()) return conn.status();
    conn_ = *std::move(conn);
    incarnation_checked_ = false;  // a failover may have brought another database
  }
  return conn_.get();
}

absl::Status PgRecordMirror::CheckIncarnation() {
  PgConn& conn = *conn_;
  absl::StatusOr<PgResult> now = conn.Query(
      "SELECT (SELECT value FROM kcnet_meta WHERE key = 'incarnation'), "
      "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM kcnet_op_seq)");
  if (!now.ok()) return now.status();
  const int64_t incarnation = now->GetInt(0, 0);
  const uint64_t sequence = static_cast<uint64_t>(now->GetInt(0, 1));
  absl::StatusOr<std::optional<int64_t>> mine = records_->GetMeta(kIncarnationKey);
  if (!mine.ok()) return mine.status();
  if (mine->has_value() && **mine == incarnation && watermark() <= sequence) {
    incarnation_checked_ = true;
    return absl::OkStatus();
  }
  // Another database, or this one restored below what the file holds: start again.
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx = sync::Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  std::string sql = "DELETE FROM _buckets;";
  for (const sync::RecordTypeSpec& type : schema_->types()) {
    absl::StrAppend(&sql, "DELETE FROM \"", type.name, "\";");
  }
  absl::Status status = db_->Exec(sql);
  if (status.ok()) status = records_->SetMeta(kWatermarkKey, 0);
  if (status.ok()) status = records_->SetMeta(kIncarnationKey, incarnation);
  if (status.ok()) status = (*tx)->Commit();
  if (!status.ok()) {
    records_->AbandonTransaction().IgnoreError();
    return status;
  }
  watermark_ = 0;
  last_op_ = 0;
  incarnation_checked_ = true;
  return absl::OkStatus();
}

absl::Status PgRecordMirror::WaitForWritersInFlight(PgConn& conn) {
  // The kcnet writers hold their buckets' heads FOR UPDATE from before they draw op ids
  // until they commit (and a transaction is visible before its locks go), so a FOR KEY
  // SHARE on the heads they hold returns once every writer that drew an id before this
  // statement is visible. New buckets' heads are committed before any id is drawn for them
  // (PgServerStore::BeginGroup), so every head a writer in flight holds is seen here.
  // (A wait on the transaction ids of a snapshot instead was tried and lost ops under
  // concurrent writers: a writer can draw ids before it has a transaction id.)
  //
  // Only the heads held by a transaction still running are locked, not all of them
  // (3,321 for the nation, every 50 ms while writes arrive: each row lock is written to
  // the heap and the WAL, and a writer wanting a head the scan already passed waited for
  // the whole statement; docs/POSTGRES.md, "What it costs"). A row lock stores the
  // locker's transaction id in the row's xmax, and a writer's FOR UPDATE (taken before it
  // draws ids) gives it that id: the head rows of a writer in flight carry its id in xmax
  // for as long as it runs, and every running transaction with an id holds the lock on
  // its id in pg_locks. A head whose locker has ended keeps a stale xmax (the mirror's own
  // lock of the last catch-up, a rolled-back writer): not locked again. A writer that
  // commits between the two reads is visible, which is all the lock waits for.
  return conn
      .Query(
          "SELECT 1 FROM kcnet_bucket_head WHERE xmax IN (SELECT transactionid FROM pg_locks "
          "WHERE locktype = 'transactionid') ORDER BY bucket FOR KEY SHARE")
      .status();
}

absl::StatusOr<uint64_t> PgRecordMirror::CatchUp() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<PgConn*> connected = Conn();
  if (!connected.ok()) return connected.status();
  PgConn& conn = **connected;
  if (!incarnation_checked_) {
    if (absl::Status status = CheckIncarnation(); !status.ok()) return status;
  }
  // 1. Every op id drawn so far is at most `target`.
  absl::StatusOr<PgResult> seq =
      conn.Query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM kcnet_op_seq");
  if (!seq.ok()) return seq.status();
  const uint64_t target = static_cast<uint64_t>(seq->GetInt(0, 0));
  uint64_t from = watermark();
  if (target <= from) return from;
  // 2, 3. Every writer that may still commit an op <= target has finished.
  if (absl::Status status = WaitForWritersInFlight(conn); !status.ok()) return status;
  // 4. One snapshot: every op <= target is visible in it, or was rolled back.
  absl::Status status = conn.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  while (status.ok() && from < target) {
    const uint64_t to = std::min(target, from + std::max<uint64_t>(options_.slice_ops, 1));
    status = CopySlice(conn, from, to);
    if (status.ok()) from = to;
  }
  if (status.ok()) status = conn.Exec("COMMIT");
  if (!status.ok()) {
    if (conn.ok()) conn.Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return from;
}

absl::Status PgRecordMirror::CopySlice(PgConn& conn, uint64_t from, uint64_t to) {
  // Bucket by bucket through the heads (the bucket's province names its partition), then
  // the (province, bucket, op) index: the buckets written since `from` only.
  absl::StatusOr<PgResult> rows = conn.QueryBinary(
      "SELECT r.type, r.id, r.bucket, r.op, r.row, r.field_ops FROM kcnet_bucket_head h "
      "JOIN kcnet_records r ON r.province = h.province AND r.bucket = h.bucket "
      "AND r.op > $1 AND r.op <= $2 WHERE h.last_op > $1 ORDER BY r.op",
      {PgParam::Int(static_cast<int64_t>(from)), PgParam::Int(static_cast<int64_t>(to))});
  if (!rows.ok()) return rows.status();
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx = sync::Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::Status status;
  for (int r = 0; r < rows->rows() && status.ok(); ++r) {
    const sync::RecordTypeSpec* type =
        schema_->Find(static_cast<uint32_t>(rows->GetBinaryInt(r, 0)));
    if (type == nullptr) continue;  // a type this binary does not know
    const std::string id(rows->Get(r, 1));
    absl::StatusOr<sync::RowState> row = DecodeRecordRow(
        *type, rows->GetBinaryInt(r, 2), static_cast<uint64_t>(rows->GetBinaryInt(r, 3)),
        rows->Get(r, 4), rows->Get(r, 5));
    if (!row.ok()) {
      status = row.status();
      break;
    }
    absl::StatusOr<std::optional<sync::RowState>> old = records_->Read(*type, id);
    if (!old.ok()) {
      status = old.status();
      break;
    }
    status = records_->Write(*type, id, *old, *row);
    if (status.ok()) records_->CommitUnit();
  }
  if (status.ok()) status = records_->FlushBuckets();
  if (status.ok()) status = records_->SetMeta(kWatermarkKey, static_cast<int64_t>(to));
  absl::StatusOr<int64_t> last = absl::InternalError("not read");
  if (status.ok()) {
    last = db_->QueryInt("SELECT coalesce(max(last_op), 0) FROM _buckets");
    if (!last.ok()) status = last.status();
  }
  if (status.ok()) status = (*tx)->Commit();
  if (!status.ok()) {
    tx->reset();  // rolls back
    records_->AbandonTransaction().IgnoreError();
    return status;
  }
  // last_op first: a reader that sees the new watermark sees the file's last op with it.
  last_op_.store(static_cast<uint64_t>(*last), std::memory_order_release);
  watermark_.store(to, std::memory_order_release);
  return absl::OkStatus();
}

void PgRecordMirror::Start(std::function<void(const absl::Status&)> on_error) {
  on_error_ = std::move(on_error);
  thread_ = std::thread([this] { Run(); });
}

void PgRecordMirror::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void PgRecordMirror::Run() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll)) {
    absl::StatusOr<uint64_t> reached = CatchUp();
    if (!reached.ok() && on_error_) on_error_(reached.status());
  }
}

}  // namespace kcnet::pgstore
