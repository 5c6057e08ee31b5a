// console: the console's HTTP bridge against gRPC, same server, same run, and the
// console itself in a headless browser. A real kcnet-server in process (gRPC and the
// bridge on ports 0) holds 1,000 facilities in one district; a district coordinator lists
// them a page of 50 at a time, alternately over gRPC (a kept channel) and through the
// bridge (HTTP/1.1 keep-alive, JSON, the cookie from /auth/sign-in), as the console would.
//  - bridge_p50_ratio: p50 latency through the bridge / p50 over gRPC (goal <= 1.5);
//  - bridge_p50_ms, grpc_p50_ms: the two p50s;
//  - bridge_small_p50_ratio: the same ratio for WhoAmI (a tiny answer: the fixed cost).
// Then, with the console's files built (CMake target kcnet_console) and Debian's chromium
// present, it adds one province's data set (at --scale=1: 200,000 facilities and 1,000,000
// visits over 20 communes, and 50 requests awaiting the province) straight into the record
// store, and bench/console_browser.mjs measures, as the province officer: first_load_p95_ms,
// js_css_gzip_bytes, search_p95_ms, map_points, map_first_clusters_ms, map_load_ms,
// map_render_ms, map_fps, map_zoom_fps, xlsx_s and xlsx_rows (see that file;
// KCNET_CONSOLE_BENCH_ONLY=map,... runs only some of its phases, and without "xlsx" in it
// the exports over gRPC below are skipped). Before the browser: records_xlsx_s (every visit as XLSX
// through RecordExportService.ExportRecords over gRPC), records_xlsx_rows, records_xlsx_bytes,
// records_xlsx_peak_rss_mib (the process's peak RSS during that export: the server is in
// process; the peak is reset just before it through /proc/self/clear_refs) and
// records_xlsx_rss_growth_mib (that peak less the RSS before it), and xlsx_100k_s and
// xlsx_100k_s, xlsx_100k_rows and xlsx_100k_rss_mib for an export of about 100,000 rows:
// the same one at --scale=0.1 up to 0.9, and from 0.9 the registry's search "may tre" (a
// tenth of the facilities). The browser adds records_xlsx_browser_s (the same export
// clicked in the registry, to the download; from --scale=0.9 with "may tre" searched).
//
// Usage: console_bench [calls] [--scale=F] [--browser=0]
//   calls: bridge calls of each kind (default 1000); --scale: of the browser's data set
//   (default 0.05: 10,000 facilities, 50,000 visits; 1 is the issue's full set);
//   --browser=0: the bridge figures only.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "kcnet/v1/record_export.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"

namespace {

using namespace kcnet::v1;  // NOLINT

void Die(const std::string& what) {
  std::cerr << "console_bench: " << what << "\n";
  std::exit(1);
}

// A "VmRSS:" or "VmHWM:" line of /proc/self/status, in MiB (0 when absent).
double StatusMib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key)) {
      double kib = 0;
      std::istringstream(line.substr(key.size())) >> kib;
      return kib / 1024;
    }
  }
  return 0;
}

double P50(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Applies `n` records made by `make` to the server's store in batches of 1,000.
template <typename Make>
void Apply(kcnet::sync::ServerStore* store, int64_t n, Make make) {
  MutationBatch batch;
  for (int64_t done = 0; done < n;) {
    batch.Clear();
    const int64_t count = std::min<int64_t>(1000, n - done);
    for (int64_t i = 0; i < count; ++i) {
      RecordChange change = *kcnet::model::ToChange(make());
      change.set_hlc(store->clock().Now());
      *batch.add_mutations()->add_changes() = std::move(change);
    }
    const kcnet::sync::Writer writer{"", kcnet::sync::NodeIdFor("bench"), nullptr};
    if (absl::StatusOr<PushAck> ack = store->Apply(writer, batch); !ack.ok()) {
      Die(absl::StrCat("apply: ", ack.status().ToString()));
    }
    done += count;
  }
}

std::string Uuid(std::mt19937_64& rng) {
  return *kcnet::sync::UuidToText(kcnet::bench::RandomUuidBytes(rng));
}

}  // namespace

