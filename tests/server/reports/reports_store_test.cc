// The report summaries against a hand-computed small data set (docs/REPORTS.md has the same
// figures as its examples), incremental updates after edits and deletions, and incremental
// == rebuild. A real record store and real SQLite files in a temp dir.
#include "server/reports/reports_store.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/text_fold.h"
#include "tests/server/reports/report_fixture.h"

namespace kcnet::server::reports {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

constexpr int64_t kC1 = 101;  // commune 1
constexpr int64_t kC2 = 102;  // commune 2

std::map<std::string, int64_t> AsMap(const google::protobuf::RepeatedPtrField<MonthValue>& series) {
  std::map<std::string, int64_t> out;
  for (const MonthValue& m : series) out[m.month()] = m.value();
  return out;
}

class ReportsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sync::ServerStoreOptions options;
    options.clock = &clock_;
    auto store = sync::ServerStore::Open(dir_.File("kcnet.db"), &model::KcnetSchema(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    writer_ = std::make_unique<RecordWriter>(store_.get());
    auto reports = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
    ASSERT_TRUE(reports.ok()) << reports.status();
    reports_ = *std::move(reports);
  }

  std::string Facility(int64_t commune, const std::string& name, double lat, double lon,
                       int64_t created_ms) {
    kcnet::v1::Facility f;
    f.set_id(model::NewRecordId());
    f.set_commune_id(commune);
    f.set_name(name);
    f.set_latitude(lat);
    f.set_longitude(lon);
    f.set_created_ms(created_ms);
    EXPECT_TRUE(writer_->Put(f).ok());
    return f.id();
  }
  Visit MakeVisit(const std::string& facility, int64_t commune, int64_t collaborator, int64_t ms,
                  double lat, double lon) {
    Visit v;
    v.set_id(model::NewRecordId());
    v.set_commune_id(commune);
    v.set_facility_id(facility);
    v.set_collaborator_id(collaborator);
    v.set_visited_ms(ms);
    v.set_latitude(lat);
    v.set_longitude(lon);
    return v;
  }
  std::string AddVisit(const std::string& facility, int64_t commune, int64_t collaborator,
                       int64_t ms, double lat, double lon) {
    Visit v = MakeVisit(facility, commune, collaborator, ms, lat, lon);
    EXPECT_TRUE(writer_->Put(v).ok());
    return v.id();
  }
  // A request created on `created_ms` now in `status`, entered on `since_ms` by an event.
  std::string Request(const std::string& facility, int64_t commune, int64_t author,
                      int64_t created_ms, RequestStatus status, RequestAction action,
                      int64_t since_ms) {
    SupportRequest r;
    r.set_id(model::NewRecordId());
    r.set_commune_id(commune);
    r.set_facility_id(facility);
    r.set_author_id(author);
    r.set_status(status);
    r.set_created_ms(created_ms);
    r.set_updated_ms(since_ms);
    EXPECT_TRUE(writer_->Put(r).ok());
    RequestEvent e;
    e.set_id(model::NewRecordId());
    e.set_commune_id(commune);
    e.set_request_id(r.id());
    e.set_actor_id(author);
    e.set_action(action);
    e.set_to_status(status);
    clock_.Set(since_ms);  // an event's time is the server's (at_ms is server_time)
    EXPECT_TRUE(writer_->Put(e).ok());
    return r.id();
  }

  // The data set of docs/REPORTS.md.
  void WriteExample() {
    f1_ = Facility(kC1, "Cơ sở Mây Tre", 21.0, 105.8, VnMs(2026, 1, 5));
    f2_ = Facility(kC1, "co so may tre", 21.0, 105.8, VnMs(2026, 1, 6));
    f3_ = Facility(kC1, "Xưởng Gỗ", 0, 0, VnMs(2025, 6, 1));
    f4_ = Facility(kC2, "Lụa Vạn Phúc", 21.5, 105.5, VnMs(2025, 6, 1));
    f5_ = Facility(kC2, "Gốm", 21.6, 105.6, VnMs(2026, 2, 1));
    v1_ = AddVisit(f1_, kC1, 7, VnMs(2026, 3, 10), 21.0, 105.8);
    // 2026-03-31 18:30 UTC is 2026-04-01 01:30 in Vietnam: an April visit.
    v2_ = AddVisit(f1_, kC1, 7, VnMs(2026, 4, 1, 1, 30), 21.1, 105.8);  // ~11 km off
    v3_ = AddVisit(f2_, kC1, 8, VnMs(2026, 2, 1), 0, 0);                // no GPS
    v4_ = AddVisit(f4_, kC2, 7, VnMs(2026, 3, 15), 21.5, 105.5);
    v5_ = AddVisit(f3_, kC1, 8, VnMs(2025, 12, 20), 0, 0);  // before the period
    // In the order of their events (the server's clock only moves forward).
    r4_ = Request(f1_, kC1, 7, VnMs(2026, 3, 1), REQUEST_STATUS_SUBMITTED, REQUEST_ACTION_SUBMIT,
                  VnMs(2026, 3, 2));
    r5_ = Request(f2_, kC1, 8, VnMs(2026, 2, 10), REQUEST_STATUS_COMPLETED, REQUEST_ACTION_COMPLETE,
                  VnMs(2026, 3, 20));
    r1_ = Request(f3_, kC1, 7, VnMs(2026, 4, 1), REQUEST_STATUS_APPROVED, REQUEST_ACTION_APPROVE,
                  VnMs(2026, 4, 20));
    r2_ = Request(f4_, kC2, 7, VnMs(2026, 4, 2), REQUEST_STATUS_APPROVED, REQUEST_ACTION_APPROVE,
                  VnMs(2026, 4, 22));
    r3_ = Request(f5_, kC2, 8, VnMs(2026, 4, 3), REQUEST_STATUS_APPROVED, REQUEST_ACTION_APPROVE,
                  VnMs(2026, 4, 25));
  }

  ReportScope Period() {
    ReportScope scope;
    scope.communes = {kC1, kC2};
    scope.from_day = Day(2026, 1, 1);
    scope.to_day = Day(2026, 4, 30);
    scope.today = Day(2026, 5, 10);
    return scope;
  }

  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_{VnMs(2026, 1, 1)};
  std::unique_ptr<sync::ServerStore> store_;
  std::unique_ptr<RecordWriter> writer_;
  std::unique_ptr<ReportsStore> reports_;
  std::string f1_, f2_, f3_, f4_, f5_, v1_, v2_, v3_, v4_, v5_, r1_, r2_, r3_, r4_, r5_;
};

TEST(ReportDatesTest, VietnamDayIsUtcPlusSeven) {
  EXPECT_EQ(DayText(VietnamDay(VnMs(2026, 4, 1, 1, 30))), "2026-04-01");
  EXPECT_EQ(DayText(VietnamDay(VnMs(2026, 3, 31, 23, 59))), "2026-03-31");
  EXPECT_EQ(MonthText(Day(2026, 12, 31)), "2026-12");
  EXPECT_EQ(*ParseDay("2026-02-28", "f"), Day(2026, 2, 28));
  EXPECT_THAT(ParseDay("2026-02-30", "filter.from_date").status().message(),
              ::testing::HasSubstr("filter.from_date"));
  EXPECT_FALSE(ParseDay("26-2-3", "f").ok());
  EXPECT_NEAR(DistanceKm(21.0, 105.8, 21.1, 105.8), 11.12, 0.05);
}

TEST_F(ReportsStoreTest, CountsOnlyWhatTheCursorCovers) {
  WriteExample();
  EXPECT_EQ(*reports_->Cursor(), 0u);
  EXPECT_EQ(reports_->Coverage(Period())->total().registered_facilities(), 0);
  absl::StatusOr<uint64_t> op = reports_->CatchUp();
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(*op, store_->last_op());
  EXPECT_EQ(reports_->Coverage(Period())->as_of_op(), store_->last_op());
}

TEST_F(ReportsStoreTest, CoverageOfTheExample) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<CoverageReport> report = reports_->Coverage(Period());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->communes_size(), 2);
  EXPECT_EQ(report->communes(0).commune_id(), kC1);
  EXPECT_EQ(report->communes(0).registered_facilities(), 3);
  EXPECT_EQ(report->communes(0).visited_facilities(), 2);  // F3's visit is before the period
  EXPECT_EQ(report->communes(1).registered_facilities(), 2);
  EXPECT_EQ(report->communes(1).visited_facilities(), 1);
  EXPECT_EQ(report->total().registered_facilities(), 5);
  EXPECT_EQ(report->total().visited_facilities(), 3);
  EXPECT_DOUBLE_EQ(report->total().share(), 0.6);
  EXPECT_THAT(AsMap(report->visits_by_month()),
              (std::map<std::string, int64_t>{{"2026-02", 1}, {"2026-03", 2}, {"2026-04", 1}}));
  EXPECT_THAT(AsMap(report->visited_facilities_by_month()),
              (std::map<std::string, int64_t>{{"2026-02", 1}, {"2026-03", 2}, {"2026-04", 1}}));
  // Registered counts facilities created up to the period's end.
  ReportScope january = Period();
  january.to_day = Day(2026, 1, 5);
  EXPECT_EQ(reports_->Coverage(january)->total().registered_facilities(), 3);  // F1, F3, F4
}

