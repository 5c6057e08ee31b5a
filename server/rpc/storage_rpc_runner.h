// StorageRpcRunner: the RpcRunner of the server (see rpc_runner.h for the contract).
//
// Run() and RunPublic() return the call's reactor at once; the rest happens on one of a
// fixed pool of storage threads: authentication (Run() only: "authorization: Bearer
// <token>" metadata -> Directory::Authenticate), the body, ToGrpcStatus(), Finish(), and the
// RPC's log line. A call whose client has already gone is finished as CANCELLED without
// running its body. Once Stop() has begun, new calls are answered UNAVAILABLE at once.
//
// Thread-safety: thread-safe. The directory and the logger must outlive the runner.
#ifndef KCNET_SERVER_RPC_STORAGE_RPC_RUNNER_H_
#define KCNET_SERVER_RPC_STORAGE_RPC_RUNNER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/directory/directory.h"
#include "server/rpc/logger.h"
#include "server/rpc/rate_limiter.h"
#include "server/rpc/rpc_runner.h"
#include "server/rpc/thread_pool.h"

namespace kcnet::server {

inline constexpr int kMaxStorageThreads = 256;

// Sign-in (AuthService.Login) runs Argon2id, which is slow on purpose: sign-ins run on
// their own few threads with a bounded queue, so that a flood of them cannot starve the
// other RPCs, and are limited per peer address and per username. Every refusal is
// RESOURCE_EXHAUSTED with the delay to wait ("retry in N ms", and a RetryInfo detail).
struct SignInOptions {
  int threads = 1;         // 1..kMaxStorageThreads
  size_t max_queued = 64;  // sign-ins waiting for a thread beyond this are refused
  // The sign-in threads' nice value (Linux): hashing yields the CPU to the other RPCs.
  int nice = 10;
  // A tablet signs in about twice a day; an office behind one address, a few hundred
  // times. burst 0 turns a limit off.
  RateLimit per_peer{.burst = 300, .per_second = 10};
  RateLimit per_user{.burst = 30, .per_second = 0.5};
  // Proxies in front (nginx) whose x-forwarded-for metadata names the client: their exact
  // IP addresses. Empty: every caller is keyed by its connection's address.
  std::vector<std::string> trusted_proxies;
};

struct RpcRunnerOptions {
  int storage_threads = 4;  // 1..kMaxStorageThreads
  SignInOptions sign_in;
  // Where the RPC lines go; nullptr: a text logger on stderr owned by the runner.
  Logger* logger = nullptr;
};

class StorageRpcRunner final : public RpcRunner {
 public:
  // Starts the storage threads. Fails with INVALID_ARGUMENT naming storage_threads when
  // the count is out of range, or directory when it is null.
  static absl::StatusOr<std::unique_ptr<StorageRpcRunner>> Create(Directory* directory,
                                                                  RpcRunnerOptions options = {});
  // Stop()s.
  ~StorageRpcRunner() override;

  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* context, const char* method,
                                Body body) override;
  grpc::ServerUnaryReactor* RunPublic(grpc::CallbackServerContext* context, const char* method,
                                      Body body) override;
  grpc::ServerUnaryReactor* RunSignIn(grpc::CallbackServerContext* context, const char* method,
                                      absl::string_view username, Body body) override;

  // Finishes every call already queued, then joins the storage threads. Idempotent.
  void Stop();

 private:
  StorageRpcRunner(Directory* directory, const RpcRunnerOptions& options, Logger* logger,
                   std::unique_ptr<Logger> owned_logger);
  grpc::ServerUnaryReactor* Start(grpc::CallbackServerContext* context, const char* method,
                                  Body body, bool authenticate, ThreadPool* pool);
  // The principal behind the call's bearer token, or UNAUTHENTICATED.
  absl::StatusOr<Principal> Authenticate(const absl::StatusOr<std::string>& token);
  void Finish(grpc::ServerUnaryReactor* reactor, const char* method, absl::string_view caller,
              const absl::Status& status, absl::Time start);

  Directory* const directory_;
  const std::unique_ptr<Logger> owned_logger_;
  Logger* const logger_;
  ThreadPool pool_;
  ThreadPool sign_in_pool_;
  RateLimiter per_peer_;
  RateLimiter per_user_;
  const std::vector<std::string> trusted_proxies_;
};

// The peer's address without its port ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"): every
// connection from one machine counts against one limit.
std::string PeerAddress(absl::string_view peer);

// The metadata in which the console's HTTP bridge (server/http) names the browser's address
// ("ipv4:10.0.0.7") of a call it forwards in process. Believed only from the in-process
// channel: a network client that sends it is keyed by its own address.
inline constexpr char kForwardedPeerMetadata[] = "x-kcnet-forwarded-peer";

// The address a call's limits count against: PeerAddress(context.peer()), or, for a call
// the bridge forwarded in process, the browser's address it names, or, for a call from one
// of `trusted_proxies` (nginx), the client its x-forwarded-for metadata names
// (ForwardedClientAddress).
std::string CallerAddress(const grpc::ServerContextBase& context,
                          const std::vector<std::string>& trusted_proxies = {});

// The client's address for per-address limits: `peer` (the connection's address) unless
// it is one of `trusted_proxies`; then the rightmost address of `forwarded_for` (the
// X-Forwarded-For header, "client, proxy1, proxy2") that is not a trusted proxy, walking
// leftwards past trusted ones. A client can only prepend to the header, never replace what
// the trusted proxy appended. Anything that is not an IP address ends the walk (the last
// trusted address is kept).
std::string ForwardedClientAddress(const std::string& peer, absl::string_view forwarded_for,
                                   const std::vector<std::string>& trusted_proxies);

// The token of the call's "authorization: Bearer <token>" metadata. Fails with
// UNAUTHENTICATED, saying what is wrong, when the metadata is missing or malformed.
absl::StatusOr<std::string> BearerToken(const grpc::ServerContextBase& context);
// The same, from the metadata itself (e.g. an interceptor's received initial metadata).
absl::StatusOr<std::string> BearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_STORAGE_RPC_RUNNER_H_
