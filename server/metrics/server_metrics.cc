#include "server/metrics/server_metrics.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kcnet::server::metrics {

ServerMetrics::ServerMetrics(const std::vector<std::string>& grpc_services)
    : grpc_(&registry_, grpc_services) {
  CounterFamily& mutations = registry_.AddCounter(
      "kcnet_sync_mutations_total",
      "Mutations pushed by devices on sync streams, by outcome (applied includes applied with "
      "a conflict).",
      {"outcome"});
  sync_.applied = mutations.WithLabels({"applied"});
  sync_.refused = mutations.WithLabels({"refused"});
  sync_.duplicate = mutations.WithLabels({"duplicate"});
  sync_.out_of_order = mutations.WithLabels({"out_of_order"});
  sync_.conflicts = registry_
                        .AddCounter("kcnet_sync_conflicts_total",
                                    "Field conflicts met by mutations pushed on sync streams.")
                        .WithLabels({});
  sync_.download_pages = registry_
                             .AddCounter("kcnet_sync_download_pages_total",
                                         "Download pages sent to devices on sync streams.")
                             .WithLabels({});
  sync_.download_bytes =
      registry_
          .AddCounter("kcnet_sync_download_bytes_total",
                      "Bytes of the download pages sent (the deflated size when deflated).")
          .WithLabels({});
  group_commit_batches_ = registry_
                              .AddHistogram("kcnet_store_group_commit_batches",
                                            "Batches of mutations committed by one transaction.",
                                            {}, {1, 2, 4, 8, 16, 32, 64})
                              .WithLabels({});
  commit_seconds_ =
      registry_
          .AddHistogram("kcnet_store_commit_seconds",
                        "Time to apply one group of batches and commit it durably, in seconds.", {},
                        LatencyBuckets())
          .WithLabels({});
  http_requests_ = &registry_.AddCounter(
      "kcnet_http_requests_total", "Requests to the console's HTTP bridge.", {"route", "code"});
  for (const char* route : {"connect", "sign_in", "sign_out", "static", "other"}) {
    for (int code : {200, 400, 401, 403, 404, 413, 429, 500, 503}) {
      http_series_[{route, code}] = http_requests_->WithLabels({route, absl::StrCat(code)});
    }
  }
  fanout_lag_ = registry_
                    .AddGauge("kcnet_fanout_lag_seconds",
                              "Last lag from a commit on another instance to this instance's "
                              "streams, in seconds (0 with a single instance).")
                    .WithLabels({});
  fanout_lag_hist_ = registry_
                         .AddHistogram("kcnet_fanout_lag_seconds_hist",
                                       "Lag from a commit on another instance to this "
                                       "instance's streams, in seconds.",
                                       {}, LatencyBuckets())
                         .WithLabels({});
}

void ServerMetrics::ObserveGroupCommit(size_t batches, absl::Duration elapsed) {
  group_commit_batches_->Observe(static_cast<double>(batches));
  commit_seconds_->ObserveDuration(elapsed);
}

void ServerMetrics::CountHttpRequest(const std::string& method, absl::string_view path,
                                     int status) {
  // A bounded set of routes: paths come from the network.
  const char* route = "other";
  if (path == "/auth/sign-in") {
    route = "sign_in";
  } else if (path == "/auth/sign-out") {
    route = "sign_out";
  } else if (method == "POST") {
    route = "connect";
  } else if (method == "GET" || method == "HEAD") {
    route = "static";
  }
  const auto it = http_series_.find(std::make_pair(std::string(route), status));
  if (it != http_series_.end()) {
    it->second->Increment();
  } else {
    http_requests_->WithLabels({route, absl::StrCat(status)})->Increment();
  }
}

void ServerMetrics::ObserveFanoutLag(absl::Duration lag) {
  fanout_lag_->Set(absl::ToDoubleSeconds(lag));
  fanout_lag_hist_->ObserveDuration(lag);
}

}  // namespace kcnet::server::metrics
