// Debian's nginx with deploy/nginx/kcnet.conf (rendered by deploy/nginx/render.sh) in front
// of two real kcnet-server processes, each on its own SQLite data directory (what is tested
// is nginx's TLS, balancing and stream behaviour, not a shared store):
//   - a tablet (the kcnet binary) signs in and syncs through nginx over TLS, and the console's
//     HTTP bridge signs in and answers a unary call through the same port;
//   - when the instance in use stops, calls go to the other one;
//   - calls are balanced over both instances (nginx's access log names the upstream);
//   - an idle sync stream stays open past a short stream timeout under the shipped
//     configuration, while the same configuration rendered with that short timeout cuts it
//     (so it is the configured value, not luck, that keeps idle tablets connected).
// nginx runs in the foreground (daemon off) from a temporary prefix on a free port, and is
// stopped by its pid. Skipped when nginx or openssl is not installed.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/cli/child_process.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "tests/testing/test_tls.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_RENDER_NGINX
#error "KCNET_RENDER_NGINX names deploy/nginx/render.sh"
#endif

namespace kcnet::deploy {
namespace {

using ::kcnet::cli::ChildProcess;
using ::kcnet::cli::RunOutput;
using ::kcnet::cli::RunProgram;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The nginx binary, or "" (Debian puts it in /usr/sbin, which a user's PATH may lack).
std::string NginxPath() {
  for (const char* path : {"/usr/sbin/nginx", "/usr/bin/nginx"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

// A port nothing listens on now (the kernel's pick, released at once).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), size) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

// One kcnet-server on its own seeded data directory, with the HTTP bridge.
struct Instance {
  std::unique_ptr<ChildProcess> process;
  int grpc_port = 0;
  int http_port = 0;
  std::string password;  // collab1's, from seed-demo
};

class NginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nginx_ = NginxPath();
    if (nginx_.empty()) GTEST_SKIP() << "nginx is not installed (apt-get install nginx-light)";
    certs_ = std::make_unique<kcnet::testing::TestCertificates>(dir_.path());
    if (!certs_->ok()) GTEST_SKIP() << certs_->error();
  }

  Instance StartInstance(const std::string& name) {
    Instance instance;
    const std::string data = dir_.File(name);
    RunOutput seed = RunProgram({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data},
                                dir_.File(name + ".seed.err"), absl::Seconds(60));
    EXPECT_EQ(seed.exit_code, 0) << ReadFile(dir_.File(name + ".seed.err"));
    for (absl::string_view line : absl::StrSplit(seed.output, '\n')) {
      std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.size() >= 2 && words[0] == "collab1") instance.password = std::string(words[1]);
    }
    absl::StatusOr<std::unique_ptr<ChildProcess>> process =
        ChildProcess::Start({KCNET_SERVER_PATH, "--data_dir=" + data, "--listen=127.0.0.1:0",
                             "--http_listen=127.0.0.1:0", "--trusted_proxies=127.0.0.1"},
                            dir_.File(name + ".err"));
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return instance;
    instance.process = *std::move(process);
    for (int i = 0; i < 2; ++i) {
      std::optional<std::string> line = instance.process->ReadLine(absl::Seconds(30));
      EXPECT_TRUE(line.has_value()) << ReadFile(dir_.File(name + ".err"));
      if (!line.has_value()) break;
      absl::string_view rest = *line;
      if (absl::ConsumePrefix(&rest, "kcnet-server listening on 127.0.0.1:")) {
        EXPECT_TRUE(absl::SimpleAtoi(rest, &instance.grpc_port)) << *line;
      } else if (absl::ConsumePrefix(&rest, "console on http://127.0.0.1:")) {
        EXPECT_TRUE(absl::SimpleAtoi(absl::StripSuffix(rest, "/"), &instance.http_port)) << *line;
      }
    }
    EXPECT_GT(instance.grpc_port, 0);
    EXPECT_GT(instance.http_port, 0);
    return instance;
  }

  // Renders kcnet.conf for `upstreams` (render.sh --grpc values, with the bridge ports in
  // `http`) and starts nginx on a free port in its own prefix `name`; returns the port.
  int StartNginx(const std::string& name, const std::vector<std::string>& grpc,
                 const std::vector<std::string>& http, const std::string& stream_timeout = "") {
    const std::string prefix = dir_.File(name);
    std::filesystem::create_directories(prefix + "/logs");
    const int port = FreePort();
    std::vector<std::string> render = {
        "/bin/bash", KCNET_RENDER_NGINX,    "--listen", absl::StrCat(port),
        "--cert",    certs_->server_cert(), "--key",    certs_->server_key(),
        "--log-dir", prefix + "/logs"};
    for (const std::string& g : grpc) render.insert(render.end(), {"--grpc", g});
    for (const std::string& h : http) render.insert(render.end(), {"--http", h});
    if (!stream_timeout.empty()) render.insert(render.end(), {"--stream-timeout", stream_timeout});
    RunOutput conf = RunProgram(render, prefix + "/render.err", absl::Seconds(30));
    EXPECT_EQ(conf.exit_code, 0) << ReadFile(prefix + "/render.err");
    std::ofstream(prefix + "/kcnet.conf") << conf.output;
    // The main configuration around the site file: foreground, everything in the prefix.
    std::ofstream main(prefix + "/nginx.conf");
    main << "daemon off;\nworker_processes 1;\npid " << prefix << "/nginx.pid;\n"
         << "error_log " << prefix << "/logs/error.log info;\n"
         << (geteuid() == 0 ? "user root;\n" : "") << "events { worker_connections 256; }\n"
         << "http {\n  access_log off;\n";
    for (const char* temp : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
      main << "  " << temp << "_temp_path " << prefix << "/" << temp << ";\n";
    }
    main << "  include " << prefix << "/kcnet.conf;\n}\n";
    main.close();
    absl::StatusOr<std::unique_ptr<ChildProcess>> nginx = ChildProcess::Start(
        {nginx_, "-p", prefix, "-c", prefix + "/nginx.conf"}, prefix + "/nginx.stderr");
    EXPECT_TRUE(nginx.ok()) << nginx.status();
    if (!nginx.ok()) return 0;
    nginxes_.push_back(*std::move(nginx));
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!Accepts(port) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    EXPECT_TRUE(Accepts(port)) << ReadFile(prefix + "/nginx.stderr")
                               << ReadFile(prefix + "/logs/error.log");
    return port;
  }

  std::shared_ptr<grpc::Channel> TlsChannel(int port) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(certs_->ca_cert());
    // A fresh connection per channel (gRPC would share one between equal channels).
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("localhost:", port), grpc::SslCredentials(ssl),
                                     args);
  }

