// PlanStore alone: its file (migrations, a foreign or newer file refused), the money and
// date helpers, and a draw whose approval never committed, on SQLite (plan_store_test) and
// on PostgreSQL (plan_store_pg_test: its own server, one database per test, skipped without
// the PostgreSQL binaries), where two stores on one database also race for a line.
#include "server/plans/plan_store.h"

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/sqlite.h"
#include "tests/testing/test_util.h"
#if KCNET_PLANS_TEST_PG
#include <atomic>
#include <thread>
#include <vector>

#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_plan_db.h"
#include "tests/testing/pg_instance.h"
#endif

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;

int64_t Ms(int y, int m, int d, int h, int min) {
  return absl::ToUnixMillis(
      absl::FromCivil(absl::CivilMinute(y, m, d, h, min), absl::UTCTimeZone()));
}

TEST(PlanStoreTest, MoneyAndDatesAreWrittenTheVietnameseWayAndTheEnglishWay) {
  EXPECT_EQ(VndVi(12'000'000), "12.000.000");
  EXPECT_EQ(VndEn(12'000'000), "12,000,000");
  EXPECT_EQ(VndVi(999), "999");
  EXPECT_EQ(VndEn(1'000), "1,000");
  EXPECT_EQ(VndEn(-20'000'000), "-20,000,000");
  EXPECT_EQ(VndEn(0), "0");
  // Vietnam is UTC+7 all year.
  EXPECT_EQ(VietnamYear(Ms(2025, 12, 31, 16, 59)), 2025);
  EXPECT_EQ(VietnamYear(Ms(2025, 12, 31, 17, 0)), 2026);
  EXPECT_EQ(VietnamDate(Ms(2026, 3, 1, 18, 0)), "2026-03-02");
  EXPECT_EQ(CategoryVi(kcnet::v1::SUPPORT_CATEGORY_TRAINING), "đào tạo");
  EXPECT_EQ(FundingVi(kcnet::v1::FUNDING_SOURCE_COUNTERPART), "vốn đối ứng");
}

TEST(PlanStoreTest, AFileOfAnotherApplicationOrANewerKcnetIsRefused) {
  kcnet::testing::TempDir dir;
  const std::string other = dir.File("other.db");
  {
    auto db = sync::Db::Open(other);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("CREATE TABLE t(x)").ok());
  }
  absl::StatusOr<std::unique_ptr<PlanStore>> s = PlanStore::Open(other);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("not a kcnet plans file"));

  const std::string newer = dir.File("plans.db");
  ASSERT_TRUE(PlanStore::Open(newer).ok());
  {
    auto db = sync::Db::Open(newer);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version = 99").ok());
  }
  s = PlanStore::Open(newer);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("newer kcnet"));
}

enum class StoreKind { kSqlite, kPostgres };

