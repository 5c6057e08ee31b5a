#include "sync/sqlite.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace kcnet::sync {

absl::Status SqliteStatus(int code, sqlite3* db, absl::string_view context) {
  const int primary = code & 0xff;
  if (primary == SQLITE_OK || primary == SQLITE_ROW || primary == SQLITE_DONE) {
    return absl::OkStatus();
  }
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  std::string message =
      absl::StrCat(context, ": ", absl::string_view(detail), " (sqlite code ", code, ")");
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      // Another connection holds the database past the busy timeout. Not UNAVAILABLE: the
      // SDK's callers read that as "no network". RESOURCE_EXHAUSTED keeps it a storage
      // failure (retry later) for the server's batch apply (server_store.cc), which would
      // otherwise turn it into a refused mutation (as it would ABORTED).
      return absl::ResourceExhaustedError(
          absl::StrCat(message, "; the local database is busy (locked by another connection)"));
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(message);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

void Statement::BindNull(int index) { sqlite3_bind_null(stmt_, index); }
void Statement::BindInt(int index, int64_t value) { sqlite3_bind_int64(stmt_, index, value); }
void Statement::BindDouble(int index, double value) { sqlite3_bind_double(stmt_, index, value); }
void Statement::BindText(int index, absl::string_view value) {
  sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
}
void Statement::BindBlob(int index, absl::string_view value) {
  // A zero-length blob must not be bound as NULL.
  sqlite3_bind_blob(stmt_, index, value.empty() ? "" : value.data(), static_cast<int>(value.size()),
                    SQLITE_TRANSIENT);
}

void Statement::BindTextRef(int index, absl::string_view value) {
  sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
}
void Statement::BindBlobRef(int index, absl::string_view value) {
  sqlite3_bind_blob(stmt_, index, value.empty() ? "" : value.data(), static_cast<int>(value.size()),
                    SQLITE_STATIC);
}

absl::StatusOr<bool> Statement::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  absl::Status status = SqliteStatus(rc, db_, sqlite3_sql(stmt_));
  sqlite3_reset(stmt_);
  return status;
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
int64_t Statement::ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
double Statement::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }
absl::string_view Statement::ColumnText(int col) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return text == nullptr ? absl::string_view()
                         : absl::string_view(text, sqlite3_column_bytes(stmt_, col));
}
absl::string_view Statement::ColumnBlob(int col) const {
  const auto* data = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return data == nullptr ? absl::string_view()
                         : absl::string_view(data, sqlite3_column_bytes(stmt_, col));
}
int Statement::ColumnType(int col) const { return sqlite3_column_type(stmt_, col); }

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path, const DbOptions& options) {
  sqlite3* raw = nullptr;
  const int flags =
      (options.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) |
      SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteStatus(rc, raw, absl::StrCat("open ", path));
    sqlite3_close(raw);
    return status;
  }
  std::unique_ptr<Db> db(new Db(raw, path));
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  sqlite3_extended_result_codes(raw, 1);
  if (!options.read_only) {
    // journal_mode returns a row; run it through Prepare to read it away.
    absl::StatusOr<Statement*> wal = db->Prepare("PRAGMA journal_mode=WAL");
    if (!wal.ok()) return wal.status();
    absl::Status status = (*wal)->Run();
    (*wal)->Reset();
    if (!status.ok()) return status;
  }
  absl::Status status =
      db->Exec(options.durable ? "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"
                               : "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON");
  if (!status.ok()) return status;
  return db;
}

Db::~Db() {
  cache_.clear();
  sqlite3_close(db_);
}

absl::Status Db::Exec(absl::string_view sql) {
  char* error = nullptr;
  const std::string copy(sql);
  const int rc = sqlite3_exec(db_, copy.c_str(), nullptr, nullptr, &error);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string message = error != nullptr ? error : sqlite3_errstr(rc);
  sqlite3_free(error);
  absl::Status status = SqliteStatus(rc, nullptr, copy.substr(0, 80));
  return absl::Status(status.code(), absl::StrCat(copy.substr(0, 80), ": ", message));
}

absl::StatusOr<Statement*> Db::Prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    it->second->Reset();
    return it->second.get();
  }
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(rc, db_, absl::StrCat("prepare ", sql));
  auto owned = std::make_unique<Statement>(db_, stmt);
  Statement* result = owned.get();
  cache_.emplace(sql, std::move(owned));
  return result;
}

absl::StatusOr<int64_t> Db::QueryInt(const std::string& sql, int64_t fallback) {
  absl::StatusOr<Statement*> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  absl::StatusOr<bool> row = (*stmt)->Step();
  if (!row.ok()) return row.status();
  const int64_t value = *row ? (*stmt)->ColumnInt(0) : fallback;
  (*stmt)->Reset();
  return value;
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }
int64_t Db::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

absl::Status Db::RunCached(const std::string& sql) {
  absl::StatusOr<Statement*> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<std::unique_ptr<Transaction>> Transaction::Begin(Db* db, Kind kind) {
  absl::Status status = db->RunCached(kind == Kind::kWrite ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
  if (!status.ok()) return status;
  return std::unique_ptr<Transaction>(new Transaction(db));
}

Transaction::~Transaction() {
  if (open_) db_->Exec("ROLLBACK").IgnoreError();
}

absl::Status Transaction::Commit() {
  absl::Status status = db_->RunCached("COMMIT");
  if (status.ok()) open_ = false;
  return status;
}

absl::Status MigrateAppFile(Db& db, const AppFileFormat& format) {
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(&db);
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> version = db.QueryInt("PRAGMA user_version");
  if (!version.ok()) return version.status();
  absl::StatusOr<int64_t> app_id = db.QueryInt("PRAGMA application_id");
  if (!app_id.ok()) return app_id.status();
  if (*version == 0) {
    absl::StatusOr<int64_t> tables = db.QueryInt(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
    if (!tables.ok()) return tables.status();
    if (*tables > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(db.path(), ": not a ", format.name, " (it holds other tables)"));
    }
  } else if (*app_id != format.application_id) {
    return absl::FailedPreconditionError(
        absl::StrCat(db.path(), ": not a ", format.name, " (application_id ", *app_id, ")"));
  }
  if (*version > format.version) {
    return absl::FailedPreconditionError(
        absl::StrCat(db.path(), ": ", format.schema, " schema version ", *version,
                     " was written by a newer kcnet (this one reads up to ", format.version,
                     "); upgrade kcnet"));
  }
  if (*version == format.version) return absl::OkStatus();
  for (int64_t v = *version; v < format.version; ++v) {
    absl::Status status = db.Exec(format.migrations[v]);
    if (!status.ok()) return status;
  }
  absl::Status status = db.Exec(absl::StrCat("PRAGMA user_version = ", format.version,
                                             "; PRAGMA application_id = ", format.application_id));
  if (!status.ok()) return status;
  return (*tx)->Commit();
}

}  // namespace kcnet::sync