TEST_F(ReportsStoreTest, PipelineOfTheExample) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  PipelineRequest request;
  request.add_limits()->set_status(REQUEST_STATUS_SUBMITTED);
  request.mutable_limits(0)->set_max_days(30);
  request.add_limits()->set_status(REQUEST_STATUS_APPROVED);
  request.mutable_limits(1)->set_max_days(19);
  absl::StatusOr<PipelineReport> report = reports_->Pipeline(Period(), request);
  ASSERT_TRUE(report.ok()) << report.status();
  std::map<int, std::pair<int64_t, int64_t>> statuses;
  for (const auto& s : report->statuses()) statuses[s.status()] = {s.requests(), s.overdue()};
  EXPECT_EQ(statuses[REQUEST_STATUS_SUBMITTED], (std::pair<int64_t, int64_t>{1, 1}));
  EXPECT_EQ(statuses[REQUEST_STATUS_APPROVED], (std::pair<int64_t, int64_t>{3, 1}));
  EXPECT_EQ(statuses[REQUEST_STATUS_COMPLETED], (std::pair<int64_t, int64_t>{1, 0}));
  std::vector<std::pair<std::string, int64_t>> oldest;
  for (const auto& i : report->oldest()) oldest.emplace_back(i.request_id(), i.age_days());
  EXPECT_THAT(oldest, ElementsAre(std::make_pair(r4_, 69), std::make_pair(r1_, 20),
                                  std::make_pair(r2_, 18), std::make_pair(r3_, 15)));
  EXPECT_EQ(report->oldest(0).since_date(), "2026-03-02");
  EXPECT_TRUE(report->oldest(0).overdue());
  EXPECT_TRUE(report->oldest(1).overdue());
  EXPECT_FALSE(report->oldest(2).overdue());
  EXPECT_THAT(AsMap(report->created_by_month()),
              (std::map<std::string, int64_t>{{"2026-02", 1}, {"2026-03", 1}, {"2026-04", 3}}));
}

