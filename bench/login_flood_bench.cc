// login_flood: what a flood of bad sign-ins costs everyone else. A real kcnet-server (in
// process, real port, real channels, production Argon2id cost) on a temp data dir; a
// coordinator lists facilities (ListFacilities, page of 50 over 500 facilities) one call
// after another, first alone, then while 200 Login calls per second with wrong passwords
// arrive (from one peer, for random and real usernames).
//  - p99_ms_quiet, p99_ms_flood: p99 latency of ListFacilities without and with the flood;
//  - p99_ratio: flood / quiet (goal <= 2);
//  - flood_refused_share: the share of flood calls answered RESOURCE_EXHAUSTED (rate limit
//    or a full sign-in queue) rather than hashed;
//  - the same three with the sign-in rate limits off ("_no_rate_limit"), where only the
//    sign-in pool's own threads and bounded queue stand between the flood and the RPCs.
//
// Usage: login_flood_bench [calls] [logins_per_s]   (default 2000 200)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

void Die(const std::string& what) {
  std::cerr << "login_flood_bench: " << what << "\n";
  std::exit(1);
}

struct Figures {
  double quiet_p99_ms = 0;
  double flood_p99_ms = 0;
  double refused_share = 0;
};

double P99(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
}

// Lists `calls` times, one call after another; the latencies in ms.
std::vector<double> ListMany(const std::shared_ptr<grpc::Channel>& channel,
                             const std::string& token, int calls) {
  auto stub = FacilityService::NewStub(channel);
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ListFacilitiesRequest req;
    req.set_page_size(50);
    ListFacilitiesResponse resp;
    Timer t;
    grpc::Status s = stub->ListFacilities(&ctx, req, &resp);
    ms.push_back(t.Seconds() * 1000);
    if (!s.ok() || resp.facilities_size() != 50) Die("ListFacilities: " + s.error_message());
  }
  return ms;
}

Figures Run(bool rate_limits, int calls, int logins_per_s) {
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-login-flood";
  std::filesystem::remove_all(dir);
  kcnet::server::ServerOptions options;
  options.data_dir = dir;
  options.listen = "127.0.0.1:0";
  options.log_sink = [](absl::string_view) {};
  if (!rate_limits) {
    options.sign_in.per_peer.burst = 0;
    options.sign_in.per_user.burst = 0;
  }
  // Production Argon2id cost: the flood is expensive only because hashing is.
  auto server = kcnet::server::KcnetServer::Start(options);
  if (!server.ok()) Die(server.status().ToString());
  kcnet::server::Directory* d = (*server)->directory();
  auto province = *d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0);
  auto district = *d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province.id());
  auto commune = *d->CreateOrgUnit("90101", "Xã", ORG_UNIT_LEVEL_COMMUNE, district.id());
  auto coordinator = d->CreateUser("coord", "Coordinator", "password-123",
                                   ROLE_DISTRICT_COORDINATOR, {district.id()});
  if (!coordinator.ok()) Die(coordinator.status().ToString());
  kcnet::sync::ServerStore* store = (*server)->store();
  std::mt19937_64 rng(7);
  {
    MutationBatch batch;
    for (int i = 0; i < 500; ++i) {
      Facility f;
      f.set_id(*kcnet::sync::UuidToText(RandomUuidBytes(rng)));
      f.set_commune_id(commune.id());
      f.set_name(absl::StrCat("Cơ sở ", i));
      f.set_created_by(coordinator->id());
      auto* m = batch.add_mutations();
      m->set_seq(static_cast<uint64_t>(i + 1));
      auto change = *kcnet::model::ToChange(f);
      change.set_hlc(store->clock().Now());
      *m->add_changes() = change;
    }
    if (!store->Apply(kcnet::sync::Writer{"loader", kcnet::sync::NodeIdFor("loader")}, batch)
             .ok()) {
      Die("load facilities");
    }
  }
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  std::string token;
  {
    grpc::ClientContext ctx;
    LoginRequest req;
    req.set_username("coord");
    req.set_password("password-123");
    LoginResponse resp;
    grpc::Status s = AuthService::NewStub(channel)->Login(&ctx, req, &resp);
    if (!s.ok()) Die("login: " + s.error_message());
    token = resp.token();
  }
  ListMany(channel, token, 300);  // warm up (caches, allocator, the WAL after loading)
  Figures figures;
  figures.quiet_p99_ms = P99(ListMany(channel, token, calls));

  // The flood: Login calls at a steady rate on their own channel, answered asynchronously.
  auto flood_channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                           grpc::InsecureChannelCredentials());
  auto auth = AuthService::NewStub(flood_channel);
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  int64_t sent = 0, answered = 0, refused = 0;
  std::thread flood([&] {
    const auto interval = std::chrono::microseconds(1000000 / logins_per_s);
    auto next = std::chrono::steady_clock::now();
    for (int64_t n = 0; !stop.load(); ++n) {
      struct Call {
        grpc::ClientContext ctx;
        LoginRequest req;
        LoginResponse resp;
      };
      auto* call = new Call;
      call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      call->req.set_username(n % 4 == 0 ? "coord" : absl::StrCat("guess", n));
      call->req.set_password(absl::StrCat("wrong-", n));
      {
        absl::MutexLock lock(&mu);
        ++sent;
      }
      auth->async()->Login(&call->ctx, &call->req, &call->resp, [&, call](grpc::Status s) {
        absl::MutexLock lock(&mu);
        ++answered;
        if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
        delete call;
      });
      next += interval;
      std::this_thread::sleep_until(next);
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));  // let the flood build up
  figures.flood_p99_ms = P99(ListMany(channel, token, calls));
  stop.store(true);
  flood.join();
  for (bool done = false; !done;) {  // every flood call answered before the server goes
    {
      absl::MutexLock lock(&mu);
      done = answered == sent;
      figures.refused_share = sent > 0 ? static_cast<double>(refused) / sent : 0;
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  (*server)->Shutdown(absl::Seconds(5));
  server->reset();
  std::filesystem::remove_all(dir);
  return figures;
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  const int calls = argc > 1 ? std::atoi(argv[1]) : 2000;
  const int logins_per_s = argc > 2 ? std::atoi(argv[2]) : 200;
  // A first server in the process answers its first few hundred calls slower whatever
  // happens (measured: p99 ~5 ms instead of ~0.5 ms, flood or not): one short run is
  // thrown away so that both measured runs start warm.
  Run(true, 100, logins_per_s);
  for (bool limits : {true, false}) {
    const Figures f = Run(limits, calls, logins_per_s);
    const std::string suffix = limits ? "" : "_no_rate_limit";
    Emit("login_flood", "p99_ms_quiet" + suffix, f.quiet_p99_ms, "ms");
    Emit("login_flood", "p99_ms_flood" + suffix, f.flood_p99_ms, "ms");
    Emit("login_flood", "p99_ratio" + suffix, f.flood_p99_ms / f.quiet_p99_ms, "ratio");
    Emit("login_flood", "flood_refused_share" + suffix, f.refused_share, "share");
  }
  return 0;
}
