// The real binaries: `kcnet-admin seed-demo` fills a data directory, kcnet-server serves
// it on a picked port, a client signs in with a printed demo account, and SIGTERM stops the
// server cleanly. Off loopback the server wants TLS (or an explicit --insecure, which it
// warns about), and a TLS client signs in with a certificate made by openssl.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/directory/directory.h"
#include "server/plans/plan_store.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tests/testing/test_tls.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
#endif
#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A child process with stdout on a pipe and stderr in a file; killed if still running at
// destruction.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& stderr_path) {
    // Everything the child needs is prepared before fork(): the test process has threads,
    // so the child may only make async-signal-safe calls until execv().
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int out[2];
    if (err < 0 || pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    close(err);
    close(out[1]);
    out_ = out[0];
  }
  ~Process() {
    if (pid_ > 0 && !exit_code_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
  }

  bool started() const { return pid_ > 0; }

  // The next line of stdout, or nullopt when none comes within `timeout`.
  std::optional<std::string> ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) return std::nullopt;
      pollfd fd{out_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(left_ms)) <= 0) continue;
      char chunk[512];
      const ssize_t n = read(out_, chunk, sizeof(chunk));
      if (n <= 0) return std::nullopt;  // closed: the process is gone
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  void Signal(int signal_number) { kill(pid_, signal_number); }

  // The exit code, or nullopt when the process has not exited within `timeout` (or died
  // of a signal: then -signal).
  std::optional<int> Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!exit_code_.has_value()) {
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        break;
      }
      if (absl::Now() >= deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(10));  // polling with a deadline: waitpid cannot time out
    }
    return exit_code_;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::optional<int> exit_code_;
};

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a binary to completion.
RunResult RunToEnd(const std::vector<std::string>& argv, const kcnet::testing::TempDir& tmp) {
  Process process(argv, tmp.File("run.stderr"));
  RunResult result;
  EXPECT_TRUE(process.started());
  while (std::optional<std::string> line = process.ReadLine(absl::Seconds(60))) {
    absl::StrAppend(&result.out, *line, "\n");
  }
  result.exit_code = process.Wait(absl::Seconds(60)).value_or(-1000);
  result.err = ReadFile(tmp.File("run.stderr"));
  return result;
}

// The password printed for `username` in seed-demo's account table.
std::string PrintedPassword(const std::string& out, const std::string& username) {
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.size() >= 2 && words[0] == username) return std::string(words[1]);
  }
  return "";
}

