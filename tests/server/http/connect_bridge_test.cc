// The console's HTTP bridge (server/http/connect_bridge.h) in a real KcnetServer on ports 0,
// called with httplib's client (and curl) as a browser would: sign-in cookie, unary calls
// with the cookie and with the Authorization header, a server stream, Connect errors, the
// same scope answers as gRPC, CSRF refusals, static files and their security headers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "kcnet/v1/record_export.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"
#include "tests/testing/test_tls.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";
constexpr char kIndexHtml[] =
    "<!doctype html><html lang=\"vi\"><head><script type=\"module\" src=\"/assets/app.js\">"
    "</script></head><body>Bảng điều khiển</body></html>";

std::string Envelope(uint8_t flags, const std::string& json) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flags);
  const uint32_t size = static_cast<uint32_t>(json.size());
  for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<char>((size >> (24 - 8 * i)) & 0xff);
  return out + json;
}

struct Frame {
  uint8_t flags;
  std::string json;
};

// A streamed body's envelopes; a truncated one fails the test.
std::vector<Frame> Frames(const std::string& body) {
  std::vector<Frame> frames;
  size_t at = 0;
  while (at + 5 <= body.size()) {
    uint32_t size = 0;
    for (int i = 0; i < 4; ++i) size = (size << 8) | static_cast<uint8_t>(body[at + 1 + i]);
    EXPECT_LE(at + 5 + size, body.size()) << "truncated envelope";
    frames.push_back({static_cast<uint8_t>(body[at]), body.substr(at + 5, size)});
    at += 5 + size;
  }
  EXPECT_EQ(at, body.size());
  return frames;
}

class ConnectBridgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Start([](ServerOptions&) {});
  }

  void Start(const std::function<void(ServerOptions&)>& customize) {
    std::filesystem::create_directories(console_.File("assets"));
    std::ofstream(console_.File("index.html")) << kIndexHtml;
    std::ofstream(console_.File("assets/app.js"))
        << "export const greeting = 'Xin chào';\n" + std::string(4000, ' ') + "// padding\n";
    server_ = std::make_unique<TestServer>([&](ServerOptions& options) {
      options.http_listen = "127.0.0.1:0";
      options.console_dir = console_.path();
      customize(options);
    });
    ASSERT_TRUE(server_->ok());
    ASSERT_GT(server_->server().http_port(), 0);
    Directory& d = server_->directory();
    const int64_t province = d.CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t d1 = d.CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, province)->id();
    const int64_t d2 = d.CreateOrgUnit("902", "Huyện Hai", ORG_UNIT_LEVEL_DISTRICT, province)->id();
    commune1_ = d.CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, d1)->id();
    commune2_ = d.CreateOrgUnit("90201", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, d2)->id();
    ASSERT_TRUE(
        d.CreateUser("officer", "Cán bộ tỉnh", kPassword, ROLE_PROVINCE_OFFICER, {province}).ok());
    ASSERT_TRUE(
        d.CreateUser("coord1", "Điều phối một", kPassword, ROLE_DISTRICT_COORDINATOR, {d1}).ok());
  }

  std::unique_ptr<httplib::Client> Http() {
    auto client = std::make_unique<httplib::Client>("127.0.0.1", server_->server().http_port());
    client->set_read_timeout(20, 0);
    return client;
  }

  // A browser tab's watch stream on a raw socket: the request sent and the first notice
  // read. Returns the socket (the caller closes it: the tab closed without a word).
  int OpenWatchTab(const std::string& cookie) {
    const int port = server_->server().http_port();
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    const std::string body = Envelope(0, "{}");
    const std::string request = absl::StrCat(
        "POST /kcnet.v1.WatchService/WatchChanges HTTP/1.1\r\nHost: 127.0.0.1:", port,
        "\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\n"
        "Origin: http://127.0.0.1:",
        port, "\r\nCookie: ", cookie, "\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    std::string received;
    char buffer[4096];
    while (!absl::StrContains(received, "{}")) {  // the first notice (seq 0: "{}" in JSON)
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        ADD_FAILURE() << "the watch stream ended before its first notice: " << received;
        break;
      }
      received.append(buffer, static_cast<size_t>(n));
    }
    EXPECT_TRUE(absl::StartsWith(received, "HTTP/1.1 200")) << received;
    return fd;
  }

  // The browser's headers for a call: Connect's, this origin, and the cookie if any.
  httplib::Headers BrowserHeaders(const std::string& cookie = "") {
    httplib::Headers headers = {
        {"Connect-Protocol-Version", "1"},
        {"Origin", absl::StrCat("http://127.0.0.1:", server_->server().http_port())}};
    if (!cookie.empty()) headers.emplace("Cookie", cookie);
    return headers;
  }

  // Signs in through the bridge; the cookie ("kcnet_token=...").
  std::string CookieSignIn(const std::string& username) {
    auto result = Http()->Post(
        "/auth/sign-in", BrowserHeaders(),
        absl::StrCat("{\"username\":\"", username, "\",\"password\":\"", kPassword, "\"}"),
        "application/json");
    EXPECT_TRUE(result) << "no answer";
    if (!result) return "";
    EXPECT_EQ(result->status, 200) << result->body;
    const std::string set_cookie = result->get_header_value("Set-Cookie");
    return set_cookie.substr(0, set_cookie.find(';'));
  }

  httplib::Result Unary(const std::string& method, const std::string& json,
                        const httplib::Headers& headers) {
    return Http()->Post(absl::StrCat("/", method).c_str(), headers, json, "application/json");
  }

  // A facility in `commune`, created over gRPC by the province officer.
  std::string MakeFacility(int64_t commune) {
    auto stub = FacilityService::NewStub(server_->Channel());
    grpc::ClientContext context;
    Authorize(&context, SignIn(server_->Channel(), "officer", kPassword));
    CreateFacilityRequest request;
    request.mutable_facility()->set_commune_id(commune);
    request.mutable_facility()->set_name("Cơ sở mây tre đan");
    Facility facility;
    const grpc::Status status = stub->CreateFacility(&context, request, &facility);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return facility.id();
  }

  kcnet::testing::TempDir console_;
  std::unique_ptr<TestServer> server_;
  int64_t commune1_ = 0;
  int64_t commune2_ = 0;
};

