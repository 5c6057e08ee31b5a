// Property: whatever the history of writes (creates, edits, deletions of facilities, visits,
// requests and events) and wherever the follower catches up in between, the incremental
// summaries equal a rebuild from scratch, and count exactly the live records.
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"
#include "server/reports/reports_store.h"
#include "tests/server/reports/report_fixture.h"

namespace kcnet::server::reports {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

const std::vector<std::string> kNames = {"Cơ sở Mây Tre", "co so may tre", "Xưởng Gỗ", "XUONG GO",
                                         "Lụa"};

RC_GTEST_PROP(ReportsProperty, IncrementalEqualsRebuild, ()) {
  kcnet::testing::TempDir dir;
  sync::FakeClock clock(VnMs(2025, 1, 1));
  sync::ServerStoreOptions options;
  options.clock = &clock;
  options.durable = false;
  auto store = sync::ServerStore::Open(dir.File("kcnet.db"), &model::KcnetSchema(), options);
  RC_ASSERT(store.ok());
  RecordWriter writer(store->get());
  auto incremental = ReportsStore::Open(dir.File("reports.db"), dir.File("kcnet.db"));
  RC_ASSERT(incremental.ok());

  std::vector<std::string> facilities, visits, requests;
  std::map<std::string, Visit> live_visits;
  const int steps = *rc::gen::inRange(1, 60);
  for (int step = 0; step < steps; ++step) {
    clock.Advance(*rc::gen::inRange(0, 3 * 86400000));
    const int action = *rc::gen::inRange(0, 10);
    const int64_t commune = *rc::gen::inRange(1, 4);
    const int64_t ms = VnMs(2025, 1, 1) + *rc::gen::inRange(0, 700) * 3600000LL * 24 +
                       *rc::gen::inRange(0, 24) * 3600000LL;
    const bool gps = *rc::gen::arbitrary<bool>();
    if (action <= 2 || facilities.empty()) {  // a facility, new or edited
      Facility f;
      const bool edit = !facilities.empty() && *rc::gen::arbitrary<bool>();
      f.set_id(edit ? *rc::gen::elementOf(facilities) : model::NewRecordId());
      f.set_commune_id(commune);
      f.set_name(*rc::gen::elementOf(kNames));
      if (gps) {
        f.set_latitude(21 + *rc::gen::inRange(0, 100) / 100.0);
        f.set_longitude(105);
      }
      f.set_created_ms(ms);
      if (!edit) {
        facilities.push_back(f.id());
      } else {
        // A record keeps its bucket: an edit keeps the stored commune.
        auto stored = (*store)->ReadRecord(model::kFacilityType, *sync::UuidFromText(f.id()));
        RC_ASSERT(stored.ok() && stored->has_value());
        f.set_commune_id((*stored)->bucket());
      }
      RC_ASSERT(writer.Put(f).ok());
    } else if (action <= 5) {  // a visit, new or edited
      Visit v;
      const bool edit = !visits.empty() && *rc::gen::arbitrary<bool>();
      v.set_id(edit ? *rc::gen::elementOf(visits) : model::NewRecordId());
      v.set_facility_id(*rc::gen::elementOf(facilities));
      v.set_commune_id(edit ? live_visits[v.id()].commune_id() : commune);
      v.set_collaborator_id(*rc::gen::inRange(1, 4));
      v.set_visited_ms(ms);
      if (gps) {
        v.set_latitude(21 + *rc::gen::inRange(0, 100) / 100.0);
        v.set_longitude(105.01);
      }
      if (*rc::gen::arbitrary<bool>()) {  // the facility's indicators (outcomes)
        v.set_workers(*rc::gen::inRange(0, 50));
        v.set_product_lines(*rc::gen::inRange(0, 5));
        v.set_annual_output_vnd(*rc::gen::inRange(0, 1000) * 1'000'000LL);
      }
      if (!edit) visits.push_back(v.id());
      live_visits[v.id()] = v;
      RC_ASSERT(writer.Put(v).ok());
    } else if (action == 6 && !visits.empty()) {  // a visit deleted
      const size_t i = *rc::gen::inRange<size_t>(0, visits.size());
      RC_ASSERT(writer.Delete(model::kVisitType, visits[i]).ok());
      live_visits.erase(visits[i]);
      visits.erase(visits.begin() + static_cast<long>(i));
    } else if (action == 7) {  // a request with an event
      SupportRequest r;
      const bool edit = !requests.empty() && *rc::gen::arbitrary<bool>();
      r.set_id(edit ? *rc::gen::elementOf(requests) : model::NewRecordId());
      if (edit) {
        auto stored = (*store)->ReadRecord(model::kSupportRequestType, *sync::UuidFromText(r.id()));
        RC_ASSERT(stored.ok() && stored->has_value());
        r.set_commune_id((*stored)->bucket());
      } else {
        r.set_commune_id(commune);
        requests.push_back(r.id());
      }
      r.set_facility_id(*rc::gen::elementOf(facilities));
      r.set_author_id(*rc::gen::inRange(1, 4));
      r.set_status(static_cast<RequestStatus>(*rc::gen::inRange(1, 10)));
      r.set_created_ms(ms);
      r.set_updated_ms(ms);
      RC_ASSERT(writer.Put(r).ok());
      RequestEvent e;
      e.set_id(model::NewRecordId());
      e.set_commune_id(r.commune_id());
      e.set_request_id(r.id());
      e.set_action(static_cast<RequestAction>(*rc::gen::inRange(1, 11)));
      e.set_to_status(r.status());
      RC_ASSERT(writer.Put(e).ok());
    } else if (action == 8 && facilities.size() > 1) {  // a facility deleted
      const size_t i = *rc::gen::inRange<size_t>(0, facilities.size());
      RC_ASSERT(writer.Delete(model::kFacilityType, facilities[i]).ok());
      facilities.erase(facilities.begin() + static_cast<long>(i));
    }
    if (*rc::gen::inRange(0, 4) == 0) RC_ASSERT((*incremental)->CatchUp().ok());
  }
  RC_ASSERT((*incremental)->CatchUp().ok());
  RC_ASSERT(*(*incremental)->Cursor() == (*store)->last_op());

  // A second summaries file, rebuilt from scratch, holds the same.
  auto rebuilt = ReportsStore::Open(dir.File("rebuilt.db"), dir.File("kcnet.db"));
  RC_ASSERT(rebuilt.ok());
  // The visit counters from the rebuild's second thread, or from the loaded visits.
  (*rebuilt)->set_rebuild_counters_on_a_thread(*rc::gen::arbitrary<bool>());
  RC_ASSERT((*rebuilt)->Rebuild().ok());
  const std::string a = *(*incremental)->Dump();
  const std::string b = *(*rebuilt)->Dump();
  RC_ASSERT(a == b);

  // And counts the live visits exactly.
  ReportScope all;
  all.communes = {1, 2, 3};
  all.from_day = Day(2024, 1, 1);
  all.to_day = Day(2028, 1, 1);
  all.today = all.to_day;
  auto quality = (*incremental)->Quality(all, 5);
  RC_ASSERT(quality.ok());
  int64_t without_gps = 0;
  for (const auto& [id, v] : live_visits) {
    if (v.latitude() == 0 && v.longitude() == 0) ++without_gps;
  }
  RC_ASSERT(quality->visits() == static_cast<int64_t>(live_visits.size()));
  RC_ASSERT(quality->visits_without_gps() == without_gps);

  // The monthly summaries answer whole-month periods (a year, a month, several months)
  // exactly as the per-record rows and daily counters do (the other periods' path).
  (*rebuilt)->set_use_monthly_summaries(false);
  std::vector<ReportScope> periods;
  for (int year : {2025, 2026}) {
    ReportScope p = all;
    p.from_day = Day(year, 1, 1);
    p.to_day = Day(year, 12, 31);
    periods.push_back(p);
  }
  for (int i = 0; i < 3; ++i) {
    const int year = *rc::gen::inRange(2025, 2027);
    const int first = *rc::gen::inRange(1, 13);
    const int last = *rc::gen::inRange(first, 13);
    ReportScope p = all;
    p.from_day = Day(year, first, 1);
    p.to_day = (last == 12 ? Day(year + 1, 1, 1) : Day(year, last + 1, 1)) - 1;
    periods.push_back(p);
  }
  for (const ReportScope& p : periods) {
    auto coverage_a = (*incremental)->Coverage(p);
    auto coverage_b = (*rebuilt)->Coverage(p);
    RC_ASSERT(coverage_a.ok() && coverage_b.ok());
    RC_ASSERT(coverage_a->DebugString() == coverage_b->DebugString());
    auto activity_a = (*incremental)->Activity(p, 30, {});
    auto activity_b = (*rebuilt)->Activity(p, 30, {});
    RC_ASSERT(activity_a.ok() && activity_b.ok());
    RC_ASSERT(activity_a->DebugString() == activity_b->DebugString());
    for (double km : {5.0, 20.0, 1.0}) {
      auto quality_a = (*incremental)->Quality(p, km);
      auto quality_b = (*rebuilt)->Quality(p, km);
      RC_ASSERT(quality_a.ok() && quality_b.ok());
      RC_ASSERT(quality_a->DebugString() == quality_b->DebugString());
    }
    PipelineRequest pipeline;
    StepLimit* limit = pipeline.add_limits();
    limit->set_status(REQUEST_STATUS_SUBMITTED);
    limit->set_max_days(10);
    auto pipeline_a = (*incremental)->Pipeline(p, pipeline);
    auto pipeline_b = (*rebuilt)->Pipeline(p, pipeline);
    RC_ASSERT(pipeline_a.ok() && pipeline_b.ok());
    RC_ASSERT(pipeline_a->DebugString() == pipeline_b->DebugString());
    // The oldest open requests, few of them: the one pass's bounded heap against SQLite's
    // ORDER BY ... LIMIT (ties on the age by id).
    pipeline.set_max_items(*rc::gen::inRange(1, 4));
    pipeline_a = (*incremental)->Pipeline(p, pipeline);
    pipeline_b = (*rebuilt)->Pipeline(p, pipeline);
    RC_ASSERT(pipeline_a.ok() && pipeline_b.ok());
    RC_ASSERT(pipeline_a->DebugString() == pipeline_b->DebugString());
    // The paged lists page by page (the duplicate groups from s_duplicate against a pass
    // over the facilities).
    ReportPage page_a, page_b;
    page_a.page_size = page_b.page_size = 1;
    for (int pages = 0; pages < 100; ++pages) {
      auto qa = (*incremental)->Quality(p, 5, &page_a);
      auto qb = (*rebuilt)->Quality(p, 5, &page_b);
      RC_ASSERT(qa.ok() && qb.ok());
      RC_ASSERT(qa->DebugString() == qb->DebugString());
      RC_ASSERT(page_a.last() == page_b.last());
      if (page_a.last()) break;
      page_a.from = page_a.next;
      page_b.from = page_b.next;
    }
  }

  // Every report reads the same from both (the outcomes join requests, events and visits).
  auto outcomes_a = (*incremental)->Outcomes(all);
  auto outcomes_b = (*rebuilt)->Outcomes(all);
  RC_ASSERT(outcomes_a.ok() && outcomes_b.ok());
  RC_ASSERT(outcomes_a->DebugString() == outcomes_b->DebugString());
}

}  // namespace
}  // namespace kcnet::server::reports
