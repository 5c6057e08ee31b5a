// KcnetServer: the whole kcnet server in one object, for the kcnet-server binary and for
// tests. Start() opens the data directory (DATA_DIR/directory.db: org units, users,
// tokens; DATA_DIR/kcnet.db: the synced records), starts the storage threads and a gRPC
// server with every kcnet service (AuthService, OrgUnitService, UserService and the record
// services), standard health checking and (unless turned off) server reflection.
//
// Plaintext stays on this machine: without TLS, Start() refuses a `listen` address off
// loopback (0.0.0.0, [::], a network address or name; loopback is 127.0.0.0/8, [::1] and
// localhost) unless `insecure` is set. An insecure server warns in its log at start and
// answers the standard health check of the service "kcnet.insecure" with SERVING (every
// other server answers NOT_FOUND for it), so monitoring can find it.
//
// In a test:
//   ServerOptions options;
//   options.listen = "127.0.0.1:0";
//   options.data_dir = temp_dir.path();
//   options.directory.password_ops_limit = kArgon2OpsLimitMin;
//   options.directory.password_mem_limit = kArgon2MemLimitMin;
//   absl::StatusOr<std::unique_ptr<KcnetServer>> server = KcnetServer::Start(options);
//   auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
//                                      grpc::InsecureChannelCredentials());
//
// Thread-safety: thread-safe. Shutdown() may be called from any thread, once or more.
#ifndef KCNET_SERVER_APP_KCNET_SERVER_H_
#define KCNET_SERVER_APP_KCNET_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/attachments/attachments.h"
#include "server/directory/directory.h"
#include "server/http/connect_bridge.h"
#include "server/live/watch_service.h"
#include "server/metrics/metrics_http.h"
#include "server/metrics/server_metrics.h"
#include "server/pgstore/pg_record_mirror.h"
#include "server/plans/approval_guard.h"
#include "server/plans/plan_store.h"
#include "server/records/record_services.h"
#include "server/reports/report_service.h"
#include "server/reports/reports_store.h"
#include "server/rpc/logger.h"
#include "server/rpc/storage_rpc_runner.h"
#include "server/sync_stream/sync_service.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server {

struct ServerOptions {
  // HOST:PORT to listen on; port 0 picks a free port (see KcnetServer::port()).
  std::string listen = "127.0.0.1:50051";
  // Holds directory.db and kcnet.db; created when missing. Required.
  std::string data_dir;
  // Where the synced records live (server/app/store_spec.h): empty (sqlite in data_dir),
  // "sqlite:DIR" or "postgres:CONNINFO" (then the directory too, shared by instances).
  std::string store;
  std::string log_format = "text";  // "text" or "json"
  // TLS: both PEM files, or neither (plaintext).
  std::string tls_cert_file, tls_key_file;
  // Plaintext on an address off loopback (passwords and tokens readable on the network):
  // refused unless this is set. Ignored with TLS and on loopback.
  bool insecure = false;
  // Standard server reflection (grpc.reflection.v1alpha), for grpcurl and friends.
  bool reflection = true;
  int storage_threads = 4;
  // Sign-in's own threads, queue and rate limits (server/rpc/storage_rpc_runner.h).
  SignInOptions sign_in;
  int max_receive_bytes = 4 << 20;  // larger requests get RESOURCE_EXHAUSTED
  // gRPC's memory for connections and streams (a grpc::ResourceQuota), 0: none. Past it
  // gRPC shrinks receive windows (200 photo uploads at once: 12 MiB of growth with 16 MiB,
  // 26 without), but near it gRPC 1.51 also drops new connections: 16 MiB starves 5,000
  // idle sync streams (bench idle_streams), so the default is none.
  int64_t grpc_memory_quota_bytes = 0;
  sync::Clock* clock = sync::SystemClock();  // the record store's clock; must outlive the server
  DirectoryOptions directory;
  SyncServiceOptions sync;
  // Where log lines go (one call per line); empty: stderr.
  Logger::Sink log_sink;
  // The console's HTTP bridge (server/http/connect_bridge.h, docs/CONSOLE.md): HOST:PORT,
  // empty (the default) for none. It serves TLS with tls_cert_file/tls_key_file when they
  // are set, and plain HTTP off loopback only with `insecure`, as the gRPC port.
  std::string http_listen;
  // The console's built files, served by the bridge; empty: the bridge serves calls only.
  std::string console_dir;
  // Caps of the bridge's server streams (listen, console_dir, TLS, logger and
  // trusted_proxies are filled in).
  ConnectBridgeOptions http;
  // Attachment bytes (DATA_DIR/attachments.db, DATA_DIR/blobs, DATA_DIR/uploads): limits,
  // media types, quotas, the garbage collector (docs/ATTACHMENTS.md).
  AttachmentOptions attachments;
  // The proxies in front (nginx: deploy/nginx/kcnet.conf), by exact IP address as the
  // server sees them: their X-Forwarded-For (HTTP bridge) and x-forwarded-for (gRPC) name
  // the client whose sign-in limits count. Empty: the headers are ignored.
  std::vector<std::string> trusted_proxies;
  // Prometheus metrics at http://HOST:PORT/metrics (server/metrics, docs/DEPLOY.md); empty
  // (the default): not served (they are still counted, see KcnetServer::metrics()).
  std::string metrics_listen;
};