TEST_F(ConnectBridgeTest, SignInSetsAStrictHttpOnlyCookieAndNoTokenInTheBody) {
  auto result =
      Http()->Post("/auth/sign-in", BrowserHeaders(),
                   R"({"username":"coord1","password":"password-123"})", "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const std::string cookie = result->get_header_value("Set-Cookie");
  EXPECT_THAT(cookie, HasSubstr("kcnet_token="));
  EXPECT_THAT(cookie, HasSubstr("HttpOnly"));
  EXPECT_THAT(cookie, HasSubstr("SameSite=Strict"));
  EXPECT_THAT(cookie, HasSubstr("Secure"));
  EXPECT_THAT(result->body, HasSubstr("\"username\":\"coord1\""));
  EXPECT_THAT(result->body, Not(HasSubstr("\"token\"")));
  const std::string token =
      cookie.substr(cookie.find('=') + 1, cookie.find(';') - cookie.find('=') - 1);
  EXPECT_FALSE(token.empty());
  EXPECT_THAT(result->body, Not(HasSubstr(token)));
}

TEST_F(ConnectBridgeTest, WrongPasswordIsUnauthenticatedAndSetsNoCookie) {
  auto result = Http()->Post("/auth/sign-in", BrowserHeaders(),
                             R"({"username":"coord1","password":"wrong"})", "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401) << result->body;
  EXPECT_THAT(result->body, HasSubstr("\"code\":\"unauthenticated\""));
  EXPECT_FALSE(result->has_header("Set-Cookie"));
}

TEST_F(ConnectBridgeTest, UnaryCallWithTheCookie) {
  const std::string cookie = CookieSignIn("coord1");
  auto result = Unary("kcnet.v1.AuthService/WhoAmI", "{}", BrowserHeaders(cookie));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  EXPECT_THAT(result->body, HasSubstr("\"username\":\"coord1\""));
  EXPECT_THAT(result->body, HasSubstr("\"displayName\":\"Điều phối một\""));
}

TEST_F(ConnectBridgeTest, UnaryCallWithTheAuthorizationHeaderNeedsNoConnectHeader) {
  // Login through the bridge like any unary call: the token in the JSON answer.
  auto login = Unary("kcnet.v1.AuthService/Login",
                     R"({"username":"officer","password":"password-123"})", {});
  ASSERT_TRUE(login);
  ASSERT_EQ(login->status, 200) << login->body;
  const size_t at = login->body.find("\"token\":\"") + 9;
  const std::string token = login->body.substr(at, login->body.find('"', at) - at);
  ASSERT_FALSE(token.empty());
  auto result = Unary("kcnet.v1.AuthService/WhoAmI", "{}", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200) << result->body;
  EXPECT_THAT(result->body, HasSubstr("\"username\":\"officer\""));
}

TEST_F(ConnectBridgeTest, NoTokenIsUnauthenticated) {
  auto result = Unary("kcnet.v1.AuthService/WhoAmI", "{}", BrowserHeaders());
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_THAT(result->body, HasSubstr("\"code\":\"unauthenticated\""));
  EXPECT_THAT(result->body, HasSubstr("authorization"));
}

TEST_F(ConnectBridgeTest, BadJsonIsInvalidArgumentNamingTheFieldOrPosition) {
  const std::string cookie = CookieSignIn("officer");
  auto wrong_type = Unary("kcnet.v1.FacilityService/ListFacilities", R"({"pageSize":"many"})",
                          BrowserHeaders(cookie));
  ASSERT_TRUE(wrong_type);
  EXPECT_EQ(wrong_type->status, 400) << wrong_type->body;
  EXPECT_THAT(wrong_type->body, HasSubstr("\"code\":\"invalid_argument\""));
  EXPECT_THAT(wrong_type->body, HasSubstr("kcnet.v1.ListFacilitiesRequest"));
  EXPECT_THAT(wrong_type->body, HasSubstr("many"));

  auto unknown_field =
      Unary("kcnet.v1.FacilityService/ListFacilities", R"({"pageSzie":5})", BrowserHeaders(cookie));
  ASSERT_TRUE(unknown_field);
  EXPECT_EQ(unknown_field->status, 400) << unknown_field->body;
  EXPECT_THAT(unknown_field->body, HasSubstr("pageSzie"));

  auto broken =
      Unary("kcnet.v1.FacilityService/ListFacilities", R"({"pageSize": )", BrowserHeaders(cookie));
  ASSERT_TRUE(broken);
  EXPECT_EQ(broken->status, 400) << broken->body;
  EXPECT_THAT(broken->body, HasSubstr("\"code\":\"invalid_argument\""));

  // The service's own refusals pass through with their message and details.
  auto bad_value = Unary(
      "kcnet.v1.FacilityService/CreateFacility",
      absl::StrCat(R"({"facility":{"communeId":")", commune1_, R"(","name":"","latitude":123}})"),
      BrowserHeaders(cookie));
  ASSERT_TRUE(bad_value);
  EXPECT_EQ(bad_value->status, 400) << bad_value->body;
  EXPECT_THAT(bad_value->body, HasSubstr("\"code\":\"invalid_argument\""));
  EXPECT_THAT(bad_value->body, HasSubstr("latitude"));
}

TEST_F(ConnectBridgeTest, UnknownOrHiddenMethodIs404) {
  const std::string cookie = CookieSignIn("officer");
  for (const char* method : {"kcnet.v1.AuthService/NoSuchMethod", "kcnet.v1.NoSuchService/Get",
                             "kcnet.v1.SyncService/Sync",  // a client stream: tablets only
                             "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}) {
    auto result = Unary(method, "{}", BrowserHeaders(cookie));
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 404) << method;
    EXPECT_THAT(result->body, HasSubstr("\"code\":\"unimplemented\"")) << method;
  }
  auto get = Http()->Get("/kcnet.v1.AuthService/WhoAmI");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 404);
}

TEST_F(ConnectBridgeTest, OutOfScopeAnswersLikeMissingAsOverGrpc) {
  const std::string outside = MakeFacility(commune2_);  // district 902: not coord1's
  const std::string missing = "0b0e7f4c-8a6e-4c43-9d55-1c1f1c1f1c1f";
  const std::string token = SignIn(server_->Channel(), "coord1", kPassword);
  auto grpc_get = [&](const std::string& id) {
    auto stub = FacilityService::NewStub(server_->Channel());
    grpc::ClientContext context;
    Authorize(&context, token);
    GetRecordRequest request;
    request.set_id(id);
    Facility facility;
    return stub->GetFacility(&context, request, &facility);
  };
  auto http_get = [&](const std::string& id) {
    return Unary("kcnet.v1.FacilityService/GetFacility", absl::StrCat(R"({"id":")", id, R"("})"),
                 {{"Authorization", "Bearer " + token}});
  };
  const grpc::Status grpc_outside = grpc_get(outside);
  const grpc::Status grpc_missing = grpc_get(missing);
  ASSERT_EQ(grpc_outside.error_code(), grpc::StatusCode::NOT_FOUND);
  auto http_outside = http_get(outside);
  auto http_missing = http_get(missing);
  ASSERT_TRUE(http_outside && http_missing);
  EXPECT_EQ(http_outside->status, 404);
  EXPECT_EQ(http_outside->status, http_missing->status);
  EXPECT_EQ(absl::StrReplaceAll(http_outside->body, {{outside, "ID"}}),
            absl::StrReplaceAll(http_missing->body, {{missing, "ID"}}));
  // The very message gRPC gives.
  EXPECT_EQ(absl::StrReplaceAll(grpc_outside.error_message(), {{outside, "ID"}}),
            absl::StrReplaceAll(grpc_missing.error_message(), {{missing, "ID"}}));
  EXPECT_THAT(http_outside->body, HasSubstr(grpc_outside.error_message()));
}

// POST /download/...: the export's very bytes, with the RPC's token and scope answers.
TEST_F(ConnectBridgeTest, DownloadIsTheExportsFileWithTheRpcsScopeAnswers) {
  MakeFacility(commune1_);
  MakeFacility(commune2_);
  // Another province and its officer: the first province's communes are not theirs.
  Directory& d = server_->directory();
  const int64_t other = d.CreateOrgUnit("91", "Tỉnh Khác", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
  ASSERT_TRUE(
      d.CreateUser("officer2", "Cán bộ tỉnh khác", kPassword, ROLE_PROVINCE_OFFICER, {other}).ok());
  const std::string path = "/download/kcnet.v1.RecordExportService/ExportRecords";
  const std::string request =
      R"({"type":"EXPORT_RECORD_TYPE_FACILITIES","format":"EXPORT_FORMAT_CSV"})";

  // The same export over gRPC: its chunks concatenated are the file.
  std::string expected, file_name;
  {
    grpc::ClientContext context;
    Authorize(&context, SignIn(server_->Channel(), "officer", kPassword));
    ExportRecordsRequest grpc_request;
    grpc_request.set_type(EXPORT_RECORD_TYPE_FACILITIES);
    grpc_request.set_format(EXPORT_FORMAT_CSV);
    auto reader =
        RecordExportService::NewStub(server_->Channel())->ExportRecords(&context, grpc_request);
    ExportChunk chunk;
    while (reader->Read(&chunk)) {
      if (!chunk.file_name().empty()) file_name = chunk.file_name();
      expected += chunk.data();
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_THAT(expected, HasSubstr("Cơ sở mây tre đan"));
  auto file = Http()->Post(path.c_str(), BrowserHeaders(CookieSignIn("officer")), request,
                           "application/json");
  ASSERT_TRUE(file);
  ASSERT_EQ(file->status, 200) << file->body;
  EXPECT_EQ(file->body, expected);
  EXPECT_EQ(file->get_header_value("Content-Length"), std::to_string(expected.size()));
  EXPECT_EQ(file->get_header_value("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_THAT(file->get_header_value("Content-Disposition"),
              HasSubstr(absl::StrCat("attachment; filename=\"", file_name, "\"")));
  EXPECT_EQ(file->get_header_value("Cache-Control"), "no-store");

  // Another province's officer asking for this province's commune gets exactly the answer
  // for a commune that does not exist (NOT_FOUND, the same body), as over gRPC.
  const std::string cookie2 = CookieSignIn("officer2");
  auto for_unit = [&](int64_t unit) {
    return Http()->Post(path.c_str(), BrowserHeaders(cookie2),
                        absl::StrCat(R"({"type":"EXPORT_RECORD_TYPE_FACILITIES",)",
                                     R"("format":"EXPORT_FORMAT_CSV","orgUnitId":")", unit, "\"}"),
                        "application/json");
  };
  const int64_t missing_unit = 987654321;
  auto outside = for_unit(commune1_);
  auto missing = for_unit(missing_unit);
  ASSERT_TRUE(outside && missing);
  EXPECT_EQ(outside->status, 404) << outside->body;
  EXPECT_EQ(outside->status, missing->status);
  EXPECT_EQ(absl::StrReplaceAll(outside->body, {{std::to_string(commune1_), "ID"}}),
            absl::StrReplaceAll(missing->body, {{std::to_string(missing_unit), "ID"}}));
  EXPECT_THAT(outside->body, HasSubstr("\"code\":\"not_found\""));
  EXPECT_FALSE(outside->has_header("Content-Disposition"));
  // Their own province's export holds none of the first province's facilities.
  auto own = Http()->Post(path.c_str(), BrowserHeaders(cookie2), request, "application/json");
  ASSERT_TRUE(own);
  ASSERT_EQ(own->status, 200) << own->body;
  EXPECT_THAT(own->body, Not(HasSubstr("Cơ sở mây tre đan")));

  // No token; the cookie without the Connect header (CSRF); a bad filter (names the field);
  // a stream that is no file.
  auto anonymous = Http()->Post(path.c_str(), BrowserHeaders(), request, "application/json");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401) << anonymous->body;
  auto forged = Http()->Post(path.c_str(), {{"Cookie", cookie2}}, request, "application/json");
  ASSERT_TRUE(forged);
  EXPECT_EQ(forged->status, 403) << forged->body;
  EXPECT_THAT(forged->body, HasSubstr("csrf"));
  auto bad = Http()->Post(path.c_str(), BrowserHeaders(cookie2),
                          R"({"type":"EXPORT_RECORD_TYPE_NOPE"})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
  EXPECT_THAT(bad->body, HasSubstr("kcnet.v1.ExportRecordsRequest"));
  auto not_a_file = Http()->Post("/download/kcnet.v1.WatchService/WatchChanges",
                                 BrowserHeaders(cookie2), "{}", "application/json");
  ASSERT_TRUE(not_a_file);
  EXPECT_EQ(not_a_file->status, 404) << not_a_file->body;
}

TEST_F(ConnectBridgeTest, CookieCallsWithoutTheConnectHeaderOrFromAnotherOriginAreRefused) {
  const std::string cookie = CookieSignIn("coord1");
  // A cross-site form: the cookie, no Connect header.
  auto form = Unary("kcnet.v1.AuthService/WhoAmI", "{}", {{"Cookie", cookie}});
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 403) << form->body;
  EXPECT_THAT(form->body, HasSubstr("\"code\":\"permission_denied\""));
  EXPECT_THAT(form->body, HasSubstr("Connect-Protocol-Version"));
  // Another origin's script.
  auto foreign = Unary(
      "kcnet.v1.AuthService/WhoAmI", "{}",
      {{"Cookie", cookie}, {"Connect-Protocol-Version", "1"}, {"Origin", "https://evil.example"}});
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->status, 403) << foreign->body;
  EXPECT_THAT(foreign->body, HasSubstr("evil.example"));
  auto cross_site = Unary(
      "kcnet.v1.AuthService/WhoAmI", "{}",
      {{"Cookie", cookie}, {"Connect-Protocol-Version", "1"}, {"Sec-Fetch-Site", "cross-site"}});
  ASSERT_TRUE(cross_site);
  EXPECT_EQ(cross_site->status, 403) << cross_site->body;
  // Sign-in from another origin (login CSRF) is refused too.
  auto sign_in = Http()->Post(
      "/auth/sign-in", {{"Origin", "https://evil.example"}, {"Connect-Protocol-Version", "1"}},
      R"({"username":"coord1","password":"password-123"})", "application/json");
  ASSERT_TRUE(sign_in);
  EXPECT_EQ(sign_in->status, 403);
  EXPECT_FALSE(sign_in->has_header("Set-Cookie"));
  // The same call from the console's own page works.
  auto own = Unary("kcnet.v1.AuthService/WhoAmI", "{}", BrowserHeaders(cookie));
  ASSERT_TRUE(own);
  EXPECT_EQ(own->status, 200) << own->body;
}

TEST_F(ConnectBridgeTest, SignOutRevokesTheTokenAndClearsTheCookie) {
  const std::string cookie = CookieSignIn("coord1");
  const std::string token = cookie.substr(cookie.find('=') + 1);
  auto out = Http()->Post("/auth/sign-out", BrowserHeaders(cookie), "{}", "application/json");
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, 200) << out->body;
  EXPECT_THAT(out->get_header_value("Set-Cookie"), HasSubstr("Max-Age=0"));
  // Revoked for every client, gRPC included.
  auto stub = AuthService::NewStub(server_->Channel());
  grpc::ClientContext context;
  Authorize(&context, token);
  WhoAmIResponse who;
  EXPECT_EQ(stub->WhoAmI(&context, WhoAmIRequest(), &who).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto again = Unary("kcnet.v1.AuthService/WhoAmI", "{}", BrowserHeaders(cookie));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 401);
}

TEST_F(ConnectBridgeTest, ServerStreamSendsEnvelopesAndEndsWithTheStatus) {
  const std::string cookie = CookieSignIn("coord1");
  httplib::Headers headers = BrowserHeaders(cookie);
  headers.emplace("Connect-Timeout-Ms", "1500");
  auto result = Http()->Post("/grpc.health.v1.Health/Watch", headers,
                             Envelope(0, R"({"service":""})"), "application/connect+json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/connect+json");
  const std::vector<Frame> frames = Frames(result->body);
  ASSERT_GE(frames.size(), 2u) << result->body;
  EXPECT_EQ(frames.front().flags, 0);
  EXPECT_EQ(frames.front().json, R"({"status":"SERVING"})");
  EXPECT_EQ(frames.back().flags, 2);
  EXPECT_THAT(frames.back().json, HasSubstr("\"code\":\"deadline_exceeded\""));
}

TEST_F(ConnectBridgeTest, StreamWithoutTokenEndsUnauthenticated) {
  auto result = Http()->Post("/grpc.health.v1.Health/Watch", BrowserHeaders(), Envelope(0, "{}"),
                             "application/connect+json");
  ASSERT_TRUE(result);
  const std::vector<Frame> frames = Frames(result->body);
  ASSERT_EQ(frames.size(), 1u) << result->body;
  EXPECT_EQ(frames[0].flags, 2);
  EXPECT_THAT(frames[0].json, HasSubstr("\"code\":\"unauthenticated\""));
}

TEST_F(ConnectBridgeTest, StreamsPerUserAreCappedAndUnaryCallsStillGoThrough) {
  server_.reset();
  Start([](ServerOptions& options) { options.http.max_streams_per_user = 1; });
  const std::string cookie = CookieSignIn("coord1");
  httplib::Headers headers = BrowserHeaders(cookie);
  headers.emplace("Connect-Timeout-Ms", "3000");
  std::string bodies[2];
  std::vector<std::thread> streams;
  for (int i = 0; i < 2; ++i) {
    streams.emplace_back([&, i] {
      auto result = Http()->Post("/grpc.health.v1.Health/Watch", headers, Envelope(0, "{}"),
                                 "application/connect+json");
      if (result) bodies[i] = result->body;
    });
  }
  // Meanwhile a unary call is answered (the pool is larger than the stream cap).
  auto unary = Unary("kcnet.v1.AuthService/WhoAmI", "{}", BrowserHeaders(cookie));
  for (std::thread& stream : streams) stream.join();
  ASSERT_TRUE(unary);
  EXPECT_EQ(unary->status, 200);
  int refused = 0, served = 0;
  for (const std::string& body : bodies) {
    const std::vector<Frame> frames = Frames(body);
    ASSERT_FALSE(frames.empty());
    if (absl::StrContains(frames.back().json, "resource_exhausted")) ++refused;
    if (absl::StrContains(frames.back().json, "deadline_exceeded")) ++served;
  }
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(served, 1);
}

TEST_F(ConnectBridgeTest, AClosedTabsWatchStreamIsFoundByItsHeartbeatAndFreed) {
  server_.reset();
  Start([](ServerOptions& options) {
    options.http.max_streams_per_user = 1;
    options.http.stream_heartbeat = absl::Milliseconds(100);
  });
  const std::string cookie = CookieSignIn("coord1");
  // A tab opens its watch stream, reads the first notice, and is closed without a word.
  ::close(OpenWatchTab(cookie));
  // The user's one stream slot comes back once the heartbeats find the tab gone (without
  // them it stayed taken until a change in the user's scope, so every new tab was refused).
  httplib::Headers headers = BrowserHeaders(cookie);
  headers.emplace("Connect-Timeout-Ms", "450");
  bool served = false;
  std::vector<Frame> frames;
  for (int attempt = 0; attempt < 10 && !served; ++attempt) {
    auto result = Http()->Post("/kcnet.v1.WatchService/WatchChanges", headers, Envelope(0, "{}"),
                               "application/connect+json");
    ASSERT_TRUE(result);
    frames = Frames(result->body);
    ASSERT_FALSE(frames.empty());
    served = !absl::StrContains(frames.back().json, "resource_exhausted");
    if (!served) absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(served) << "the closed tab's stream still holds the user's only slot";
  // And a quiet stream carries heartbeats between its first notice and its end.
  int heartbeats = 0;
  for (const Frame& frame : frames) {
    if (frame.json == R"({"heartbeat":true})") ++heartbeats;
  }
  EXPECT_GE(heartbeats, 2);
  EXPECT_TRUE(absl::StrContains(frames.back().json, "deadline_exceeded")) << frames.back().json;
}

TEST_F(ConnectBridgeTest, FourClosedTabsFreeTheirWatchStreamsWithinTwoSeconds) {
  // A user reloads the console four times in a few seconds: each reload closes a tab's
  // watch stream without a word. The default heartbeat (15 s) must not be what frees them:
  // the bridge looks at an idle stream's socket every second.
  const std::string cookie = CookieSignIn("coord1");
  for (int tab = 0; tab < 4; ++tab) ::close(OpenWatchTab(cookie));
  const absl::Time closed = absl::Now();
  httplib::Headers headers = BrowserHeaders(cookie);
  headers.emplace("Connect-Timeout-Ms", "300");
  bool served = false;
  std::string last;
  while (!served && absl::Now() - closed < absl::Seconds(2.5)) {
    auto result = Http()->Post("/kcnet.v1.WatchService/WatchChanges", headers, Envelope(0, "{}"),
                               "application/connect+json");
    ASSERT_TRUE(result);
    const std::vector<Frame> frames = Frames(result->body);
    ASSERT_FALSE(frames.empty());
    last = frames.back().json;
    served = !absl::StrContains(last, "resource_exhausted");
    if (!served) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(served) << "a fifth tab is still refused " << absl::Now() - closed
                      << " after four tabs closed: " << last;
  EXPECT_LT(absl::Now() - closed, absl::Seconds(2.5));
}

TEST_F(ConnectBridgeTest, SignInLimitsCountPerBrowserAddressNotForTheWholeBridge) {
  server_.reset();
  Start([](ServerOptions& options) {
    options.sign_in.per_peer = {.burst = 2, .per_second = 0.001};
    options.sign_in.per_user = {};
  });
  for (int i = 0; i < 2; ++i) {
    auto wrong = Http()->Post("/auth/sign-in", BrowserHeaders(),
                              R"({"username":"coord1","password":"wrong"})", "application/json");
    ASSERT_TRUE(wrong);
    EXPECT_EQ(wrong->status, 401) << wrong->body;
  }
  auto limited =
      Http()->Post("/auth/sign-in", BrowserHeaders(),
                   R"({"username":"officer","password":"password-123"})", "application/json");
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429) << limited->body;
  EXPECT_THAT(limited->body, HasSubstr("\"code\":\"resource_exhausted\""));
  // The bridge named the browser's address (127.0.0.1), so a gRPC client from that same
  // address is limited too; with "inproc" as the key it would not be (and every browser
  // would share one limit). Metadata naming another address is not believed off the
  // in-process channel.
  auto stub = AuthService::NewStub(server_->Channel());
  grpc::ClientContext context;
  context.AddMetadata("x-kcnet-forwarded-peer", "ipv4:10.9.9.9");
  LoginRequest request;
  request.set_username("officer");
  request.set_password(kPassword);
  LoginResponse response;
  EXPECT_EQ(stub->Login(&context, request, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// Behind nginx every browser comes from the proxy's address: the bridge takes the client's
// address from X-Forwarded-For, but only when the connection comes from a trusted proxy
// (--trusted_proxies), and then the rightmost address that is not a trusted proxy (what a
// client writes into the header itself stands to the left of what nginx appends).
TEST_F(ConnectBridgeTest, ForwardedForCountsSignInLimitsPerRealClientBehindATrustedProxy) {
  server_.reset();
  Start([](ServerOptions& options) {
    options.sign_in.per_peer = {.burst = 2, .per_second = 0.001};
    options.sign_in.per_user = {};
    options.trusted_proxies = {"127.0.0.1"};
  });
  auto sign_in = [&](const std::string& forwarded_for) {
    httplib::Headers headers = BrowserHeaders();
    headers.emplace("X-Forwarded-For", forwarded_for);
    auto result = Http()->Post("/auth/sign-in", headers,
                               R"({"username":"coord1","password":"wrong"})", "application/json");
    return result ? result->status : -1;
  };
  EXPECT_EQ(sign_in("198.51.100.7"), 401);
  EXPECT_EQ(sign_in("198.51.100.7"), 401);
  EXPECT_EQ(sign_in("198.51.100.7"), 429);
  // Another client behind the same proxy has its own limit.
  EXPECT_EQ(sign_in("198.51.100.8"), 401);
  // A client cannot escape its limit by writing another address in front of its own, nor
  // by naming a trusted proxy after it.
  EXPECT_EQ(sign_in("203.0.113.99, 198.51.100.7"), 429);
  EXPECT_EQ(sign_in("198.51.100.7, 127.0.0.1"), 429);
}

// The same over gRPC (nginx's grpc_set_header X-Forwarded-For reaches the server as
// x-forwarded-for metadata): believed from a trusted proxy only.
TEST_F(ConnectBridgeTest, GrpcSignInLimitsCountPerForwardedClientFromATrustedProxyOnly) {
  for (const bool trusted : {true, false}) {
    SCOPED_TRACE(trusted ? "127.0.0.1 trusted" : "no trusted proxy");
    server_.reset();
    Start([trusted](ServerOptions& options) {
      options.sign_in.per_peer = {.burst = 2, .per_second = 0.001};
      options.sign_in.per_user = {};
      if (trusted) options.trusted_proxies = {"127.0.0.1"};
    });
    auto channel =
        grpc::CreateChannel(server_->server().address(), grpc::InsecureChannelCredentials());
    auto stub = AuthService::NewStub(channel);
    auto sign_in = [&](const std::string& forwarded_for) {
      grpc::ClientContext context;
      context.AddMetadata("x-forwarded-for", forwarded_for);
      LoginRequest request;
      request.set_username("coord1");
      request.set_password("wrong");
      LoginResponse response;
      return stub->Login(&context, request, &response).error_code();
    };
    EXPECT_EQ(sign_in("198.51.100.7"), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(sign_in("198.51.100.7"), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(sign_in("198.51.100.7"), grpc::StatusCode::RESOURCE_EXHAUSTED);
    // Another client behind the proxy: its own limit, only if the proxy is trusted.
    EXPECT_EQ(sign_in("198.51.100.8"),
              trusted ? grpc::StatusCode::UNAUTHENTICATED : grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
}

TEST_F(ConnectBridgeTest, ForwardedForIsIgnoredWithoutTrustedProxies) {
  server_.reset();
  Start([](ServerOptions& options) {
    options.sign_in.per_peer = {.burst = 2, .per_second = 0.001};
    options.sign_in.per_user = {};
  });
  auto sign_in = [&](const std::string& forwarded_for) {
    httplib::Headers headers = BrowserHeaders();
    headers.emplace("X-Forwarded-For", forwarded_for);
    auto result = Http()->Post("/auth/sign-in", headers,
                               R"({"username":"coord1","password":"wrong"})", "application/json");
    return result ? result->status : -1;
  };
  EXPECT_EQ(sign_in("198.51.100.1"), 401);
  EXPECT_EQ(sign_in("198.51.100.2"), 401);
  // Every address above was the test's own (127.0.0.1): a made-up header changes nothing.
  EXPECT_EQ(sign_in("198.51.100.3"), 429);
}

TEST(ForwardedClientAddressTest, RightmostUntrustedAddressFromATrustedPeerOnly) {
  const std::vector<std::string> trusted = {"127.0.0.1", "10.0.0.5"};
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "", trusted), "127.0.0.1");
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "198.51.100.7", trusted), "198.51.100.7");
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "1.2.3.4, 198.51.100.7,10.0.0.5", trusted),
            "198.51.100.7");
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "2001:db8::1", trusted), "2001:db8::1");
  // Not from a trusted proxy: the header is not believed.
  EXPECT_EQ(ForwardedClientAddress("192.0.2.1", "198.51.100.7", trusted), "192.0.2.1");
  // Garbage in the header (not an address) stops the walk: the peer itself is used.
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "<script>", trusted), "127.0.0.1");
  EXPECT_EQ(ForwardedClientAddress("127.0.0.1", "127.0.0.1, 10.0.0.5", trusted), "127.0.0.1");
}