TEST(BinariesTest, SeedDemoThenServeThenStopOnSigterm) {
  // A gRPC C++ client with no call in progress reads its connection only on the channel's
  // backup poll (every 5 s by default), and a graceful server shutdown waits for the
  // client to acknowledge the GOAWAY (at most the server's 10 s grace). Make this idle
  // client answer promptly, as a busy one would. Read once, when gRPC starts below.
  setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", 1);
  kcnet::testing::TempDir tmp;
  const std::string data_dir = tmp.File("data");
  RunResult seed = RunToEnd({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data_dir}, tmp);
  ASSERT_EQ(seed.exit_code, 0) << seed.err;
  for (const char* name : {"collab1", "collab2", "coord1", "officer1", "admin1"}) {
    EXPECT_FALSE(PrintedPassword(seed.out, name).empty()) << name << " missing in:\n" << seed.out;
  }
  const std::string password = PrintedPassword(seed.out, "collab1");

  // A second seed is refused and changes nothing.
  RunResult again = RunToEnd({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data_dir}, tmp);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, HasSubstr("not empty"));

  // The demo facilities are synced records in the communes' buckets.
  {
    auto directory = Directory::Open(data_dir + "/directory.db");
    ASSERT_TRUE(directory.ok()) << directory.status();
    auto province = (*directory)->FindByCode("90");
    ASSERT_TRUE(province.ok());
    EXPECT_EQ(province->name(), "Tỉnh Demo");
    auto communes = (*directory)->Communes({province->id()});
    ASSERT_TRUE(communes.ok());
    EXPECT_GE(communes->size(), 4u);
    auto store = sync::ServerStore::Open(data_dir + "/kcnet.db", &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<v1::BucketCursor> cursors;
    for (int64_t commune : *communes) cursors.emplace_back().set_bucket(commune);
    auto batch = (*store)->ChangesSince(cursors);
    ASSERT_TRUE(batch.ok()) << batch.status();
    int facilities = 0;
    for (const v1::RecordChange& change : batch->changes()) {
      if (change.type() != model::kFacilityType) continue;
      v1::Facility facility;
      ASSERT_TRUE(model::FromChange(change, &facility).ok());
      EXPECT_FALSE(facility.name().empty());
      EXPECT_TRUE(absl::c_linear_search(*communes, facility.commune_id()));
      ++facilities;
    }
    EXPECT_GE(facilities, 3);
    // And this year's extension plan of the province, for the demo's approvals.
    auto plans = server::PlanStore::Open(data_dir + "/plans.db");
    ASSERT_TRUE(plans.ok()) << plans.status();
    auto plan =
        (*plans)->GetPlan(province->id(), server::VietnamYear(absl::ToUnixMillis(absl::Now())));
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->lines_size(), 16);
    EXPECT_THAT(seed.out, HasSubstr("extension plan"));
  }

  Process server(
      {KCNET_SERVER_PATH, "--data_dir=" + data_dir, "--listen=127.0.0.1:0", "--log_format=json"},
      tmp.File("server.stderr"));
  ASSERT_TRUE(server.started());
  const std::optional<std::string> ready = server.ReadLine(absl::Seconds(30));
  ASSERT_TRUE(ready.has_value()) << ReadFile(tmp.File("server.stderr"));
  constexpr absl::string_view kReady = "kcnet-server listening on 127.0.0.1:";
  ASSERT_TRUE(absl::StartsWith(*ready, kReady)) << *ready;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(ready->substr(kReady.size()), &port)) << *ready;
  ASSERT_GT(port, 0);

  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto auth = v1::AuthService::NewStub(channel);
  v1::LoginRequest login;
  login.set_username("collab1");
  login.set_password(password);
  v1::LoginResponse signed_in;
  grpc::ClientContext login_context;
  const grpc::Status status = auth->Login(&login_context, login, &signed_in);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto units = v1::OrgUnitService::NewStub(channel);
  grpc::ClientContext list_context;
  list_context.AddMetadata("authorization", absl::StrCat("Bearer ", signed_in.token()));
  v1::ListOrgUnitsResponse own;
  ASSERT_TRUE(units->ListOrgUnits(&list_context, {}, &own).ok());
  ASSERT_EQ(own.org_units_size(), 1);
  EXPECT_EQ(own.org_units(0).code(), "90101");

  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(absl::Seconds(5)), std::optional<int>(0));
  const std::string log = ReadFile(tmp.File("server.stderr"));
  EXPECT_THAT(log,
              HasSubstr(R"("method":"/kcnet.v1.AuthService/Login","caller":"-","status":"OK")"));
  EXPECT_THAT(log, HasSubstr(R"("caller":"collab1","status":"OK")"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(password)));
}

TEST(BinariesTest, BadCommandLinesExitWithTwoAndOneLine) {
  kcnet::testing::TempDir tmp;
  const std::vector<std::vector<std::string>> bad = {
      {KCNET_SERVER_PATH, "--nope=1", "--data_dir=" + tmp.File("d")},
      {KCNET_SERVER_PATH},  // no --data_dir
      {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), "--storage_threads=many"},
      {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), "--log_format=xml"},
      {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), "--tls_cert=" + tmp.File("c.pem")},
      {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), "stray"},
      {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), "--reflection=maybe"},
  };
  for (const auto& argv : bad) {
    const RunResult result = RunToEnd(argv, tmp);
    EXPECT_EQ(result.exit_code, 2) << argv.back() << ": " << result.err;
    EXPECT_TRUE(absl::StartsWith(result.err, "kcnet-server: ")) << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_TRUE(result.out.empty()) << result.out;
  }
  const RunResult help = RunToEnd({KCNET_SERVER_PATH, "--help"}, tmp);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--data_dir"));
}

