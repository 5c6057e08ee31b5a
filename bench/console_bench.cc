// console: the console's HTTP bridge against gRPC, same server, same run. A real
// kcnet-server in process (gRPC and the bridge on ports 0) holds 1,000 facilities in one
// district; a district coordinator lists them a page of 50 at a time, alternately over
// gRPC (a kept channel) and through the bridge (HTTP/1.1 keep-alive, JSON, the cookie
// from /auth/sign-in), as the console would.
//  - bridge_p50_ratio: p50 latency through the bridge / p50 over gRPC (goal <= 1.5);
//  - bridge_p50_ms, grpc_p50_ms: the two p50s;
//  - bridge_small_p50_ratio: the same ratio for WhoAmI (a tiny answer: the fixed cost).
// The browser figures of bench `console` (first load, search, map, XLSX) come from the
// console's own tests in console/.
//
// Usage: console_bench [calls]   (default 1000 of each)
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"

namespace {

using namespace kcnet::v1;  // NOLINT

void Die(const std::string& what) {
  std::cerr << "console_bench: " << what << "\n";
  std::exit(1);
}

double P50(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using kcnet::bench::Emit;
  using kcnet::bench::Timer;
  const int calls = argc > 1 ? std::atoi(argv[1]) : 1000;
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-console";
  std::filesystem::remove_all(dir);
  kcnet::server::ServerOptions options;
  options.data_dir = dir;
  options.listen = "127.0.0.1:0";
  options.http_listen = "127.0.0.1:0";
  options.directory.password_ops_limit = kcnet::server::kArgon2OpsLimitMin;
  options.directory.password_mem_limit = kcnet::server::kArgon2MemLimitMin;
  options.log_sink = [](absl::string_view) {};
  auto server = kcnet::server::KcnetServer::Start(options);
  if (!server.ok()) Die(server.status().ToString());
  kcnet::server::Directory* d = (*server)->directory();
  auto province = *d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0);
  auto district = *d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province.id());
  auto commune = *d->CreateOrgUnit("90101", "Xã", ORG_UNIT_LEVEL_COMMUNE, district.id());
  if (!d->CreateUser("coord", "Điều phối", "password-123", ROLE_DISTRICT_COORDINATOR,
                     {district.id()})
           .ok()) {
    Die("create user");
  }

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  std::string token;
  {
    grpc::ClientContext context;
    LoginRequest request;
    request.set_username("coord");
    request.set_password("password-123");
    LoginResponse response;
    if (!AuthService::NewStub(channel)->Login(&context, request, &response).ok()) Die("login");
    token = response.token();
  }
  auto facilities = FacilityService::NewStub(channel);
  for (int i = 0; i < 1000; ++i) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    CreateFacilityRequest request;
    request.mutable_facility()->set_commune_id(commune.id());
    request.mutable_facility()->set_name(absl::StrCat("Cơ sở mây tre đan số ", i));
    request.mutable_facility()->set_owner_name("Nguyễn Văn An");
    request.mutable_facility()->set_address("Thôn Đông, xã Phú Vinh");
    request.mutable_facility()->set_latitude(20.9 + i * 1e-4);
    request.mutable_facility()->set_longitude(105.7 + i * 1e-4);
    request.mutable_facility()->set_workers(12);
    Facility out;
    const grpc::Status status = facilities->CreateFacility(&context, request, &out);
    if (!status.ok()) Die("CreateFacility: " + status.error_message());
  }

  httplib::Client http("127.0.0.1", (*server)->http_port());
  http.set_keep_alive(true);
  http.set_tcp_nodelay(true);  // as browsers do
  http.set_decompress(false);
  const std::string origin = absl::StrCat("http://127.0.0.1:", (*server)->http_port());
  std::string cookie;
  {
    auto result =
        http.Post("/auth/sign-in", {{"Connect-Protocol-Version", "1"}, {"Origin", origin}},
                  R"({"username":"coord","password":"password-123"})", "application/json");
    if (!result || result->status != 200) Die("bridge sign-in");
    const std::string set_cookie = result->get_header_value("Set-Cookie");
    cookie = set_cookie.substr(0, set_cookie.find(';'));
  }
  const httplib::Headers headers = {
      {"Connect-Protocol-Version", "1"}, {"Origin", origin}, {"Cookie", cookie}};
  const std::string body = absl::StrCat(R"({"orgUnitId":")", district.id(), R"(","pageSize":50})");

  std::vector<double> grpc_ms, bridge_ms;
  for (int i = 0; i < calls + 50; ++i) {  // the first 50 of each warm up
    {
      grpc::ClientContext context;
      context.AddMetadata("authorization", "Bearer " + token);
      ListFacilitiesRequest request;
      request.set_org_unit_id(district.id());
      request.set_page_size(50);
      ListFacilitiesResponse response;
      Timer timer;
      const grpc::Status status = facilities->ListFacilities(&context, request, &response);
      const double ms = timer.Seconds() * 1000;
      if (!status.ok() || response.facilities_size() != 50) Die("gRPC ListFacilities");
      if (i >= 50) grpc_ms.push_back(ms);
    }
    {
      Timer timer;
      auto result =
          http.Post("/kcnet.v1.FacilityService/ListFacilities", headers, body, "application/json");
      const double ms = timer.Seconds() * 1000;
      if (!result || result->status != 200 || !absl::StrContains(result->body, "nextPageToken")) {
        Die(absl::StrCat("bridge ListFacilities: ", result ? result->body : "no answer"));
      }
      if (i >= 50) bridge_ms.push_back(ms);
    }
  }
  // The same for a call with a tiny answer (WhoAmI): the bridge's fixed cost.
  std::vector<double> grpc_small_ms, bridge_small_ms;
  auto auth = AuthService::NewStub(channel);
  for (int i = 0; i < calls + 50; ++i) {
    {
      grpc::ClientContext context;
      context.AddMetadata("authorization", "Bearer " + token);
      WhoAmIResponse response;
      Timer timer;
      const grpc::Status status = auth->WhoAmI(&context, WhoAmIRequest(), &response);
      const double ms = timer.Seconds() * 1000;
      if (!status.ok()) Die("gRPC WhoAmI");
      if (i >= 50) grpc_small_ms.push_back(ms);
    }
    {
      Timer timer;
      auto result = http.Post("/kcnet.v1.AuthService/WhoAmI", headers, "{}", "application/json");
      const double ms = timer.Seconds() * 1000;
      if (!result || result->status != 200) Die("bridge WhoAmI");
      if (i >= 50) bridge_small_ms.push_back(ms);
    }
  }
  Emit("console", "bridge_small_p50_ratio", P50(bridge_small_ms) / P50(grpc_small_ms), "ratio");
  const double grpc_p50 = P50(grpc_ms);
  const double bridge_p50 = P50(bridge_ms);
  Emit("console", "grpc_p50_ms", grpc_p50, "ms");
  Emit("console", "bridge_p50_ms", bridge_p50, "ms");
  Emit("console", "bridge_p50_ratio", bridge_p50 / grpc_p50, "ratio");
  (*server)->Shutdown(absl::Seconds(2));
  server->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
