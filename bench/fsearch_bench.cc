// fsearch: the registry's facility search (ReportsStore::SearchFacilities, the index
// behind ListFacilities.query) alone, without the server, the bridge or the browser, on
// the console bench's province (bench/console_bench.cc: at --scale=1, 200,000 facilities
// over 20 communes, ten kinds of names, one owner) and its ten queries. For each plan
// (ReportsStore::SearchPlan: auto, match_first, name_order) and each query, the first page
// of 100 for the whole province and for one commune, `reps` times; per plan and scope
// (over the ten queries; *_numbered_cpu_p95_ms over the second round's, with a number):
//  - <plan>_<scope>_cpu_p95_ms / _max_ms: the calling thread's CPU time per search (a
//    loaded machine's waiting for a CPU left out), p95 and max over queries x reps;
//  - <plan>_<scope>_wall_p95_ms: the same in wall time.
// Also matches_max (the largest match count of a query), seed_s and index_s. Each search's
// figures go to stderr (query, scope, plan, matches, cpu ms, wall ms).
//
// Usage: fsearch_bench [reps] [--scale=F] [--keep=DIR]
//   reps: searches per query, plan and scope (default 5); --scale: of the data set (default
//   1); --keep=DIR: the store and the index in DIR, kept, and used again when present.
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "kcnet/v1/domain.pb.h"
#include "server/reports/reports_store.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "sync/server_store.h"
#include "sync/sqlite.h"
#include "sync/text_fold.h"

namespace {

using kcnet::server::reports::FacilitySearchPage;
using kcnet::server::reports::ReportsStore;
using SearchPlan = ReportsStore::SearchPlan;

void Die(const std::string& what) {
  std::fprintf(stderr, "fsearch_bench: %s\n", what.c_str());
  std::exit(1);
}

double ThreadCpuMs() {
  struct timespec ts = {};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double P95(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 95 / 100)];
}

