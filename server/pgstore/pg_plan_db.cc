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

constexpr char kSearchPath[] = "SET search_path TO kcnet_plans";

class PgPlanDb : public server::PlanDb {
 public:
  PgPlanDb(std::string conninfo, std::unique_ptr<PgConn> conn)
      : conninfo_(std::move(conninfo)), conn_(std::move(conn)) {}

  absl::Status Migrate() override {
    absl::Status status = pgstore::Migrate(*conn_);
    if (!status.ok()) return status;
    migrated_ = true;
    return conn_->Exec(kSearchPath);
  }

  absl::StatusOr<DirRows> Query(absl::string_view sql,
                                const std::vector<DirValue>& params) override {
    absl::Status status = EnsureConnected();
    if (!status.ok()) return status;
    std::vector<PgParam> pg_params;
    pg_params.reserve(params.size());
    for (const DirValue& p : params) {
      switch (p.kind) {
        case DirValue::Kind::kNull:
          pg_params.push_back(PgParam::Null());
          break;
        case DirValue::Kind::kInt:
          pg_params.push_back(PgParam::Int(p.int_value));
          break;
        case DirValue::Kind::kText:
          pg_params.push_back(PgParam::Text(p.bytes));
          break;
        case DirValue::Kind::kBlob:
          pg_params.push_back(PgParam::Bytes(p.bytes));
          break;
      }
    }
    absl::StatusOr<PgResult> res = conn_->Query(PgPlaceholders(sql), pg_params);
    if (!res.ok()) return res.status();
    last_changes_ = res->affected();
    DirRows rows(res->columns(), /*bytea_hex=*/true);
    for (int r = 0; r < res->rows(); ++r) {
      for (int c = 0; c < res->columns(); ++c) {
        rows.Add(std::string(res->Get(r, c)), res->IsNull(r, c));
      }
    }
    return rows;
  }

  absl::Status Begin(bool read_only) override {
    absl::Status status = EnsureConnected();
    if (!status.ok()) return status;
    status = conn_->Exec(read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                                   : "BEGIN ISOLATION LEVEL READ COMMITTED");
    if (!status.ok()) return status;
    in_transaction_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    in_transaction_ = false;
    return conn_->Exec("COMMIT");
  }
  void Rollback() override {
    in_transaction_ = false;
    if (conn_->ok()) conn_->Exec("ROLLBACK").IgnoreError();
  }
  bool shared() const override { return true; }

 protected:
  int64_t LastChanges() override { return last_changes_; }

 private:
  // Reopens a lost connection between transactions (inside one, the caller's statement
  // fails and the transaction is gone with the connection).
  absl::Status EnsureConnected() {
    if (conn_->ok()) return absl::OkStatus();
    if (in_transaction_) {
      return absl::UnavailableError("PostgreSQL: the plans' connection was lost");
    }
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo_);
    if (!conn.ok()) return conn.status();
    conn_ = *std::move(conn);
    if (!migrated_) return absl::OkStatus();
    return conn_->Exec(kSearchPath);
  }

  const std::string conninfo_;
  std::unique_ptr<PgConn> conn_;
  bool migrated_ = false;
  bool in_transaction_ = false;
  int64_t last_changes_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<server::PlanDb>> OpenPgPlanDb(const std::string& conninfo) {
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<server::PlanDb>(new PgPlanDb(conninfo, *std::move(conn)));
}

}  // namespace kcnet::pgstore
