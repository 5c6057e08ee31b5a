// PlanStore alone: its file (migrations, a foreign or newer file refused), the money and
// date helpers, and a draw whose approval never committed.
#include "server/plans/plan_store.h"

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/sqlite.h"
#include "tests/testing/test_util.h"

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

TEST(PlanStoreTest, ADrawCountsOnlyOnceItsApprovalIsSeenAndBudgetsCountConfirmedDraws) {
  kcnet::testing::TempDir dir;
  sync::FakeClock clock(Ms(2026, 5, 1, 3, 0));
  auto store = PlanStore::Open(dir.File("plans.db"), &clock);
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

}  // namespace
}  // namespace kcnet::server
