// The directory's tables on PostgreSQL (the DirectoryStore seam of
// server/directory/directory_store.h): what lets several kcnet-server instances, and
// kcnet-admin, share accounts, sign-in tokens and lock-outs through one database.
//
// The tables live in the schema kcnet_directory, created by PgSchema's migration 3
// (pg_schema.h); Migrate() runs pgstore::Migrate (under its advisory lock) and then sets
// the connection's search_path to kcnet_directory, so that Directory's SQL, written once
// for both stores, names them plainly. Parameters ?N become $N. Version() reads the
// generation row, BumpVersion() increments it inside the change's transaction (a row lock:
// account changes on several instances are serialised, sign-ins are not).
//
// One connection; a lost connection is reopened at the next statement outside a
// transaction (the statement that found it lost fails with UNAVAILABLE). The search_path
// is a session setting: behind PgBouncer use session pooling for kcnet-server, or give the
// role `ALTER ROLE ... SET search_path = kcnet_directory, public`.
//
// Thread-safety: none (Directory serialises every call).
#ifndef KCNET_SERVER_PGSTORE_PG_DIRECTORY_STORE_H_
#define KCNET_SERVER_PGSTORE_PG_DIRECTORY_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/directory/directory_store.h"

namespace kcnet::pgstore {

class PgConn;

// One connection whose search_path is one schema, running the directory's kind of SQL
// (?N parameters, DirValue in, DirRows out): what the directory's and the plans' stores on
// PostgreSQL share. A lost connection is reopened at the next statement outside a
// transaction (inside one, that statement fails with UNAVAILABLE).
//
// Thread-safety: none (its owner serialises every call).
class PgSqlSession {
 public:
  // `schema`: the search_path set after Migrate(); `whose`: the store in errors ("the
  // directory's").
  PgSqlSession(std::string conninfo, std::unique_ptr<PgConn> conn, std::string schema,
               std::string whose);
  ~PgSqlSession();

  // pgstore::Migrate (under its advisory lock), then the search_path.
  absl::Status Migrate();
  absl::StatusOr<server::DirRows> Query(absl::string_view sql,
                                        const std::vector<server::DirValue>& params);
  // `begin`: the BEGIN statement (its isolation level is the store's choice).
  absl::Status Begin(const char* begin);
  absl::Status Commit();
  void Rollback();
  // Rows the last statement changed, and the SQLSTATE of the last failure ("" if none).
  int64_t last_changes() const { return last_changes_; }
  const std::string& last_error_state() const;

 private:
  absl::Status EnsureConnected();

  const std::string conninfo_;
  std::unique_ptr<PgConn> conn_;
  const std::string search_path_;  // "SET search_path TO <schema>"
  const std::string whose_;
  bool migrated_ = false;
  bool in_transaction_ = false;
  int64_t last_changes_ = 0;
};

// Connects to `conninfo` (a libpq connection string or URI). UNAVAILABLE when it cannot.
absl::StatusOr<std::unique_ptr<server::DirectoryStore>> OpenPgDirectoryStore(
    const std::string& conninfo);

// "$1, $2" for "?1, ?2": the directory's SQL in PostgreSQL's parameter syntax (outside
// quoted strings).
std::string PgPlaceholders(absl::string_view sql);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_DIRECTORY_STORE_H_
