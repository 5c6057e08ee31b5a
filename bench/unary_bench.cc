// unary: a real kcnet-server (in process, real port, real channels) on a temp data dir.
//  - create_visit_per_s: CreateVisit calls per second from 16 concurrent clients, each a
//    durable write through the sync core's merge (synchronous=FULL);
//  - list_p99_ms: p99 latency of ListVisits (page of 50) over a district that holds
//    100,000 visits in 15 communes.
//
// Usage: unary_bench [visits] [seconds]   (default 100000 5)
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

void Die(const std::string& what) {
  std::cerr << "unary_bench: " << what << "\n";
  std::exit(1);
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  const int visits = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int seconds = argc > 2 ? std::atoi(argv[2]) : 5;
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-unary";
  std::filesystem::remove_all(dir);
  kcnet::server::ServerOptions options;
  options.data_dir = dir;
  options.listen = "127.0.0.1:0";
  options.directory.password_ops_limit = kcnet::server::kArgon2OpsLimitMin;
  options.directory.password_mem_limit = kcnet::server::kArgon2MemLimitMin;
  auto server = kcnet::server::KcnetServer::Start(options);
  if (!server.ok()) Die(server.status().ToString());
  kcnet::server::Directory* d = (*server)->directory();
  auto province = *d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0);
  auto district = *d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province.id());
  std::vector<int64_t> communes;
  for (int i = 0; i < 15; ++i) {
    communes.push_back(d->CreateOrgUnit(absl::StrCat(90100 + i), absl::StrCat("Xã ", i),
                                        ORG_UNIT_LEVEL_COMMUNE, district.id())
                           ->id());
  }
  auto coordinator = d->CreateUser("coord", "Coordinator", "password-123",
                                   ROLE_DISTRICT_COORDINATOR, {district.id()});
  if (!coordinator.ok()) Die(coordinator.status().ToString());

  // Facilities and 100,000 visits, loaded straight into the store (what is measured below
  // is the service, not this loading).
  kcnet::sync::ServerStore* store = (*server)->store();
  std::mt19937_64 rng(7);
  std::vector<std::string> facility_ids;
  const kcnet::sync::Writer loader{"loader", kcnet::sync::NodeIdFor("loader")};
  uint64_t seq = 0;
  {
    MutationBatch batch;
    for (int64_t commune : communes) {
      Facility f;
      f.set_id(*kcnet::sync::UuidToText(RandomUuidBytes(rng)));
      f.set_commune_id(commune);
      f.set_name("Cơ sở");
      f.set_created_by(coordinator->id());
      facility_ids.push_back(f.id());
      auto* m = batch.add_mutations();
      m->set_seq(++seq);
      auto change = *kcnet::model::ToChange(f);
      change.set_hlc(store->clock().Now());
      *m->add_changes() = change;
    }
    if (!store->Apply(loader, batch).ok()) Die("load facilities");
  }
  for (int done = 0; done < visits;) {
    MutationBatch batch;
    for (int i = 0; i < 1000 && done < visits; ++i, ++done) {
      const size_t k = rng() % communes.size();
      Visit v;
      v.set_id(*kcnet::sync::UuidToText(RandomUuidBytes(rng)));
      v.set_commune_id(communes[k]);
      v.set_facility_id(facility_ids[k]);
      v.set_collaborator_id(coordinator->id());
      v.set_visited_ms(1764000000000 + done);
      v.set_purpose(VISIT_PURPOSE_SURVEY);
      v.set_findings("Khảo sát nhu cầu hỗ trợ");
      auto* m = batch.add_mutations();
      m->set_seq(++seq);
      auto change = *kcnet::model::ToChange(v);
      change.set_hlc(store->clock().Now());
      *m->add_changes() = change;
    }
    auto ack = store->Apply(loader, batch);
    if (!ack.ok()) Die(ack.status().ToString());
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
    if (!AuthService::NewStub(channel)->Login(&ctx, req, &resp).ok()) Die("login");
    token = resp.token();
  }

  // list_p99_ms
  {
    auto stub = VisitService::NewStub(channel);
    std::vector<double> ms;
    for (int i = 0; i < 300; ++i) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + token);
      ListVisitsRequest req;
      req.set_org_unit_id(district.id());
      req.set_page_size(50);
      ListVisitsResponse resp;
      Timer t;
      grpc::Status s = stub->ListVisits(&ctx, req, &resp);
      ms.push_back(t.Seconds() * 1000);
      if (!s.ok() || resp.visits_size() != 50) Die("ListVisits: " + s.error_message());
    }
    std::sort(ms.begin(), ms.end());
    Emit("unary", "list_p99_ms", ms[ms.size() * 99 / 100], "ms");
    Emit("unary", "list_p50_ms", ms[ms.size() / 2], "ms");
  }

  // create_visit_per_s
  {
    std::atomic<int64_t> created{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < 16; ++c) {
      clients.emplace_back([&, c] {
        auto stub = VisitService::NewStub(channel);
        while (!stop.load()) {
          grpc::ClientContext ctx;
          ctx.AddMetadata("authorization", "Bearer " + token);
          CreateVisitRequest req;
          req.mutable_visit()->set_facility_id(facility_ids[c % facility_ids.size()]);
          req.mutable_visit()->set_purpose(VISIT_PURPOSE_FOLLOW_UP);
          req.mutable_visit()->set_findings("Theo dõi");
          Visit out;
          grpc::Status s = stub->CreateVisit(&ctx, req, &out);
          if (!s.ok()) Die("CreateVisit: " + s.error_message());
          created.fetch_add(1);
        }
      });
    }
    Timer t;
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop.store(true);
    for (auto& th : clients) th.join();
    Emit("unary", "create_visit_per_s", created.load() / t.Seconds(), "calls/s");
  }
  (*server)->Shutdown(absl::Seconds(2));
  server->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