TEST_F(ConnectBridgeTest, BodyOverTheCapIsRefused) {
  server_.reset();
  Start([](ServerOptions& options) { options.http.max_body_bytes = 1024; });
  auto result = Unary("kcnet.v1.AuthService/Login",
                      absl::StrCat(R"({"username":")", std::string(4096, 'a'), R"("})"), {});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 413);
  EXPECT_THAT(result->body, HasSubstr("\"code\":\"resource_exhausted\""));
}

// The build's hashed assets are cached for good and sent as their gzipped copy (.gz) to
// a client that accepts gzip; index.html and other files are revalidated.
TEST_F(ConnectBridgeTest, HashedAssetsAreImmutableAndServedPrecompressed) {
  const std::string js = "export const x = 'Xin chào';\n" + std::string(3000, ' ') + "//\n";
  std::ofstream(console_.File("assets/app-ABCD1234.js")) << js;
  ASSERT_EQ(std::system(
                absl::StrCat("gzip -kn9 '", console_.File("assets/app-ABCD1234.js"), "'").c_str()),
            0);
  std::ifstream gz_file(console_.File("assets/app-ABCD1234.js.gz"), std::ios::binary);
  const std::string gz((std::istreambuf_iterator<char>(gz_file)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(gz.empty());
  auto client = Http();
  client->set_decompress(false);
  auto zipped = client->Get("/assets/app-ABCD1234.js", {{"Accept-Encoding", "gzip, deflate"}});
  ASSERT_TRUE(zipped);
  EXPECT_EQ(zipped->status, 200);
  EXPECT_EQ(zipped->get_header_value("Content-Encoding"), "gzip");
  EXPECT_EQ(zipped->get_header_value("Content-Type"), "text/javascript");
  EXPECT_EQ(zipped->body, gz);  // the build's copy, not compressed again
  EXPECT_THAT(zipped->get_header_value("Cache-Control"), HasSubstr("immutable"));
  EXPECT_FALSE(zipped->get_header_value("Content-Security-Policy").empty());
  auto plain = client->Get("/assets/app-ABCD1234.js");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->body, js);
  EXPECT_EQ(plain->get_header_value("Content-Encoding"), "");
  EXPECT_THAT(plain->get_header_value("Cache-Control"), HasSubstr("immutable"));
  // Not build-named: revalidated.
  auto index = client->Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->get_header_value("Cache-Control"), "no-cache");
  auto unhashed = client->Get("/assets/app.js");
  ASSERT_TRUE(unhashed);
  EXPECT_EQ(unhashed->get_header_value("Cache-Control"), "no-cache");
}

