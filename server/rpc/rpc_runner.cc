#include "server/rpc/rpc_runner.h"

#include <string>

#include "absl/strings/ascii.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "server/rpc/rate_limiter.h"

namespace kcnet::server {
namespace {

// The field path that opens `message` ("user.org_unit_ids[0]: reason" gives
// "user.org_unit_ids[0]"), or empty when the message does not start with one.
absl::string_view FieldPathOf(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == 0 || colon == absl::string_view::npos || colon > 200) return {};
  const absl::string_view path = message.substr(0, colon);
  for (char c : path) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '[' &&
        c != ']') {
      return {};
    }
  }
  return path;
}

grpc::StatusCode GrpcCode(absl::StatusCode code) {
  // absl::StatusCode uses gRPC's numbering; anything outside it is UNKNOWN.
  const int raw = static_cast<int>(code);
  if (raw < 0 || raw > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return grpc::StatusCode::UNKNOWN;
  }
  return static_cast<grpc::StatusCode>(raw);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const grpc::StatusCode code = GrpcCode(status.code());
  const std::string message(status.message());
  const bool field_error = status.code() == absl::StatusCode::kInvalidArgument ||
                           status.code() == absl::StatusCode::kFailedPrecondition;
  const absl::string_view field = field_error ? FieldPathOf(message) : absl::string_view();
  const absl::Duration retry = RetryDelay(status);
  if (retry > absl::ZeroDuration()) {
    // google.rpc.RetryInfo: stock clients know how long to back off.
    google::rpc::RetryInfo info;
    const int64_t ms = absl::ToInt64Milliseconds(retry);
    info.mutable_retry_delay()->set_seconds(ms / 1000);
    info.mutable_retry_delay()->set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
    google::rpc::Status details;
    details.set_code(static_cast<int>(code));
    details.set_message(message);
    details.add_details()->PackFrom(info);
    return grpc::Status(code, message, details.SerializeAsString());
  }
  if (field.empty()) return grpc::Status(code, message);

  google::rpc::BadRequest bad_request;
  google::rpc::BadRequest::FieldViolation* violation = bad_request.add_field_violations();
  violation->set_field(std::string(field));
  violation->set_description(message.substr(field.size() + 2));
  google::rpc::Status details;
  details.set_code(static_cast<int>(code));
  details.set_message(message);
  details.add_details()->PackFrom(bad_request);
  return grpc::Status(code, message, details.SerializeAsString());
}

}  // namespace kcnet::server
