#include "server/rpc/storage_rpc_runner.h"

#include <algorithm>

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace kcnet::server {
namespace {

constexpr char kSignInHint[] = "; sign in with kcnet.v1.AuthService/Login";

}  // namespace

absl::StatusOr<std::string> BearerToken(const grpc::ServerContextBase& context) {
  return BearerToken(context.client_metadata());
}

absl::StatusOr<std::string> BearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "authorization: missing \"authorization: Bearer <token>\" metadata", kSignInHint));
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return absl::UnauthenticatedError(
        absl::StrCat("authorization: the metadata must read \"Bearer <token>\"", kSignInHint));
  }
  const absl::string_view token = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  if (token.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("authorization: empty token", kSignInHint));
  }
  return std::string(token);
}

absl::StatusOr<std::unique_ptr<StorageRpcRunner>> StorageRpcRunner::Create(
    Directory* directory, RpcRunnerOptions options) {
  if (directory == nullptr) return absl::InvalidArgumentError("directory: must not be null");
  if (options.storage_threads < 1 || options.storage_threads > kMaxStorageThreads) {
    return absl::InvalidArgumentError(absl::StrCat("storage_threads: must be between 1 and ",
                                                   kMaxStorageThreads, ", got ",
                                                   options.storage_threads));
  }
  if (options.sign_in.threads < 1 || options.sign_in.threads > kMaxStorageThreads) {
    return absl::InvalidArgumentError(absl::StrCat("sign_in.threads: must be between 1 and ",
                                                   kMaxStorageThreads, ", got ",
                                                   options.sign_in.threads));
  }
  std::unique_ptr<Logger> owned;
  Logger* logger = options.logger;
  if (logger == nullptr) {
    owned = std::make_unique<Logger>(LogFormat::kText);
    logger = owned.get();
  }
  return std::unique_ptr<StorageRpcRunner>(
      new StorageRpcRunner(directory, options, logger, std::move(owned)));
}

StorageRpcRunner::StorageRpcRunner(Directory* directory, const RpcRunnerOptions& options,
                                   Logger* logger, std::unique_ptr<Logger> owned_logger)
    : directory_(directory),
      owned_logger_(std::move(owned_logger)),
      logger_(logger),
      pool_(options.storage_threads),
      sign_in_pool_(options.sign_in.threads, options.sign_in.max_queued, options.sign_in.nice),
      per_peer_(options.sign_in.per_peer),
      per_user_(options.sign_in.per_user),
      trusted_proxies_(options.sign_in.trusted_proxies) {}

StorageRpcRunner::~StorageRpcRunner() { Stop(); }

void StorageRpcRunner::Stop() {
  sign_in_pool_.Stop();
  pool_.Stop();
}

std::string PeerAddress(absl::string_view peer) {
  // "ipv4:1.2.3.4:port", "ipv6:[::1]:port"; anything else (unix sockets) is kept whole.
  const size_t colon = peer.rfind(':');
  const size_t scheme = peer.find(':');
  if (colon == absl::string_view::npos || colon == scheme) return std::string(peer);
  return std::string(peer.substr(0, colon));
}

namespace {

bool LooksLikeIpAddress(absl::string_view text) {
  if (text.empty() || text.size() > 45) return false;
  for (const char c : text) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) && c != '.' && c != ':') return false;
  }
  return true;
}

}  // namespace

std::string ForwardedClientAddress(const std::string& peer, absl::string_view forwarded_for,
                                   const std::vector<std::string>& trusted_proxies) {
  auto trusted = [&](absl::string_view address) {
    return std::find(trusted_proxies.begin(), trusted_proxies.end(), address) !=
           trusted_proxies.end();
  };
  if (!trusted(peer)) return peer;
  std::string client = peer;
  const std::vector<absl::string_view> hops = absl::StrSplit(forwarded_for, ',');
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    const absl::string_view address = absl::StripAsciiWhitespace(*hop);
    if (!LooksLikeIpAddress(address)) break;
    client = std::string(address);
    if (!trusted(address)) break;
  }
  return client;
}

std::string CallerAddress(const grpc::ServerContextBase& context,
                          const std::vector<std::string>& trusted_proxies) {
  const std::string peer = context.peer();
  // gRPC 1.51's in-process transport names no peer ("unknown"); later ones say "inproc".
  // Every network transport names its address.
  if (peer == "unknown" || peer == "inproc") {
    const auto it = context.client_metadata().find(kForwardedPeerMetadata);
    if (it != context.client_metadata().end() && !it->second.empty()) {
      return std::string(it->second.data(), std::min<size_t>(it->second.size(), 64));
    }
  }
  const std::string address = PeerAddress(peer);
  if (trusted_proxies.empty()) return address;
  // "ipv4:10.0.0.7" -> "10.0.0.7", "ipv6:[::1]" -> "::1", as the proxies are listed.
  absl::string_view ip = address;
  if (!absl::ConsumePrefix(&ip, "ipv4:") && absl::ConsumePrefix(&ip, "ipv6:")) {
    absl::ConsumePrefix(&ip, "[");
    absl::ConsumeSuffix(&ip, "]");
  }
  const auto forwarded = context.client_metadata().find("x-forwarded-for");
  if (forwarded == context.client_metadata().end()) return address;
  const std::string client = ForwardedClientAddress(
      std::string(ip), absl::string_view(forwarded->second.data(), forwarded->second.size()),
      trusted_proxies);
  if (client == ip) return address;
  return absl::StrContains(client, ':') ? absl::StrCat("ipv6:[", client, "]")
                                        : absl::StrCat("ipv4:", client);
}