int main(int argc, char** argv) {
  using kcnet::bench::Emit;
  using kcnet::bench::Timer;
  int calls = 1000;
  double scale = 0.05;
  bool browser = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (absl::StartsWith(a, "--scale=")) {
      if (!absl::SimpleAtod(a.substr(8), &scale) || scale <= 0 || scale > 1) Die("--scale: (0, 1]");
    } else if (a == "--browser=0") {
      browser = false;
    } else if (!absl::SimpleAtoi(a, &calls) || calls <= 0) {
      Die("usage: console_bench [calls] [--scale=F] [--browser=0]");
    }
  }
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-console";
  std::filesystem::remove_all(dir);
  kcnet::server::ServerOptions options;
  options.data_dir = dir;
  options.listen = "127.0.0.1:0";
  options.http_listen = "127.0.0.1:0";
  options.directory.password_ops_limit = kcnet::server::kArgon2OpsLimitMin;
  options.directory.password_mem_limit = kcnet::server::kArgon2MemLimitMin;
  // KCNET_CONSOLE_BENCH_TRACE: the server's own time of each call (its RPC log), to set
  // beside the browser's timing of it (bench/console_browser.mjs prints that).
  const bool trace = std::getenv("KCNET_CONSOLE_BENCH_TRACE") != nullptr;
  options.log_sink = [trace](absl::string_view line) {
    if (trace) std::cerr << line << "\n";
  };
  // KCNET_CONSOLE_DIR: another build of the console's files (to compare two builds of the
  // console with the same server); the build's own by default ("" when not built).
  const char* console_dir_env = std::getenv("KCNET_CONSOLE_DIR");
  const std::string dist = console_dir_env != nullptr ? console_dir_env : KCNET_CONSOLE_DIST;
  options.console_dir = dist;
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

  // The browser figures: one province's data set, then bench/console_browser.mjs.
  const std::string node = KCNET_NODE;
  const char* chromium_env = std::getenv("KCNET_CHROMIUM");
  const std::string chromium = chromium_env != nullptr ? chromium_env : "/usr/bin/chromium";
  if (!browser) {
    // Asked for the bridge figures only.
  } else if (dist.empty() || node.empty() || !std::filesystem::exists(dist + "/index.html") ||
             !std::filesystem::exists(chromium)) {
    std::cerr << "console_bench: the browser figures need the console built (target "
                 "kcnet_console), node and chromium (deploy/install-deps.sh); skipped\n";
  } else {
    if (!d->CreateUser("officer", "Cán bộ Sở", "password-123", ROLE_PROVINCE_OFFICER,
                       {province.id()})
             .ok()) {
      Die("create officer");
    }
    std::vector<int64_t> communes = {commune.id()};
    auto district2 = *d->CreateOrgUnit("902", "Huyện Tây", ORG_UNIT_LEVEL_DISTRICT, province.id());
    for (int i = 1; i < 20; ++i) {
      auto c =
          d->CreateOrgUnit(absl::StrCat(i < 10 ? "901" : "902", 50 + i), absl::StrCat("Xã số ", i),
                           ORG_UNIT_LEVEL_COMMUNE, i < 10 ? district.id() : district2.id());
      if (!c.ok()) Die(c.status().ToString());
      communes.push_back(c->id());
    }
    const char* kNames[] = {"Cơ sở mây tre đan", "Xưởng bánh đa", "Cơ khí nông cụ", "Dệt thổ cẩm",
                            "Gỗ mỹ nghệ",        "Gốm sứ",        "Nước mắm",       "Miến dong",
                            "Bún khô",           "Chổi đót"};
    std::mt19937_64 rng(20261206);
    const int64_t n_facilities = static_cast<int64_t>(200000 * scale);
    const int64_t n_visits = static_cast<int64_t>(1000000 * scale);
    struct Placed {
      std::string id;
      int64_t commune;
      double lat, lng;
    };
    std::vector<Placed> placed;
    std::vector<bool> is_may_tre;  // per placed facility: named "Cơ sở mây tre đan ..."
    int64_t may_tre_visits = 0;
    Timer seed_timer;
    Apply((*server)->store(), n_facilities, [&] {
      Facility f;
      f.set_id(Uuid(rng));
      f.set_commune_id(communes[rng() % communes.size()]);
      const size_t name = rng() % 10;
      f.set_name(absl::StrCat(kNames[name], " ", placed.size()));
      is_may_tre.push_back(name == 0);
      f.set_owner_name("Nguyễn Văn An");
      f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
      f.set_latitude(20.8 + (rng() % 5000) / 10000.0);
      f.set_longitude(105.5 + (rng() % 5000) / 10000.0);
      f.set_created_ms(1767225600000);  // 2026-01-01
      placed.push_back({f.id(), f.commune_id(), f.latitude(), f.longitude()});
      return f;
    });
    Apply((*server)->store(), n_visits, [&] {
      const size_t at = rng() % placed.size();
      const Placed& f = placed[at];
      may_tre_visits += is_may_tre[at] ? 1 : 0;
      Visit v;
      v.set_id(Uuid(rng));
      v.set_commune_id(f.commune);
      v.set_facility_id(f.id);
      v.set_visited_ms(1767225600000 + static_cast<int64_t>(rng() % 300) * 86400000);
      v.set_latitude(f.lat + 0.0005);
      v.set_longitude(f.lng);
      v.set_purpose(VISIT_PURPOSE_SURVEY);
      return v;
    });
    Apply((*server)->store(), 50, [&] {
      const Placed& f = placed[rng() % placed.size()];
      SupportRequest r;
      r.set_id(Uuid(rng));
      r.set_commune_id(f.commune);
      r.set_facility_id(f.id);
      r.set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
      r.set_requested_amount_vnd(50'000'000);
      r.set_status(REQUEST_STATUS_ENDORSED);
      r.set_created_ms(1767225600000);
      r.set_updated_ms(1767225600000);
      return r;
    });
    Emit("console", "seed_s", seed_timer.Seconds(), "s");
    // Record exports as XLSX (ExportRecords over gRPC, the stream the bridge forwards), by
    // the officer: every visit of the province (records_xlsx_*), and the issue's 100,000
    // rows (xlsx_100k_*): the same export when the province has 100,000 visits or more
    // below --scale=0.9 (0.1 and up), and from 0.9 the registry's search "may tre" (a tenth
    // of the facilities, so about 100,000 of the 1,000,000 visits at --scale=1).
    const bool filter_100k = may_tre_visits >= 90000;
    // KCNET_CONSOLE_BENCH_ONLY without "xlsx" (say "map"): no exports over gRPC either.
    const char* only = std::getenv("KCNET_CONSOLE_BENCH_ONLY");
    if (only == nullptr || absl::StrContains(only, "xlsx")) {
      grpc::ClientContext login_context;
      LoginRequest login;
      login.set_username("officer");
      login.set_password("password-123");
      LoginResponse officer;
      if (!AuthService::NewStub(channel)->Login(&login_context, login, &officer).ok()) {
        Die("officer login");
      }
      struct Exported {
        double seconds, peak_mib, growth_mib;
        size_t bytes;
      };
      auto export_visits = [&](const std::string& query) {
        grpc::ClientContext context;
        context.AddMetadata("authorization", "Bearer " + officer.token());
        ExportRecordsRequest request;
        request.set_type(EXPORT_RECORD_TYPE_VISITS);
        request.set_format(EXPORT_FORMAT_XLSX);
        request.set_query(query);
        const double rss_before = StatusMib("VmRSS:");
        std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM (the peak) to VmRSS
        Timer timer;
        auto reader = RecordExportService::NewStub(channel)->ExportRecords(&context, request);
        ExportChunk chunk;
        Exported out{};
        while (reader->Read(&chunk)) out.bytes += chunk.data().size();
        if (!reader->Finish().ok()) Die("ExportRecords");
        out.seconds = timer.Seconds();
        out.peak_mib = StatusMib("VmHWM:");
        out.growth_mib = out.peak_mib - rss_before;
        return out;
      };
      const Exported all = export_visits("");
      Emit("console", "records_xlsx_s", all.seconds, "s");
      Emit("console", "records_xlsx_peak_rss_mib", all.peak_mib, "MiB");
      Emit("console", "records_xlsx_rss_growth_mib", all.growth_mib, "MiB");
      Emit("console", "records_xlsx_rows", static_cast<double>(n_visits), "rows");
      Emit("console", "records_xlsx_bytes", static_cast<double>(all.bytes), "bytes");
      if (filter_100k) {
        const Exported some = export_visits("may tre");
        Emit("console", "xlsx_100k_s", some.seconds, "s");
        Emit("console", "xlsx_100k_rss_mib", some.peak_mib, "MiB");
        Emit("console", "xlsx_100k_rows", static_cast<double>(may_tre_visits), "rows");
      } else if (n_visits >= 100000) {
        Emit("console", "xlsx_100k_s", all.seconds, "s");
        Emit("console", "xlsx_100k_rss_mib", all.peak_mib, "MiB");
        Emit("console", "xlsx_100k_rows", static_cast<double>(n_visits), "rows");
      }
    }
    const std::string command = absl::StrCat(
        "'", node, "' '", KCNET_SOURCE_DIR, "/bench/console_browser.mjs' --base=", origin,
        " --user=officer --password=password-123 --console_dir='", dist, "' --node_modules='",
        KCNET_SOURCE_DIR, "/console/node_modules' --chromium='", chromium, "'",
        filter_100k ? " --records_query='may tre'" : "");
    if (std::system(command.c_str()) != 0) Die("bench/console_browser.mjs failed");
  }
  (*server)->Shutdown(absl::Seconds(2));
  server->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
