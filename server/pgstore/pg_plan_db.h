// The plans' tables on PostgreSQL (the PlanDb seam of server/plans/plan_db.h): what lets
// several kcnet-server instances, and kcnet-admin, share the provinces' plans, the draws of
// their approvals, the disbursements and the budget figures through one database, so that
// two instances approving on one plan line draw on the same money.
//
// The tables live in the schema kcnet_plans, created by PgSchema's migration 4
// (pg_schema.h); Migrate() runs pgstore::Migrate (under its advisory lock) and then sets the
// connection's search_path to kcnet_plans, so that PlanStore's SQL, written once for both
// stores, names them plainly. Parameters ?N become $N. Write transactions are READ
// COMMITTED (each statement sees the latest commits, a row locked FOR UPDATE is read as its
// last writer left it); read transactions one REPEATABLE READ snapshot.
//
// One connection; a lost connection is reopened at the next statement outside a
// transaction (the statement that found it lost fails with UNAVAILABLE). The search_path
// is a session setting: behind PgBouncer use session pooling, as for the directory.
//
// Thread-safety: none (PlanStore serialises every call).
#ifndef KCNET_SERVER_PGSTORE_PG_PLAN_DB_H_
#define KCNET_SERVER_PGSTORE_PG_PLAN_DB_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/plans/plan_db.h"

namespace kcnet::pgstore {

// Connects to `conninfo` (a libpq connection string or URI). UNAVAILABLE when it cannot.
absl::StatusOr<std::unique_ptr<server::PlanDb>> OpenPgPlanDb(const std::string& conninfo);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_PLAN_DB_H_