// Answers are gzipped by the bridge (fastest level), also for a browser that accepts brotli:
// httplib's brotli at quality 11 took 9-28 s for a 3.4 MB map page (map16).
TEST_F(ConnectBridgeTest, AnswersAreGzippedEvenWhenTheClientAcceptsBrotli) {
  {
    auto stub = FacilityService::NewStub(server_->Channel());
    const std::string token = SignIn(server_->Channel(), "officer", kPassword);
    for (int i = 0; i < 80; ++i) {
      grpc::ClientContext context;
      Authorize(&context, token);
      CreateFacilityRequest request;
      request.mutable_facility()->set_commune_id(commune1_);
      request.mutable_facility()->set_name(absl::StrCat("Cơ sở mây tre đan số ", i));
      Facility facility;
      ASSERT_TRUE(stub->CreateFacility(&context, request, &facility).ok());
    }
  }
  const std::string cookie = CookieSignIn("officer");
  auto client = Http();
  client->set_decompress(false);
  httplib::Headers headers = BrowserHeaders(cookie);
  headers.emplace("Accept-Encoding", "gzip, deflate, br, zstd");  // as Chromium sends it
  auto zipped = client->Post("/kcnet.v1.FacilityService/ListFacilities", headers,
                             R"({"pageSize":100})", "application/json");
  ASSERT_TRUE(zipped);
  ASSERT_EQ(zipped->status, 200) << zipped->body;
  EXPECT_EQ(zipped->get_header_value("Content-Encoding"), "gzip");
  EXPECT_EQ(zipped->get_header_value("Content-Type"), "application/json");
  // The same JSON as the answer sent as it is.
  httplib::Headers plain_headers = BrowserHeaders(cookie);
  plain_headers.emplace("Accept-Encoding", "identity");
  auto plain = client->Post("/kcnet.v1.FacilityService/ListFacilities", plain_headers,
                            R"({"pageSize":100})", "application/json");
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  EXPECT_EQ(plain->get_header_value("Content-Encoding"), "");
  ASSERT_GT(plain->body.size(), 8u * 1024);
  z_stream z{};
  ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string unzipped(plain->body.size() + 1, '\0');
  z.next_in = reinterpret_cast<Bytef*>(zipped->body.data());
  z.avail_in = static_cast<uInt>(zipped->body.size());
  z.next_out = reinterpret_cast<Bytef*>(unzipped.data());
  z.avail_out = static_cast<uInt>(unzipped.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  unzipped.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_EQ(unzipped, plain->body);
  // A small answer too (brotli cost 20 ms even for a few hundred bytes).
  auto small = client->Post("/kcnet.v1.AuthService/WhoAmI", headers, "{}", "application/json");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->status, 200);
  EXPECT_EQ(small->get_header_value("Content-Encoding"), "gzip");
}

