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

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/directory/directory_store.h"

namespace kcnet::pgstore {

// Connects to `conninfo` (a libpq connection string or URI). UNAVAILABLE when it cannot.
absl::StatusOr<std::unique_ptr<server::DirectoryStore>> OpenPgDirectoryStore(
    const std::string& conninfo);

// "$1, $2" for "?1, ?2": the directory's SQL in PostgreSQL's parameter syntax (outside
// quoted strings).
std::string PgPlaceholders(absl::string_view sql);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_DIRECTORY_STORE_H_
