#include "server/pgstore/pg_plan_db.h"

#include <utility>
#include <vector>

#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_schema.h"

namespace kcnet::pgstore {
namespace {

using server::DirRows;
using server::DirValue;

class PgPlanDb : public server::PlanDb {
 public:
  PgPlanDb(std::string conninfo, std::unique_ptr<PgConn> conn)
      : session_(std::move(conninfo), std::move(conn), "kcnet_plans", "the plans'") {}

  absl::Status Migrate() override { return session_.Migrate(); }

  absl::StatusOr<DirRows> Query(absl::string_view sql,
                                const std::vector<DirValue>& params) override {
    return session_.Query(sql, params);
  }

  absl::Status Begin(bool read_only) override {
    return session_.Begin(read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                                    : "BEGIN ISOLATION LEVEL READ COMMITTED");
  }
  absl::Status Commit() override { return session_.Commit(); }
  void Rollback() override { session_.Rollback(); }
  bool shared() const override { return true; }

 protected:
  int64_t LastChanges() override { return session_.last_changes(); }

 private:
  PgSqlSession session_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<server::PlanDb>> OpenPgPlanDb(const std::string& conninfo) {
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<server::PlanDb>(new PgPlanDb(conninfo, *std::move(conn)));
}

}  // namespace kcnet::pgstore
