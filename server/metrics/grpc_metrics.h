// GrpcServerMetrics: the gRPC server metrics under the names of the gRPC ecosystem
// (go-grpc-prometheus / grpc-ecosystem), so that existing dashboards and alerts apply:
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
// grpc_type is unary, client_stream, server_stream or bidi_stream; grpc_code is the Go
// name of the status code (OK, InvalidArgument, Unauthenticated, ...).
//
// Every method of the given services is registered at construction, with every code at
// zero (the series exist before the first call, as go-grpc-prometheus does); a method
// outside them is counted under grpc_service="unknown", grpc_method="unknown", so that a
// client cannot make series up.
//
// Unary and server-streaming calls are counted by the interceptor (InterceptorFactory()).
// Client and bidi streams get no interceptor (with one, every read of the stream takes an
// extra trip through gRPC core: see server/rpc/parse_error_interceptor.h): their service
// records them itself with a Call (SyncService.Sync does).
//
// Thread-safety: thread-safe. After construction, recording takes no lock.
#ifndef KCNET_SERVER_METRICS_GRPC_METRICS_H_
#define KCNET_SERVER_METRICS_GRPC_METRICS_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"
#include "server/metrics/registry.h"

namespace kcnet::server::metrics {

// "OK", "InvalidArgument", ... (go-grpc-prometheus's grpc_code values).
absl::string_view GrpcCodeName(grpc::StatusCode code);

class GrpcServerMetrics {
 public:
  // The series of one method.
  struct Method {
    Counter* started = nullptr;
    Counter* received = nullptr;
    Counter* sent = nullptr;
    Histogram* handling = nullptr;
    std::array<Counter*, 17> handled{};  // by grpc::StatusCode (0-16)
  };

  // One call a service records itself: Started at construction; Handled once, else the
  // destructor counts it Canceled.
  class Call {
   public:
    Call(const GrpcServerMetrics* metrics, absl::string_view path);
    ~Call();
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    void Received() { method_->received->Increment(); }
    void Sent() { method_->sent->Increment(); }
    void Handled(grpc::StatusCode code);

   private:
    const Method* method_;
    const absl::Time start_ = absl::Now();
    bool handled_ = false;
  };

  // `services`: full service names ("kcnet.v1.SyncService") in the generated descriptor
  // pool; names not in it are skipped.
  GrpcServerMetrics(Registry* registry, const std::vector<std::string>& services);

  // The series of "/package.Service/Method" (the unknown method's when not registered).
  const Method* Find(absl::string_view path) const;

  // For ServerBuilder::experimental().SetInterceptorCreators(); must not outlive this.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  Method Register(const std::string& type, const std::string& service, const std::string& method);

  CounterFamily* started_;
  CounterFamily* handled_;
  CounterFamily* received_;
  CounterFamily* sent_;
  HistogramFamily* handling_;
  absl::flat_hash_map<std::string, Method> methods_;  // by path; fixed after construction
  Method unknown_;
};

}  // namespace kcnet::server::metrics

#endif  // KCNET_SERVER_METRICS_GRPC_METRICS_H_
