// ingest: how many device mutations per second the server applies durably when 50
// tablets push at once over their sync streams.
//
// What it measures and how:
//  - The real kcnet-server binary runs as a child process (--listen=127.0.0.1:0, its log
//    on stderr sent to /dev/null) on a temp data dir that this program seeds before
//    starting it: directory.db through server::Directory (a district of 15 communes, 50
//    collaborators assigned round-robin to them, each signed in there), kcnet.db through
//    sync::ServerStore (10 facilities per commune).
//  - 50 devices, one per collaborator, each a raw sync stream (the generated stub's
//    callback API, not SyncClient: Hello, Welcome, every ChangeBatch acknowledged at once
//    with the cursors it reached, as a device does), each on its own connection as
//    tablets are. Once every stream has its first page, each device pushes
//    MutationBatches of 100 mutations, one batch in flight at a time (as SyncClient does),
//    the next sent as soon as the PushAck arrives, for 10 s. Each mutation creates one
//    visit valid for the rules: by the device's collaborator, in its commune, on a
//    facility of that commune, with a new record id as the SDK makes them (time-ordered,
//    model::NewRecordIdBytes). The server applies the batches through the rules, durably
//    (synchronous=FULL; batches waiting together share one transaction, see
//    ServerStore::Apply), and live-notifies the streams of the commune, which download and
//    acknowledge the new visits: the whole live-sync cost is in it.
//  - mutations_per_s = mutations answered APPLIED in PushAcks received within the 10 s
//    window / 10 s. Any other answer ends the benchmark with an error.
//
// Metrics: mutations_per_s (goal >= 20,000).
//
// Usage: ingest_bench [devices] [seconds] [batch]   (default 50 10 100)
//        KCNET_SERVER_BIN overrides the kcnet-server binary built with this benchmark.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "bench/stream_bench_util.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/directory/directory.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/server_store.h"

#ifndef KCNET_SERVER_BIN
#define KCNET_SERVER_BIN "kcnet-server"
#endif

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

constexpr int kCommunes = 15;
constexpr int kFacilitiesPerCommune = 10;

// CPU seconds (user + system) the process has used, from /proc/PID/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(f.c_str());  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The ingest window, shared by every device.
struct Window {
  std::atomic<bool> running{false};
  absl::Time end;
  std::atomic<int64_t> applied{0};       // APPLIED within the window
  std::atomic<int64_t> applied_late{0};  // APPLIED after it (in flight at its end)
  std::atomic<int64_t> batches{0};
  std::atomic<int64_t> downloaded{0};  // changes received in ChangeBatches
  std::atomic<int> in_flight{0};
};

// One device: builds its next batch of new visits and pushes it when the last is answered.
class Pusher {
 public:
  Pusher(Window* window, int64_t user_id, int64_t commune,
         const std::vector<std::string>& facilities, int batch_size, uint64_t seed)
      : window_(window), batch_size_(batch_size), rng_(seed), clock_(sync::SystemClock()) {
    for (const std::string& facility : facilities) {
      Visit v;
      v.set_id("00000000-0000-4000-8000-000000000000");
      v.set_commune_id(commune);
      v.set_facility_id(facility);
      v.set_collaborator_id(user_id);
      v.set_visited_ms(absl::ToUnixMillis(absl::Now()));
      v.set_latitude(21.02);
      v.set_longitude(105.83);
      v.set_purpose(VISIT_PURPOSE_SURVEY);
      v.set_findings("Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại thấp");
      v.add_needs(SUPPORT_CATEGORY_TRAINING);
      v.add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
      v.set_next_visit_due_ms(v.visited_ms() + 30LL * 86400000);
      templates_.push_back(Must(model::ToChange(v), "ToChange"));
    }
  }

