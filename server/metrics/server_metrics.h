// ServerMetrics: every metric kcnet-server exposes on --metrics_listen (docs/DEPLOY.md,
// "Metrics"): the gRPC server metrics (GrpcServerMetrics) and kcnet's own, prefixed kcnet_.
// KcnetServer owns one and hands the parts to the services; a part left null (a service
// built without metrics, in tests) records nothing.
//
//   kcnet_sync_streams_open                 gauge      open sync streams (callback, *)
//   kcnet_sync_mutations_total{outcome}     counter    pushed mutations by outcome: applied,
//                                                      refused, duplicate, out_of_order
//   kcnet_sync_conflicts_total              counter    field conflicts met by pushes
//   kcnet_sync_download_pages_total         counter    download pages sent to devices
//   kcnet_sync_download_bytes_total         counter    their bytes (deflated when deflated)
//   kcnet_store_group_commit_batches        histogram  batches per group-commit transaction
//   kcnet_store_commit_seconds              histogram  one group's apply and durable commit
//   kcnet_store_readers_in_use              gauge      reader connections busy (callback)
//   kcnet_store_readers                     gauge      reader connections in the pool (*)
// (*) registered by KcnetServer, which knows the parts they read.
//   kcnet_http_requests_total{route,code}   counter    HTTP bridge requests (route: connect,
//                                                      sign_in, sign_out, static, other)
//   kcnet_fanout_lag_seconds                gauge      last commit-to-stream lag between
//                                                      instances (0 on one instance)
//   kcnet_fanout_lag_seconds_hist           histogram  the same, every observation
//
// Thread-safety: thread-safe (the parts are); construct before use, destroy after.
#ifndef KCNET_SERVER_METRICS_SERVER_METRICS_H_
#define KCNET_SERVER_METRICS_SERVER_METRICS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/metrics/grpc_metrics.h"
#include "server/metrics/registry.h"

namespace kcnet::server::metrics {

// The parts the sync stream records into.
struct SyncMetrics {
  Counter* applied = nullptr;
  Counter* refused = nullptr;
  Counter* duplicate = nullptr;
  Counter* out_of_order = nullptr;
  Counter* conflicts = nullptr;
  Counter* download_pages = nullptr;
  Counter* download_bytes = nullptr;
};

class ServerMetrics {
 public:
  // `grpc_services`: the full names of the services the gRPC server serves.
  explicit ServerMetrics(const std::vector<std::string>& grpc_services);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  Registry& registry() { return registry_; }
  GrpcServerMetrics& grpc() { return grpc_; }
  const SyncMetrics& sync() const { return sync_; }

  // One group commit of the store: how many batches it took and how long it ran.
  void ObserveGroupCommit(size_t batches, absl::Duration elapsed);
  // One HTTP bridge request: the path and HTTP status it got.
  void CountHttpRequest(const std::string& method, absl::string_view path, int status);
  // The hook for live fan-out between instances (the PostgreSQL store's notifications):
  // the time from a commit on another instance to its news reaching this one's streams.
  void ObserveFanoutLag(absl::Duration lag);

 private:
  Registry registry_;
  GrpcServerMetrics grpc_;
  SyncMetrics sync_;
  Histogram* group_commit_batches_;
  Histogram* commit_seconds_;
  CounterFamily* http_requests_;
  // The usual (route, code) series, found without the family's lock.
  absl::flat_hash_map<std::pair<std::string, int>, Counter*> http_series_;
  Gauge* fanout_lag_;
  Histogram* fanout_lag_hist_;
};

}  // namespace kcnet::server::metrics

#endif  // KCNET_SERVER_METRICS_SERVER_METRICS_H_
