// StorageRpcRunner on a real gRPC server with a test service whose bodies the test
// controls: authentication, the principal given to the body, status conversion, the RPC
// log, and refusal after Stop().
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/rpc/storage_rpc_runner.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Login is public and fails with a field error when the password is "bad"; WhoAmI echoes
// the principal and the thread it ran on.
class EchoService final : public v1::AuthService::CallbackService {
 public:
  explicit EchoService(RpcRunner* runner) : runner_(runner) {}

  grpc::ServerUnaryReactor* Login(grpc::CallbackServerContext* context,
                                  const v1::LoginRequest* request,
                                  v1::LoginResponse* response) override {
    return runner_->RunPublic(context, "/test/Login",
                              [request, response](const Principal* caller) -> absl::Status {
                                if (caller != nullptr) return absl::InternalError("caller set");
                                if (request->password() == "bad") {
                                  return absl::InvalidArgumentError("password: is bad");
                                }
                                response->set_token("public-ok");
                                return absl::OkStatus();
                              });
  }

  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* context,
                                   const v1::WhoAmIRequest* request,
                                   v1::WhoAmIResponse* response) override {
    const std::thread::id handler_thread = std::this_thread::get_id();
    return runner_->Run(context, "/test/WhoAmI",
                        [this, response, handler_thread](const Principal* caller) {
                          if (block) {
                            started.Notify();
                            release.WaitForNotification();
                          }
                          if (std::this_thread::get_id() == handler_thread) {
                            return absl::InternalError("the body ran on gRPC's thread");
                          }
                          response->mutable_user()->set_id(caller->user_id);
                          response->mutable_user()->set_username(caller->username);
                          response->mutable_user()->set_role(caller->role);
                          ++bodies_run_;
                          return absl::OkStatus();
                        });
  }

  std::atomic<int> bodies_run_{0};
  // While set, a WhoAmI body announces itself on `started` and waits for `release`.
  std::atomic<bool> block{false};
  absl::Notification started, release;

 private:
  RpcRunner* const runner_;
};

class StorageRpcRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DirectoryOptions options;
    options.password_ops_limit = kArgon2OpsLimitMin;
    options.password_mem_limit = kArgon2MemLimitMin;
    auto directory = Directory::Open(dir_.File("directory.db"), options);
    ASSERT_TRUE(directory.ok()) << directory.status();
    directory_ = *std::move(directory);
    auto unit = directory_->CreateOrgUnit("10", "Tỉnh", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    ASSERT_TRUE(unit.ok());
    auto user = directory_->CreateUser("officer", "Officer", "officer-password",
                                       v1::ROLE_PROVINCE_OFFICER, {unit->id()});
    ASSERT_TRUE(user.ok());
    user_id_ = user->id();
    auto login = directory_->Login("officer", "officer-password");
    ASSERT_TRUE(login.ok());
    token_ = login->token;

    logger_ = std::make_unique<Logger>(LogFormat::kText, [this](absl::string_view line) {
      absl::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
    RpcRunnerOptions runner_options;
    runner_options.storage_threads = 2;
    runner_options.logger = logger_.get();
    auto runner = StorageRpcRunner::Create(directory_.get(), runner_options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
    service_ = std::make_unique<EchoService>(runner_.get());

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::AuthService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  grpc::Status WhoAmI(const std::string& authorization, v1::WhoAmIResponse* response) {
    grpc::ClientContext context;
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    return stub_->WhoAmI(&context, {}, response);
  }

  std::vector<std::string> Lines() {
    absl::MutexLock lock(&mu_);
    return lines_;
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<Directory> directory_;
  int64_t user_id_ = 0;
  std::string token_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<StorageRpcRunner> runner_;
  std::unique_ptr<EchoService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::AuthService::Stub> stub_;
};

TEST_F(StorageRpcRunnerTest, AuthenticatedBodyGetsThePrincipalOnAStorageThread) {
  v1::WhoAmIResponse response;
  const grpc::Status status = WhoAmI(absl::StrCat("Bearer ", token_), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.user().id(), user_id_);
  EXPECT_EQ(response.user().username(), "officer");
  EXPECT_EQ(response.user().role(), v1::ROLE_PROVINCE_OFFICER);
  // The scheme is case-insensitive.
  EXPECT_TRUE(WhoAmI(absl::StrCat("bearer ", token_), &response).ok());
}

TEST_F(StorageRpcRunnerTest, MissingOrBadTokensNeverReachTheBody) {
  v1::WhoAmIResponse response;
  for (const std::string& authorization :
       {std::string(), std::string("Bearer nope"), absl::StrCat("Token ", token_)}) {
    const grpc::Status status = WhoAmI(authorization, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << authorization;
    EXPECT_THAT(status.error_message(), HasSubstr("authorization: ")) << authorization;
    EXPECT_THAT(status.error_message(), HasSubstr("AuthService/Login")) << authorization;
  }
  EXPECT_EQ(service_->bodies_run_.load(), 0);
  ASSERT_TRUE(directory_->Logout(token_).ok());
  EXPECT_EQ(WhoAmI(absl::StrCat("Bearer ", token_), &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(service_->bodies_run_.load(), 0);
}

TEST_F(StorageRpcRunnerTest, PublicBodyRunsWithoutCallerAndErrorsCarryFieldViolations) {
  grpc::ClientContext ok_context;
  v1::LoginRequest request;
  v1::LoginResponse response;
  ASSERT_TRUE(stub_->Login(&ok_context, request, &response).ok());
  EXPECT_EQ(response.token(), "public-ok");

  grpc::ClientContext bad_context;
  request.set_password("bad");
  const grpc::Status status = stub_->Login(&bad_context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "password: is bad");
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::BadRequest bad_request;
  ASSERT_TRUE(details.details(0).UnpackTo(&bad_request));
  ASSERT_EQ(bad_request.field_violations_size(), 1);
  EXPECT_EQ(bad_request.field_violations(0).field(), "password");
  EXPECT_EQ(bad_request.field_violations(0).description(), "is bad");
}

TEST_F(StorageRpcRunnerTest, OneLogLinePerRpc) {
  v1::WhoAmIResponse response;
  ASSERT_TRUE(WhoAmI(absl::StrCat("Bearer ", token_), &response).ok());
  ASSERT_FALSE(WhoAmI("", &response).ok());
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("rpc method=/test/WhoAmI caller=officer status=OK latency_ms="));
  EXPECT_THAT(lines[1], HasSubstr("rpc method=/test/WhoAmI caller=- status=UNAUTHENTICATED"));
  EXPECT_THAT(lines[1], HasSubstr("error=\"authorization: missing"));
  for (const std::string& line : lines) EXPECT_THAT(line, ::testing::Not(HasSubstr(token_)));
}

TEST_F(StorageRpcRunnerTest, CallsAfterStopAreUnavailable) {
  runner_->Stop();
  v1::WhoAmIResponse response;
  const grpc::Status status = WhoAmI(absl::StrCat("Bearer ", token_), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_->bodies_run_.load(), 0);
}

TEST_F(StorageRpcRunnerTest, ShutdownLetsCallsInFlightFinish) {
  service_->block = true;
  grpc::Status in_flight;
  std::thread client([&] {
    v1::WhoAmIResponse response;
    in_flight = WhoAmI(absl::StrCat("Bearer ", token_), &response);
  });
  service_->started.WaitForNotification();
  service_->block = false;
  // The server's shutdown order: stop gRPC (waiting for calls in flight), then the pool.
  std::thread stopper([&] {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    runner_->Stop();
  });
  // Once shutdown has begun, new calls are refused; the blocked call is still in flight.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  grpc::Status probe;
  do {
    v1::WhoAmIResponse response;
    probe = WhoAmI(absl::StrCat("Bearer ", token_), &response);
  } while (probe.ok() && absl::Now() < deadline);
  EXPECT_FALSE(probe.ok()) << "the server never began shutting down";
  service_->release.Notify();
  client.join();
  stopper.join();
  EXPECT_TRUE(in_flight.ok()) << in_flight.error_message();
}

TEST(StorageRpcRunnerCreateTest, RefusesBadOptions) {
  kcnet::testing::TempDir dir;
  auto directory = Directory::Open(dir.File("d.db"));
  ASSERT_TRUE(directory.ok());
  for (int threads : {0, -1, kMaxStorageThreads + 1}) {
    RpcRunnerOptions options;
    options.storage_threads = threads;
    auto runner = StorageRpcRunner::Create(directory->get(), options);
    EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument) << threads;
    EXPECT_THAT(std::string(runner.status().message()), HasSubstr("storage_threads"));
  }
  EXPECT_FALSE(StorageRpcRunner::Create(nullptr).ok());
}

}  // namespace
}  // namespace kcnet::server
