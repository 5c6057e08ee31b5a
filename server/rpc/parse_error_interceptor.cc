#include "server/rpc/parse_error_interceptor.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "server/rpc/rpc_runner.h"

namespace kcnet::server {
namespace {

// "/kcnet.v1.FacilityService/CreateFacility" names a method kcnet defines.
bool IsKcnetMethod(const char* path) {
  std::string name = path == nullptr ? "" : path;
  if (!absl::StartsWith(name, "/kcnet.")) return false;
  const size_t slash = name.rfind('/');
  if (slash == 0 || slash == std::string::npos) return false;
  name = name.substr(1, slash - 1) + "." + name.substr(slash + 1);
  return google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(name) != nullptr;
}

class ParseErrorInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(bool kcnet_method) : kcnet_method_(kcnet_method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (kcnet_method_ && methods->QueryInterceptionHookPoint(
                             grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(ToGrpcStatus(absl::InvalidArgumentError(
            "request: the message could not be parsed: a string field holds invalid UTF-8 "
            "(proto3 strings must be UTF-8; send raw bytes as bytes fields), or the message "
            "is malformed")));
      }
    }
    methods->Proceed();
  }

 private:
  const bool kcnet_method_;
};

}  // namespace

grpc::experimental::Interceptor* ParseErrorInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  // Only a call whose request gRPC parses before the handler runs (unary, server
  // streaming) can end in that empty UNIMPLEMENTED. A client or bidi stream's messages are
  // parsed by its reactor's reads, so SyncService.Sync gets no interceptor (nullptr): with
  // one, every read takes an extra round trip through gRPC core after the message is
  // parsed, and OnReadDone may then run on another gRPC thread than the parse, ordered
  // only by gRPC's own synchronisation (which ThreadSanitizer cannot see).
  using Type = grpc::experimental::ServerRpcInfo::Type;
  if (info->type() == Type::CLIENT_STREAMING || info->type() == Type::BIDI_STREAMING) {
    return nullptr;
  }
  return new ParseErrorInterceptor(IsKcnetMethod(info->method()));
}

}  // namespace kcnet::server