  // Sends the next batch (one at a time: called at start and on each PushAck).
  void PushNext(RawStream* stream) {
    SyncClientMessage message;
    MutationBatch* batch = message.mutable_push();
    batch->set_settled_through(settled_);
    for (int i = 0; i < batch_size_; ++i) {
      Mutation* m = batch->add_mutations();
      m->set_seq(++seq_);
      RecordChange* c = m->add_changes();
      *c = templates_[rng_() % templates_.size()];
      c->set_id(model::NewRecordIdBytes());  // time-ordered, as the SDK makes them
      c->set_hlc(clock_.Now());
    }
    window_->in_flight.fetch_add(1);
    stream->Send(std::move(message));
  }

  void OnMessage(RawStream* stream, const SyncServerMessage& m) {
    if (m.has_changes()) window_->downloaded.fetch_add(m.changes().changes_size());
    if (!m.has_push_ack()) return;
    const PushAck& ack = m.push_ack();
    const bool in_window = absl::Now() <= window_->end;
    int64_t applied = 0;
    for (const MutationResult& r : ack.results()) {
      if (r.outcome() != MUTATION_OUTCOME_APPLIED) {
        Die(absl::StrCat(stream->device_id(), ": mutation ", r.seq(), " answered ",
                         MutationOutcome_Name(r.outcome()), ": ", r.reason()));
      }
      ++applied;
    }
    settled_ = ack.last_applied_seq();
    (in_window ? window_->applied : window_->applied_late).fetch_add(applied);
    window_->batches.fetch_add(1);
    if (window_->running.load() && absl::Now() < window_->end) PushNext(stream);
    window_->in_flight.fetch_sub(1);
  }