// The first line of stdout of a server that started: "kcnet-server listening on HOST:PORT";
// returns PORT (0 when it did not start).
int ListeningPort(Process& server, const std::string& stderr_path) {
  const std::optional<std::string> ready = server.ReadLine(absl::Seconds(30));
  EXPECT_TRUE(ready.has_value()) << ReadFile(stderr_path);
  if (!ready.has_value()) return 0;
  const size_t colon = ready->rfind(':');
  int port = 0;
  EXPECT_TRUE(absl::StartsWith(*ready, "kcnet-server listening on ")) << *ready;
  EXPECT_TRUE(colon != std::string::npos && absl::SimpleAtoi(ready->substr(colon + 1), &port))
      << *ready;
  return port;
}

grpc::Status SignInOver(const std::shared_ptr<grpc::Channel>& channel, const std::string& user,
                        const std::string& password) {
  auto auth = v1::AuthService::NewStub(channel);
  v1::LoginRequest login;
  login.set_username(user);
  login.set_password(password);
  v1::LoginResponse signed_in;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  return auth->Login(&context, login, &signed_in);
}

TEST(BinariesTest, OffLoopbackPlaintextNeedsInsecure) {
  kcnet::testing::TempDir tmp;
  for (const char* listen : {"0.0.0.0:0", "[::]:0"}) {
    const RunResult refused = RunToEnd(
        {KCNET_SERVER_PATH, "--data_dir=" + tmp.File("d"), std::string("--listen=") + listen}, tmp);
    EXPECT_EQ(refused.exit_code, 2) << listen << ": " << refused.err;
    EXPECT_TRUE(refused.out.empty()) << refused.out;
    EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
    EXPECT_THAT(refused.err, HasSubstr(absl::StrCat("kcnet-server: --listen: ", listen,
                                                    " is not a loopback address")));
    EXPECT_THAT(refused.err, HasSubstr("--tls_cert"));
    EXPECT_THAT(refused.err, HasSubstr("--insecure"));
  }

  // --insecure: it serves plaintext, and says so at the start.
  const std::string data_dir = tmp.File("data");
  RunResult seed = RunToEnd({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data_dir}, tmp);
  ASSERT_EQ(seed.exit_code, 0) << seed.err;
  Process server({KCNET_SERVER_PATH, "--data_dir=" + data_dir, "--listen=0.0.0.0:0", "--insecure"},
                 tmp.File("insecure.stderr"));
  ASSERT_TRUE(server.started());
  const int port = ListeningPort(server, tmp.File("insecure.stderr"));
  ASSERT_GT(port, 0);
  EXPECT_THAT(ReadFile(tmp.File("insecure.stderr")),
              HasSubstr("--insecure: plaintext on 0.0.0.0:"));
  const grpc::Status status = SignInOver(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      "collab1", PrintedPassword(seed.out, "collab1"));
  EXPECT_TRUE(status.ok()) << status.error_message();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(absl::Seconds(15)), std::optional<int>(0));
}

TEST(BinariesTest, TlsRoundTripOffLoopback) {
  kcnet::testing::TempDir tmp;
  kcnet::testing::TestCertificates certs(tmp.path());
  if (!certs.ok()) GTEST_SKIP() << certs.error();
  const std::string data_dir = tmp.File("data");
  RunResult seed = RunToEnd({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data_dir}, tmp);
  ASSERT_EQ(seed.exit_code, 0) << seed.err;
  Process server({KCNET_SERVER_PATH, "--data_dir=" + data_dir, "--listen=0.0.0.0:0",
                  "--tls_cert=" + certs.server_cert(), "--tls_key=" + certs.server_key()},
                 tmp.File("tls.stderr"));
  ASSERT_TRUE(server.started());
  const int port = ListeningPort(server, tmp.File("tls.stderr"));
  ASSERT_GT(port, 0);
  EXPECT_THAT(ReadFile(tmp.File("tls.stderr")), ::testing::Not(HasSubstr("plaintext")));
  const std::string password = PrintedPassword(seed.out, "collab1");
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(certs.ca_cert());
  const grpc::Status tls =
      SignInOver(grpc::CreateChannel(absl::StrCat("localhost:", port), grpc::SslCredentials(ssl)),
                 "collab1", password);
  EXPECT_TRUE(tls.ok()) << tls.error_message();
  // A plaintext client gets nowhere.
  const grpc::Status plain = SignInOver(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      "collab1", password);
  EXPECT_FALSE(plain.ok());
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(absl::Seconds(15)), std::optional<int>(0));
}

}  // namespace
}  // namespace kcnet::server