std::string StoreName(const ::testing::TestParamInfo<StoreKind>& info) {
  return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

// The rules on each store.
class PlanStoresTest : public ::testing::TestWithParam<StoreKind> {
 protected:
#if KCNET_PLANS_TEST_PG
  static void SetUpTestSuite() {
    auto pg = kcnet::testing::PgInstance::Start();
    if (!pg.ok()) {
      pg_status_ = new absl::Status(pg.status());
      return;
    }
    pg_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static inline kcnet::testing::PgInstance* pg_ = nullptr;
  static inline absl::Status* pg_status_ = nullptr;
  static inline int databases_ = 0;
#endif

  void SetUp() override {
#if KCNET_PLANS_TEST_PG
    if (GetParam() == StoreKind::kPostgres) {
      if (pg_ == nullptr && pg_status_ != nullptr && absl::IsNotFound(*pg_status_)) {
        GTEST_SKIP() << "no PostgreSQL binaries: " << *pg_status_;
      }
      ASSERT_NE(pg_, nullptr) << (pg_status_ ? *pg_status_ : absl::UnknownError("no server"));
      const std::string name = "plans" + std::to_string(++databases_);
      ASSERT_TRUE(pg_->CreateDatabase(name).ok());
      conninfo_ = pg_->conninfo(name);
    }
#endif
  }

  // A new store on this test's file or database (several share it).
  absl::StatusOr<std::unique_ptr<PlanStore>> OpenStore() {
#if KCNET_PLANS_TEST_PG
    if (GetParam() == StoreKind::kPostgres) {
      absl::StatusOr<std::unique_ptr<PlanDb>> db = pgstore::OpenPgPlanDb(conninfo_);
      if (!db.ok()) return db.status();
      return PlanStore::Open(*std::move(db), &clock_);
    }
#endif
    return PlanStore::Open(dir_.File("plans.db"), &clock_);
  }

  kcnet::testing::TempDir dir_;
  std::string conninfo_;
  sync::FakeClock clock_{Ms(2026, 5, 1, 3, 0)};
};

TEST_P(PlanStoresTest, ADrawCountsOnlyOnceItsApprovalIsSeenAndBudgetsCountConfirmedDraws) {
  auto store = OpenStore();
  ASSERT_TRUE(store.ok()) << store.status();
  kcnet::v1::Plan plan;
  plan.set_province_id(5);
  plan.set_year(2026);
  kcnet::v1::PlanLine* line = plan.add_lines();
  line->set_category(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
  line->set_funding(kcnet::v1::FUNDING_SOURCE_LOCAL);
  line->set_planned_amount_vnd(100);
  ASSERT_TRUE((*store)->CreatePlan(plan, {1, "officer"}, "").ok());
  ApprovalDraw a{.request_id = "a",
                 .province_id = 5,
                 .commune_id = 50,
                 .category = kcnet::v1::SUPPORT_CATEGORY_TRAINING,
                 .funding = kcnet::v1::FUNDING_SOURCE_LOCAL,
                 .amount_vnd = 80};
  ApprovalDraw b = a;
  b.request_id = "b";
  bool a_approved = false;
  auto approved = [&](const std::string& id, int64_t) -> absl::StatusOr<bool> {
    return id == "a" && a_approved;
  };
  ASSERT_TRUE((*store)->Draw(a, {1, "officer"}, "", approved).ok());
  // `a` was drawn but its approval is not (yet, or ever) stored: `b` may take the money.
  EXPECT_TRUE((*store)->Draw(b, {1, "officer"}, "", approved).ok());
  // Now `a` is seen approved: 80 + 80 is beyond 100 for a third one.
  a_approved = true;
  ApprovalDraw c = a;
  c.request_id = "c";
  c.amount_vnd = 30;
  absl::Status over = (*store)->Draw(c, {1, "officer"}, "", approved);
  EXPECT_EQ(over.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(over.message(), HasSubstr("còn lại 20 ₫"));
  // The budget counts confirmed draws only.
  absl::StatusOr<BudgetFigures> before = (*store)->Budget({.province_id = 5, .year = 2026});
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->rows.size(), 1u);
  EXPECT_EQ(before->rows[0].approved_vnd, 0);
  ASSERT_TRUE((*store)->ConfirmDraw("a").ok());
  absl::StatusOr<BudgetFigures> after = (*store)->Budget({.province_id = 5, .year = 2026});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->rows[0].approved_vnd, 80);
  EXPECT_EQ(after->rows[0].remaining_vnd, 20);
  EXPECT_GT(after->as_of_change, before->as_of_change);
}

kcnet::v1::Plan OneLinePlan(int64_t amount) {
  kcnet::v1::Plan plan;
  plan.set_province_id(5);
  plan.set_year(2026);
  kcnet::v1::PlanLine* line = plan.add_lines();
  line->set_category(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
  line->set_funding(kcnet::v1::FUNDING_SOURCE_LOCAL);
  line->set_planned_amount_vnd(amount);
  return plan;
}

// Two stores on one database (two instances): draws on one line from both at once take
// turns, so only what fits passes (every earlier draw counts here, as if its approval had
// committed), and each refusal names what remains.
TEST_P(PlanStoresTest, TwoStoresRacingForALinesLastMoneyPassOnlyWhatFits) {
  if (GetParam() != StoreKind::kPostgres) GTEST_SKIP() << "one SQLite store per process";
  auto a = OpenStore();
  auto b = OpenStore();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*a)->CreatePlan(OneLinePlan(100), {1, "officer"}, "").ok());
  auto holds = [](const std::string&, int64_t) -> absl::StatusOr<bool> { return true; };
  constexpr int kRacers = 8;
  std::atomic<bool> go{false};
  std::vector<absl::Status> results(kRacers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, i] {
      ApprovalDraw draw{.request_id = absl::StrCat("r", i),
                        .province_id = 5,
                        .commune_id = 50 + i,
                        .category = kcnet::v1::SUPPORT_CATEGORY_TRAINING,
                        .funding = kcnet::v1::FUNDING_SOURCE_LOCAL,
                        .amount_vnd = 40};
      while (!go.load()) std::this_thread::yield();
      results[i] = (i % 2 == 0 ? *a : *b)->Draw(draw, {1, "officer"}, "", holds);
    });
  }
  go = true;
  for (std::thread& t : threads) t.join();
  int passed = 0;
  for (int i = 0; i < kRacers; ++i) {
    if (results[i].ok()) {
      ++passed;
      ASSERT_TRUE((*b)->ConfirmDraw(absl::StrCat("r", i)).ok());
      continue;
    }
    EXPECT_EQ(results[i].code(), absl::StatusCode::kFailedPrecondition) << results[i];
    EXPECT_THAT(results[i].message(), HasSubstr("còn lại 20 ₫")) << results[i];
  }
  EXPECT_EQ(passed, 2);
  // Both stores count the same.
  absl::StatusOr<BudgetFigures> on_a = (*a)->Budget({.province_id = 5, .year = 2026});
  absl::StatusOr<BudgetFigures> on_b = (*b)->Budget({.province_id = 5, .year = 2026});
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  ASSERT_EQ(on_a->rows.size(), 1u);
  ASSERT_EQ(on_b->rows.size(), 1u);
  EXPECT_EQ(on_a->rows[0].approved_vnd, 80);
  EXPECT_EQ(on_b->rows[0].approved_vnd, 80);
  EXPECT_EQ(on_a->rows[0].remaining_vnd, on_b->rows[0].remaining_vnd);
  EXPECT_EQ(on_a->as_of_change, on_b->as_of_change);
}

