// The pure parts of the RPC plumbing: status conversion, page tokens, log lines, the
// storage thread pool.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.pb.h"
#include "server/rpc/logger.h"
#include "server/rpc/paging.h"
#include "server/rpc/rpc_runner.h"
#include "server/rpc/thread_pool.h"

namespace kcnet::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The BadRequest violations a client decodes from the details of `status`.
std::vector<std::pair<std::string, std::string>> Violations(const grpc::Status& status) {
  std::vector<std::pair<std::string, std::string>> out;
  google::rpc::Status details;
  EXPECT_TRUE(details.ParseFromString(status.error_details()));
  EXPECT_EQ(details.code(), static_cast<int>(status.error_code()));
  EXPECT_EQ(details.message(), status.error_message());
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::BadRequest bad_request;
    EXPECT_TRUE(any.UnpackTo(&bad_request)) << any.type_url();
    for (const auto& v : bad_request.field_violations())
      out.emplace_back(v.field(), v.description());
  }
  return out;
}

// ---- ToGrpcStatus ---------------------------------------------------------------------

TEST(ToGrpcStatusTest, MapsEveryCode) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const std::vector<std::pair<absl::Status, grpc::StatusCode>> cases = {
      {absl::CancelledError("x"), grpc::StatusCode::CANCELLED},
      {absl::UnknownError("x"), grpc::StatusCode::UNKNOWN},
      {absl::InvalidArgumentError("x"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::DeadlineExceededError("x"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::NotFoundError("x"), grpc::StatusCode::NOT_FOUND},
      {absl::AlreadyExistsError("x"), grpc::StatusCode::ALREADY_EXISTS},
      {absl::PermissionDeniedError("x"), grpc::StatusCode::PERMISSION_DENIED},
      {absl::ResourceExhaustedError("x"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::FailedPreconditionError("x"), grpc::StatusCode::FAILED_PRECONDITION},
      {absl::AbortedError("x"), grpc::StatusCode::ABORTED},
      {absl::OutOfRangeError("x"), grpc::StatusCode::OUT_OF_RANGE},
      {absl::UnimplementedError("x"), grpc::StatusCode::UNIMPLEMENTED},
      {absl::InternalError("x"), grpc::StatusCode::INTERNAL},
      {absl::UnavailableError("x"), grpc::StatusCode::UNAVAILABLE},
      {absl::DataLossError("x"), grpc::StatusCode::DATA_LOSS},
      {absl::UnauthenticatedError("x"), grpc::StatusCode::UNAUTHENTICATED},
      {absl::Status(static_cast<absl::StatusCode>(99), "x"), grpc::StatusCode::UNKNOWN},
  };
  for (const auto& [in, code] : cases) {
    const grpc::Status out = ToGrpcStatus(in);
    EXPECT_EQ(out.error_code(), code) << in;
    EXPECT_EQ(out.error_message(), "x");
    EXPECT_TRUE(out.error_details().empty()) << in;
  }
}

TEST(ToGrpcStatusTest, FieldErrorsCarryBadRequestDetails) {
  grpc::Status out =
      ToGrpcStatus(absl::InvalidArgumentError("user.org_unit_ids[2]: must be > 0, got 0"));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out.error_message(), "user.org_unit_ids[2]: must be > 0, got 0");
  EXPECT_THAT(Violations(out), ElementsAre(std::make_pair(std::string("user.org_unit_ids[2]"),
                                                          std::string("must be > 0, got 0"))));

  out = ToGrpcStatus(absl::FailedPreconditionError("status: a draft cannot be approved"));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(Violations(out),
              ElementsAre(std::make_pair(std::string("status"),
                                         std::string("a draft cannot be approved"))));
}

TEST(ToGrpcStatusTest, NoDetailsWithoutAFieldPathOrForOtherCodes) {
  for (const absl::Status& in : {
           absl::InvalidArgumentError("no field here"),
           absl::InvalidArgumentError("two words: not a field path"),
           absl::InvalidArgumentError(": empty field"),
           absl::NotFoundError("id: no org unit 5"),
           absl::UnauthenticatedError("authorization: missing"),
       }) {
    const grpc::Status out = ToGrpcStatus(in);
    EXPECT_TRUE(out.error_details().empty()) << in;
    EXPECT_EQ(out.error_message(), in.message());
  }
}

// ---- Paging ---------------------------------------------------------------------------

TEST(PagingTest, PageSizeRule) {
  EXPECT_EQ(*PageSize(0), kDefaultPageSize);
  EXPECT_EQ(*PageSize(1), 1);
  EXPECT_EQ(*PageSize(500), 500);
  for (int bad : {-1, 501, 1 << 30}) {
    const absl::StatusOr<int> size = PageSize(bad);
    EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(size.status().message()), StartsWith("page_size: "));
  }
}

TEST(PagingTest, TokenRoundTrip) {
  const std::string position("10102\0after", 11);
  const std::string token = EncodePageToken(42, position);
  for (char c : token) {
    EXPECT_TRUE(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
        << "not base64url: " << token;
  }
  const absl::StatusOr<std::string> decoded = DecodePageToken(token, 42);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, position);
  EXPECT_EQ(*DecodePageToken("", 42), "");  // the first page
}

TEST(PagingTest, TokenOfAnotherQueryIsRefused) {
  v1::ListOrgUnitsRequest a;
  a.set_parent_id(7);
  v1::ListOrgUnitsRequest b = a;
  b.set_parent_id(8);
  const uint64_t fa = QueryFingerprint(a, "user:1");
  ASSERT_NE(fa, QueryFingerprint(b, "user:1"));
  ASSERT_NE(fa, QueryFingerprint(a, "user:2"));
  const std::string token = EncodePageToken(fa, "10101");
  const absl::StatusOr<std::string> refused = DecodePageToken(token, QueryFingerprint(b, "user:1"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), StartsWith("page_token: "));
}