 private:
  Window* const window_;
  const int batch_size_;
  std::mt19937_64 rng_;
  sync::HybridClock clock_;
  std::vector<RecordChange> templates_;
  uint64_t seq_ = 0;  // touched by one push at a time
  uint64_t settled_ = 0;
};

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  namespace server = kcnet::server;
  namespace sync = kcnet::sync;
  const int devices = argc > 1 ? std::atoi(argv[1]) : 50;
  const int seconds = argc > 2 ? std::atoi(argv[2]) : 10;
  const int batch_size = argc > 3 ? std::atoi(argv[3]) : 100;
  if (devices <= 0 || devices > 1000 || seconds <= 0 || seconds > 120 || batch_size <= 0 ||
      batch_size > 1000) {
    Die("usage: ingest_bench [devices<=1000] [seconds<=120] [batch<=1000]");
  }
  RaiseFileLimit();
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-ingest";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  // Seed: org units, one collaborator per device (signed in here), facilities.
  std::vector<int64_t> communes;
  std::vector<int64_t> user_ids;
  std::vector<std::string> tokens;
  {
    SeededDistrict seeded = SeedDistrict(dir, kCommunes);
    std::unique_ptr<server::Directory>& d = seeded.directory;
    communes = seeded.communes;
    for (int u = 0; u < devices; ++u) {
      const std::string name = absl::StrCat("ctv", u);
      user_ids.push_back(
          Must(d->CreateUser(name, "Cộng tác viên", kPassword, ROLE_COMMUNE_COLLABORATOR,
                             {communes[static_cast<size_t>(u % kCommunes)]}),
               "create user")
              .id());
      tokens.push_back(Must(d->Login(name, kPassword), "login").token);
    }
  }
  std::map<int64_t, std::vector<std::string>> facilities;  // commune -> facility ids
  {
    auto store = Must(sync::ServerStore::Open(dir + "/kcnet.db", &kcnet::model::KcnetSchema()),
                      "open store");
    std::mt19937_64 rng(5);
    MutationBatch batch;
    uint64_t seq = 0;
    for (int64_t commune : communes) {
      for (int k = 0; k < kFacilitiesPerCommune; ++k) {
        Facility f;
        f.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
        f.set_commune_id(commune);
        f.set_name(absl::StrCat("Cơ sở ", commune, "-", k));
        f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
        f.set_created_by(user_ids[0]);
        facilities[commune].push_back(f.id());
        Mutation* m = batch.add_mutations();
        m->set_seq(++seq);
        RecordChange c = Must(kcnet::model::ToChange(f), "ToChange");
        c.set_hlc(store->clock().Now());
        *m->add_changes() = std::move(c);
      }
    }
    Must(store->Apply(sync::Writer{"", sync::NodeIdFor("seed")}, batch), "seed facilities");
  }

  const Child child = StartServer(dir);
  std::cerr << "ingest_bench: kcnet-server pid " << child.pid << " on port " << child.port << "\n";
  Channels channels(child.port, /*streams_per_channel=*/1);
  ReadyCounter ready;
  Window window;
  std::vector<std::unique_ptr<Pusher>> pushers;
  std::vector<std::unique_ptr<RawStream>> streams;
  for (int u = 0; u < devices; ++u) {
    const int64_t commune = communes[static_cast<size_t>(u % kCommunes)];
    pushers.push_back(std::make_unique<Pusher>(&window, user_ids[static_cast<size_t>(u)], commune,
                                               facilities[commune], batch_size,
                                               static_cast<uint64_t>(u) + 1));
    Pusher* pusher = pushers.back().get();
    auto seen = std::make_shared<std::atomic<bool>>(false);
    streams.push_back(std::make_unique<RawStream>(
        channels.ForStream(u), tokens[static_cast<size_t>(u)], absl::StrCat("tablet-", u),
        [pusher, seen, &ready](RawStream* s, const SyncServerMessage& m) {
          if (m.has_changes() && !seen->exchange(true)) ready.Add();
          pusher->OnMessage(s, m);
        }));
  }
  for (auto& s : streams) s->Start();
  if (!ready.WaitFor(devices, absl::Seconds(30))) {
    Die(absl::StrCat("only ", ready.ready(), " of ", devices, " streams got their first page"));
  }
  window.downloaded.store(0);

  // The window.
  const double cpu_before = CpuSeconds(child.pid);
  rusage self_before{};
  getrusage(RUSAGE_SELF, &self_before);
  window.end = absl::Now() + absl::Seconds(seconds);
  window.running.store(true);
  Timer timer;
  for (int u = 0; u < devices; ++u) {
    pushers[static_cast<size_t>(u)]->PushNext(streams[static_cast<size_t>(u)].get());
  }
  absl::SleepFor(window.end - absl::Now());
  window.running.store(false);
  const double cpu_window = CpuSeconds(child.pid) - cpu_before;
  rusage self_after{};
  getrusage(RUSAGE_SELF, &self_after);
  const double self_cpu =
      static_cast<double>(self_after.ru_utime.tv_sec - self_before.ru_utime.tv_sec +
                          self_after.ru_stime.tv_sec - self_before.ru_stime.tv_sec) +
      static_cast<double>(self_after.ru_utime.tv_usec - self_before.ru_utime.tv_usec +
                          self_after.ru_stime.tv_usec - self_before.ru_stime.tv_usec) /
          1e6;
  const double window_s = timer.Seconds();
  // Let the batches in flight be answered before closing.
  for (int i = 0; i < 300 && window.in_flight.load() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  for (const auto& s : streams) {
    if (s->ended()) Die("stream " + s->device_id() + " ended: " + s->status().error_message());
  }
  std::cerr << "ingest_bench: " << window.applied.load() << " mutations applied in " << window_s
            << " s (" << window.batches.load() << " batches of " << batch_size << ", "
            << window.applied_late.load() << " more answered after the window); "
            << window.downloaded.load() << " changes downloaded by the devices; server CPU "
            << cpu_window << " s, client CPU " << self_cpu << " s\n";
  Emit("ingest", "mutations_per_s", static_cast<double>(window.applied.load()) / seconds,
       "mutations/s");

  CloseAll(streams);
  streams.clear();
  StopServer(child);
  std::filesystem::remove_all(dir);
  return 0;
}