// A plan created or revised through one store is the other's at once; the other cannot
// create it again; a revision that read an older revision is refused.
TEST_P(PlanStoresTest, ARevisionThroughOneStoreIsSeenThroughTheOtherAtOnce) {
  if (GetParam() != StoreKind::kPostgres) GTEST_SKIP() << "one SQLite store per process";
  auto a = OpenStore();
  auto b = OpenStore();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*a)->CreatePlan(OneLinePlan(100), {1, "officer"}, "").ok());
  absl::StatusOr<kcnet::v1::Plan> again = (*b)->CreatePlan(OneLinePlan(5), {2, "other"}, "");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  ASSERT_TRUE((*a)->RevisePlan(OneLinePlan(250), 1, {1, "officer"}, "thêm vốn").ok());
  absl::StatusOr<kcnet::v1::Plan> seen = (*b)->GetPlan(5, 2026);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->revision(), 2);
  EXPECT_EQ(seen->lines(0).planned_amount_vnd(), 250);
  absl::StatusOr<std::vector<kcnet::v1::PlanRevision>> revisions =
      (*b)->ListRevisions(5, 2026, 0, 10);
  ASSERT_TRUE(revisions.ok()) << revisions.status();
  ASSERT_EQ(revisions->size(), 2u);
  EXPECT_EQ((*revisions)[1].note(), "thêm vốn");
  EXPECT_EQ((*revisions)[1].before(0).planned_amount_vnd(), 100);
  EXPECT_EQ((*revisions)[1].after(0).planned_amount_vnd(), 250);
  absl::StatusOr<kcnet::v1::Plan> stale = (*b)->RevisePlan(OneLinePlan(1), 1, {2, "other"}, "cũ");
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_EQ((*a)->GetPlan(5, 2026)->lines(0).planned_amount_vnd(), 250);
}

#if KCNET_PLANS_TEST_PG
// The line's row lock, step by step: another instance's draw holds the line (not yet
// committed); a draw here waits for it, then counts it.
TEST_P(PlanStoresTest, ADrawWaitsForAnotherInstancesDrawOnItsLineAndCountsIt) {
  auto store = OpenStore();
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->CreatePlan(OneLinePlan(100), {1, "officer"}, "").ok());
  auto other = pgstore::PgConn::Connect(conninfo_);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->Exec("BEGIN").ok());
  ASSERT_TRUE(
      (*other)->Exec("SELECT 1 FROM kcnet_plans.plan_lines WHERE province_id = 5 FOR UPDATE").ok());
  ASSERT_TRUE((*other)
                  ->Exec("INSERT INTO kcnet_plans.draws VALUES ('other', 5, 50, 2026, "
                         "3, 1, 80, 0, 100, 1, '', 1, 0, 1)")
                  .ok());
  std::atomic<bool> done{false};
  absl::Status drawn;
  std::thread here([&] {
    ApprovalDraw draw{.request_id = "here",
                      .province_id = 5,
                      .commune_id = 51,
                      .category = kcnet::v1::SUPPORT_CATEGORY_TRAINING,
                      .funding = kcnet::v1::FUNDING_SOURCE_LOCAL,
                      .amount_vnd = 40};
    drawn =
        (*store)->Draw(draw, {1, "officer"}, "",
                       [](const std::string&, int64_t) -> absl::StatusOr<bool> { return true; });
    done = true;
  });
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(done.load()) << "the draw did not wait for the line's other writer: " << drawn;
  ASSERT_TRUE((*other)->Exec("COMMIT").ok());
  here.join();
  EXPECT_EQ(drawn.code(), absl::StatusCode::kFailedPrecondition) << drawn;
  EXPECT_THAT(drawn.message(), HasSubstr("còn lại 20 ₫"));
}
#endif

#if KCNET_PLANS_TEST_PG
INSTANTIATE_TEST_SUITE_P(Stores, PlanStoresTest, ::testing::Values(StoreKind::kPostgres),
                         StoreName);
#else
INSTANTIATE_TEST_SUITE_P(Stores, PlanStoresTest, ::testing::Values(StoreKind::kSqlite), StoreName);
#endif

}  // namespace
}  // namespace kcnet::server