TEST(PagingTest, FingerprintIgnoresPageFieldsButNotTheMessageType) {
  v1::ListOrgUnitsRequest a;
  a.set_parent_id(7);
  v1::ListOrgUnitsRequest paged = a;
  paged.set_page_size(3);
  paged.set_page_token("whatever");
  EXPECT_EQ(QueryFingerprint(a), QueryFingerprint(paged));
  // Two empty requests of different types are different queries.
  EXPECT_NE(QueryFingerprint(v1::ListUsersRequest()), QueryFingerprint(v1::ListOrgUnitsRequest()));
}

TEST(PagingTest, GarbageTokensAreRefused) {
  const uint64_t fingerprint = 42;
  const std::string valid = EncodePageToken(fingerprint, "x");
  for (const std::string& token :
       {std::string("garbage!!"), std::string("AAAA"), valid.substr(0, 4), std::string(5000, 'A'),
        std::string("Zm9vYmFy")}) {
    const absl::StatusOr<std::string> decoded = DecodePageToken(token, fingerprint);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << token;
    EXPECT_THAT(std::string(decoded.status().message()), StartsWith("page_token: ")) << token;
  }
}

TEST(PagingTest, TakePage) {
  const std::vector<std::string> items = {"a", "b", "c", "d", "e"};
  auto key = [](const std::string& s) -> const std::string& { return s; };
  std::string next;
  EXPECT_THAT(TakePage(items, "", 2, key, &next), ElementsAre("a", "b"));
  EXPECT_EQ(next, "b");
  EXPECT_THAT(TakePage(items, next, 2, key, &next), ElementsAre("c", "d"));
  EXPECT_EQ(next, "d");
  EXPECT_THAT(TakePage(items, next, 2, key, &next), ElementsAre("e"));
  EXPECT_EQ(next, "");
  EXPECT_THAT(TakePage(items, "", 5, key, &next), ElementsAre("a", "b", "c", "d", "e"));
  EXPECT_EQ(next, "");  // exactly full: no empty page after it
  EXPECT_THAT(TakePage(items, "bb", 10, key, &next), ElementsAre("c", "d", "e"));
}

// ---- Logger ---------------------------------------------------------------------------

TEST(LoggerTest, TextAndJsonRpcLines) {
  std::vector<std::string> lines;
  Logger text(LogFormat::kText, [&](absl::string_view line) { lines.emplace_back(line); });
  RpcLogEntry entry;
  entry.method = "/kcnet.v1.AuthService/WhoAmI";
  entry.caller = "admin1";
  entry.code = absl::StatusCode::kOk;
  entry.latency_ms = 1.5;
  text.Rpc(entry);
  entry.code = absl::StatusCode::kInvalidArgument;
  entry.message = "id: \"bad\"\nvalue";
  text.Rpc(entry);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr(" rpc method=/kcnet.v1.AuthService/WhoAmI caller=admin1 "
                                  "status=OK latency_ms=1.500"));
  EXPECT_THAT(lines[1], HasSubstr("status=INVALID_ARGUMENT"));
  EXPECT_THAT(lines[1], HasSubstr(R"(error="id: \"bad\"\nvalue")"));
  EXPECT_EQ(lines[1].find('\n'), std::string::npos);

  lines.clear();
  Logger json(LogFormat::kJson, [&](absl::string_view line) { lines.emplace_back(line); });
  json.Rpc(entry);
  json.Info("listening");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], StartsWith(R"({"ts":")"));
  EXPECT_THAT(lines[0], HasSubstr(R"("event":"rpc","method":"/kcnet.v1.AuthService/WhoAmI",)"
                                  R"("caller":"admin1","status":"INVALID_ARGUMENT",)"
                                  R"("latency_ms":1.500,"error":"id: \"bad\"\nvalue"})"));
  EXPECT_THAT(lines[1], HasSubstr(R"("event":"info","message":"listening"})"));
}

TEST(LoggerTest, ParseLogFormat) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_THAT(std::string(ParseLogFormat("xml").status().message()), StartsWith("log_format: "));
  EXPECT_EQ(JsonEscape(std::string("a\x01\x7f\tb\\", 6)), "a\\u0001\\u007f\\tb\\\\");
  EXPECT_EQ(JsonEscape("Tỉnh"), "Tỉnh");
}

// ---- ThreadPool ----------------------------------------------------------------------

TEST(ThreadPoolTest, RunsEveryTaskOnItsThreadsAndDrainsOnStop) {
  std::atomic<int> done{0};
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> ran_on_caller{false};
  {
    ThreadPool pool(3);
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(pool.Schedule([&] {
        if (std::this_thread::get_id() == caller) ran_on_caller = true;
        ++done;
      }));
    }
    pool.Stop();  // runs what is queued first
    EXPECT_EQ(done.load(), 200);
    EXPECT_FALSE(pool.Schedule([&] { ++done; }));
    pool.Stop();  // idempotent
  }
  EXPECT_EQ(done.load(), 200);
  EXPECT_FALSE(ran_on_caller.load());
}

TEST(ThreadPoolTest, TasksRunConcurrently) {
  ThreadPool pool(2);
  absl::Notification first_started, second_ran;
  // The first task waits for the second: with one thread this would never finish.
  ASSERT_TRUE(pool.Schedule([&] {
    first_started.Notify();
    EXPECT_TRUE(second_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }));
  ASSERT_TRUE(pool.Schedule([&] {
    first_started.WaitForNotification();
    second_ran.Notify();
  }));
  pool.Stop();
  EXPECT_TRUE(second_ran.HasBeenNotified());
}

}  // namespace
}  // namespace kcnet::server
