#include "server/metrics/grpc_metrics.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace kcnet::server::metrics {
namespace {

constexpr std::array<absl::string_view, 17> kCodeNames = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

const char* TypeOf(const google::protobuf::MethodDescriptor& method) {
  if (method.client_streaming()) return method.server_streaming() ? "bidi_stream" : "client_stream";
  return method.server_streaming() ? "server_stream" : "unary";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(const GrpcServerMetrics* metrics, absl::string_view path)
      : call_(metrics, path) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      call_.Received();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      call_.Sent();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      call_.Handled(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  GrpcServerMetrics::Call call_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(const GrpcServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    using Type = grpc::experimental::ServerRpcInfo::Type;
    if (info->type() == Type::CLIENT_STREAMING || info->type() == Type::BIDI_STREAMING) {
      return nullptr;  // recorded by the service itself (see the header)
    }
    return new MetricsInterceptor(metrics_, info->method() == nullptr ? "" : info->method());
  }

 private:
  const GrpcServerMetrics* metrics_;
};

}  // namespace

absl::string_view GrpcCodeName(grpc::StatusCode code) {
  const int index = static_cast<int>(code);
  return index >= 0 && index < static_cast<int>(kCodeNames.size()) ? kCodeNames[index] : "Unknown";
}

GrpcServerMetrics::Call::Call(const GrpcServerMetrics* metrics, absl::string_view path)
    : method_(metrics->Find(path)) {
  method_->started->Increment();
}

GrpcServerMetrics::Call::~Call() {
  // A call that ended with no status sent (the client went away first).
  if (!handled_) Handled(grpc::StatusCode::CANCELLED);
}

void GrpcServerMetrics::Call::Handled(grpc::StatusCode code) {
  if (handled_) return;
  handled_ = true;
  const int index = static_cast<int>(code);
  method_->handled[index >= 0 && index < 17 ? index : static_cast<int>(grpc::StatusCode::UNKNOWN)]
      ->Increment();
  method_->handling->ObserveDuration(absl::Now() - start_);
}

GrpcServerMetrics::GrpcServerMetrics(Registry* registry, const std::vector<std::string>& services) {
  const std::vector<std::string> labels = {"grpc_type", "grpc_service", "grpc_method"};
  started_ = &registry->AddCounter("grpc_server_started_total",
                                   "Total number of RPCs started on the server.", labels);
  handled_ = &registry->AddCounter(
      "grpc_server_handled_total",
      "Total number of RPCs completed on the server, regardless of success or failure.",
      {"grpc_type", "grpc_service", "grpc_method", "grpc_code"});
  received_ =
      &registry->AddCounter("grpc_server_msg_received_total",
                            "Total number of RPC stream messages received on the server.", labels);
  sent_ = &registry->AddCounter("grpc_server_msg_sent_total",
                                "Total number of gRPC stream messages sent by the server.", labels);
  handling_ = &registry->AddHistogram(
      "grpc_server_handling_seconds",
      "Histogram of response latency (seconds) of gRPC that had been application-level handled "
      "by the server.",
      labels, LatencyBuckets());
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : services) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor& method = *service->method(i);
      methods_[absl::StrCat("/", name, "/", method.name())] =
          Register(TypeOf(method), name, method.name());
    }
  }
  unknown_ = Register("unary", "unknown", "unknown");
}

GrpcServerMetrics::Method GrpcServerMetrics::Register(const std::string& type,
                                                      const std::string& service,
                                                      const std::string& method) {
  Method m;
  m.started = started_->WithLabels({type, service, method});
  m.received = received_->WithLabels({type, service, method});
  m.sent = sent_->WithLabels({type, service, method});
  m.handling = handling_->WithLabels({type, service, method});
  for (size_t code = 0; code < kCodeNames.size(); ++code) {
    m.handled[code] = handled_->WithLabels({type, service, method, std::string(kCodeNames[code])});
  }
  return m;
}

const GrpcServerMetrics::Method* GrpcServerMetrics::Find(absl::string_view path) const {
  const auto it = methods_.find(path);
  return it == methods_.end() ? &unknown_ : &it->second;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcServerMetrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

}  // namespace kcnet::server::metrics
