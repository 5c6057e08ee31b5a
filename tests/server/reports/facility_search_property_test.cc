// Property: the facility search (ReportsStore::SearchFacilities) answers the same pages,
// next tokens included, whichever plan finds them (the match-first plan, the walk of the
// names in order, or the automatic choice between them), and those pages are the model's:
// the facilities of the scope holding every query word (the last one as a prefix), those
// whose folded name begins with the query first, then by folded name and id. Random
// names (with diacritics, shared prefixes, empty ones), edits and deletions, scopes,
// queries and page sizes; every query paged through to its end.
#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"
#include "server/reports/reports_store.h"
#include "sync/text_fold.h"
#include "tests/server/reports/report_fixture.h"

namespace kcnet::server::reports {
namespace {

using ::kcnet::v1::Facility;
using SearchPlan = ReportsStore::SearchPlan;

// Words that share prefixes once folded ("go", "gom", "Gỗ", "Gốm"; "da", "Đa").
const std::vector<std::string> kWords = {"Gỗ",  "gom", "Gốm", "go",   "Cơ",  "co",   "sở", "so",
                                         "mây", "tre", "trê", "Đa",   "da",  "bánh", "a",  "ab",
                                         "abc", "b",   "Ba",  "nước", "mắm", "1",    "12", "Xưởng"};

// A facility as the model knows it.
struct Known {
  int64_t commune = 0;
  std::string name, owner;
};

std::string RandomText(int max_words) {
  const int n = *rc::gen::inRange(0, max_words + 1);
  std::vector<std::string> words;
  for (int i = 0; i < n; ++i) words.push_back(*rc::gen::elementOf(kWords));
  return absl::StrJoin(words, " ");
}

// The model's answer: every matching facility of `scope`, in the answer's order.
std::vector<std::string> Expected(const std::map<std::string, Known>& live,
                                  const std::vector<int64_t>& scope,
                                  const std::vector<std::string>& words) {
  const std::string typed = absl::StrJoin(words, " ");
  std::vector<std::tuple<bool, std::string, std::string>> found;  // later, name, id
  for (const auto& [id, f] : live) {
    if (std::find(scope.begin(), scope.end(), f.commune) == scope.end()) continue;
    const std::vector<std::string> all = sync::SearchWords(absl::StrCat(f.name, "\n", f.owner));
    bool every = true;
    for (size_t w = 0; w < words.size() && every; ++w) {
      const bool prefix = w + 1 == words.size();
      every = std::any_of(all.begin(), all.end(), [&](const std::string& word) {
        return prefix ? absl::StartsWith(word, words[w]) : word == words[w];
      });
    }
    if (!every) continue;
    const std::string name = absl::StrJoin(sync::SearchWords(f.name), " ");
    found.emplace_back(!absl::StartsWith(name, typed), name, id);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> ids;
  for (const auto& hit : found) ids.push_back(std::get<2>(hit));
  return ids;
}

RC_GTEST_PROP(FacilitySearchProperty, EveryPlanAnswersTheModelsPages, ()) {
  kcnet::testing::TempDir dir;
  sync::FakeClock clock(VnMs(2026, 1, 1));
  sync::ServerStoreOptions options;
  options.clock = &clock;
  options.durable = false;
  auto store = sync::ServerStore::Open(dir.File("kcnet.db"), &model::KcnetSchema(), options);
  RC_ASSERT(store.ok());
  RecordWriter writer(store->get());
  auto reports = ReportsStore::Open(dir.File("reports.db"), dir.File("kcnet.db"));
  RC_ASSERT(reports.ok());

  // Facilities created, renamed (new rowids in the index) and deleted; the index follows
  // in several catch-ups.
  std::map<std::string, Known> live;
  std::vector<std::string> ids;
  const int writes = *rc::gen::inRange(1, 150);
  for (int i = 0; i < writes; ++i) {
    const int action = *rc::gen::inRange(0, 10);
    if (action == 0 && !live.empty()) {
      const std::string id = *rc::gen::elementOf(ids);
      if (live.erase(id) > 0) RC_ASSERT(writer.Delete(model::kFacilityType, id).ok());
    } else {
      const bool edit = action == 1 && !live.empty();
      Facility f;
      f.set_id(edit ? live.begin()->first : model::NewRecordId());
      Known known{edit ? live.begin()->second.commune : *rc::gen::inRange<int64_t>(1, 5),
                  RandomText(3), *rc::gen::arbitrary<bool>() ? RandomText(2) : ""};
      f.set_commune_id(known.commune);
      f.set_name(known.name);
      f.set_owner_name(known.owner);
      f.set_created_ms(VnMs(2026, 1, 1));
      RC_ASSERT(writer.Put(f).ok());
      if (!edit) ids.push_back(f.id());
      live[f.id()] = known;
    }
    if (*rc::gen::inRange(0, 40) == 0) RC_ASSERT((*reports)->CatchUp().ok());
  }
  RC_ASSERT((*reports)->CatchUp().ok());

  const int queries = *rc::gen::inRange(1, 12);
  for (int q = 0; q < queries; ++q) {
    // A query: some words, the last one often cut short (as typed).
    std::string text = RandomText(2);
    if (*rc::gen::arbitrary<bool>()) text = absl::StrCat(text, " ", *rc::gen::elementOf(kWords));
    std::vector<std::string> words = sync::SearchWords(text);
    if (words.empty()) continue;
    const size_t cut = *rc::gen::inRange<size_t>(1, words.back().size() + 1);
    if (words.back().size() == cut || static_cast<unsigned char>(words.back()[cut]) < 0x80 ||
        static_cast<unsigned char>(words.back()[cut]) >= 0xc0) {
      words.back().resize(cut);  // at a character's boundary only
    }
    std::vector<int64_t> scope;
    for (int64_t c = 1; c <= 4; ++c) {
      if (*rc::gen::inRange(0, 3) > 0) scope.push_back(c);
    }
    const int limit = *rc::gen::inRange(1, 7);
    const std::vector<std::string> expected = Expected(live, scope, words);
    std::vector<FacilitySearchPage> first_plan_pages;
    // The automatic choice as it is, and with no "few matches" shortcut (the estimate).
    const std::pair<SearchPlan, int64_t> plans[] = {
        {SearchPlan::kMatchFirst, 0},
        {SearchPlan::kNameOrder, 0},
        {SearchPlan::kAuto, ReportsStore::kMatchFirstUpTo},
        {SearchPlan::kAuto, 0}};
    for (const std::pair<SearchPlan, int64_t>& choice : plans) {
      const SearchPlan plan = choice.first;
      (*reports)->set_search_plan(plan, choice.second);
      std::vector<FacilitySearchPage> pages;
      std::vector<std::string> all;
      std::string after;
      while (true) {
        absl::StatusOr<FacilitySearchPage> page =
            (*reports)->SearchFacilities(scope, words, after, limit);
        RC_ASSERT(page.ok());
        RC_ASSERT(static_cast<int>(page->ids.size()) <= limit);
        all.insert(all.end(), page->ids.begin(), page->ids.end());
        pages.push_back(*page);
        if (page->next.empty()) break;
        RC_ASSERT(pages.size() <= expected.size());  // never a page without progress
        after = page->next;
      }
      RC_ASSERT(all == expected);
      if (plan == SearchPlan::kMatchFirst) {
        first_plan_pages = pages;
        continue;
      }
      RC_ASSERT(pages.size() == first_plan_pages.size());
      for (size_t p = 0; p < pages.size(); ++p) {
        RC_ASSERT(pages[p].ids == first_plan_pages[p].ids);
        RC_ASSERT(pages[p].next == first_plan_pages[p].next);
      }
    }
  }
}

}  // namespace
}  // namespace kcnet::server::reports
