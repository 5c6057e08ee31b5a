// MetricsHttpServer: serves a Registry's exposition at GET /metrics (text format 0.0.4) on
// its own HTTP port (kcnet-server --metrics_listen=HOST:PORT), for Prometheus to scrape.
// Anything else is 404. Plain HTTP: the figures hold counts and method names, never
// records, names or tokens; keep the port on loopback or a monitoring network.
//
// Thread-safety: thread-safe. Stop() may be called from any thread, once or more.
#ifndef KCNET_SERVER_METRICS_METRICS_HTTP_H_
#define KCNET_SERVER_METRICS_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace kcnet::server::metrics {

class MetricsHttpServer {
 public:
  // Binds `listen` (HOST:PORT; port 0 picks one) and serves `registry`, which must outlive
  // the server. INVALID_ARGUMENT for a malformed `listen`, UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                  const Registry* registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }
  // Stops listening and joins the listener. Idempotent.
  void Stop();

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  int port_ = 0;
};

}  // namespace kcnet::server::metrics

#endif  // KCNET_SERVER_METRICS_METRICS_HTTP_H_
