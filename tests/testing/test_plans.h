// A plan for tests that approve requests but are not about plans: every approval draws on
// the province's extension plan (server/plans), so such a test gives its province one.
// Header-only; targets that include it link kcnet_server_app.
//
// Thread-safety: as PlanStore.
#ifndef KCNET_TESTS_TESTING_TEST_PLANS_H_
#define KCNET_TESTS_TESTING_TEST_PLANS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "server/app/kcnet_server.h"
#include "server/plans/plan_store.h"
#include "sync/hlc.h"

namespace kcnet::testing {

// The plan of `province_id` for this year (Vietnam's date by `clock`): `amount_vnd` of
// local and of national budget for every support category.
inline absl::Status SeedPlan(server::KcnetServer& server, int64_t province_id,
                             int64_t amount_vnd = 1'000'000'000'000,
                             sync::Clock* clock = sync::SystemClock()) {
  kcnet::v1::Plan plan;
  plan.set_province_id(province_id);
  plan.set_year(server::VietnamYear(clock->NowMs()));
  for (int c = kcnet::v1::SUPPORT_CATEGORY_DEMONSTRATION_MODEL;
       c <= kcnet::v1::SUPPORT_CATEGORY_OTHER; ++c) {
    for (kcnet::v1::FundingSource f :
         {kcnet::v1::FUNDING_SOURCE_LOCAL, kcnet::v1::FUNDING_SOURCE_NATIONAL}) {
      kcnet::v1::PlanLine* line = plan.add_lines();
      line->set_category(static_cast<kcnet::v1::SupportCategory>(c));
      line->set_funding(f);
      line->set_planned_amount_vnd(amount_vnd);
    }
  }
  return server.plans()->CreatePlan(plan, {0, "test"}, "").status();
}

}  // namespace kcnet::testing

#endif  // KCNET_TESTS_TESTING_TEST_PLANS_H_
