#include "server/plans/plan_db.h"

#include <iterator>
#include <utility>

#include "server/plans/plan_store.h"
#include "sync/sqlite.h"

namespace kcnet::server {

absl::StatusOr<int64_t> PlanDb::Exec(absl::string_view sql, const std::vector<DirValue>& params) {
  absl::StatusOr<DirRows> rows = Query(sql, params);
  if (!rows.ok()) return rows.status();
  return LastChanges();
}

absl::StatusOr<std::unique_ptr<PlanTransaction>> PlanTransaction::Begin(PlanDb* db,
                                                                        bool read_only) {
  absl::Status status = db->Begin(read_only);
  if (!status.ok()) return status;
  return std::unique_ptr<PlanTransaction>(new PlanTransaction(db));
}

PlanTransaction::~PlanTransaction() {
  if (open_) db_->Rollback();
}

absl::Status PlanTransaction::Commit() {
  open_ = false;
  return db_->Commit();
}

namespace {

// "KCPL" in ASCII: marks plans.db as kcnet's.
constexpr int64_t kApplicationId = 0x4B43504C;

// kMigrations[v] takes the layout from version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: plans and their lines, the revision audit, draws, disbursements, the change
    // counter.
    "CREATE TABLE plans("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  created_by INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  updated_by INTEGER NOT NULL,"
    "  PRIMARY KEY(province_id, year)) WITHOUT ROWID;"
    "CREATE TABLE plan_lines("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  category INTEGER NOT NULL,"
    "  funding INTEGER NOT NULL,"
    "  planned_vnd INTEGER NOT NULL,"
    "  planned_facilities INTEGER NOT NULL,"
    "  PRIMARY KEY(province_id, year, funding, category)) WITHOUT ROWID;"
    // before/after: a serialized Plan holding only the lines.
    "CREATE TABLE plan_revisions("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  note TEXT NOT NULL,"
    "  before BLOB NOT NULL,"
    "  after BLOB NOT NULL,"
    "  PRIMARY KEY(province_id, year, revision)) WITHOUT ROWID;"
    "CREATE TABLE draws("
    "  request_id TEXT PRIMARY KEY,"
    "  province_id INTEGER NOT NULL,"
    "  commune_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  category INTEGER NOT NULL,"
    "  funding INTEGER NOT NULL,"
    "  amount_vnd INTEGER NOT NULL,"
    "  own_contribution_vnd INTEGER NOT NULL,"
    "  remaining_before_vnd INTEGER NOT NULL,"
    "  has_plan INTEGER NOT NULL,"
    "  over_plan_reason TEXT NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  confirmed INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX draws_line ON draws(province_id, year, funding, category);"
    "CREATE INDEX draws_unconfirmed ON draws(confirmed) WHERE confirmed = 0;"
    "CREATE TABLE disbursements("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id TEXT NOT NULL,"
    "  amount_vnd INTEGER NOT NULL,"
    "  paid_date TEXT NOT NULL,"
    "  reference TEXT NOT NULL,"
    "  note TEXT NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL);"
    "CREATE INDEX disbursements_request ON disbursements(request_id);"
    "CREATE TABLE changes(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);"
    "INSERT INTO changes VALUES (1, 0);",
};
static_assert(std::size(kMigrations) == kPlansSchemaVersion);

// plans.db: statements prepared once and cached by sync::Db.
class SqlitePlanDb : public PlanDb {
 public:
  explicit SqlitePlanDb(std::unique_ptr<sync::Db> db) : db_(std::move(db)) {}

  absl::Status Migrate() override {
    return sync::MigrateAppFile(*db_, {.application_id = kApplicationId,
                                       .name = "kcnet plans file",
                                       .schema = "plans",
                                       .migrations = kMigrations,
                                       .version = kPlansSchemaVersion});
  }

  absl::StatusOr<DirRows> Query(absl::string_view sql,
                                const std::vector<DirValue>& params) override {
    return QuerySqlite(*db_, sql, params);
  }

  absl::Status Begin(bool read_only) override {
    absl::StatusOr<std::unique_ptr<sync::Transaction>> tx = sync::Transaction::Begin(
        db_.get(), read_only ? sync::Transaction::Kind::kRead : sync::Transaction::Kind::kWrite);
    if (!tx.ok()) return tx.status();
    tx_ = *std::move(tx);
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    std::unique_ptr<sync::Transaction> tx = std::move(tx_);
    if (tx == nullptr) return absl::FailedPreconditionError("plans: no open transaction");
    return tx->Commit();
  }
  void Rollback() override { tx_.reset(); }
  bool shared() const override { return false; }

 protected:
  int64_t LastChanges() override { return db_->Changes(); }

 private:
  std::unique_ptr<sync::Db> db_;
  std::unique_ptr<sync::Transaction> tx_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PlanDb>> OpenSqlitePlanDb(const std::string& path) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path);
  if (!db.ok()) return db.status();
  return std::unique_ptr<PlanDb>(new SqlitePlanDb(*std::move(db)));
}

}  // namespace kcnet::server
