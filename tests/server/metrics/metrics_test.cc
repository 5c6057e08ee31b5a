// kcnet-server --metrics_listen: the real binary on a seeded data directory, a tablet (the
// kcnet binary) that signs in, registers a facility and syncs, unary calls (one failing),
// then /metrics scraped before and after: the counters moved by exactly what was done, and
// Prometheus' own linter (`promtool check metrics`) accepts the scrape.
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
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
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_CLI_PATH
#error "KCNET_CLI_PATH, KCNET_SERVER_PATH and KCNET_ADMIN_PATH name the binaries"
#endif

namespace kcnet::server {
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

// A scrape's samples by series ("name{labels}" exactly as exposed).
using Samples = std::map<std::string, double>;

Samples Parse(const std::string& text) {
  Samples samples;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    EXPECT_NE(space, absl::string_view::npos) << line;
    if (space == absl::string_view::npos) continue;
    const absl::string_view number = line.substr(space + 1);
    if (number == "+Inf") {
      value = 1e308;
    } else {
      EXPECT_TRUE(absl::SimpleAtod(number, &value)) << line;
    }
    samples[std::string(line.substr(0, space))] = value;
  }
  return samples;
}

std::string Grpc(const std::string& type, const std::string& service, const std::string& method) {
  return absl::StrCat("grpc_type=\"", type, "\",grpc_service=\"", service, "\",grpc_method=\"",
                      method, "\"");
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string data = dir_.File("data");
    RunOutput seed = RunProgram({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data},
                                dir_.File("admin.err"), absl::Seconds(60));
    ASSERT_EQ(seed.exit_code, 0) << ReadFile(dir_.File("admin.err"));
    for (absl::string_view line : absl::StrSplit(seed.output, '\n')) {
      std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.size() >= 2 && words[0] == "collab1") password_ = std::string(words[1]);
    }
    ASSERT_FALSE(password_.empty()) << seed.output;
    std::ofstream(dir_.File("password")) << password_ << "\n";
    absl::StatusOr<std::unique_ptr<ChildProcess>> server =
        ChildProcess::Start({KCNET_SERVER_PATH, "--data_dir=" + data, "--listen=127.0.0.1:0",
                             "--metrics_listen=127.0.0.1:0"},
                            dir_.File("server.err"));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    std::optional<std::string> ready = server_->ReadLine(absl::Seconds(30));
    ASSERT_TRUE(ready.has_value()) << ReadFile(dir_.File("server.err"));
    absl::string_view address = *ready;
    ASSERT_TRUE(absl::ConsumePrefix(&address, "kcnet-server listening on ")) << *ready;
    address_ = std::string(address);
    std::optional<std::string> metrics = server_->ReadLine(absl::Seconds(10));
    ASSERT_TRUE(metrics.has_value()) << ReadFile(dir_.File("server.err"));
    absl::string_view url = *metrics;
    ASSERT_TRUE(absl::ConsumePrefix(&url, "metrics on http://127.0.0.1:")) << *metrics;
    ASSERT_TRUE(absl::ConsumeSuffix(&url, "/metrics")) << *metrics;
    ASSERT_TRUE(absl::SimpleAtoi(url, &metrics_port_)) << *metrics;
  }

  std::string Scrape() {
    httplib::Client client("127.0.0.1", metrics_port_);
    client.set_read_timeout(20, 0);
    httplib::Result result = client.Get("/metrics");
    EXPECT_TRUE(result) << "no answer from /metrics";
    if (!result) return "";
    EXPECT_EQ(result->status, 200);
    EXPECT_EQ(result->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    return result->body;
  }

  int Kcnet(std::vector<std::string> args) {
    args.insert(args.begin(), {KCNET_CLI_PATH, "--store=" + dir_.File("tablet.db")});
    const std::string err = dir_.File(absl::StrCat("kcnet", ++runs_, ".err"));
    RunOutput out = RunProgram(args, err, absl::Seconds(60));
    EXPECT_EQ(out.exit_code, 0) << ReadFile(err);
    return out.exit_code;
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<ChildProcess> server_;
  std::string address_;
  std::string password_;
  int metrics_port_ = 0;
  int runs_ = 0;
};

TEST_F(MetricsTest, ScrapeCountsWhatWasDoneAndPassesPromtool) {
  // The tablet signs in and takes its first download (streams, pages, bytes).
  ASSERT_EQ(Kcnet({"--server=" + address_, "login", "collab1",
                   "--password-file=" + dir_.File("password")}),
            0);
  ASSERT_EQ(Kcnet({"sync"}), 0);
  const Samples before = Parse(Scrape());

  // What is measured: one facility pushed by one sync stream, one good sign-in, one wrong
  // password and one call without a token.
  ASSERT_EQ(Kcnet({"facility", "add", "--name=Cơ sở mây tre Lê Thị Hoa", "--owner=Lê Thị Hoa",
                   "--products=Mây tre đan", "--workers=5", "--lat=20.1", "--lng=105.5",
                   "--kind=household-business", "--sector=handicraft"}),
            0);
  ASSERT_EQ(Kcnet({"sync"}), 0);
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto auth = v1::AuthService::NewStub(channel);
  v1::LoginRequest login;
  login.set_username("collab1");
  login.set_password(password_);
  v1::LoginResponse signed_in;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(auth->Login(&context, login, &signed_in).ok());
  }
  login.set_password("not the password");
  {
    grpc::ClientContext context;
    EXPECT_EQ(auth->Login(&context, login, &signed_in).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    auto units = v1::OrgUnitService::NewStub(channel);
    grpc::ClientContext context;  // no token
    v1::ListOrgUnitsResponse response;
    EXPECT_EQ(units->ListOrgUnits(&context, {}, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {  // an upload stream without a token (a bidi stream: counted by its service)
    auto attachments = v1::AttachmentService::NewStub(channel);
    grpc::ClientContext context;
    auto stream = attachments->Upload(&context);
    stream->WritesDone();
    v1::UploadAck ack;
    while (stream->Read(&ack)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The server counts a stream when gRPC is done with it, which may be just after the
  // client has its status.
  const std::string upload_series = Grpc("bidi_stream", "kcnet.v1.AttachmentService", "Upload");
  const std::string upload_refused =
      "grpc_server_handled_total{" + upload_series + ",grpc_code=\"Unauthenticated\"} 1\n";
  for (int i = 0; i < 100 && !absl::StrContains(Scrape(), upload_refused); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string text = Scrape();
  const Samples after = Parse(text);
  auto delta = [&](const std::string& series) {
    EXPECT_TRUE(after.count(series)) << series << " missing from the scrape";
    const auto was = before.find(series);
    return after.count(series) ? after.at(series) - (was == before.end() ? 0 : was->second) : -1;
  };

  const std::string login_series = Grpc("unary", "kcnet.v1.AuthService", "Login");
  EXPECT_EQ(delta("grpc_server_started_total{" + login_series + "}"), 2);
  EXPECT_EQ(delta("grpc_server_handled_total{" + login_series + ",grpc_code=\"OK\"}"), 1);
  EXPECT_EQ(delta("grpc_server_handled_total{" + login_series + ",grpc_code=\"Unauthenticated\"}"),
            1);
  EXPECT_EQ(delta("grpc_server_msg_received_total{" + login_series + "}"), 2);
  EXPECT_EQ(delta("grpc_server_handling_seconds_count{" + login_series + "}"), 2);
  const std::string list_series = Grpc("unary", "kcnet.v1.OrgUnitService", "ListOrgUnits");
  EXPECT_EQ(delta("grpc_server_handled_total{" + list_series + ",grpc_code=\"Unauthenticated\"}"),
            1);
  EXPECT_EQ(delta("grpc_server_handled_total{" + list_series + ",grpc_code=\"OK\"}"), 0);

  EXPECT_EQ(delta("grpc_server_started_total{" + upload_series + "}"), 1);
  EXPECT_EQ(delta("grpc_server_handled_total{" + upload_series + ",grpc_code=\"Unauthenticated\"}"),
            1);

  // One sync: one stream, started and ended OK, that pushed the one facility.
  const std::string sync_series = Grpc("bidi_stream", "kcnet.v1.SyncService", "Sync");
  EXPECT_EQ(delta("grpc_server_started_total{" + sync_series + "}"), 1);
  EXPECT_EQ(delta("grpc_server_handled_total{" + sync_series + ",grpc_code=\"OK\"}"), 1);
  EXPECT_GE(delta("grpc_server_msg_received_total{" + sync_series + "}"), 2);  // Hello, push
  EXPECT_GE(delta("grpc_server_msg_sent_total{" + sync_series + "}"), 2);      // Welcome, ack
  EXPECT_EQ(delta("kcnet_sync_mutations_total{outcome=\"applied\"}"), 1);
  EXPECT_EQ(delta("kcnet_sync_mutations_total{outcome=\"refused\"}"), 0);
  EXPECT_GE(delta("kcnet_store_group_commit_batches_count"), 1);
  EXPECT_GE(delta("kcnet_store_commit_seconds_count"), 1);
  // The first sync downloaded the seeded facilities.
  EXPECT_GE(before.at("kcnet_sync_download_pages_total"), 1);
  EXPECT_GT(before.at("kcnet_sync_download_bytes_total"), 0);
  EXPECT_EQ(after.at("kcnet_sync_streams_open"), 0);
  EXPECT_EQ(after.at("kcnet_fanout_lag_seconds"), 0);  // one instance
  EXPECT_GE(after.at("kcnet_store_readers"), 1);
  EXPECT_THAT(text, HasSubstr("# TYPE grpc_server_handling_seconds histogram\n"));

  // Prometheus' linter on the scrape.
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not installed (apt-get install prometheus): the scrape was not "
                    "linted";
  }
  std::ofstream(dir_.File("scrape.txt")) << text;
  const std::string command = absl::StrCat("promtool check metrics < '", dir_.File("scrape.txt"),
                                           "' > '", dir_.File("promtool.out"), "' 2>&1");
  EXPECT_EQ(std::system(command.c_str()), 0) << ReadFile(dir_.File("promtool.out"));
}

TEST_F(MetricsTest, OtherPathsAreNotFound) {
  httplib::Client client("127.0.0.1", metrics_port_);
  httplib::Result result = client.Get("/");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
}

}  // namespace
}  // namespace kcnet::server
