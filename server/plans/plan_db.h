// The plan store's storage seam: where PlanStore (plan_store.h) keeps its tables. PlanStore
// holds every rule (validation, the draw's check-and-record, the over-plan reason, payments
// never above the approved amount, the audit of revisions); a PlanDb only runs its SQL, as
// the directory's DirectoryStore does (server/directory/directory_store.h, whose DirValue
// and DirRows it shares). Two implementations:
//   - SQLite (OpenSqlitePlanDb, below): one file, plans.db in --data_dir, one per process;
//   - PostgreSQL (server/pgstore/pg_plan_db.h): the tables in the schema kcnet_plans,
//     shared by every kcnet-server instance (and kcnet-admin) on one database.
//
// The SQL PlanStore sends is written once, in the dialect both understand: parameters
// ?1, ?2, ... ($1, $2, ... on PostgreSQL), new ids with RETURNING id, upserts with
// INSERT ... ON CONFLICT(...) DO UPDATE, byte strings as BLOB / bytea read with
// DirRows::Blob(). The one difference PlanStore asks about is shared(): on a shared
// database, the rows a check reads before it writes are locked (SELECT ... FOR UPDATE),
// because other processes write at the same time; SQLite has one writer and no such clause.
//
// Thread-safety: none; PlanStore serialises every call under its mutex.
#ifndef KCNET_SERVER_PLANS_PLAN_DB_H_
#define KCNET_SERVER_PLANS_PLAN_DB_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/directory/directory_store.h"

namespace kcnet::server {

class PlanDb {
 public:
  virtual ~PlanDb() = default;

  // Creates or migrates the tables. FAILED_PRECONDITION for a newer layout, or a file or
  // database of something else.
  virtual absl::Status Migrate() = 0;

  // Runs one statement; its rows (empty for statements without RETURNING / SELECT).
  virtual absl::StatusOr<DirRows> Query(absl::string_view sql,
                                        const std::vector<DirValue>& params = {}) = 0;
  // Rows changed by an INSERT/UPDATE/DELETE.
  absl::StatusOr<int64_t> Exec(absl::string_view sql, const std::vector<DirValue>& params = {});

  // Transactions (not nested). Begin(true) reads one consistent snapshot; a write
  // transaction on a shared database sees each statement's latest commits (READ
  // COMMITTED), so a row locked FOR UPDATE is read as its last writer left it.
  virtual absl::Status Begin(bool read_only) = 0;
  virtual absl::Status Commit() = 0;
  virtual void Rollback() = 0;

  // True when several processes write these tables at once (PostgreSQL).
  virtual bool shared() const = 0;

 protected:
  virtual int64_t LastChanges() = 0;
};

// A transaction that rolls back unless committed.
class PlanTransaction {
 public:
  static absl::StatusOr<std::unique_ptr<PlanTransaction>> Begin(PlanDb* db, bool read_only = false);
  ~PlanTransaction();
  absl::Status Commit();
  PlanTransaction(const PlanTransaction&) = delete;
  PlanTransaction& operator=(const PlanTransaction&) = delete;

 private:
  explicit PlanTransaction(PlanDb* db) : db_(db) {}
  PlanDb* db_;
  bool open_ = true;
};

// The SQLite plans file at `path` (":memory:" works). Migrate() refuses a file of a newer
// kcnet or some other SQLite file.
absl::StatusOr<std::unique_ptr<PlanDb>> OpenSqlitePlanDb(const std::string& path);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_PLANS_PLAN_DB_H_
