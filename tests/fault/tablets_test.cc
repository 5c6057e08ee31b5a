// fault_tablets_test (issue 14): twenty tablets in the field against one real server.
//
// A KcnetServer on 127.0.0.1 (port 0, real SQLite files) and 20 tablets, each a
// kcnet::sdk::Client on its own store file with its own wrong clock: a random offset in
// [-2 days, +2 days] (ClientOptions::clock; the server re-stamps a clock too far ahead).
// Four driver threads each drive five tablets through random steps:
//   - write offline: register a facility whose name is a unique marker, or edit the
//     workers of one this user registered on this tablet;
//   - sync (SyncNow);
//   - close while a sync runs (the sync on another thread), then reopen;
//   - close and reopen; a tablet running the previous release of the app (every fifth:
//     model::PreviousKcnetSchema(), schema N-1) is upgraded at such a reopen (today's
//     schema: what it kept unknown is folded into its columns);
//   - on a shared tablet (every third): upload first, then sign in as another user (the
//     SDK signs the previous one out: device released, credential revoked, data purged);
//     or upload first, sign out (online, or out of coverage: then the release and
//     revocation are owed to the next connection), and sign in (the same or the other user).
// At the end every tablet signs in if needed and syncs until nothing is pending, then all
// sync once more, and the test checks:
//   - every write the SDK accepted is on the server exactly once (its marker counted among
//     the server's facilities), and no marker is there twice;
//   - every store converges: each bucket the tablet holds has the server's checksum and
//     record count, and nothing is left to upload.
//
// Reproduce with KCNET_FAULT_SEED=N (printed at the start and with every failure); the
// decisions of each tablet follow from the seed (the interleaving of the four threads
// does not). KCNET_FAULT_STEPS sets the steps per tablet (default 100).
//
// Reopening is one function, Reopen(): it opens an old-app tablet with schema N-1.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet {
namespace {

using kcnet::sdk::Client;
using kcnet::sdk::ClientOptions;
using kcnet::v1::Facility;

constexpr int kTablets = 20;
constexpr int kThreads = 4;  // each drives kTablets / kThreads tablets
constexpr int kUsers = 8;    // collaborators ctv_0 .. ctv_7, ctv_i in commune i % kCommunes
constexpr int kCommunes = 4;
constexpr char kPassword[] = "mat-khau-thu-nghiem";
constexpr char kMarkerPrefix[] = "Cơ sở F";  // + tablet "-" number: unique per write
constexpr int64_t kTwoDaysMs = 2LL * 24 * 60 * 60 * 1000;

// The system clock plus a fixed offset: a tablet whose date is wrong.
class OffsetClock : public sync::Clock {
 public:
  explicit OffsetClock(int64_t offset_ms) : offset_ms_(offset_ms) {}
  int64_t NowMs() override { return sync::SystemClock()->NowMs() + offset_ms_; }

 private:
  const int64_t offset_ms_;
};

uint64_t SeedFromEnvironment() {
  uint64_t seed = 0;
  const char* text = std::getenv("KCNET_FAULT_SEED");
  if (text != nullptr && absl::SimpleAtoi(text, &seed)) return seed;
  return std::random_device{}();
}

int StepsFromEnvironment() {
  int steps = 0;
  const char* text = std::getenv("KCNET_FAULT_STEPS");
  if (text != nullptr && absl::SimpleAtoi(text, &steps) && steps > 0) return steps;
  return 100;
}

std::string UserName(int user) { return absl::StrCat("ctv_", user); }

struct Tablet {
  int index = 0;
  std::string device_id;
  std::string path;
  std::unique_ptr<OffsetClock> clock;
  std::unique_ptr<Client> client;  // null while closed
  int home_user = 0;               // who uses it first; the other user of a shared tablet
  int other_user = 0;
  bool shared = false;
  bool old_app = false;          // runs schema N-1 until upgraded mid-run
  int user = -1;                 // signed in (-1: nobody)
  std::vector<std::string> own;  // facility ids this user registered here (for edits)
  int written = 0;               // markers made on this tablet so far
  std::mt19937_64 rng;
};

class TabletsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = SeedFromEnvironment();
    steps_ = StepsFromEnvironment();
    std::printf("fault_tablets_test: KCNET_FAULT_SEED=%llu KCNET_FAULT_STEPS=%d\n",
                static_cast<unsigned long long>(seed_), steps_);
    server::ServerOptions options = testing::TestServerOptions(dir_.File("server"));
    options.sign_in.per_peer.burst = 0;  // 20 tablets behind one address sign in often
    options.sign_in.per_user.burst = 0;
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    server::Directory* d = server_->directory();
    const int64_t province =
        d->CreateOrgUnit("90", "Tỉnh Thử", v1::ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t district =
        d->CreateOrgUnit("901", "Huyện Thử", v1::ORG_UNIT_LEVEL_DISTRICT, province)->id();
    for (int c = 0; c < kCommunes; ++c) {
      communes_.push_back(d->CreateOrgUnit(absl::StrCat("9010", c + 1), absl::StrCat("Xã ", c + 1),
                                           v1::ORG_UNIT_LEVEL_COMMUNE, district)
                              ->id());
    }
    for (int u = 0; u < kUsers; ++u) {
      ASSERT_TRUE(d->CreateUser(UserName(u), UserName(u), kPassword, v1::ROLE_COMMUNE_COLLABORATOR,
                                {communes_[u % kCommunes]})
                      .ok());
    }
    std::mt19937_64 rng(seed_);
    std::uniform_int_distribution<int64_t> offset(-kTwoDaysMs, kTwoDaysMs);
    for (int i = 0; i < kTablets; ++i) {
      auto t = std::make_unique<Tablet>();
      t->index = i;
      t->device_id = absl::StrCat("tab-", i);
      t->path = dir_.File(absl::StrCat("tab-", i, ".db"));
      t->clock = std::make_unique<OffsetClock>(offset(rng));
      t->home_user = i % kUsers;
      t->other_user = (i + 3) % kUsers;
      t->shared = i % 3 == 0;
      t->old_app = i % 5 == 2;
      t->rng.seed(seed_ * 1000003 + static_cast<uint64_t>(i));
      tablets_.push_back(std::move(t));
    }
  }

