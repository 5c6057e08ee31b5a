// The directory's storage seam: where Directory (directory.h) keeps its tables. Directory
// holds every rule (validation, lock-out, token checks, caches); a DirectoryStore only runs
// its SQL. Two implementations:
//   - SQLite (OpenSqliteDirectoryStore, below): one file, directory.db, as always;
//   - PostgreSQL (server/pgstore/pg_directory_store.h): the tables in the schema
//     kcnet_directory, shared by every kcnet-server instance on one database.
//
// The SQL Directory sends is written once, in the dialect both understand: parameters are
// ?1, ?2, ... (the PostgreSQL store turns them into $1, $2, ...), new ids come back with
// RETURNING id, upserts are INSERT ... ON CONFLICT(...) DO UPDATE, integers are 64-bit,
// byte strings (hashes) are BLOB / bytea and read with DirRows::Blob().
//
// Change detection (Version()): each store returns a number that changes when another
// connection or process has committed a change the caches must see. SQLite: PRAGMA
// data_version. PostgreSQL: a generation counter that every account change bumps in its
// own transaction (BumpVersion()); Directory re-reads it at most every
// DirectoryOptions::shared_refresh_interval.
//
// Thread-safety: none; Directory serialises every call under its mutex.
#ifndef KCNET_SERVER_DIRECTORY_DIRECTORY_STORE_H_
#define KCNET_SERVER_DIRECTORY_DIRECTORY_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kcnet::sync {
class Db;
}  // namespace kcnet::sync

namespace kcnet::server {

// One statement parameter.
struct DirValue {
  enum class Kind { kNull, kInt, kText, kBlob };
  static DirValue Int(int64_t v) { return {Kind::kInt, v, {}}; }
  static DirValue Text(absl::string_view v) { return {Kind::kText, 0, std::string(v)}; }
  static DirValue Blob(absl::string_view v) { return {Kind::kBlob, 0, std::string(v)}; }
  static DirValue Null() { return {Kind::kNull, 0, {}}; }
  Kind kind = Kind::kNull;
  int64_t int_value = 0;
  std::string bytes;
};

// The rows a statement returned, copied out of the driver.
class DirRows {
 public:
  // `bytea_hex`: blobs arrive as PostgreSQL's hex text ("\x0a1b...") and Blob() decodes.
  explicit DirRows(int columns = 0, bool bytea_hex = false)
      : columns_(columns), bytea_hex_(bytea_hex) {}
  size_t size() const { return columns_ == 0 ? 0 : cells_.size() / columns_; }
  bool empty() const { return size() == 0; }
  bool IsNull(size_t row, int col) const { return cell(row, col).null; }
  int64_t Int(size_t row, int col) const;  // 0 for NULL
  const std::string& Text(size_t row, int col) const { return cell(row, col).value; }
  std::string Blob(size_t row, int col) const;

  // For the stores: appends one cell; a row is `columns` cells.
  void Add(std::string value, bool null) { cells_.push_back({std::move(value), null}); }

 private:
  struct Cell {
    std::string value;
    bool null = false;
  };
  const Cell& cell(size_t row, int col) const { return cells_[row * columns_ + col]; }
  int columns_;
  bool bytea_hex_;
  std::vector<Cell> cells_;
};

class DirectoryStore {
 public:
  virtual ~DirectoryStore() = default;

  // Creates or migrates the tables. FAILED_PRECONDITION for a newer layout or a foreign
  // file or database.
  virtual absl::Status Migrate() = 0;
  // Creates the device_credentials table when the store adds it lazily (SQLite files of
  // older servers); nothing on stores that create it with the others.
  virtual absl::Status EnsureDeviceCredentials() = 0;

  // Runs one statement; its rows (empty for statements without RETURNING / SELECT).
  virtual absl::StatusOr<DirRows> Query(absl::string_view sql,
                                        const std::vector<DirValue>& params = {}) = 0;
  // Rows changed by the last INSERT/UPDATE/DELETE run with Exec().
  absl::StatusOr<int64_t> Exec(absl::string_view sql, const std::vector<DirValue>& params = {});

  // Transactions (not nested). Begin(true) reads one consistent snapshot.
  virtual absl::Status Begin(bool read_only) = 0;
  virtual absl::Status Commit() = 0;
  virtual void Rollback() = 0;

  // The change counter (see above).
  virtual absl::StatusOr<int64_t> Version() = 0;
  // Inside a write transaction: marks a change every other instance must reload for.
  // Returns the new counter, or -1 when the store needs no marks (SQLite sees commits by
  // itself).
  virtual absl::StatusOr<int64_t> BumpVersion() = 0;
  // True when several server processes serve sign-ins from this store at once: a token
  // missing from the cache is then looked up in the store before it is refused.
  virtual bool shared() const = 0;

 protected:
  // Rows changed by the last statement, for Exec().
  virtual int64_t LastChanges() = 0;
};

// A write (or read) transaction that rolls back unless committed.
class DirTransaction {
 public:
  static absl::StatusOr<std::unique_ptr<DirTransaction>> Begin(DirectoryStore* store,
                                                               bool read_only = false);
  ~DirTransaction();
  absl::Status Commit();
  DirTransaction(const DirTransaction&) = delete;
  DirTransaction& operator=(const DirTransaction&) = delete;

 private:
  explicit DirTransaction(DirectoryStore* store) : store_(store) {}
  DirectoryStore* store_;
  bool open_ = true;
};

// Runs one statement on a SQLite database the way the SQLite DirectoryStore does (?N
// parameters, the rows copied out; statements prepared once and cached). Shared by the
// stores built like the directory's (the plans, server/plans/plan_db.h).
absl::StatusOr<DirRows> QuerySqlite(sync::Db& db, absl::string_view sql,
                                    const std::vector<DirValue>& params);

// The SQLite directory file at `path` (":memory:" works). Migrate() refuses a file of a
// newer kcnet or some other SQLite file.
absl::StatusOr<std::unique_ptr<DirectoryStore>> OpenSqliteDirectoryStore(const std::string& path);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_DIRECTORY_DIRECTORY_STORE_H_
