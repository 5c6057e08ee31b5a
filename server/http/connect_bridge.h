// ConnectBridge: the browser's door into kcnet-server (docs/CONSOLE.md). One HTTP/1.1
// listener (cpp-httplib; TLS with the gRPC port's certificate and key) that serves
//   - the console's static files from `console_dir` (GET; gzip when the browser accepts it;
//     a strict Content-Security-Policy and friends on every answer), and
//   - the Connect protocol: `POST /<package.Service>/<Method>` with application/json for a
//     unary call, application/connect+json envelopes for a server stream. Each call is
//     forwarded, as protobuf bytes, through `channel` (the gRPC server's own in-process
//     channel) with grpc::GenericStub, so it passes the very same services, interceptors,
//     authentication, scope checks and RPC log as a call from a tablet. JSON uses protobuf's
//     JSON mapping with the generated descriptor pool. There is no second API.
//   - POST /download/<package.Service>/<Method>: a server stream of kcnet.v1.ExportChunk
//     (ExportRecords, ExportReport) as a plain file download: the request is the same JSON
//     as the Connect call's and the call is the same one (same services, token, CSRF rules,
//     scope checks and errors), but the answer is the file's bytes themselves, with
//     Content-Disposition, its type and, when the first chunk says the size,
//     Content-Length; no JSON and no base64 (docs/CONSOLE.md, docs/BENCHMARKS.md). An error
//     before the first byte is the Connect error of a unary call; one after it cuts the
//     connection short (the download fails, it never looks complete).
//   - POST /auth/sign-in and /auth/sign-out: AuthService.Login and Logout, keeping the token
//     in an HttpOnly, SameSite=Strict, Secure cookie that page scripts cannot read.
//
// The bearer token comes from the Authorization header or from that cookie. A POST that
// relies on the cookie (and every sign-in and sign-out) must carry the Connect header
// `Connect-Protocol-Version: 1` (a cross-site form cannot send it) and, when the browser
// sends an Origin, come from this very origin: that is the CSRF defence.
//
// Only the services in `services` are reachable (the console's; never the sync stream).
// Streams are capped (in all, and per user, who is asked of AuthService.WhoAmI), and the
// listener's thread pool is larger than the stream cap, so open streams never starve
// unary calls (a pool of 8 threads, httplib's default, is exhausted by 8 streams). A
// download counts in the cap in all only: it ends by itself, and a browser that went
// away is noticed at its next write.
//
// Thread-safety: thread-safe. Stop() may be called from any thread, once or more.
#ifndef KCNET_SERVER_HTTP_CONNECT_BRIDGE_H_
#define KCNET_SERVER_HTTP_CONNECT_BRIDGE_H_

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/rpc/logger.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace kcnet::server {

struct ConnectBridgeOptions {
  // HOST:PORT to listen on; port 0 picks a free port (see ConnectBridge::port()).
  std::string listen;
  // The console's built files (index.html, assets/); empty: no static files.
  std::string console_dir;
  // TLS: both PEM files, or neither (plain HTTP).
  std::string tls_cert_file, tls_key_file;
  // The fully qualified services a browser may call.
  std::vector<std::string> services;
  // Request bodies larger than this get 413 and a resource_exhausted Connect error.
  size_t max_body_bytes = 4 << 20;
  // Open server streams: in all, and per user.
  int max_streams = 64;
  int max_streams_per_user = 4;
  // Threads for unary calls and static files, on top of one per allowed stream.
  int unary_threads = 16;
  // A watch stream (WatchChanges) quiet this long gets a heartbeat notice, so that a tab
  // closed without a word is found (the write fails) and its stream freed; zero: never.
  absl::Duration stream_heartbeat = absl::Seconds(15);
  // While a watch stream waits for its next notice, its socket is looked at this often
  // (a peek: did the browser close the connection?), so a closed tab's stream and its
  // slot of max_streams_per_user are freed within about this long; zero: only the
  // heartbeat finds it. Reached through nginx, nginx closes its upstream connection when
  // the browser's goes.
  absl::Duration stream_liveness_check = absl::Seconds(1);
  // A unary call without a Connect-Timeout-Ms header gets this deadline.
  absl::Duration default_unary_deadline = absl::Seconds(60);
  // Proxies in front (nginx: deploy/nginx/kcnet.conf) whose X-Forwarded-For is believed:
  // their exact IP addresses as the bridge sees them ("127.0.0.1"). Empty: the header is
  // ignored and the connection's address is the client's. See ForwardedClientAddress()
  // (server/rpc/storage_rpc_runner.h). KcnetServer fills it from ServerOptions.
  std::vector<std::string> trusted_proxies;
  // Told after every request (for metrics): its method, path and HTTP status. Null: none.
  std::function<void(const std::string& method, const std::string& path, int status)> on_request;
  // Not owned; must outlive the bridge. Required.
  Logger* logger = nullptr;
};

class ConnectBridge {
 public:
  // Binds `listen` and starts serving. INVALID_ARGUMENT naming the option (listen, only
  // one TLS file, stream caps, console_dir not a directory), NOT_FOUND for an unreadable
  // TLS file, UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<ConnectBridge>> Start(
      const ConnectBridgeOptions& options, std::shared_ptr<grpc::Channel> channel);
  // Stop().
  ~ConnectBridge();
  ConnectBridge(const ConnectBridge&) = delete;
  ConnectBridge& operator=(const ConnectBridge&) = delete;

  // The port it listens on (the picked one when `listen` asked for port 0).
  int port() const { return port_; }
  bool tls() const { return tls_; }

  // Stops listening, cancels open streams and joins the listener. Idempotent.
  void Stop();

 private:
  ConnectBridge() = default;

  // The handlers (connect_bridge.cc).
  void HandleRpc(const httplib::Request& request, httplib::Response& response);
  void HandleDownload(const httplib::Request& request, httplib::Response& response);
  void HandleSignIn(const httplib::Request& request, httplib::Response& response);
  void HandleSignOut(const httplib::Request& request, httplib::Response& response);

  // Takes a stream slot for `user_id` (kNoUser: a download, counted in all only); false
  // when a cap is reached.
  static constexpr int64_t kNoUser = -1;
  bool AcquireStream(int64_t user_id);
  void ReleaseStream(int64_t user_id);

  ConnectBridgeOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  int port_ = 0;
  bool tls_ = false;

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, int> streams_by_user_ ABSL_GUARDED_BY(mu_);
  // The contexts of open streams, cancelled by Stop().
  std::vector<grpc::ClientContext*> stream_contexts_ ABSL_GUARDED_BY(mu_);

  friend class StreamCall;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_HTTP_CONNECT_BRIDGE_H_