TEST_F(ReportsStoreTest, ActivityOfTheExample) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  std::vector<CollaboratorActivity> users(3);
  users[0].set_user_id(7);
  users[1].set_user_id(8);
  users[2].set_user_id(9);
  absl::StatusOr<ActivityReport> report = reports_->Activity(Period(), 38, users);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->collaborators_size(), 3);
  const CollaboratorActivity& u7 = report->collaborators(0);
  EXPECT_EQ(u7.visits(), 3);
  EXPECT_EQ(u7.requests(), 3);
  EXPECT_EQ(u7.last_activity_date(), "2026-04-02");
  EXPECT_TRUE(u7.inactive());  // 38 days
  const CollaboratorActivity& u8 = report->collaborators(1);
  EXPECT_EQ(u8.visits(), 1);
  EXPECT_EQ(u8.requests(), 2);
  EXPECT_EQ(u8.last_activity_date(), "2026-04-03");
  EXPECT_FALSE(u8.inactive());  // 37 days
  EXPECT_EQ(report->collaborators(2).last_activity_date(), "");
  EXPECT_THAT(report->inactive_user_ids(), ElementsAre(7, 9));
  // The listing's totals, from the counters (users 7, 8, 9; 7 and 9 inactive).
  EXPECT_EQ(report->total_collaborators(), 3);
  EXPECT_EQ(report->total_inactive(), 2);
}

// A collaborator's last activity is its last visit on or before the period's end in the
// scope's communes, found month by month: the newest month may hold only later visits, and
// a month's visits may be in several communes.
TEST_F(ReportsStoreTest, LastVisitIsTheLastOnOrBeforeThePeriodsEnd) {
  const std::string f1 = Facility(kC1, "Một", 21.0, 105.8, VnMs(2025, 1, 1));
  const std::string f2 = Facility(kC2, "Hai", 21.5, 105.5, VnMs(2025, 1, 1));
  AddVisit(f1, kC1, 20, VnMs(2026, 3, 20), 21.0, 105.8);
  AddVisit(f2, kC2, 20, VnMs(2026, 3, 5), 21.5, 105.5);
  AddVisit(f1, kC1, 20, VnMs(2026, 4, 25), 21.0, 105.8);
  AddVisit(f2, kC2, 20, VnMs(2026, 4, 12), 21.5, 105.5);
  ASSERT_TRUE(reports_->CatchUp().ok());
  auto last = [&](std::vector<int64_t> communes, int64_t to_day) {
    ReportScope scope;
    scope.communes = std::move(communes);
    scope.from_day = Day(2026, 1, 1);
    scope.to_day = to_day;
    scope.today = Day(2026, 5, 10);
    std::vector<CollaboratorActivity> users(1);
    users[0].set_user_id(20);
    absl::StatusOr<ActivityReport> report = reports_->Activity(scope, 30, users);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() && report->collaborators_size() == 1
               ? report->collaborators(0).last_activity_date()
               : std::string("?");
  };
  EXPECT_EQ(last({kC1, kC2}, Day(2026, 4, 10)), "2026-03-20");  // April's are later
  EXPECT_EQ(last({kC1, kC2}, Day(2026, 4, 12)), "2026-04-12");
  EXPECT_EQ(last({kC1, kC2}, Day(2026, 4, 30)), "2026-04-25");
  EXPECT_EQ(last({kC2}, Day(2026, 4, 30)), "2026-04-12");
  EXPECT_EQ(last({kC2}, Day(2026, 4, 11)), "2026-03-05");
  EXPECT_EQ(last({kC1, kC2}, Day(2026, 3, 4)), "");
}

TEST_F(ReportsStoreTest, QualityOfTheExample) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<QualityReport> report = reports_->Quality(Period(), 0);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->visits(), 4);
  EXPECT_EQ(report->visits_without_gps(), 1);
  EXPECT_EQ(report->visits_far_from_facility(), 1);
  ASSERT_EQ(report->far_visits_size(), 1);
  EXPECT_EQ(report->far_visits(0).visit_id(), v2_);
  EXPECT_NEAR(report->far_visits(0).distance_km(), 11.12, 0.05);
  ASSERT_EQ(report->duplicates_size(), 1);
  EXPECT_THAT(report->duplicates(0).facility_ids(), UnorderedElementsAre(f1_, f2_));
  EXPECT_EQ(report->duplicate_groups(), 1);
  EXPECT_EQ(report->approved_without_recent_visit(), 1);
  EXPECT_THAT(report->approved_without_recent_visit_ids(), ElementsAre(r3_));
  EXPECT_THAT(AsMap(report->visits_without_gps_by_month()),
              (std::map<std::string, int64_t>{{"2026-02", 1}}));
  // A limit of 12 km lets V2 through.
  EXPECT_EQ(reports_->Quality(Period(), 12)->visits_far_from_facility(), 0);
}

