// The paged national lists (docs/REPORTS.md, "Paged lists"): activity's collaborators and
// quality's far visits, duplicate groups and approvals without a recent visit, read page by
// page through the Reporter over a real directory, record store and summaries in a temp dir.
// The pages must add up to the unpaged answer of the store (the reference, not hard-coded
// figures), the totals must be the whole listing's on every page, writes between pages must
// neither repeat nor skip a row, bad paging input names its field, and an export gives every
// row whatever the page.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/directory/directory.h"
#include "server/reports/report_service.h"
#include "tests/server/reports/report_fixture.h"

namespace kcnet::server::reports {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants
using ::testing::HasSubstr;

class ReportPagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sync::ServerStoreOptions options;
    options.clock = &clock_;
    auto store = sync::ServerStore::Open(dir_.File("kcnet.db"), &model::KcnetSchema(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto reports = ReportsStore::Open(dir_.File("reports.db"), dir_.File("kcnet.db"));
    ASSERT_TRUE(reports.ok()) << reports.status();
    reports_ = *std::move(reports);
    auto directory = Directory::Open(dir_.File("directory.db"));
    ASSERT_TRUE(directory.ok()) << directory.status();
    directory_ = *std::move(directory);
    province_ = directory_->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    c1_ = directory_->CreateOrgUnit("90001", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, province_)->id();
    c2_ = directory_->CreateOrgUnit("90002", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, province_)->id();
    reporter_ = std::make_unique<Reporter>(directory_.get(), reports_.get(), &clock_);
  }

  // Applies `messages` (facilities, visits, requests, events) in batches of 500.
  void ApplyAll(const std::vector<const google::protobuf::Message*>& messages) {
    for (size_t i = 0; i < messages.size(); i += 500) {
      ApplyBatch(std::vector<const google::protobuf::Message*>(
          messages.begin() + i, messages.begin() + std::min(messages.size(), i + 500)));
    }
  }
  void ApplyBatch(const std::vector<const google::protobuf::Message*>& messages) {
    MutationBatch batch;
    for (const google::protobuf::Message* m : messages) {
      absl::StatusOr<RecordChange> change = model::ToChange(*m);
      ASSERT_TRUE(change.ok()) << change.status();
      change->set_hlc(store_->clock().Now());
      *batch.add_mutations()->add_changes() = *std::move(change);
    }
    const sync::Writer writer{"", sync::NodeIdFor("user:1"), nullptr};
    absl::StatusOr<PushAck> ack = store_->Apply(writer, batch);
    ASSERT_TRUE(ack.ok()) << ack.status();
    for (const auto& result : ack->results()) {
      ASSERT_NE(result.outcome(), MUTATION_OUTCOME_REFUSED) << result.reason();
    }
  }

  // Visits of `users` collaborators (ids from `first_user`) in March 2026, one each, to
  // the visited facilities; every third far (about 22 km) from the facility's point, every
  // seventh without GPS.
  void WriteVisits(int64_t first_user, int users) {
    std::vector<Visit> visits(users);
    std::vector<const google::protobuf::Message*> all;
    for (int i = 0; i < users; ++i) {
      const size_t f = static_cast<size_t>(i) % kVisited;
      Visit& v = visits[i];
      v.set_id(model::NewRecordId());
      v.set_commune_id(facilities_[f].commune_id());
      v.set_facility_id(facilities_[f].id());
      v.set_collaborator_id(first_user + i);
      v.set_visited_ms(VnMs(2026, 3, 1 + i % 28));
      if (i % 7 != 0) {
        v.set_latitude(facilities_[f].latitude() + (i % 3 == 0 ? 0.2 : 0.0));
        v.set_longitude(facilities_[f].longitude());
      }
      all.push_back(&v);
    }
    ApplyAll(all);
  }

  // 50 groups of two facilities with the same name (30 in commune 1, 20 in commune 2), the
  // first kVisited of them visited by 1,200 collaborators, and an approval in April 2026 of
  // a request on each of 40 never visited ones (approved without a recent visit).
  void WriteData() {
    std::vector<const google::protobuf::Message*> all;
    facilities_.resize(100);
    for (int i = 0; i < 100; ++i) {
      Facility& f = facilities_[i];
      f.set_id(model::NewRecordId());
      f.set_commune_id(i / 2 < 30 ? c1_ : c2_);
      f.set_name(absl::StrCat(i % 2 == 0 ? "Cơ sở " : "co so ", i / 2));
      f.set_latitude(21.0 + i * 0.01);
      f.set_longitude(105.8);
      f.set_created_ms(VnMs(2025, 6, 1));
      all.push_back(&f);
    }
    ApplyAll(all);
    WriteVisits(1000, 1200);
    std::vector<SupportRequest> requests(40);
    std::vector<RequestEvent> events(40);
    all.clear();
    for (int i = 0; i < 40; ++i) {
      const Facility& f = facilities_[kVisited + i];
      SupportRequest& r = requests[i];
      r.set_id(model::NewRecordId());
      r.set_commune_id(f.commune_id());
      r.set_facility_id(f.id());
      r.set_author_id(5000 + i);
      r.set_status(REQUEST_STATUS_APPROVED);
      r.set_created_ms(VnMs(2026, 4, 1));
      r.set_updated_ms(VnMs(2026, 4, 10));
      all.push_back(&r);
    }
    ApplyAll(all);
    all.clear();
    for (int i = 0; i < 40; ++i) {
      RequestEvent& e = events[i];
      e.set_id(model::NewRecordId());
      e.set_commune_id(requests[i].commune_id());
      e.set_request_id(requests[i].id());
      e.set_actor_id(1);
      e.set_action(REQUEST_ACTION_APPROVE);
      e.set_to_status(REQUEST_STATUS_APPROVED);
      all.push_back(&e);
    }
    clock_.Set(VnMs(2026, 4, 10));  // an event's time is the server's
    ApplyAll(all);
    clock_.Set(VnMs(2026, 5, 10));  // "today"
    ASSERT_TRUE(reports_->CatchUp().ok());
  }

  ReportFilter Filter() {
    ReportFilter filter;
    filter.set_from_date("2026-01-01");
    filter.set_to_date("2026-04-30");
    return filter;
  }
  ReportScope Scope() {
    ReportScope scope;
    scope.communes = {c1_, c2_};
    scope.from_day = Day(2026, 1, 1);
    scope.to_day = Day(2026, 4, 30);
    scope.today = Day(2026, 5, 10);
    return scope;
  }
  std::vector<int64_t> Roots() { return {province_}; }

  // Every page of the activity listing with `page_size`; checks each page's size and
  // totals against `reference` (the store's unpaged answer).
  std::vector<int64_t> ActivityPages(uint32_t page_size, const ActivityReport& reference,
                                     int* pages) {
    ActivityRequest request;
    *request.mutable_filter() = Filter();
    request.set_page_size(page_size);
    std::vector<int64_t> users;
    *pages = 0;
    do {
      absl::StatusOr<ActivityReport> page = reporter_->Activity(Roots(), request);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      ++*pages;
      EXPECT_LE(page->collaborators_size(), static_cast<int>(page_size));
      EXPECT_EQ(page->total_collaborators(), reference.collaborators_size());
      EXPECT_EQ(page->total_inactive(), reference.inactive_user_ids_size());
      for (const CollaboratorActivity& a : page->collaborators()) users.push_back(a.user_id());
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty() && *pages < 10000);
    return users;
  }

  static constexpr int kVisited = 60;
  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_{VnMs(2026, 1, 1)};
  std::unique_ptr<sync::ServerStore> store_;
  std::unique_ptr<ReportsStore> reports_;
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<Reporter> reporter_;
  int64_t province_ = 0, c1_ = 0, c2_ = 0;
  std::vector<Facility> facilities_;
};

TEST_F(ReportPagingTest, ActivityPagesAddUpToTheWholeListingWithItsTotals) {
  WriteData();
  absl::StatusOr<ActivityReport> reference = reports_->Activity(Scope(), 0, {});
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_GT(reference->collaborators_size(), kDefaultReportPage);  // more than a page
  // The store's own totals of the unpaged answer are its list's sizes.
  EXPECT_EQ(reference->total_collaborators(), reference->collaborators_size());
  EXPECT_EQ(reference->total_inactive(), reference->inactive_user_ids_size());
  std::vector<int64_t> expected;
  for (const CollaboratorActivity& a : reference->collaborators()) expected.push_back(a.user_id());
  for (uint32_t size : {7u, 500u, 5000u}) {
    int pages = 0;
    EXPECT_EQ(ActivityPages(size, *reference, &pages), expected) << "page size " << size;
    EXPECT_EQ(pages, (reference->collaborators_size() + size - 1) / size) << size;
  }
  // The default page is 500 rows.
  ActivityRequest request;
  *request.mutable_filter() = Filter();
  absl::StatusOr<ActivityReport> first = reporter_->Activity(Roots(), request);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->collaborators_size(), kDefaultReportPage);
  EXPECT_FALSE(first->next_page_token().empty());
  EXPECT_EQ(first->as_of_op(), reference->as_of_op());
}