TEST_F(ConnectBridgeTest, StaticFilesWithContentTypesGzipAndSecurityHeaders) {
  auto client = Http();
  client->set_decompress(false);
  auto index = client->Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_THAT(index->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_EQ(index->body, kIndexHtml);
  const std::string csp = index->get_header_value("Content-Security-Policy");
  EXPECT_THAT(csp, HasSubstr("script-src 'self'"));
  EXPECT_THAT(csp, HasSubstr("frame-ancestors 'none'"));
  EXPECT_THAT(csp, Not(HasSubstr("unsafe-inline")));
  EXPECT_EQ(index->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(index->get_header_value("Referrer-Policy"), "no-referrer");

  auto script = client->Get("/assets/app.js", {{"Accept-Encoding", "gzip"}});
  ASSERT_TRUE(script);
  EXPECT_EQ(script->status, 200);
  EXPECT_EQ(script->get_header_value("Content-Type"), "text/javascript");
  EXPECT_EQ(script->get_header_value("Content-Encoding"), "gzip");
  EXPECT_LT(script->body.size(), 1000u);  // 4 KB of mostly spaces, compressed
  EXPECT_FALSE(script->get_header_value("Content-Security-Policy").empty());

  auto missing = client->Get("/assets/none.js");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  // Calls carry the headers too.
  auto call = Unary("kcnet.v1.AuthService/WhoAmI", "{}", {});
  ASSERT_TRUE(call);
  EXPECT_FALSE(call->get_header_value("Content-Security-Policy").empty());
}

TEST_F(ConnectBridgeTest, CurlWorks) {
  const std::string command = absl::StrCat(
      "curl -sS -X POST -H 'Content-Type: application/json' "
      "-d '{\"username\":\"officer\",\"password\":\"password-123\"}' "
      "http://127.0.0.1:",
      server_->server().http_port(), "/kcnet.v1.AuthService/Login 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  const int rc = pclose(pipe);
  if (rc != 0 && absl::StrContains(out, "not found")) GTEST_SKIP() << "no curl";
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("\"token\":\""));
  EXPECT_THAT(out, HasSubstr("\"username\":\"officer\""));
}

TEST(ConnectBridgeTlsTest, ServesTlsWithTheGrpcCertificate) {
  kcnet::testing::TempDir certs_dir;
  kcnet::testing::TestCertificates certs(certs_dir.path());
  if (!certs.ok()) GTEST_SKIP() << certs.error();
  TestServer server([&](ServerOptions& options) {
    options.tls_cert_file = certs.server_cert();
    options.tls_key_file = certs.server_key();
    options.http_listen = "127.0.0.1:0";
  });
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE(
      server.directory()
          .CreateUser(
              "admin", "Quản trị", kPassword, ROLE_ADMINISTRATOR,
              {server.directory().CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0)->id()})
          .ok());
  httplib::SSLClient client("localhost", server.server().http_port());
  client.set_ca_cert_path(certs.ca_cert());
  client.enable_server_certificate_verification(true);
  auto login = client.Post("/kcnet.v1.AuthService/Login",
                           R"({"username":"admin","password":"password-123"})", "application/json");
  ASSERT_TRUE(login) << httplib::to_string(login.error());
  EXPECT_EQ(login->status, 200) << login->body;
  EXPECT_THAT(login->body, HasSubstr("\"token\":\""));
  // Plain HTTP on the TLS port gets no answer.
  httplib::Client plain("127.0.0.1", server.server().http_port());
  plain.set_read_timeout(5, 0);
  auto refused = plain.Post("/kcnet.v1.AuthService/Login", "{}", "application/json");
  EXPECT_TRUE(!refused || refused->status != 200);
}

TEST(ConnectBridgeOptionsTest, PlainHttpOffLoopbackNeedsInsecure) {
  kcnet::testing::TempDir dir;
  ServerOptions options;
  options.data_dir = dir.path();
  options.listen = "127.0.0.1:0";
  options.http_listen = "0.0.0.0:0";
  options.directory.password_ops_limit = kArgon2OpsLimitMin;
  options.directory.password_mem_limit = kArgon2MemLimitMin;
  options.log_sink = [](absl::string_view) {};
  auto server = KcnetServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("http_listen"));
}

}  // namespace
}  // namespace kcnet::server
