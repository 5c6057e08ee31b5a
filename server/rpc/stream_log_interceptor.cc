#include "server/rpc/stream_log_interceptor.h"

#include <optional>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/rpc/storage_rpc_runner.h"

namespace kcnet::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

class StreamLogInterceptor : public grpc::experimental::Interceptor {
 public:
  StreamLogInterceptor(Logger* logger, const StreamLogInterceptorFactory::Identify* identify,
                       std::string method)
      : logger_(logger), identify_(identify), method_(std::move(method)), start_(absl::Now()) {}

  ~StreamLogInterceptor() override {
    const grpc::Status status =
        status_.value_or(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    logger_->Rpc({.method = method_,
                  .caller = caller_,
                  .code = static_cast<absl::StatusCode>(status.error_code()),
                  .message = status.error_message(),
                  .latency_ms = absl::ToDoubleMilliseconds(absl::Now() - start_)});
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      if (const auto* metadata = methods->GetRecvInitialMetadata(); metadata != nullptr) {
        absl::StatusOr<std::string> token = BearerToken(*metadata);
        if (token.ok()) {
          absl::StatusOr<std::string> username = (*identify_)(*token);
          if (username.ok()) caller_ = *std::move(username);
        }
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      status_ = methods->GetSendStatus();
    }
    methods->Proceed();
  }

 private:
  Logger* const logger_;
  const StreamLogInterceptorFactory::Identify* const identify_;
  const std::string method_;
  const absl::Time start_;
  std::string caller_ = "-";
  std::optional<grpc::Status> status_;
};

}  // namespace

grpc::experimental::Interceptor* StreamLogInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  if (logger_ == nullptr || info->type() != Type::SERVER_STREAMING) return nullptr;
  return new StreamLogInterceptor(logger_, &identify_,
                                  info->method() == nullptr ? "" : info->method());
}

}  // namespace kcnet::server