  void TearDown() override {
    for (auto& t : tablets_) t->client.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  // Every failure says how to reproduce it.
  std::string Where(const Tablet& t) const {
    return absl::StrCat("tablet ", t.index, " (clock ",
                        t.clock->NowMs() - absl::ToUnixMillis(absl::Now()), " ms off, user ",
                        t.user, "), KCNET_FAULT_SEED=", seed_);
  }

  // Opens the tablet's store again (after a close); `offline`: out of coverage (its
  // server address has nothing listening). The one place a tablet is opened: an old-app
  // tablet with the previous release's schema.
  absl::Status Reopen(Tablet& t, bool offline = false) {
    t.client.reset();
    ClientOptions o;
    o.path = t.path;
    o.device_id = t.device_id;
    o.server_address = offline ? "127.0.0.1:1" : address_;
    o.durable = false;
    o.sync_timeout = absl::Seconds(20);
    o.seed = seed_ + static_cast<uint64_t>(t.index);
    o.clock = t.clock.get();
    o.schema = t.old_app ? &model::PreviousKcnetSchema() : nullptr;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(o);
    if (!client.ok()) return client.status();
    t.client = *std::move(client);
    return absl::OkStatus();
  }

  absl::Status SignIn(Tablet& t, int user) {
    absl::Status status = t.client->SignIn(UserName(user), kPassword);
    if (!status.ok()) return status;
    if (t.user != user) t.own.clear();  // a switch purged the previous user's records
    t.user = user;
    return absl::OkStatus();
  }

  // Syncs until nothing waits for upload (a few attempts).
  absl::Status Upload(Tablet& t) {
    absl::Status status;
    for (int attempt = 0; attempt < 5; ++attempt) {
      status = t.client->SyncNow().status();
      if (status.ok() && t.client->Status().pending_uploads == 0) return absl::OkStatus();
    }
    return status.ok() ? absl::InternalError(absl::StrCat(t.client->Status().pending_uploads,
                                                          " still pending after 5 syncs"))
                       : status;
  }

  void Write(Tablet& t) {
    std::bernoulli_distribution edit(0.3);
    if (!t.own.empty() && edit(t.rng)) {
      std::uniform_int_distribution<size_t> pick(0, t.own.size() - 1);
      absl::StatusOr<Facility> f = t.client->GetFacility(t.own[pick(t.rng)]);
      ASSERT_TRUE(f.ok()) << f.status() << "; " << Where(t);
      f->set_workers(static_cast<int32_t>(t.rng() % 500));
      absl::StatusOr<Facility> updated = t.client->UpdateFacility(*f, {"workers"});
      ASSERT_TRUE(updated.ok()) << updated.status() << "; " << Where(t);
      ++edits_;
      return;
    }
    Facility f;
    f.set_commune_id(communes_[t.user % kCommunes]);
    f.set_name(absl::StrCat(kMarkerPrefix, t.index, "-", ++t.written));
    f.set_owner_name("Nguyễn Văn An");
    f.set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(v1::SECTOR_HANDICRAFTS);
    f.set_latitude(21.03);
    f.set_longitude(105.85);
    f.set_workers(12);
    absl::StatusOr<Facility> made = t.client->RegisterFacility(f);
    ASSERT_TRUE(made.ok()) << made.status() << "; " << Where(t);
    t.own.push_back(made->id());
    absl::MutexLock lock(&mu_);
    accepted_.insert(f.name());
  }

  // A sync on another thread, and the tablet closed while it runs; then reopened.
  void CloseWhileSyncing(Tablet& t) {
    std::atomic<bool> started{false};
    absl::Status synced;
    std::thread sync([&] {
      started = true;
      synced = t.client->SyncNow().status();
    });
    while (!started) absl::SleepFor(absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(static_cast<int64_t>(t.rng() % 30)));
    const absl::Time start = absl::Now();
    ASSERT_TRUE(t.client->Close().ok()) << Where(t);
    sync.join();
    ++closes_mid_sync_;
    if (absl::IsCancelled(synced)) ++cancelled_;
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "Close is prompt; " << Where(t);
    // Done before the close, cancelled by it, or refused after it.
    EXPECT_TRUE(synced.ok() || absl::IsCancelled(synced) || absl::IsFailedPrecondition(synced))
        << synced << "; " << Where(t);
    t.client.reset();
    ASSERT_TRUE(Reopen(t).ok()) << Where(t);
  }

  void Step(Tablet& t) {
    if (t.client == nullptr) {
      ASSERT_TRUE(Reopen(t).ok()) << Where(t);
    }
    if (t.user < 0) {
      absl::Status status = SignIn(t, t.home_user);
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
    }
    const int roll = static_cast<int>(t.rng() % 100);
    if (roll < 50) {
      Write(t);
    } else if (roll < 72) {
      absl::Status status = t.client->SyncNow().status();
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
      ++syncs_;
    } else if (roll < 80) {
      CloseWhileSyncing(t);
    } else if (roll < 85) {
      t.client.reset();  // closed with whatever is pending; reopened now
      if (t.old_app && t.rng() % 2 == 0) {
        t.old_app = false;  // the app store updated it: today's schema from now on
        ++upgrades_;
      }
      ASSERT_TRUE(Reopen(t).ok()) << Where(t);
      ++reopens_;
    } else if (t.shared && roll < 93) {
      // Upload first, then the other user signs in (the SDK signs this one out first).
      absl::Status status = Upload(t);
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
      const int next = t.user == t.home_user ? t.other_user : t.home_user;
      status = SignIn(t, next);
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
      EXPECT_EQ(t.client->Status().pending_uploads, 0) << Where(t);
      ++switches_;
    } else if (t.shared) {
      // Upload first, sign out (release, revoke, purge), and sign in again. Half of the
      // sign-outs happen out of coverage: the release and revocation are then owed and
      // sent by the next sign-in.
      absl::Status status = Upload(t);
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
      const bool offline = t.rng() % 2 == 0;
      if (offline) {
        ASSERT_TRUE(Reopen(t, /*offline=*/true).ok()) << Where(t);
      }
      status = t.client->SignOut();
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
      t.user = -1;
      t.own.clear();
      ++sign_outs_;
      if (offline) {
        ++offline_sign_outs_;
        ASSERT_TRUE(Reopen(t).ok()) << Where(t);
      }
      status = SignIn(t, t.rng() % 2 == 0 ? t.home_user : t.other_user);
      ASSERT_TRUE(status.ok()) << status << "; " << Where(t);
    }
  }

  void Drive(int thread) {
    std::vector<Tablet*> mine;
    for (int i = thread; i < kTablets; i += kThreads) mine.push_back(tablets_[i].get());
    std::mt19937_64 order(seed_ + 77 + static_cast<uint64_t>(thread));
    for (int n = 0; n < steps_ * static_cast<int>(mine.size()); ++n) {
      Tablet& t = *mine[order() % mine.size()];
      Step(t);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  // Facilities of our markers on the server: name -> how many records carry it.
  std::map<std::string, int> ServerMarkers() {
    std::map<std::string, int> counts;
    sync::ListQuery query;
    query.type = model::kFacilityType;
    query.buckets = communes_;
    query.newest_first = false;
    query.limit = 500;
    while (true) {
      absl::StatusOr<std::vector<v1::RecordChange>> page = server_->store()->List(query);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok() || page->empty()) break;
      for (const v1::RecordChange& change : *page) {
        Facility f;
        EXPECT_TRUE(model::FromChange(change, &f).ok());
        if (absl::StartsWith(f.name(), kMarkerPrefix)) ++counts[f.name()];
        query.after = change.op();
      }
    }
    return counts;
  }

  testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
  std::string address_;
  std::vector<int64_t> communes_;
  std::vector<std::unique_ptr<Tablet>> tablets_;
  uint64_t seed_ = 0;
  int steps_ = 0;
  absl::Mutex mu_;
  std::set<std::string> accepted_ ABSL_GUARDED_BY(mu_);  // markers of accepted writes
  // What the run did (printed at the end, to see that it exercised each path).
  std::atomic<int> syncs_{0}, edits_{0}, closes_mid_sync_{0}, cancelled_{0}, reopens_{0},
      switches_{0}, sign_outs_{0}, offline_sign_outs_{0}, upgrades_{0};
};

TEST_F(TabletsTest, EveryAcceptedWriteLandsOnceAndEveryStoreConverges) {
  std::vector<std::thread> drivers;
  for (int i = 0; i < kThreads; ++i) drivers.emplace_back([this, i] { Drive(i); });
  for (std::thread& d : drivers) d.join();
  ASSERT_FALSE(HasFailure()) << "KCNET_FAULT_SEED=" << seed_;

  // Back in coverage: everyone signed in uploads, then everyone downloads everyone's.
  for (auto& t : tablets_) {
    if (t->client == nullptr) {
      ASSERT_TRUE(Reopen(*t).ok()) << Where(*t);
    }
    if (t->user < 0) {
      ASSERT_TRUE(SignIn(*t, t->home_user).ok()) << Where(*t);
    }
    absl::Status status = Upload(*t);
    ASSERT_TRUE(status.ok()) << status << "; " << Where(*t);
  }
  for (auto& t : tablets_) {
    absl::Status status = t->client->SyncNow().status();
    ASSERT_TRUE(status.ok()) << status << "; " << Where(*t);
  }

  std::set<std::string> accepted;
  {
    absl::MutexLock lock(&mu_);
    accepted = accepted_;
  }
  const std::map<std::string, int> on_server = ServerMarkers();
  int lost = 0, doubled = 0;
  for (const std::string& marker : accepted) {
    auto found = on_server.find(marker);
    if (found == on_server.end()) {
      ++lost;
      ADD_FAILURE() << "lost: " << marker << "; KCNET_FAULT_SEED=" << seed_;
    } else if (found->second != 1) {
      ++doubled;
      ADD_FAILURE() << marker << " is on the server " << found->second
                    << " times; KCNET_FAULT_SEED=" << seed_;
    }
  }
  for (const auto& [marker, count] : on_server) {
    EXPECT_TRUE(accepted.contains(marker))
        << marker
        << " is on the server but no write of it was accepted; KCNET_FAULT_SEED=" << seed_;
  }
  EXPECT_GT(accepted.size(), 0u);

  int buckets = 0;
  for (auto& t : tablets_) {
    const sdk::SyncStatus status = t->client->Status();
    EXPECT_EQ(status.pending_uploads, 0) << Where(*t);
    // The tablet's wrong clock is what the server saw (the seam reached the store).
    ASSERT_TRUE(status.clock_skew.has_value()) << Where(*t);
    const int64_t offset = t->clock->NowMs() - sync::SystemClock()->NowMs();
    EXPECT_LT(absl::AbsDuration(*status.clock_skew - absl::Milliseconds(offset)), absl::Minutes(1))
        << Where(*t);
    absl::StatusOr<std::vector<v1::BucketCheckpoint>> mine = t->client->Checkpoints();
    ASSERT_TRUE(mine.ok()) << mine.status() << "; " << Where(*t);
    EXPECT_EQ(mine->size(), 1u) << "one commune per user; " << Where(*t);
    for (const v1::BucketCheckpoint& cp : *mine) {
      EXPECT_EQ(cp.bucket(), communes_[t->user % kCommunes]) << Where(*t);
      absl::StatusOr<v1::BucketCheckpoint> server = server_->store()->Checkpoint(cp.bucket());
      ASSERT_TRUE(server.ok()) << server.status();
      EXPECT_EQ(cp.checksum(), server->checksum()) << "bucket " << cp.bucket() << "; " << Where(*t);
      EXPECT_EQ(cp.records(), server->records()) << "bucket " << cp.bucket() << "; " << Where(*t);
      ++buckets;
    }
  }
  std::printf(
      "fault_tablets_test: %zu accepted writes (and %d edits), %d syncs, %d closes during a "
      "sync (%d cancelled it), %d reopens, %d upgrades from schema N-1, %d user switches, %d "
      "sign-outs (%d offline); %zu "
      "markers on the "
      "server, %d lost, %d doubled, %d buckets compared; KCNET_FAULT_SEED=%llu\n",
      accepted.size(), edits_.load(), syncs_.load(), closes_mid_sync_.load(), cancelled_.load(),
      reopens_.load(), upgrades_.load(), switches_.load(), sign_outs_.load(),
      offline_sign_outs_.load(), on_server.size(), lost, doubled, buckets,
      static_cast<unsigned long long>(seed_));
}

}  // namespace
}  // namespace kcnet