// The outcomes example of docs/REPORTS.md ("Outcomes"): its own small data set, written in
// the order of its events (the server's clock only moves forward).
class OutcomesTest : public ReportsStoreTest {
 protected:
  std::string IndicatorVisit(const std::string& facility, int64_t commune, int64_t ms,
                             int64_t workers, int64_t products, int64_t output_vnd) {
    Visit v = MakeVisit(facility, commune, 7, ms, 0, 0);
    v.set_workers(workers);
    v.set_product_lines(products);
    v.set_annual_output_vnd(output_vnd);
    EXPECT_TRUE(writer_->Put(v).ok());
    return v.id();
  }
  SupportRequest NewRequest(const std::string& facility, int64_t commune, int64_t created_ms) {
    SupportRequest r;
    r.set_id(model::NewRecordId());
    r.set_commune_id(commune);
    r.set_facility_id(facility);
    r.set_author_id(7);
    r.set_status(REQUEST_STATUS_SUBMITTED);
    r.set_created_ms(created_ms);
    r.set_updated_ms(created_ms);
    EXPECT_TRUE(writer_->Put(r).ok());
    return r;
  }
  // Moves `r` to `to` by an event at `ms` (the server's time).
  void Transition(SupportRequest& r, RequestAction action, RequestStatus to, int64_t ms) {
    clock_.Set(ms);
    r.set_status(to);
    r.set_updated_ms(ms);
    EXPECT_TRUE(writer_->Put(r).ok());
    RequestEvent e;
    e.set_id(model::NewRecordId());
    e.set_commune_id(r.commune_id());
    e.set_request_id(r.id());
    e.set_actor_id(7);
    e.set_action(action);
    e.set_to_status(to);
    EXPECT_TRUE(writer_->Put(e).ok());
  }
  void WriteOutcomesExample() {
    g1_ = Facility(kC1, "Mây tre Phú Vinh", 0, 0, VnMs(2025, 6, 1));
    g2_ = Facility(kC2, "Lụa Vạn Phúc", 0, 0, VnMs(2025, 6, 1));
    g3_ = Facility(kC2, "Gốm Bát Tràng", 0, 0, VnMs(2025, 6, 1));
    IndicatorVisit(g1_, kC1, VnMs(2026, 1, 5), 5, 2, 300'000'000);
    w6_ = IndicatorVisit(g1_, kC1, VnMs(2026, 1, 15), 7, 2, 350'000'000);
    IndicatorVisit(g1_, kC1, VnMs(2026, 2, 1), 6, 2, 320'000'000);  // between: not used
    IndicatorVisit(g1_, kC1, VnMs(2026, 3, 22), 0, 0, 0);           // records no indicators
    w4_ = IndicatorVisit(g1_, kC1, VnMs(2026, 3, 25), 8, 3, 450'000'000);
    IndicatorVisit(g1_, kC1, VnMs(2026, 4, 20), 9, 3, 500'000'000);  // not the first after
    w7_ = IndicatorVisit(g2_, kC2, VnMs(2026, 2, 10, 8), 12, 1, 1'000'000'000);
    w8_ = IndicatorVisit(g2_, kC2, VnMs(2026, 4, 10, 16), 15, 1, 1'200'000'000);
    SupportRequest q1 = NewRequest(g1_, kC1, VnMs(2026, 1, 10));
    SupportRequest q2 = NewRequest(g2_, kC2, VnMs(2026, 2, 1));
    SupportRequest q3 = NewRequest(g3_, kC2, VnMs(2026, 2, 20));
    SupportRequest q4 = NewRequest(g2_, kC2, VnMs(2026, 3, 1));
    Transition(q1, REQUEST_ACTION_APPROVE, REQUEST_STATUS_APPROVED, VnMs(2026, 1, 20));
    Transition(q2, REQUEST_ACTION_APPROVE, REQUEST_STATUS_APPROVED, VnMs(2026, 2, 10, 15));
    Transition(q3, REQUEST_ACTION_APPROVE, REQUEST_STATUS_APPROVED, VnMs(2026, 3, 1));
    Transition(q1, REQUEST_ACTION_COMPLETE, REQUEST_STATUS_COMPLETED, VnMs(2026, 3, 20));
    Transition(q2, REQUEST_ACTION_COMPLETE, REQUEST_STATUS_COMPLETED, VnMs(2026, 4, 10, 9));
    Transition(q3, REQUEST_ACTION_COMPLETE, REQUEST_STATUS_COMPLETED, VnMs(2026, 4, 15));
    Transition(q4, REQUEST_ACTION_APPROVE, REQUEST_STATUS_APPROVED, VnMs(2026, 4, 20));
    Transition(q4, REQUEST_ACTION_START, REQUEST_STATUS_IN_PROGRESS, VnMs(2026, 4, 21));
    q1_ = q1.id();
    q2_ = q2.id();
    q3_ = q3.id();
  }
  std::string g1_, g2_, g3_, w4_, w6_, w7_, w8_, q1_, q2_, q3_;
};

TEST_F(OutcomesTest, OutcomesOfTheExample) {
  WriteOutcomesExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<OutcomesReport> report = reports_->Outcomes(Period());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->as_of_op(), store_->last_op());
  ASSERT_EQ(report->rows_size(), 3);  // Q4 is in progress: not counted
  const OutcomeRow& q1 = report->rows(0);
  EXPECT_EQ(q1.request_id(), q1_);
  EXPECT_EQ(q1.commune_id(), kC1);
  EXPECT_EQ(q1.baseline_date(), "2026-01-20");  // the approval, not the creation (01-10)
  EXPECT_EQ(q1.completed_date(), "2026-03-20");
  EXPECT_EQ(q1.before_visit_id(), w6_);  // 01-15: the last before the approval
  EXPECT_EQ(q1.after_visit_id(), w4_);   // 03-25: the 03-22 visit recorded no indicators
  EXPECT_EQ(q1.after_date(), "2026-03-25");
  EXPECT_EQ(q1.workers_before(), 7);
  EXPECT_EQ(q1.workers_after(), 8);
  EXPECT_EQ(q1.product_lines_before(), 2);
  EXPECT_EQ(q1.product_lines_after(), 3);
  EXPECT_EQ(q1.annual_output_vnd_before(), 350'000'000);
  EXPECT_EQ(q1.annual_output_vnd_after(), 450'000'000);
  EXPECT_TRUE(q1.measured());
  // Q2: visits on the approval day and on the completion day count on their side.
  const OutcomeRow& q2 = report->rows(1);
  EXPECT_EQ(q2.request_id(), q2_);
  EXPECT_EQ(q2.before_visit_id(), w7_);
  EXPECT_EQ(q2.after_visit_id(), w8_);
  EXPECT_EQ(q2.workers_after() - q2.workers_before(), 3);
  EXPECT_TRUE(q2.measured());
  const OutcomeRow& q3 = report->rows(2);
  EXPECT_EQ(q3.request_id(), q3_);
  EXPECT_FALSE(q3.measured());
  EXPECT_EQ(q3.before_visit_id(), "");
  EXPECT_EQ(q3.workers_before(), 0);

  ASSERT_EQ(report->communes_size(), 2);
  EXPECT_EQ(report->communes(0).commune_id(), kC1);
  EXPECT_EQ(report->communes(0).completed_requests(), 1);
  EXPECT_EQ(report->communes(0).workers_delta(), 1);
  EXPECT_EQ(report->communes(1).completed_requests(), 2);
  EXPECT_EQ(report->communes(1).measured_requests(), 1);
  EXPECT_EQ(report->communes(1).annual_output_vnd_delta(), 200'000'000);
  const OutcomeSummary& total = report->total();
  EXPECT_EQ(total.completed_requests(), 3);
  EXPECT_EQ(total.measured_requests(), 2);
  EXPECT_EQ(total.workers_before(), 19);
  EXPECT_EQ(total.workers_after(), 23);
  EXPECT_EQ(total.workers_delta(), 4);
  EXPECT_EQ(total.product_lines_before(), 3);
  EXPECT_EQ(total.product_lines_after(), 4);
  EXPECT_EQ(total.product_lines_delta(), 1);
  EXPECT_EQ(total.annual_output_vnd_before(), 1'350'000'000);
  EXPECT_EQ(total.annual_output_vnd_after(), 1'650'000'000);
  EXPECT_EQ(total.annual_output_vnd_delta(), 300'000'000);
  EXPECT_THAT(AsMap(report->completed_by_month()),
              (std::map<std::string, int64_t>{{"2026-03", 1}, {"2026-04", 2}}));

  // Scope and period: commune 2 alone; a period ending before Q2 and Q3 were completed.
  ReportScope c2 = Period();
  c2.communes = {kC2};
  EXPECT_EQ(reports_->Outcomes(c2)->total().completed_requests(), 2);
  ReportScope march = Period();
  march.to_day = Day(2026, 3, 31);
  EXPECT_EQ(reports_->Outcomes(march)->rows_size(), 1);

  // An edit moves the figures (the after visit now records 10 workers), equal to a rebuild.
  Visit edited = MakeVisit(g1_, kC1, 7, VnMs(2026, 3, 25), 0, 0);
  edited.set_id(w4_);
  edited.set_workers(10);
  edited.set_product_lines(3);
  edited.set_annual_output_vnd(450'000'000);
  ASSERT_TRUE(writer_->Put(edited).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  EXPECT_EQ(reports_->Outcomes(Period())->total().workers_delta(), 6);
  const std::string incremental = reports_->Outcomes(Period())->DebugString();
  ASSERT_TRUE(reports_->Rebuild().ok());
  EXPECT_EQ(reports_->Outcomes(Period())->DebugString(), incremental);
}

// Each visit keeps its distance to its facility's point: moving the point (or deleting
// the facility) moves which visits are far.
TEST_F(ReportsStoreTest, MovingAFacilitysPointMovesItsFarVisits) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  ASSERT_EQ(reports_->Quality(Period(), 5)->far_visits_size(), 1);
  kcnet::v1::Facility f1;
  f1.set_id(f1_);
  f1.set_commune_id(kC1);
  f1.set_name("Cơ sở Mây Tre");
  f1.set_latitude(21.1);  // where V2 was made: now V1 is ~11 km off
  f1.set_longitude(105.8);
  f1.set_created_ms(VnMs(2026, 1, 5));
  ASSERT_TRUE(writer_->Put(f1).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<QualityReport> report = reports_->Quality(Period(), 5);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->far_visits_size(), 1);
  EXPECT_EQ(report->far_visits(0).visit_id(), v1_);
  EXPECT_NEAR(report->far_visits(0).distance_km(), 11.12, 0.05);
  ASSERT_TRUE(writer_->Delete(model::kFacilityType, f1_).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  EXPECT_EQ(reports_->Quality(Period(), 5)->visits_far_from_facility(), 0);
}

// A whole year and a single month read the distinct counts kept per year and per month:
// a facility's last visit of the month going takes it out of both.
TEST_F(ReportsStoreTest, YearAndMonthCoverageFollowTheFirstAndLastVisits) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  ReportScope year = Period();
  year.to_day = Day(2026, 12, 31);
  ReportScope march = Period();
  march.from_day = Day(2026, 3, 1);
  march.to_day = Day(2026, 3, 31);
  EXPECT_EQ(reports_->Coverage(year)->total().visited_facilities(), 3);   // F1, F2, F4
  EXPECT_EQ(reports_->Coverage(march)->total().visited_facilities(), 2);  // F1, F4
  // A second March visit of F1, then V1 (its first) deleted: F1 still visited in March.
  AddVisit(f1_, kC1, 8, VnMs(2026, 3, 25), 21.0, 105.8);
  ASSERT_TRUE(writer_->Delete(model::kVisitType, v1_).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  EXPECT_EQ(reports_->Coverage(march)->total().visited_facilities(), 2);
  // F2's only visit (February) deleted: F2 is no longer visited in 2026.
  ASSERT_TRUE(writer_->Delete(model::kVisitType, v3_).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<CoverageReport> report = reports_->Coverage(year);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->total().visited_facilities(), 2);
  EXPECT_EQ(report->communes(0).commune_id(), kC1);
  EXPECT_EQ(report->communes(0).visited_facilities(), 1);
  // The same as the path of other periods (per-record rows) and as a rebuild.
  const std::string incremental = *reports_->Dump();
  ASSERT_TRUE(reports_->Rebuild().ok());
  EXPECT_EQ(*reports_->Dump(), incremental);
  const std::string summarised = reports_->Coverage(year)->DebugString();
  reports_->set_use_monthly_summaries(false);
  EXPECT_EQ(reports_->Coverage(year)->DebugString(), summarised);
}

TEST_F(ReportsStoreTest, EditsAndDeletionsMoveTheFiguresAndEqualARebuild) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  // V2 loses its GPS; V4 is deleted; F5 too; a new visit to F3 in the period.
  Visit v2 = MakeVisit(f1_, kC1, 7, VnMs(2026, 4, 1, 1, 30), 0, 0);
  v2.set_id(v2_);
  ASSERT_TRUE(writer_->Put(v2).ok());
  ASSERT_TRUE(writer_->Delete(model::kVisitType, v4_).ok());
  ASSERT_TRUE(writer_->Delete(model::kFacilityType, f5_).ok());
  AddVisit(f3_, kC1, 9, VnMs(2026, 4, 30, 23, 0), 0, 0);
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<QualityReport> quality = reports_->Quality(Period(), 0);
  ASSERT_TRUE(quality.ok());
  EXPECT_EQ(quality->visits(), 4);              // V1 V2 V3 and the new one
  EXPECT_EQ(quality->visits_without_gps(), 3);  // V2 V3 new
  EXPECT_EQ(quality->visits_far_from_facility(), 0);
  absl::StatusOr<CoverageReport> coverage = reports_->Coverage(Period());
  EXPECT_EQ(coverage->total().registered_facilities(), 4);
  EXPECT_EQ(coverage->total().visited_facilities(), 3);  // F1 F2 F3
  const std::string incremental = *reports_->Dump();
  absl::StatusOr<uint64_t> rebuilt = reports_->Rebuild();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*reports_->Dump(), incremental);
  EXPECT_EQ(*reports_->Cursor(), store_->last_op());
}

// One catch-up sums its counter changes in memory and writes each key once: a visit
// without GPS moved to another month (its old row's missing point must be read back right:
// SQLite 3.40 answers `lat IS NULL` in a RETURNING clause wrongly), visits added and
// deleted again within one catch-up, and many visits on the same keys all leave the
// counters equal to a rebuild.
TEST_F(ReportsStoreTest, OneCatchUpOfManyChangesOnTheSameKeysEqualsARebuild) {
  WriteExample();
  // A second February visit of V3's collaborator, with GPS: the month's counters stay.
  AddVisit(f2_, kC1, 8, VnMs(2026, 2, 2), 21.0, 105.8);
  ASSERT_TRUE(reports_->CatchUp().ok());
  // V3 has no GPS: moved to May, still without GPS.
  Visit v3 = MakeVisit(f2_, kC1, 7, VnMs(2026, 5, 3, 9, 0), 0, 0);
  v3.set_id(v3_);
  ASSERT_TRUE(writer_->Put(v3).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  absl::StatusOr<QualityReport> quality = reports_->Quality(Period(), 0);
  ASSERT_TRUE(quality.ok());
  const int64_t without_gps = quality->visits_without_gps();
  EXPECT_EQ(without_gps, 0);  // V3 (February, no GPS) left the period with its count
  // Ten visits by one collaborator on one day to one facility, two of them deleted again
  // before the follower sees them: one catch-up.
  std::vector<std::string> added;
  for (int i = 0; i < 10; ++i) {
    added.push_back(AddVisit(f1_, kC1, 8, VnMs(2026, 4, 20, 8, i), i % 2 == 0 ? 0 : 21.0,
                             i % 2 == 0 ? 0 : 105.0));
  }
  ASSERT_TRUE(writer_->Delete(model::kVisitType, added[0]).ok());
  ASSERT_TRUE(writer_->Delete(model::kVisitType, added[1]).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  quality = reports_->Quality(Period(), 0);
  ASSERT_TRUE(quality.ok());
  EXPECT_EQ(quality->visits_without_gps(), without_gps + 4);  // i = 2, 4, 6, 8
  const std::string incremental = *reports_->Dump();
  absl::StatusOr<uint64_t> rebuilt = reports_->Rebuild();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*reports_->Dump(), incremental);
  // The same with the visit counters computed from the loaded visits (a rebuild whose
  // second thread read another snapshot).
  reports_->set_rebuild_counters_on_a_thread(false);
  rebuilt = reports_->Rebuild();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*reports_->Dump(), incremental);
}

// The facility search index (ListFacilities' query): folded words, the last one a prefix,
// names that begin with the query first, scoped to the communes asked, paged, and edits
// and deletions followed (the Dump of the test above compares it with a rebuild too).
TEST_F(ReportsStoreTest, FacilitySearchFoldsScopesOrdersPagesAndFollowsEdits) {
  WriteExample();
  const std::string hanoi = Facility(kC1, "Hà Nội Mây Tre", 21, 105, VnMs(2026, 1, 7));
  const std::string banh = Facility(kC2, "Bánh Hà", 21, 105, VnMs(2026, 1, 8));
  ASSERT_TRUE(reports_->CatchUp().ok());
  auto search = [&](std::vector<int64_t> communes, const std::string& query, int limit = 50) {
    std::vector<std::string> ids;
    std::string after;
    for (int pages = 0; pages < 20; ++pages) {
      absl::StatusOr<FacilitySearchPage> page =
          reports_->SearchFacilities(communes, sync::SearchWords(query), after, limit);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      EXPECT_LE(static_cast<int>(page->ids.size()), limit);
      ids.insert(ids.end(), page->ids.begin(), page->ids.end());
      if (page->next.empty()) break;
      after = page->next;
    }
    return ids;
  };
  EXPECT_THAT(search({kC1}, "ha noi"), ElementsAre(hanoi));  // diacritics folded
  EXPECT_THAT(search({kC1}, "HÀ NỘI"), ElementsAre(hanoi));
  // Names beginning with the query first, then the others, each by folded name then id:
  // "ha noi may tre" before "banh ha", though "banh ha" sorts first.
  EXPECT_THAT(search({kC1, kC2}, "ha"), ElementsAre(hanoi, banh));
  EXPECT_THAT(search({kC1, kC2}, "ha", 1), ElementsAre(hanoi, banh));
  // "co so may tre" twice (by id), then "ha noi may tre"; "tr" as a prefix of "tre".
  std::vector<std::string> co_so = {f1_, f2_};
  std::sort(co_so.begin(), co_so.end());
  EXPECT_THAT(search({kC1, kC2}, "may tr"), ElementsAre(co_so[0], co_so[1], hanoi));
  EXPECT_THAT(search({kC1, kC2}, "may tr", 1), ElementsAre(co_so[0], co_so[1], hanoi));  // paged
  EXPECT_THAT(search({kC1, kC2}, "go"), UnorderedElementsAre(f3_, f5_));
  EXPECT_THAT(search({kC2}, "go"), ElementsAre(f5_));  // scope: only the communes asked
  EXPECT_TRUE(search({}, "go").empty());
  EXPECT_TRUE(search({kC1}, "ay tre").empty());  // whole words, not parts
  EXPECT_TRUE(search({kC1}, "tre ha").size() == 1u);
  EXPECT_FALSE(reports_->SearchFacilities({kC1}, {"go"}, "garbage", 10).ok());
  // A rename and a deletion are followed.
  kcnet::v1::Facility renamed;
  renamed.set_id(hanoi);
  renamed.set_commune_id(kC1);
  renamed.set_name("Xưởng Đúc Đồng");
  renamed.set_owner_name("Trần Văn Hải");
  renamed.set_created_ms(VnMs(2026, 1, 7));
  ASSERT_TRUE(writer_->Put(renamed).ok());
  ASSERT_TRUE(writer_->Delete(model::kFacilityType, f5_).ok());
  ASSERT_TRUE(reports_->CatchUp().ok());
  EXPECT_TRUE(search({kC1}, "ha noi").empty());
  EXPECT_THAT(search({kC1}, "duc dong"), ElementsAre(hanoi));
  EXPECT_THAT(search({kC1}, "hai"), ElementsAre(hanoi));  // the owner's name too
  EXPECT_THAT(search({kC1, kC2}, "go"), ElementsAre(f3_));
  const std::string incremental = *reports_->Dump();
  ASSERT_TRUE(reports_->Rebuild().ok());
  EXPECT_EQ(*reports_->Dump(), incremental);
  EXPECT_THAT(search({kC1}, "duc"), ElementsAre(hanoi));
}

// Alone on the summaries, a rebuild builds a new file and renames it over reports.db:
// the same tables as the incremental ones, the devices' last syncs kept (they are not in
// the records), nothing left beside it.
TEST_F(ReportsStoreTest, RebuildReplacesTheFileAndKeepsTheDevices) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  ASSERT_TRUE(reports_->RecordDeviceSync("tablet-1", 7, VnMs(2026, 4, 2), 3).ok());
  const std::string incremental = *reports_->Dump();
  const auto inode = [&] {
    struct stat st = {};
    EXPECT_EQ(::stat(dir_.File("reports.db").c_str(), &st), 0);
    return st.st_ino;
  };
  const ino_t before = inode();
  absl::StatusOr<uint64_t> rebuilt = reports_->Rebuild();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*rebuilt, store_->last_op());
  EXPECT_NE(inode(), before);  // a new file
  EXPECT_FALSE(std::filesystem::exists(dir_.File("reports.db.rebuild")));
  EXPECT_EQ(*reports_->Dump(), incremental);
  EXPECT_EQ(*reports_->Cursor(), store_->last_op());
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(dir_.File("reports.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(*(*db)->QueryInt("SELECT pending_writes FROM r_device WHERE device_id = 'tablet-1'"),
            3);
  // The new file is followed as the old one was.
  AddVisit(f5_, kC2, 8, VnMs(2026, 4, 10), 21.6, 105.6);
  ASSERT_TRUE(reports_->CatchUp().ok());
  EXPECT_EQ(reports_->Quality(Period(), 0)->visits(), 5);
}

// Another connection has the summaries open (a running server): the rebuild happens in
// place, in one transaction, and that connection reads the rebuilt tables.
TEST_F(ReportsStoreTest, RebuildInPlaceWhileAnotherConnectionHasTheSummariesOpen) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  auto other = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->Cursor().ok());
  AddVisit(f5_, kC2, 8, VnMs(2026, 4, 10), 21.6, 105.6);
  ASSERT_TRUE(writer_->Delete(model::kVisitType, v4_).ok());
  struct stat st = {};
  ASSERT_EQ(::stat(dir_.File("reports.db").c_str(), &st), 0);
  const ino_t before = st.st_ino;
  absl::StatusOr<uint64_t> rebuilt = reports_->Rebuild();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  ASSERT_EQ(::stat(dir_.File("reports.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, before);  // the same file
  EXPECT_EQ(*(*other)->Cursor(), store_->last_op());
  const std::string rebuilt_dump = *(*other)->Dump();
  EXPECT_EQ(*reports_->Dump(), rebuilt_dump);
  // Equal to the incremental tables of a fresh follower.
  other->reset();
  reports_.reset();
  std::filesystem::remove(dir_.File("reports.db"));
  std::filesystem::remove(dir_.File("reports.db-wal"));
  std::filesystem::remove(dir_.File("reports.db-shm"));
  auto fresh = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_TRUE((*fresh)->CatchUp().ok());
  EXPECT_EQ(*(*fresh)->Dump(), rebuilt_dump);
}

// A rebuild killed (SIGKILL, a real process) before it renamed its new file leaves the old
// summaries usable, at their old cursor; the next open removes the half-built file.
TEST_F(ReportsStoreTest, AKilledRebuildLeavesTheOldSummaries) {
  WriteExample();
  for (int i = 0; i < 300; ++i) {
    AddVisit(i % 2 == 0 ? f1_ : f4_, i % 2 == 0 ? kC1 : kC2, 7 + i % 3,
             VnMs(2026, 1 + i % 12, 1 + i % 28), 21.0 + i * 1e-4, 105.5);
  }
  ASSERT_TRUE(reports_->CatchUp().ok());
  const uint64_t old_cursor = *reports_->Cursor();
  const std::string old_dump = *reports_->Dump();
  AddVisit(f5_, kC2, 8, VnMs(2026, 4, 10), 21.6, 105.6);  // not counted yet
  reports_.reset();  // the child must be alone on the file to build a new one
  const std::string rebuild_file = dir_.File("reports.db.rebuild");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto reports = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
    ::_exit(reports.ok() && (*reports)->Rebuild().ok() ? 0 : 1);
  }
  // Killed as soon as its new file exists: mid-rebuild.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!std::filesystem::exists(rebuild_file) && absl::Now() < deadline) {
    absl::SleepFor(absl::Microseconds(100));
  }
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the rebuild ended before it was killed";
  ASSERT_TRUE(std::filesystem::exists(rebuild_file));

  auto reopened = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_FALSE(std::filesystem::exists(rebuild_file));
  EXPECT_EQ(*(*reopened)->Cursor(), old_cursor);
  EXPECT_EQ(*(*reopened)->Dump(), old_dump);
  // And it goes on: the catch-up counts the new visit, equal to a rebuild.
  ASSERT_TRUE((*reopened)->CatchUp().ok());
  EXPECT_EQ(*(*reopened)->Cursor(), store_->last_op());
  const std::string incremental = *(*reopened)->Dump();
  ASSERT_TRUE((*reopened)->Rebuild().ok());
  EXPECT_EQ(*(*reopened)->Dump(), incremental);
}