grpc::ServerUnaryReactor* StorageRpcRunner::Run(grpc::CallbackServerContext* context,
                                                const char* method, Body body) {
  return Start(context, method, std::move(body), /*authenticate=*/true, &pool_);
}

grpc::ServerUnaryReactor* StorageRpcRunner::RunPublic(grpc::CallbackServerContext* context,
                                                      const char* method, Body body) {
  return Start(context, method, std::move(body), /*authenticate=*/false, &pool_);
}

grpc::ServerUnaryReactor* StorageRpcRunner::RunSignIn(grpc::CallbackServerContext* context,
                                                      const char* method,
                                                      absl::string_view username, Body body) {
  // The limits are checked here, on gRPC's thread, before anything is queued: a refused
  // sign-in costs a hash-map lookup, never a storage thread.
  const absl::Time now = absl::Now();
  absl::Status status =
      per_peer_.Acquire(CallerAddress(*context, trusted_proxies_), now, "sign-in");
  if (status.ok()) {
    // Keyed like the lock-out: at most 64 bytes of what was typed.
    status = per_user_.Acquire(username.substr(0, 64), now, "sign-in");
  }
  if (!status.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Finish(reactor, method, "-", status, now);
    return reactor;
  }
  return Start(context, method, std::move(body), /*authenticate=*/false, &sign_in_pool_);
}

grpc::ServerUnaryReactor* StorageRpcRunner::Start(grpc::CallbackServerContext* context,
                                                  const char* method, Body body, bool authenticate,
                                                  ThreadPool* pool) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> token =
      authenticate ? BearerToken(*context) : absl::StatusOr<std::string>(std::string());
  auto call = [this, context, reactor, method, start, authenticate, token = std::move(token),
               body = std::move(body)] {
    absl::Status status;
    absl::StatusOr<Principal> principal;
    const Principal* caller = nullptr;
    if (context->IsCancelled()) {
      status = absl::CancelledError("the client cancelled the call");
    } else if (authenticate) {
      principal = Authenticate(token);
      status = principal.status();
      if (status.ok()) caller = &*principal;
    }
    if (status.ok()) status = body(caller);
    Finish(reactor, method, caller != nullptr ? caller->username : "-", status, start);
  };
  if (pool == &pool_) {
    if (!pool_.Schedule(std::move(call))) {
      Finish(reactor, method, "-", absl::UnavailableError("the server is shutting down"), start);
    }
    return reactor;
  }
  absl::Status queued = pool->TrySchedule(std::move(call));
  if (queued.code() == absl::StatusCode::kResourceExhausted) {
    // Every sign-in thread is busy and the queue is full: a second is about what the
    // queue takes to drain at interactive Argon2id cost.
    const absl::Duration wait = absl::Seconds(1);
    queued = absl::ResourceExhaustedError(
        absl::StrCat("sign-in: the server is busy signing others in; retry in ",
                     absl::ToInt64Milliseconds(wait), " ms"));
    SetRetryDelay(&queued, wait);
  }
  if (!queued.ok()) Finish(reactor, method, "-", queued, start);
  return reactor;
}

absl::StatusOr<Principal> StorageRpcRunner::Authenticate(const absl::StatusOr<std::string>& token) {
  if (!token.ok()) return token.status();
  absl::StatusOr<Principal> principal = directory_->Authenticate(*token);
  if (principal.ok() || principal.status().code() != absl::StatusCode::kUnauthenticated) {
    return principal;
  }
  return absl::UnauthenticatedError(
      absl::StrCat("authorization: ", principal.status().message(), kSignInHint));
}

void StorageRpcRunner::Finish(grpc::ServerUnaryReactor* reactor, const char* method,
                              absl::string_view caller, const absl::Status& status,
                              absl::Time start) {
  // The line goes out before Finish(), so that a client that has its answer finds it.
  RpcLogEntry entry;
  entry.method = method;
  entry.caller = caller;
  entry.code = status.code();
  entry.message = status.message();
  entry.latency_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  logger_->Rpc(entry);
  reactor->Finish(ToGrpcStatus(status));
}

}  // namespace kcnet::server
