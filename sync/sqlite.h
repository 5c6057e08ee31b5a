// A thin RAII layer over SQLite: one connection (Db), prepared statements (Statement)
// and transactions (Transaction). SQLite result codes become absl::Status here and
// nowhere else.
//
// Thread-safety: a Db and its statements belong to one thread at a time (the caller
// serialises access); SQLite itself is built thread-safe, so separate Db objects on the
// same file may be used from different threads.
#ifndef KCNET_SYNC_SQLITE_H_
#define KCNET_SYNC_SQLITE_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kcnet::sync {

// Converts a SQLite result code into a Status naming `context`. SQLITE_OK and
// SQLITE_DONE/ROW are OK.
absl::Status SqliteStatus(int code, sqlite3* db, absl::string_view context);

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Bind helpers; `index` is 1-based as in SQLite. Strings and blobs are copied, except
  // by the *Ref variants.
  void BindNull(int index);
  void BindInt(int index, int64_t value);
  void BindDouble(int index, double value);
  void BindText(int index, absl::string_view value);
  void BindBlob(int index, absl::string_view value);
  // Without a copy: the bytes must stay alive and unchanged until Reset().
  void BindTextRef(int index, absl::string_view value);
  void BindBlobRef(int index, absl::string_view value);

  // Runs one step. Returns true when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps until done; for statements that return no rows.
  absl::Status Run();
  // Resets the statement and clears its bindings, ready for reuse.
  void Reset();

  bool IsNull(int col) const;
  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  absl::string_view ColumnText(int col) const;
  absl::string_view ColumnBlob(int col) const;
  int ColumnType(int col) const;  // SQLITE_INTEGER, SQLITE_FLOAT, ...

  sqlite3_stmt* raw() { return stmt_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

struct DbOptions {
  // synchronous=FULL: a committed transaction survives power loss.
  bool durable = true;
  bool read_only = false;
  int busy_timeout_ms = 5000;
};

class Db {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode. ":memory:" works.
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path,
                                                  const DbOptions& options = {});
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Executes one or more statements that return no rows.
  absl::Status Exec(absl::string_view sql);
  // Returns a cached prepared statement for `sql`, reset and unbound. The pointer stays
  // valid for the life of the Db.
  absl::StatusOr<Statement*> Prepare(const std::string& sql);
  // Runs one statement without rows through the statement cache (BEGIN, COMMIT, ...).
  absl::Status RunCached(const std::string& sql);
  // Returns the single integer `sql` selects, or `fallback` when it selects no row.
  absl::StatusOr<int64_t> QueryInt(const std::string& sql, int64_t fallback = 0);

  int64_t Changes() const;
  int64_t LastInsertRowId() const;
  sqlite3* raw() { return db_; }
  const std::string& path() const { return path_; }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  absl::flat_hash_map<std::string, std::unique_ptr<Statement>> cache_;
};

// BEGIN IMMEDIATE on construction (or BEGIN for a read), ROLLBACK on destruction unless
// Commit() succeeded.
class Transaction {
 public:
  enum class Kind { kRead, kWrite };
  static absl::StatusOr<std::unique_ptr<Transaction>> Begin(Db* db, Kind kind = Kind::kWrite);
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Db* db) : db_(db) {}
  Db* db_;
  bool open_ = true;
};

// The format of one of the server's own SQLite files (the directory, the plans): its
// PRAGMA application_id, how errors name it, and its migrations (step i takes PRAGMA
// user_version i to i+1; never edit a step that has shipped).
struct AppFileFormat {
  int64_t application_id = 0;
  absl::string_view name;    // "kcnet directory": "<path>: not a <name> (...)"
  absl::string_view schema;  // "directory": "<path>: <schema> schema version N was written..."
  const char* const* migrations = nullptr;
  int64_t version = 0;  // how many migrations: the current version
};

// Brings `db` to `format.version` in one write transaction (two processes opening a new
// file do not both create the tables). FAILED_PRECONDITION, changing nothing, for a file
// of another application (another application_id, or tables in a file without a version)
// or one written by a newer kcnet.
absl::Status MigrateAppFile(Db& db, const AppFileFormat& format);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_SQLITE_H_