TEST_F(ReportPagingTest, InactiveTotalCountsTheSameUsersAsEachRow) {
  WriteData();
  // Windows that end inside the visits' month, cross whole months, or end before them: the
  // total from the counters equals the rows' own inactivity, on both counter paths.
  for (bool monthly : {true, false}) {
    reports_->set_use_monthly_summaries(monthly);
    for (uint32_t days : {1u, 20u, 60u, 75u, 400u}) {
      for (int64_t today : {Day(2026, 3, 15), Day(2026, 5, 10), Day(2027, 1, 1)}) {
        ReportScope scope = Scope();
        scope.today = today;
        absl::StatusOr<ActivityReport> report = reports_->Activity(scope, days, {});
        ASSERT_TRUE(report.ok()) << report.status();
        int64_t inactive = 0;
        for (const CollaboratorActivity& a : report->collaborators()) inactive += a.inactive();
        EXPECT_EQ(report->total_inactive(), inactive) << days << " " << today << " " << monthly;
      }
    }
  }
}

TEST_F(ReportPagingTest, QualityPagesAddUpToEveryListWithItsCounts) {
  WriteData();
  absl::StatusOr<QualityReport> reference = reports_->Quality(Scope(), 0);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_GT(reference->far_visits_size(), 100);
  ASSERT_EQ(reference->duplicates_size(), 50);
  ASSERT_EQ(reference->approved_without_recent_visit_ids_size(), 40);
  EXPECT_EQ(reference->duplicate_groups(), 50);
  for (uint32_t size : {9u, 45u, 5000u}) {
    QualityRequest request;
    *request.mutable_filter() = Filter();
    request.set_page_size(size);
    std::vector<std::string> far, approvals;
    std::vector<std::pair<int64_t, std::string>> duplicates;
    int pages = 0;
    do {
      absl::StatusOr<QualityReport> page = reporter_->Quality(Roots(), request);
      ASSERT_TRUE(page.ok()) << page.status();
      ++pages;
      EXPECT_LE(page->far_visits_size(), static_cast<int>(size));
      EXPECT_LE(page->duplicates_size(), static_cast<int>(size));
      EXPECT_LE(page->approved_without_recent_visit_ids_size(), static_cast<int>(size));
      // The counts are the whole scope's on every page.
      EXPECT_EQ(page->visits(), reference->visits());
      EXPECT_EQ(page->visits_far_from_facility(), reference->far_visits_size());
      EXPECT_EQ(page->duplicate_groups(), reference->duplicates_size());
      EXPECT_EQ(page->approved_without_recent_visit(),
                reference->approved_without_recent_visit_ids_size());
      for (const FarVisit& v : page->far_visits()) far.push_back(v.visit_id());
      for (const DuplicateFacilities& d : page->duplicates()) {
        duplicates.emplace_back(d.commune_id(), d.folded_name());
        EXPECT_EQ(d.facility_ids_size(), 2);
      }
      for (const std::string& id : page->approved_without_recent_visit_ids()) {
        approvals.push_back(id);
      }
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty() && pages < 1000);
    std::vector<std::string> want_far, want_approvals;
    std::vector<std::pair<int64_t, std::string>> want_duplicates;
    for (const FarVisit& v : reference->far_visits()) want_far.push_back(v.visit_id());
    for (const DuplicateFacilities& d : reference->duplicates()) {
      want_duplicates.emplace_back(d.commune_id(), d.folded_name());
    }
    for (const std::string& id : reference->approved_without_recent_visit_ids()) {
      want_approvals.push_back(id);
    }
    EXPECT_EQ(far, want_far) << size;
    EXPECT_EQ(duplicates, want_duplicates) << size;
    EXPECT_EQ(approvals, want_approvals) << size;
    // As many pages as the longest list needs (the far visits).
    EXPECT_EQ(pages, (reference->far_visits_size() + size - 1) / size) << size;
  }
}

