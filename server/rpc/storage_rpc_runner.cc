#include "server/rpc/storage_rpc_runner.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kcnet::server {
namespace {

constexpr char kSignInHint[] = "; sign in with kcnet.v1.AuthService/Login";

}  // namespace

absl::StatusOr<std::string> BearerToken(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
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
  std::unique_ptr<Logger> owned;
  Logger* logger = options.logger;
  if (logger == nullptr) {
    owned = std::make_unique<Logger>(LogFormat::kText);
    logger = owned.get();
  }
  return std::unique_ptr<StorageRpcRunner>(
      new StorageRpcRunner(directory, options.storage_threads, logger, std::move(owned)));
}

StorageRpcRunner::StorageRpcRunner(Directory* directory, int threads, Logger* logger,
                                   std::unique_ptr<Logger> owned_logger)
    : directory_(directory),
      owned_logger_(std::move(owned_logger)),
      logger_(logger),
      pool_(threads) {}

StorageRpcRunner::~StorageRpcRunner() { Stop(); }

void StorageRpcRunner::Stop() { pool_.Stop(); }

grpc::ServerUnaryReactor* StorageRpcRunner::Run(grpc::CallbackServerContext* context,
                                                const char* method, Body body) {
  return Start(context, method, std::move(body), /*authenticate=*/true);
}

grpc::ServerUnaryReactor* StorageRpcRunner::RunPublic(grpc::CallbackServerContext* context,
                                                      const char* method, Body body) {
  return Start(context, method, std::move(body), /*authenticate=*/false);
}

grpc::ServerUnaryReactor* StorageRpcRunner::Start(grpc::CallbackServerContext* context,
                                                  const char* method, Body body,
                                                  bool authenticate) {
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
  if (!pool_.Schedule(std::move(call))) {
    Finish(reactor, method, "-", absl::UnavailableError("the server is shutting down"), start);
  }
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
