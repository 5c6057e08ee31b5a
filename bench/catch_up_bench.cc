// catch_up: the time for a device to pull one commune's week of changes, when the server
// holds 50,000 changes nationwide and when it holds 5,000,000 (same commune, same week).
// The pull is ServerStore::ChangesSince pages + DeviceStore::ApplyDownload, the same calls
// the stream makes (the network adds the same constant in both cases).
//
// Metrics: catch_up_ms_50k, catch_up_ms_5m, ratio_5m_vs_50k (goal <= 1.5).
// Usage: catch_up_bench [small] [large]   (default 50000 5000000)
#include <filesystem>
#include <iostream>

#include "bench/bench_util.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"

namespace {

using namespace kcnet;  // NOLINT

constexpr int64_t kTarget = 5000;  // the device's commune
constexpr int kCommunes = 10000;   // nationwide
constexpr int kWeekChanges = 300;  // the target commune's changes during the week

template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::cerr << "catch_up_bench: " << v.status() << "\n";
    std::exit(1);
  }
  return *std::move(v);
}

v1::RecordChange NewVisit(std::mt19937_64& rng, int64_t commune, uint64_t hlc) {
  v1::Visit v;
  v.set_id(*sync::UuidToText(bench::RandomUuidBytes(rng)));
  v.set_commune_id(commune);
  v.set_facility_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
  v.set_collaborator_id(7);
  v.set_visited_ms(1764000000000);
  v.set_purpose(v1::VISIT_PURPOSE_SURVEY);
  v.set_findings("Khảo sát");
  v1::RecordChange c = Must(model::ToChange(v));
  c.set_hlc(hlc);
  return c;
}

// Loads `total` visit changes spread over the nation (the target commune gets its share),
// then the target's week: kWeekChanges more, interleaved with as many elsewhere. Returns
// the ms a device at the start of the week takes to catch up.
double Run(int total, const std::string& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const sync::Schema& schema = model::KcnetSchema();
  auto server = Must(sync::ServerStore::Open(dir + "/server.db", &schema,
                                             {.durable = false, .max_batch_mutations = 5000}));
  std::mt19937_64 rng(11);
  sync::HybridClock clock(sync::SystemClock());
  uint64_t seq = 0;
  const sync::Writer loader{"loader", sync::NodeIdFor("loader")};
  auto load = [&](int n, bool week) {
    for (int done = 0; done < n;) {
      v1::MutationBatch batch;
      for (int i = 0; i < 5000 && done < n; ++i, ++done) {
        const int64_t commune =
            week && i % 2 == 0 ? kTarget : static_cast<int64_t>(rng() % kCommunes) + 1;
        auto* m = batch.add_mutations();
        m->set_seq(++seq);
        *m->add_changes() = NewVisit(rng, commune, clock.Now());
      }
      Must(server->Apply(loader, batch));
    }
  };
  load(total, false);
  // The device is up to date at the start of the week.
  auto device =
      Must(sync::DeviceStore::Open(dir + "/device.db", &schema, "tablet", {.durable = true}));
  if (!device->Subscribe(kTarget).ok()) std::exit(1);
  while (true) {
    v1::ChangeBatch page = Must(server->ChangesSince(Must(device->Cursors())));
    Must(device->ApplyDownload(page));
    if (!page.more()) break;
  }
  load(2 * kWeekChanges, true);
  // Measured: pulling the week, median of 5 runs (a copy of the device each time).
  std::vector<double> ms;
  for (int run = 0; run < 5; ++run) {
    const std::string copy = dir + "/device-" + std::to_string(run) + ".db";
    device.reset();
    std::filesystem::copy_file(dir + "/device.db", copy);
    auto d = Must(sync::DeviceStore::Open(copy, &schema, "tablet", {.durable = true}));
    bench::Timer t;
    size_t applied = 0;
    while (true) {
      v1::ChangeBatch page = Must(server->ChangesSince(Must(d->Cursors())));
      applied += Must(d->ApplyDownload(page)).applied;
      if (!page.more()) break;
    }
    ms.push_back(t.Seconds() * 1000);
    if (applied != static_cast<size_t>(kWeekChanges)) {
      std::cerr << "catch_up_bench: pulled " << applied << " changes, expected " << kWeekChanges
                << "\n";
      std::exit(1);
    }
    device = Must(sync::DeviceStore::Open(dir + "/device.db", &schema, "tablet"));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int small = argc > 1 ? std::atoi(argv[1]) : 50000;
  const int large = argc > 2 ? std::atoi(argv[2]) : 5000000;
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-catch-up";
  const double small_ms = Run(small, dir);
  const double large_ms = Run(large, dir);
  kcnet::bench::Emit("catch_up", "catch_up_ms_50k", small_ms, "ms");
  kcnet::bench::Emit("catch_up", "catch_up_ms_5m", large_ms, "ms");
  kcnet::bench::Emit("catch_up", "ratio_5m_vs_50k", large_ms / small_ms, "ratio");
  std::filesystem::remove_all(dir);
  return 0;
}