// Stores `n` facilities as console_bench does (its names, one owner, 20 communes).
void Seed(kcnet::sync::ServerStore* store, int64_t n, const std::vector<int64_t>& communes) {
  const char* kNames[] = {"Cơ sở mây tre đan", "Xưởng bánh đa", "Cơ khí nông cụ", "Dệt thổ cẩm",
                          "Gỗ mỹ nghệ",        "Gốm sứ",        "Nước mắm",       "Miến dong",
                          "Bún khô",           "Chổi đót"};
  std::mt19937_64 rng(20261206);
  kcnet::v1::MutationBatch batch;
  for (int64_t done = 0; done < n;) {
    batch.Clear();
    const int64_t count = std::min<int64_t>(1000, n - done);
    for (int64_t i = 0; i < count; ++i) {
      kcnet::v1::Facility f;
      f.set_id(*kcnet::sync::UuidToText(kcnet::bench::RandomUuidBytes(rng)));
      f.set_commune_id(communes[rng() % communes.size()]);
      f.set_name(absl::StrCat(kNames[rng() % 10], " ", done + i));
      f.set_owner_name("Nguyễn Văn An");
      f.set_kind(kcnet::v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
      f.set_created_ms(1767225600000);
      kcnet::v1::RecordChange change = *kcnet::model::ToChange(f);
      change.set_hlc(store->clock().Now());
      *batch.add_mutations()->add_changes() = std::move(change);
    }
    const kcnet::sync::Writer writer{"", kcnet::sync::NodeIdFor("bench"), nullptr};
    if (absl::StatusOr<kcnet::v1::PushAck> ack = store->Apply(writer, batch); !ack.ok()) {
      Die(absl::StrCat("apply: ", ack.status().ToString()));
    }
    done += count;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using kcnet::bench::Emit;
  int reps = 5;
  double scale = 1;
  std::string keep;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (absl::StartsWith(a, "--scale=")) {
      if (!absl::SimpleAtod(a.substr(8), &scale) || scale <= 0 || scale > 1) Die("--scale: (0, 1]");
    } else if (absl::StartsWith(a, "--keep=")) {
      keep = a.substr(7);
    } else if (!absl::SimpleAtoi(a, &reps) || reps <= 0) {
      Die("usage: fsearch_bench [reps] [--scale=F] [--keep=DIR]");
    }
  }
  const std::string dir =
      keep.empty() ? (std::filesystem::temp_directory_path() / "kcnet-bench-fsearch").string()
                   : keep;
  const bool reuse = !keep.empty() && std::filesystem::exists(dir + "/reports.db");
  if (!reuse) std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<int64_t> communes;
  for (int64_t c = 0; c < 20; ++c) communes.push_back(9015000 + c);
  {
    kcnet::sync::ServerStoreOptions options;
    options.durable = false;
    auto store =
        kcnet::sync::ServerStore::Open(dir + "/kcnet.db", &kcnet::model::KcnetSchema(), options);
    if (!store.ok()) Die(store.status().ToString());
    if (!reuse) {
      kcnet::bench::Timer seed;
      Seed(store->get(), static_cast<int64_t>(200000 * scale), communes);
      Emit("fsearch", "seed_s", seed.Seconds(), "s");
    }
  }
  auto reports = ReportsStore::Open(dir + "/reports.db", dir + "/kcnet.db");
  if (!reports.ok()) Die(reports.status().ToString());
  if (!reuse) {
    kcnet::bench::Timer index;
    if (absl::StatusOr<uint64_t> built = (*reports)->Rebuild(); !built.ok()) {
      Die(built.status().ToString());
    }
    Emit("fsearch", "index_s", index.Seconds(), "s");
  }
  auto counter = kcnet::sync::Db::Open(dir + "/reports.db");
  if (!counter.ok()) Die(counter.status().ToString());

  // The console bench's ten queries, then its second round: the same with a number (about
  // 1,000 matches each).
  const char* kQueries[] = {"may tre",    "banh da",     "co khi",    "det",    "go",
                            "gom",        "nuoc mam",    "mien",      "bun",    "cho",
                            "may tre 10", "banh da 11",  "co khi 12", "det 13", "go 14",
                            "gom 15",     "nuoc mam 16", "mien 17",   "bun 18", "cho 19"};
  struct Scope {
    const char* name;
    std::vector<int64_t> communes;
  };
  const Scope scopes[] = {{"province", communes}, {"commune", {communes[3]}}};
  struct Plan {
    const char* name;
    SearchPlan plan;
  };
  const Plan plans[] = {{"match_first", SearchPlan::kMatchFirst},
                        {"name_order", SearchPlan::kNameOrder},
                        {"auto", SearchPlan::kAuto}};
  int64_t matches_max = 0;
  for (const Plan& plan : plans) {
    (*reports)->set_search_plan(plan.plan);
    for (const Scope& scope : scopes) {
      std::vector<double> cpu, wall, numbered_cpu;
      for (const char* query : kQueries) {
        const bool numbered = absl::StrContains(query, "1");
        const std::vector<std::string> words = kcnet::sync::SearchWords(query);
        std::string match;
        for (size_t w = 0; w < words.size(); ++w) {
          absl::StrAppend(&match, w == 0 ? "" : " ", "\"", words[w], "\"",
                          w + 1 == words.size() ? "*" : "");
        }
        absl::StatusOr<kcnet::sync::Statement*> count =
            (*counter)->Prepare("SELECT count(*) FROM r_fsearch WHERE r_fsearch MATCH ?1");
        if (!count.ok()) Die(count.status().ToString());
        (*count)->BindText(1, match);
        if (!*(*count)->Step()) Die("count");
        const int64_t matches = (*count)->ColumnInt(0);
        (*count)->Reset();
        matches_max = std::max(matches_max, matches);
        for (int r = 0; r < reps; ++r) {
          const double cpu_start = ThreadCpuMs();
          kcnet::bench::Timer timer;
          absl::StatusOr<FacilitySearchPage> page =
              (*reports)->SearchFacilities(scope.communes, words, "", 100);
          const double wall_ms = timer.Seconds() * 1e3;
          const double cpu_ms = ThreadCpuMs() - cpu_start;
          if (!page.ok()) Die(page.status().ToString());
          if (page->ids.empty() && !numbered) Die(absl::StrCat("no facility for ", query));
          if (numbered) {
            numbered_cpu.push_back(cpu_ms);
          } else {
            cpu.push_back(cpu_ms);
            wall.push_back(wall_ms);
          }
          std::fprintf(
              stderr, "fsearch: %-11s %-8s %-11s matches %6lld  cpu %7.2f ms  wall %7.2f ms\n",
              query, scope.name, plan.name, static_cast<long long>(matches), cpu_ms, wall_ms);
        }
      }
      const std::string prefix = absl::StrCat(plan.name, "_", scope.name);
      Emit("fsearch", prefix + "_cpu_p95_ms", P95(cpu), "ms");
      Emit("fsearch", prefix + "_cpu_max_ms", *std::max_element(cpu.begin(), cpu.end()), "ms");
      Emit("fsearch", prefix + "_wall_p95_ms", P95(wall), "ms");
      Emit("fsearch", prefix + "_numbered_cpu_p95_ms", P95(numbered_cpu), "ms");
    }
  }
  Emit("fsearch", "matches_max", static_cast<double>(matches_max), "rows");
  reports->reset();
  if (keep.empty()) std::filesystem::remove_all(dir);
  return 0;
}