TEST_F(ReportPagingTest, WritesBetweenPagesNeitherRepeatNorSkipARow) {
  WriteData();
  absl::StatusOr<ActivityReport> before = reports_->Activity(Scope(), 0, {});
  ASSERT_TRUE(before.ok());
  ActivityRequest request;
  *request.mutable_filter() = Filter();
  request.set_page_size(100);
  absl::StatusOr<ActivityReport> first = reporter_->Activity(Roots(), request);
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<int64_t> seen;
  for (const auto& a : first->collaborators()) seen.push_back(a.user_id());
  // New collaborators before the position (ids 1..50) and after it (ids 900000...).
  WriteVisits(1, 50);
  WriteVisits(900000, 50);
  ASSERT_TRUE(reports_->CatchUp().ok());
  request.set_page_token(first->next_page_token());
  while (!request.page_token().empty()) {
    absl::StatusOr<ActivityReport> page = reporter_->Activity(Roots(), request);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_GT(page->as_of_op(), first->as_of_op());  // each page says what it counts
    EXPECT_EQ(page->total_collaborators(), before->collaborators_size() + 100);
    for (const auto& a : page->collaborators()) seen.push_back(a.user_id());
    request.set_page_token(page->next_page_token());
  }
  // Every user of the first listing exactly once, in order; the later ones after the
  // position are listed, the ones before it are not.
  std::set<int64_t> distinct(seen.begin(), seen.end());
  EXPECT_EQ(distinct.size(), seen.size());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  for (const auto& a : before->collaborators()) EXPECT_TRUE(distinct.contains(a.user_id()));
  EXPECT_TRUE(distinct.contains(900000));
  EXPECT_FALSE(distinct.contains(1));
  EXPECT_EQ(seen.size(), static_cast<size_t>(before->collaborators_size() + 50));
}