class KcnetServer {
 public:
  // Opens the data directory and starts serving. Fails with INVALID_ARGUMENT naming the
  // option (data_dir empty, log_format, storage_threads, max_receive_bytes, only one TLS
  // file, plaintext off loopback without `insecure`), NOT_FOUND / PERMISSION_DENIED for an
  // unreadable TLS file or data_dir, the storage error of either database, or UNAVAILABLE when it
  // cannot listen on `listen`.
  static absl::StatusOr<std::unique_ptr<KcnetServer>> Start(const ServerOptions& options);
  // Shutdown(absl::ZeroDuration()) unless done already.
  ~KcnetServer();
  KcnetServer(const KcnetServer&) = delete;
  KcnetServer& operator=(const KcnetServer&) = delete;

  // The port the server listens on (the picked one when `listen` asked for port 0).
  int port() const { return port_; }
  // `listen` with the actual port, e.g. "127.0.0.1:43117".
  std::string address() const;
  // True when it serves plaintext off loopback (ServerOptions::insecure was needed).
  bool insecure() const { return insecure_; }
  // The HTTP bridge's port; 0 without --http_listen.
  int http_port() const { return bridge_ == nullptr ? 0 : bridge_->port(); }
  // The metrics port; 0 without --metrics_listen.
  int metrics_port() const { return metrics_http_ == nullptr ? 0 : metrics_http_->port(); }
  // Every metric the server keeps; ObserveFanoutLag() is the hook for live fan-out
  // between instances.
  metrics::ServerMetrics* metrics() { return metrics_.get(); }

  Directory* directory() { return directory_.get(); }
  sync::ServerStore* store() { return store_.get(); }
  // Extension plans, draws and disbursements (plans.db); budget figures: server/plans/budget.h.
  PlanStore* plans() { return plans_.get(); }
  Logger* logger() { return logger_.get(); }
  SyncServiceImpl* sync_service() { return sync_service_.get(); }
  reports::ReportsStore* reports() { return reports_.get(); }
  // Attachment bytes: upload sessions, blobs, the garbage collector.
  Attachments* attachments() { return attachments_.get(); }

  // Stops accepting calls, lets calls in flight finish within `grace` (cancelling the
  // rest), stops the storage threads and checkpoints the databases' write-ahead logs
  // into their main files. Idempotent: a second call returns at once.
  void Shutdown(absl::Duration grace);
  // Blocks until the server has shut down.
  void Wait();

 private:
  KcnetServer() = default;

  // Declared in construction order; destroyed in reverse (the gRPC server first).
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<sync::ServerStore> store_;
  // On PostgreSQL: the local copy of the records that reports_ and attachments_ read.
  std::unique_ptr<pgstore::PgRecordMirror> mirror_;
  std::unique_ptr<PlanStore> plans_;
  std::unique_ptr<ApprovalGuard> approval_guard_;
  std::unique_ptr<reports::ReportsStore> reports_;
  std::unique_ptr<reports::ReportsFollower> reports_follower_;
  std::unique_ptr<reports::Reporter> reporter_;
  std::unique_ptr<FacilitySearch> facility_search_;  // the records' search, over reports_
  std::unique_ptr<Attachments> attachments_;
  std::unique_ptr<StorageRpcRunner> runner_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<SyncServiceImpl> sync_service_;
  std::unique_ptr<WatchServiceImpl> watch_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ConnectBridge> bridge_;  // forwards to server_: stops first
  // Reads the services and the store at each scrape: stops before anything else.
  std::unique_ptr<metrics::MetricsHttpServer> metrics_http_;
  std::string data_dir_;
  // The SQLite file of the records that reports and attachment references read: the record
  // store itself, or on PostgreSQL the mirror (DATA_DIR/pg_mirror.db).
  std::string store_path_;
  // The directory is in PostgreSQL: no directory.db to checkpoint at Stop().
  bool directory_on_postgres_ = false;
  std::string host_;
  int port_ = 0;
  bool insecure_ = false;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_APP_KCNET_SERVER_H_