TEST_F(ReportsStoreTest, ReopenContinuesFromItsCursor) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  const uint64_t before = *reports_->Cursor();
  reports_.reset();
  AddVisit(f5_, kC2, 8, VnMs(2026, 4, 10), 21.6, 105.6);
  auto reopened = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(*(*reopened)->Cursor(), before);
  ASSERT_TRUE((*reopened)->CatchUp().ok());
  EXPECT_EQ((*reopened)->Coverage(Period())->total().visited_facilities(), 4);
}

// Summaries of an older layout (version 4 had the daily counters s_visit_day) are dropped
// when opened and counted again from op 0: the old table goes, and what is counted equals
// what the current layout counts (an old counter made wrong shows it is not kept).
TEST_F(ReportsStoreTest, SummariesOfAnOlderLayoutAreCountedAgainOnOpen) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  const std::string current = *reports_->Dump();
  reports_.reset();
  {
    auto db = sync::Db::Open(dir_.File("reports.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)
                    ->Exec("UPDATE r_meta SET value = 4 WHERE key = 'version';"
                           "CREATE TABLE s_visit_day(commune INTEGER, day INTEGER, "
                           "collaborator INTEGER, visits INTEGER, no_gps INTEGER);"
                           "INSERT INTO s_visit_day VALUES (101, 20500, 7, 1, 0);"
                           "UPDATE s_commune_month SET visits = visits + 100")
                    .ok());
  }
  auto reopened = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(*(*reopened)->Cursor(), 0u);
  ASSERT_TRUE((*reopened)->CatchUp().ok());
  EXPECT_EQ(*(*reopened)->Cursor(), store_->last_op());
  EXPECT_EQ(*(*reopened)->Dump(), current);
  auto db = sync::Db::Open(dir_.File("reports.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM sqlite_schema WHERE name = 's_visit_day'"), 0);
  EXPECT_EQ(*(*db)->QueryInt("SELECT value FROM r_meta WHERE key = 'version'"), 7);
}