TEST_F(ReportPagingTest, BadPagingInputNamesTheField) {
  WriteData();
  ActivityRequest activity;
  *activity.mutable_filter() = Filter();
  activity.set_page_size(5001);
  absl::StatusOr<ActivityReport> a = reporter_->Activity(Roots(), activity);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("page_size"));
  activity.set_page_size(10);
  for (const std::string token : {"garbage!", "AAAA", "x"}) {
    activity.set_page_token(token);
    a = reporter_->Activity(Roots(), activity);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << token;
    EXPECT_THAT(a.status().message(), HasSubstr("page_token")) << token;
  }
  activity.clear_page_token();
  absl::StatusOr<ActivityReport> first = reporter_->Activity(Roots(), activity);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token().empty());
  // The token of another filter, of another report, or of another caller's org units.
  ActivityRequest other = activity;
  other.mutable_filter()->set_to_date("2026-03-31");
  other.set_page_token(first->next_page_token());
  EXPECT_THAT(reporter_->Activity(Roots(), other).status().message(), HasSubstr("page_token"));
  other = activity;
  other.set_inactive_days(10);
  other.set_page_token(first->next_page_token());
  EXPECT_THAT(reporter_->Activity(Roots(), other).status().message(), HasSubstr("page_token"));
  QualityRequest quality;
  *quality.mutable_filter() = Filter();
  quality.set_page_token(first->next_page_token());
  absl::StatusOr<QualityReport> q = reporter_->Quality(Roots(), quality);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("page_token"));
  other = activity;
  other.set_page_token(first->next_page_token());
  EXPECT_THAT(reporter_->Activity({c1_}, other).status().message(), HasSubstr("page_token"));
  // The same token with the same request goes on (a page size may change between pages).
  other.set_page_size(20);
  EXPECT_TRUE(reporter_->Activity(Roots(), other).ok());
}

TEST_F(ReportPagingTest, ExportGivesEveryRowWhateverThePage) {
  WriteData();
  absl::StatusOr<ActivityReport> reference = reports_->Activity(Scope(), 0, {});
  ASSERT_TRUE(reference.ok());
  ASSERT_GT(reference->collaborators_size(), kDefaultReportPage);
  for (int page : {kMaxReportPage, 100}) {
    reporter_->set_export_page_size(page);
    ExportRequest request;
    request.set_report("activity");
    request.set_format(EXPORT_FORMAT_CSV);
    *request.mutable_filter() = Filter();
    std::string name;
    absl::StatusOr<std::string> csv = reporter_->Export(Roots(), request, &name);
    ASSERT_TRUE(csv.ok()) << csv.status();
    std::vector<std::string> lines = absl::StrSplit(*csv, "\r\n", absl::SkipEmpty());
    ASSERT_EQ(lines.size(), 1 + static_cast<size_t>(reference->collaborators_size())) << page;
    // The rows in the listing's order, each user once.
    for (int i = 0; i < reference->collaborators_size(); ++i) {
      EXPECT_THAT(lines[1 + i],
                  ::testing::StartsWith(absl::StrCat(reference->collaborators(i).user_id(), ",")))
          << page << " row " << i;
    }
    // The quality export's duplicate groups are the whole scope's.
    request.set_report("quality");
    csv = reporter_->Export(Roots(), request, &name);
    ASSERT_TRUE(csv.ok()) << csv.status();
    EXPECT_THAT(*csv, HasSubstr("Duplicate facility groups,50"));
  }
}

}  // namespace
}  // namespace kcnet::server::reports