  std::string SignIn(const std::shared_ptr<grpc::Channel>& channel, const std::string& password) {
    auto auth = v1::AuthService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    v1::LoginRequest request;
    request.set_username("collab1");
    request.set_password(password);
    v1::LoginResponse response;
    const grpc::Status status = auth->Login(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.token();
  }

  int Kcnet(std::vector<std::string> args, std::string* out = nullptr) {
    args.insert(args.begin(), {KCNET_CLI_PATH, "--store=" + dir_.File("tablet.db")});
    const std::string err = dir_.File(absl::StrCat("kcnet", ++runs_, ".err"));
    RunOutput run = RunProgram(args, err, absl::Seconds(60));
    EXPECT_EQ(run.exit_code, 0) << ReadFile(err);
    if (out != nullptr) *out = run.output;
    return run.exit_code;
  }

  std::string AccessLog(const std::string& name) {
    return ReadFile(dir_.File(name + "/logs/kcnet.access.log"));
  }

  // How many lines of the access log `log` name `request`.
  static int CountLines(const std::string& log, const std::string& request) {
    int seen = 0;
    for (size_t at = log.find(request); at != std::string::npos;
         at = log.find(request, at + request.size())) {
      ++seen;
    }
    return seen;
  }

  // The access log once it holds `count` lines naming `request`, or as it is after 10 s.
  // nginx writes a request's line when it finalises the request, which can be just after
  // the client has had its answer: a test that reads the log at once may not see it yet.
  std::string AccessLogWith(const std::string& name, const std::string& request, int count = 1) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (true) {
      std::string log = AccessLog(name);
      if (CountLines(log, request) >= count || absl::Now() >= deadline) return log;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  kcnet::testing::TempDir dir_;
  std::string nginx_;
  std::unique_ptr<kcnet::testing::TestCertificates> certs_;
  std::vector<std::unique_ptr<ChildProcess>> nginxes_;
  int runs_ = 0;
};

// An open sync stream whose messages are read on a thread; ended() once the stream ends.
class IdleSyncStream {
 public:
  IdleSyncStream(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
                 const std::string& device_id)
      : stub_(v1::SyncService::NewStub(channel)) {
    context_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    stream_ = stub_->Sync(&context_);
    v1::SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(device_id);
    hello.mutable_hello()->set_schema_version(v1::SCHEMA_VERSION_1);
    stream_->Write(hello);
    reader_ = std::thread([this] {
      v1::SyncServerMessage message;
      while (stream_->Read(&message)) messages_.fetch_add(1);
      status_ = stream_->Finish();
      ended_at_ = absl::Now();
      ended_.store(true);
    });
  }
  ~IdleSyncStream() {
    context_.TryCancel();
    reader_.join();
  }
  bool ended() const { return ended_.load(); }
  int messages() const { return messages_.load(); }
  // Valid once ended().
  const grpc::Status& status() const { return status_; }
  absl::Time ended_at() const { return ended_at_; }

 private:
  std::unique_ptr<v1::SyncService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SyncClientMessage, v1::SyncServerMessage>> stream_;
  std::thread reader_;
  std::atomic<int> messages_{0};
  std::atomic<bool> ended_{false};
  grpc::Status status_;
  absl::Time ended_at_;
};

TEST_F(NginxTest, TabletAndConsoleThroughNginxWithTlsThenFailover) {
  Instance a = StartInstance("a");
  Instance b = StartInstance("b");
  ASSERT_GT(a.grpc_port, 0);
  ASSERT_GT(b.grpc_port, 0);
  // Each instance has its own SQLite store (and its own sign-in tokens): the second is a
  // backup, used only when the first is down. (On PostgreSQL every instance is a peer.)
  const int port = StartNginx(
      "front",
      {absl::StrCat("127.0.0.1:", a.grpc_port), absl::StrCat("127.0.0.1:", b.grpc_port, " backup")},
      {absl::StrCat("127.0.0.1:", a.http_port),
       absl::StrCat("127.0.0.1:", b.http_port, " backup")});
  ASSERT_GT(port, 0);
  const std::string address = absl::StrCat("localhost:", port);
  std::ofstream(dir_.File("password")) << a.password << "\n";

  // The tablet: sign in, register a facility, sync; all over TLS to nginx.
  std::string out;
  ASSERT_EQ(Kcnet({"--server=" + address, "--ca_file=" + certs_->ca_cert(), "login", "collab1",
                   "--password-file=" + dir_.File("password")}),
            0);
  ASSERT_EQ(Kcnet({"facility", "add", "--name=Cơ sở gốm Bát Tràng", "--owner=Phạm Văn Gốm",
                   "--products=Gốm sứ", "--workers=12", "--lat=20.97", "--lng=105.91",
                   "--kind=household-business", "--sector=handicraft"}),
            0);
  ASSERT_EQ(Kcnet({"sync"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("synced with " + address));
  ASSERT_EQ(Kcnet({"status"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("pending uploads: 0"));
  const std::string upstream_a = absl::StrCat("upstream=127.0.0.1:", a.grpc_port);
  const std::string synced = AccessLogWith("front", "SyncService/Sync ");
  EXPECT_THAT(synced, HasSubstr("\"POST /kcnet.v1.SyncService/Sync HTTP/2.0\" 200"));
  EXPECT_THAT(synced, HasSubstr(upstream_a));

  // The console through nginx: sign-in (cookie) and a unary call over the Connect bridge.
  httplib::SSLClient console("localhost", port);
  console.set_ca_cert_path(certs_->ca_cert().c_str());
  console.enable_server_certificate_verification(true);
  console.set_read_timeout(20, 0);
  const httplib::Headers browser = {{"Connect-Protocol-Version", "1"},
                                    {"Origin", absl::StrCat("https://", address)}};
  httplib::Result signed_in =
      console.Post("/auth/sign-in", browser,
                   absl::StrCat(R"({"username":"collab1","password":")", a.password, R"("})"),
                   "application/json");
  ASSERT_TRUE(signed_in) << httplib::to_string(signed_in.error());
  ASSERT_EQ(signed_in->status, 200) << signed_in->body;
  const std::string set_cookie = signed_in->get_header_value("Set-Cookie");
  httplib::Headers with_cookie = browser;
  with_cookie.emplace("Cookie", set_cookie.substr(0, set_cookie.find(';')));
  httplib::Result who =
      console.Post("/kcnet.v1.AuthService/WhoAmI", with_cookie, "{}", "application/json");
  ASSERT_TRUE(who);
  EXPECT_EQ(who->status, 200) << who->body;
  EXPECT_THAT(who->body, HasSubstr("\"username\":\"collab1\""));
  EXPECT_THAT(AccessLogWith("front", "AuthService/WhoAmI"),
              HasSubstr(absl::StrCat("upstream=127.0.0.1:", a.http_port)));

  // The first instance stops: calls go to the second (its own account's password).
  EXPECT_EQ(a.process->Stop(absl::Seconds(15)), 0);
  const int logins_before = CountLines(AccessLog("front"), "AuthService/Login");
  const std::string token = SignIn(TlsChannel(port), b.password);
  EXPECT_FALSE(token.empty());
  // The sign-in was answered by the second instance: nginx either found the first gone
  // (502) and passed the call on ("upstream=A, B upstream_status=502, 200"), or its round
  // robin was on the second already. (Which one depends on nginx's turn: asserting the
  // first alone made the test flaky.)
  const std::string log = AccessLogWith("front", "AuthService/Login", logins_before + 1);
  const size_t last_login = log.rfind("AuthService/Login");
  ASSERT_NE(last_login, std::string::npos) << log;
  const std::string login_line = log.substr(last_login, log.find('\n', last_login) - last_login);
  EXPECT_THAT(login_line, HasSubstr(absl::StrCat("127.0.0.1:", b.grpc_port, " upstream_status=")));
  EXPECT_TRUE(absl::EndsWith(login_line, "200") || absl::StrContains(login_line, "200 rt="))
      << login_line;

  nginxes_.back()->Stop(absl::Seconds(10));  // SIGTERM to nginx's pid
  EXPECT_FALSE(Accepts(port));
}

TEST_F(NginxTest, BalancesCallsAndKeepsIdleStreamsOpenForTheConfiguredTime) {
  Instance a = StartInstance("a");
  Instance b = StartInstance("b");
  ASSERT_GT(a.grpc_port, 0);
  ASSERT_GT(b.grpc_port, 0);
  const std::vector<std::string> grpc = {absl::StrCat("127.0.0.1:", a.grpc_port),
                                         absl::StrCat("127.0.0.1:", b.grpc_port)};
  const int shipped = StartNginx("shipped", grpc, {});  // the template's stream timeout (4h)
  const int short_timeout = StartNginx("short", grpc, {}, "2s");
  ASSERT_GT(shipped, 0);
  ASSERT_GT(short_timeout, 0);

  // Round robin: calls alternate between the instances.
  auto auth = v1::AuthService::NewStub(TlsChannel(shipped));
  for (int i = 0; i < 6; ++i) {
    grpc::ClientContext context;
    v1::LoginRequest request;
    request.set_username("collab1");
    request.set_password(a.password);
    v1::LoginResponse response;
    const grpc::Status status = auth->Login(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  const std::string log = AccessLogWith("shipped", "AuthService/Login", 6);
  EXPECT_THAT(log, HasSubstr(absl::StrCat("upstream=127.0.0.1:", a.grpc_port, " ")));
  EXPECT_THAT(log, HasSubstr(absl::StrCat("upstream=127.0.0.1:", b.grpc_port, " ")));

  // An idle sync stream through each nginx. Each instance knows only its own tokens, and a
  // stream stays on the instance that took it: try each instance's token until one is
  // accepted (the other answers Unauthenticated at once).
  const std::vector<std::string> tokens = {
      SignIn(grpc::CreateChannel(absl::StrCat("127.0.0.1:", a.grpc_port),
                                 grpc::InsecureChannelCredentials()),
             a.password),
      SignIn(grpc::CreateChannel(absl::StrCat("127.0.0.1:", b.grpc_port),
                                 grpc::InsecureChannelCredentials()),
             b.password)};
  auto open_stream = [&](int port, const std::string& device) {
    for (int attempt = 0; attempt < 6; ++attempt) {
      auto stream = std::make_unique<IdleSyncStream>(TlsChannel(port), tokens[attempt % 2],
                                                     absl::StrCat(device, attempt));
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (stream->messages() < 2 && !stream->ended() && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(10));
      }
      if (stream->messages() >= 2 && !stream->ended()) return stream;  // Welcome, first page
    }
    return std::unique_ptr<IdleSyncStream>();
  };
  std::unique_ptr<IdleSyncStream> kept = open_stream(shipped, "tablet-kept-");
  std::unique_ptr<IdleSyncStream> cut = open_stream(short_timeout, "tablet-cut-");
  ASSERT_NE(kept, nullptr);
  ASSERT_NE(cut, nullptr);
  const absl::Time idle_since = absl::Now();
  absl::SleepFor(absl::Seconds(6));
  // Rendered with 2 s, nginx ended the silent stream; the shipped value kept it open.
  EXPECT_TRUE(cut->ended());
  if (cut->ended()) {
    EXPECT_FALSE(cut->status().ok());
    EXPECT_LT(cut->ended_at() - idle_since, absl::Seconds(5));
  }
  EXPECT_FALSE(kept->ended()) << kept->status().error_message();
  EXPECT_THAT(ReadFile(dir_.File("shipped/kcnet.conf")), HasSubstr("grpc_read_timeout 4h;"));

  for (const std::unique_ptr<ChildProcess>& nginx : nginxes_) nginx->Stop(absl::Seconds(10));
  EXPECT_FALSE(Accepts(shipped));
}

}  // namespace
}  // namespace kcnet::deploy