TEST_F(ReportsStoreTest, FollowerCountsACommitWithinASecond) {
  ReportsFollower follower(
      reports_.get(), [this] { return store_->last_op(); }, nullptr);
  const std::string f = Facility(kC1, "Mới", 21, 105, VnMs(2026, 1, 1));
  const uint64_t op = store_->last_op();
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (*reports_->Cursor() < op && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_GE(*reports_->Cursor(), op);
  EXPECT_EQ(reports_->Coverage(Period())->total().registered_facilities(), 1);
}

TEST_F(ReportsStoreTest, SummariesAheadOfARestoredStoreStartAgain) {
  WriteExample();
  ASSERT_TRUE(reports_->CatchUp().ok());
  reports_.reset();
  store_.reset();
  // Another, smaller store in place of the first (as after a restore).
  std::filesystem::remove(dir_.File("kcnet.db"));
  std::filesystem::remove(dir_.File("kcnet.db-wal"));
  std::filesystem::remove(dir_.File("kcnet.db-shm"));
  auto store = sync::ServerStore::Open(dir_.File("kcnet.db"), &model::KcnetSchema());
  ASSERT_TRUE(store.ok());
  RecordWriter writer(store->get());
  kcnet::v1::Facility f;
  f.set_id(model::NewRecordId());
  f.set_commune_id(kC1);
  f.set_name("Một");
  f.set_created_ms(VnMs(2026, 1, 1));
  ASSERT_TRUE(writer.Put(f).ok());
  auto reports = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
  ASSERT_TRUE(reports.ok());
  ASSERT_TRUE((*reports)->CatchUp().ok());
  EXPECT_EQ((*reports)->Coverage(Period())->total().registered_facilities(), 1);
}

}  // namespace
}  // namespace kcnet::server::reports
