// TestServer: a real KcnetServer for integration tests: a temporary data directory,
// 127.0.0.1 on a picked port, fast (weak) password hashing, a fake clock for tokens, and
// the log lines kept in memory. Plus small client helpers: bearer metadata, sign-in, and
// decoding the google.rpc.BadRequest details of a failed call.
//
// Thread-safety: TestServer is used from the test's thread; the log is thread-safe.
#ifndef KCNET_TESTS_SERVER_SERVICES_TEST_SERVER_H_
#define KCNET_TESTS_SERVER_SERVICES_TEST_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/hlc.h"
#include "tests/testing/test_util.h"

namespace kcnet::server::testing {

// A fixed start for the directory's fake clock (Unix ms, November 2023).
inline constexpr int64_t kTestStartMs = 1'700'000'000'000;

class TestServer {
 public:
  // Starts the server; `customize` may change the options first.
  explicit TestServer(const std::function<void(ServerOptions&)>& customize = nullptr)
      : clock_(kTestStartMs) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.File("data");
    options.storage_threads = 2;
    options.directory.clock = &clock_;
    options.directory.password_ops_limit = kArgon2OpsLimitMin;
    options.directory.password_mem_limit = kArgon2MemLimitMin;
    options.log_sink = [this](absl::string_view line) {
      absl::MutexLock lock(&log_mu_);
      log_.emplace_back(line);
    };
    if (customize) customize(options);
    absl::StatusOr<std::unique_ptr<KcnetServer>> server = KcnetServer::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = *std::move(server);
  }

  bool ok() const { return server_ != nullptr; }
  KcnetServer& server() { return *server_; }
  Directory& directory() { return *server_->directory(); }
  sync::FakeClock& clock() { return clock_; }
  std::string data_dir() const { return dir_.File("data"); }

  std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                               grpc::InsecureChannelCredentials());
  }

  std::vector<std::string> LogLines() {
    absl::MutexLock lock(&log_mu_);
    return log_;
  }

 private:
  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_;
  absl::Mutex log_mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(log_mu_);
  std::unique_ptr<KcnetServer> server_;  // last: stops before the log and the clock go
};

// Adds "authorization: Bearer <token>" to a call.
inline void Authorize(grpc::ClientContext* context, const std::string& token) {
  context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

// Signs in through AuthService.Login; the token, or "" (with a test failure).
inline std::string SignIn(const std::shared_ptr<grpc::Channel>& channel,
                          const std::string& username, const std::string& password) {
  auto stub = kcnet::v1::AuthService::NewStub(channel);
  grpc::ClientContext context;
  kcnet::v1::LoginRequest request;
  request.set_username(username);
  request.set_password(password);
  kcnet::v1::LoginResponse response;
  const grpc::Status status = stub->Login(&context, request, &response);
  EXPECT_TRUE(status.ok()) << username << ": " << status.error_message();
  return response.token();
}

// The (field, description) pairs of the google.rpc.BadRequest in a status's details.
inline std::vector<std::pair<std::string, std::string>> FieldViolations(
    const grpc::Status& status) {
  std::vector<std::pair<std::string, std::string>> out;
  google::rpc::Status details;
  if (status.error_details().empty() || !details.ParseFromString(status.error_details())) {
    return out;
  }
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::BadRequest bad_request;
    if (!any.UnpackTo(&bad_request)) continue;
    for (const auto& violation : bad_request.field_violations()) {
      out.emplace_back(violation.field(), violation.description());
    }
  }
  return out;
}

}  // namespace kcnet::server::testing

#endif  // KCNET_TESTS_SERVER_SERVICES_TEST_SERVER_H_
