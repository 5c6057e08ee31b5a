// kcnet::sdk::Client (client_sdk/include/kcnet/client.h): the domain API over a
// DeviceStore, the rules checked offline, and the sync queue.
#include "kcnet/client.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client_sdk/attachment_queue.h"
#include "client_sdk/device_directory.h"
#include "client_sdk/sync_client.h"
#include "grpc/support/log.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/model/rules.h"

namespace kcnet::sdk {
namespace {

using kcnet::v1::Facility;
using kcnet::v1::Mutation;
using kcnet::v1::RecordChange;
using kcnet::v1::RequestEvent;
using kcnet::v1::SupportRequest;
using kcnet::v1::Visit;

// Keys of the SDK's own state in the store.
constexpr char kAccountKey[] = "sdk.account";  // a LoginResponse
constexpr char kLastSuccessKey[] = "sdk.last_success_ms";
// The user whose data the store holds (a User), kept after sign-out: the next sign-in
// knows whether it is a switch to another user.
constexpr char kOwnerKey[] = "sdk.owner";
// "1" while the server refuses the device credential (sign in again).
constexpr char kSignInRequiredKey[] = "sdk.sign_in_required";
// A sign-out made without a network (a LoginResponse: the token and device credential to
// revoke, the user): kept across the purge until the next connection settles it.
constexpr char kSignOutOwedKey[] = "sdk.sign_out_owed";
// The server incarnation (Welcome.incarnation, decimal) the attachment queue last saw: a
// different one means a restore, after which uploaded attachments are queued again.
constexpr char kAttachmentIncarnationKey[] = "sdk.attachments_incarnation";
// A token this close to its expiry is renewed before a sync.
constexpr absl::Duration kRefreshMargin = absl::Minutes(2);

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// ---- the log sink (SetLogSink) ----

struct LogState {
  absl::Mutex mu;
  std::shared_ptr<const LogSink> sink ABSL_GUARDED_BY(mu);
  LogLevel min_level ABSL_GUARDED_BY(mu) = LogLevel::kError;  // the default: stderr
};

LogState& Logs() {
  static LogState* state = new LogState;  // never destroyed: threads may log at exit
  return *state;
}

// Sends one message to the app's sink (or stderr), with no lock held while it runs.
void Log(LogLevel level, const std::string& message) {
  std::shared_ptr<const LogSink> sink;
  {
    LogState& logs = Logs();
    absl::MutexLock lock(&logs.mu);
    if (level < logs.min_level) return;
    sink = logs.sink;
  }
  if (sink != nullptr && *sink) {
    try {
      (*sink)(level, message);
    } catch (...) {
      // A sink that throws loses its message, never the SDK's thread.
    }
    return;
  }
  static constexpr const char* kNames[] = {"debug", "info", "warning", "error"};
  std::fprintf(stderr, "kcnet %s: %s\n", kNames[static_cast<int>(level)], message.c_str());
}

// gRPC's log function (gpr_set_log_function) while the app has a sink: each gRPC line
// becomes an SDK message "grpc: MESSAGE (FILE:LINE)" at the matching level.
void ForwardGrpcLog(gpr_log_func_args* args) {
  LogLevel level = LogLevel::kError;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG) level = LogLevel::kDebug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = LogLevel::kInfo;
  Log(level, absl::StrCat("grpc: ", args->message != nullptr ? args->message : "", " (",
                          args->file != nullptr ? args->file : "?", ":", args->line, ")"));
}

// Whether "host:port" names this machine: 127.0.0.0/8, localhost or [::1]. Such servers
// are reached in plaintext by default; every other one over TLS.
bool IsLoopback(absl::string_view address) {
  absl::string_view host = address;
  if (absl::StartsWith(host, "[")) {
    const size_t end = host.find(']');
    host = end == absl::string_view::npos ? host : host.substr(1, end - 1);
    return host == "::1";
  }
  const size_t colon = host.rfind(':');
  if (colon != absl::string_view::npos) host = host.substr(0, colon);
  const std::string lower = absl::AsciiStrToLower(host);
  if (lower == "localhost") return true;
  // An IPv4 literal 127.a.b.c (not a host name such as "127.example.vn").
  std::vector<std::string> parts = absl::StrSplit(lower, '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (const std::string& part : parts) {
    int value = 0;
    if (part.empty() || part.size() > 3 || !absl::SimpleAtoi(part, &value) || value > 255) {
      return false;
    }
  }
  return true;
}

// An exclusive advisory lock on "<store>.lock": one Client per store file, across
// processes too (two handles on one store would both push the same outbox sequences).
// flock() locks belong to the open file, so a second open in the same process conflicts
// as well. The lock file is left in place: deleting it would race with the next opener.
class StoreLock {
 public:
  static absl::StatusOr<std::unique_ptr<StoreLock>> Acquire(const std::string& store) {
    const std::string path = store + ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(store, ": cannot create its lock file ", path, ": ", std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(fd);
      if (error == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            store,
            ": already open in another kcnet client (this app or another process); one client "
            "per store file: close the other first"));
      }
      return absl::FailedPreconditionError(
          absl::StrCat(store, ": cannot lock ", path, ": ", std::strerror(error)));
    }
    return std::unique_ptr<StoreLock>(new StoreLock(fd));
  }
  ~StoreLock() { ::close(fd_); }  // releases the lock
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;

 private:
  explicit StoreLock(int fd) : fd_(fd) {}
  const int fd_;
};

RecordRef RefOf(uint32_t type, absl::string_view id_bytes) {
  absl::StatusOr<std::string> text = sync::UuidToText(id_bytes);
  return RecordRef{type, text.ok() ? *text : std::string()};
}

std::vector<RecordRef> RefsOf(const Mutation& m) {
  std::vector<RecordRef> out;
  for (const RecordChange& c : m.changes()) out.push_back(RefOf(c.type(), c.id()));
  return out;
}

Report ToReport(const sync::Report& r) {
  Report out;
  out.seq = r.mutation.seq();
  out.refused = r.result.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED;
  out.records = RefsOf(r.mutation);
  out.result = r.result;
  if (out.refused) {
    out.reason = model::RecordFieldMessage(r.mutation, r.result.reason());
  } else {
    std::vector<std::string> parts;
    for (const kcnet::v1::Conflict& c : r.result.conflicts()) {
      const sync::RecordTypeSpec* type = model::KcnetSchema().Find(c.type());
      std::string field = "record";
      if (type != nullptr && c.field() != 0) {
        const int index = type->IndexOf(c.field());
        if (index >= 0) field = type->fields[index].name;
      }
      parts.push_back(absl::StrCat(type != nullptr ? type->name : "record", ".", field));
    }
    out.reason = absl::StrCat("merged with a concurrent edit (", absl::StrJoin(parts, ", "),
                              "); the newest write kept each field");
  }
  return out;
}

// The field name of the record type for messages ("facility", "visit", ...).
std::string TypeName(uint32_t type) {
  const sync::RecordTypeSpec* spec = model::KcnetSchema().Find(type);
  return spec != nullptr ? spec->name : "record";
}

template <typename T>
absl::StatusOr<T> FromRecord(const RecordChange& change) {
  T out;
  absl::Status status = model::FromChange(change, &out);
  if (!status.ok()) return status;
  return out;
}

bool IsReviewAction(kcnet::v1::RequestAction a) {
  return a == kcnet::v1::REQUEST_ACTION_ENDORSE || a == kcnet::v1::REQUEST_ACTION_RETURN ||
         a == kcnet::v1::REQUEST_ACTION_REJECT || a == kcnet::v1::REQUEST_ACTION_APPROVE;
}

}  // namespace

class Client::Impl {
 public:
  Impl(ClientOptions options, std::unique_ptr<StoreLock> lock,
       std::unique_ptr<sync::DeviceStore> store)
      : options_(std::move(options)),
        lock_(std::move(lock)),
        store_(std::move(store)),
        directory_(store_.get()),
        rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
    StartNotifier();
  }

  ~Impl() { Close().IgnoreError(); }

  // ---- account ----

  absl::Status LoadAccount() {
    absl::StatusOr<std::optional<std::string>> saved = store_->GetValue(kAccountKey);
    if (!saved.ok()) return saved.status();
    absl::StatusOr<std::optional<std::string>> last = store_->GetValue(kLastSuccessKey);
    if (!last.ok()) return last.status();
    absl::StatusOr<std::optional<std::string>> owner = store_->GetValue(kOwnerKey);
    if (!owner.ok()) return owner.status();
    absl::StatusOr<std::optional<std::string>> again = store_->GetValue(kSignInRequiredKey);
    if (!again.ok()) return again.status();
    absl::MutexLock lock(&mu_);
    sign_in_required_ = again->has_value();
    if (owner->has_value()) {
      kcnet::v1::User user;
      if (!user.ParseFromString(**owner)) {
        return absl::DataLossError(absl::StrCat(options_.path, ": the saved owner is damaged"));
      }
      owner_ = std::move(user);
    }
    if (saved->has_value()) {
      kcnet::v1::LoginResponse account;
      if (!account.ParseFromString(**saved)) {
        return absl::DataLossError(absl::StrCat(options_.path, ": the saved account is damaged"));
      }
      account_ = std::move(account);
    }
    int64_t ms = 0;
    if (last->has_value() && absl::SimpleAtoi(**last, &ms))
      last_success_ = absl::FromUnixMillis(ms);
    return absl::OkStatus();
  }

  // An error of a unary call to the server: an unreachable server said plainly.
  absl::Status CallError(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(absl::StrCat("cannot reach the server at ",
                                                 options_.server_address, ": ", s.error_message()));
    }
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

  // What this device holds that the server does not have yet: pending record writes, and
  // photos whose bytes are not uploaded (their record may already be on the server, so the
  // record outbox alone does not count them). A sign-out or a switch of user that purged
  // them would lose what AddAttachment acknowledged.
  absl::StatusOr<int64_t> UnsentCount() {
    absl::StatusOr<int64_t> pending = store_->PendingCount();
    if (!pending.ok()) return pending.status();
    absl::StatusOr<std::vector<QueueRow>> rows = attachments_->Rows();
    if (!rows.ok()) return rows.status();
    for (const QueueRow& row : *rows) {
      if (row.state == AttachmentState::kQueued || row.state == AttachmentState::kUploading ||
          row.state == AttachmentState::kFailed) {
        ++*pending;
      }
    }
    return pending;
  }

  // FAILED_PRECONDITION naming the pending writes of `who` and the app's choice.
  static absl::Status PendingChoice(const char* call, int64_t pending, const std::string& who,
                                    const char* option, const char* c_flag) {
    return absl::FailedPreconditionError(
        absl::StrCat(call, ": ", pending, " change(s) of user '", who,
                     "' (record writes or photos) are not uploaded yet; sync as that user first, "
                     "or save them with "
                     "ExportPending(path) and call again with ",
                     option, " (C: ", c_flag, "; they are then dropped from this device)"));
  }

  // Takes the serial queue for an account change: the running sync is cancelled and
  // waited for, and none starts until LeaveQueue(), so that no download of the previous
  // user lands after its purge.
  absl::Status EnterQueue(const char* call) {
    absl::MutexLock lock(&mu_);
    const std::thread::id self = std::this_thread::get_id();
    if (serial_owner_ == self) {
      return absl::FailedPreconditionError(absl::StrCat(
          call, ": called from a sync's progress callback; call it after SyncNow returns"));
    }
    if (closed_) return absl::FailedPreconditionError(absl::StrCat(call, ": the client is closed"));
    ++cancel_generation_;
    if (syncing_ != nullptr) syncing_->Cancel();
    for (grpc::ClientContext* transfer : transfers_) transfer->TryCancel();
    ++syncs_in_progress_;
    state_cv_.SignalAll();
    while (serial_owner_ != std::thread::id()) state_cv_.Wait(&mu_);
    serial_owner_ = self;
    return absl::OkStatus();
  }
  void LeaveQueue() {
    absl::MutexLock lock(&mu_);
    serial_owner_ = std::thread::id();
    --syncs_in_progress_;
    state_cv_.SignalAll();
  }

  absl::Status SignIn(const std::string& username, const std::string& password,
                      const SignInOptions& opts) {
    if (username.empty()) return absl::InvalidArgumentError("username: required");
    if (password.empty()) return absl::InvalidArgumentError("password: required");
    absl::Status status = EnterQueue("SignIn");
    if (!status.ok()) return status;
    absl::Cleanup leave = [this] { LeaveQueue(); };
    std::optional<kcnet::v1::User> previous;
    bool signed_in = false;
    {
      absl::MutexLock lock(&mu_);
      signed_in = account_.has_value();
      previous = signed_in ? std::optional<kcnet::v1::User>(account_->user()) : owner_;
    }
    absl::StatusOr<int64_t> pending = UnsentCount();
    if (!pending.ok()) return pending.status();
    // Usernames are unique, so a switch is known before asking the server: a refusal
    // costs no token. A store of an SDK that did not record its owner yet, holding data,
    // counts as another user's.
    bool switching = previous.has_value() && previous->username() != username;
    std::string previous_name = previous.has_value() ? previous->username() : "";
    if (!previous.has_value()) {
      absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> held = store_->Cursors();
      if (!held.ok()) return held.status();
      switching = *pending > 0 || !held->empty();
      previous_name = "a previous user";
    }
    if (switching && *pending > 0 && !opts.discard_pending_of_previous_user) {
      return PendingChoice("sign-in", *pending, previous_name,
                           "SignInOptions.discard_pending_of_previous_user",
                           "KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER");
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    auto stub = kcnet::v1::AuthService::NewStub(*channel);
    kcnet::v1::LoginResponse resp;
    {
      grpc::ClientContext ctx;
      UnaryCall active(this, &ctx);  // Close() cancels it
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      kcnet::v1::LoginRequest req;
      req.set_username(username);
      req.set_password(password);
      req.set_device_id(options_.device_id);  // a device credential for months offline
      grpc::Status s = stub->Login(&ctx, req, &resp);
      if (!s.ok()) return CallError(s);
    }
    if (switching && signed_in) {
      // The previous user leaves first (device released, credential revoked, data
      // purged); when that fails, the new sign-in is undone on the server too.
      SignOutOptions out;
      out.discard_pending = opts.discard_pending_of_previous_user;
      status = SignOutInQueue(out);
      if (!status.ok()) {
        grpc::ClientContext ctx;
        UnaryCall active(this, &ctx);
        ctx.AddMetadata("authorization", absl::StrCat("Bearer ", resp.token()));
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        kcnet::v1::LogoutRequest req;
        req.set_device_id(options_.device_id);
        kcnet::v1::LogoutResponse ignored;
        stub->Logout(&ctx, req, &ignored).ok();
        return absl::Status(status.code(), absl::StrCat("sign-in: signing '", previous_name,
                                                        "' out first failed: ", status.message()));
      }
    }
    if (switching) {
      // Another user's data never shows to this one. Sequences restart: the server gives
      // this user's registration of the device a new generation, numbered from 1.
      status = store_->PurgeAll(/*restart_sequences=*/true);
      if (status.ok()) status = attachments_->DropDownloads();
      if (!status.ok()) return status;
      absl::MutexLock lock(&mu_);
      held_.clear();
      last_success_.reset();
    }
    status = store_->SetValue(kAccountKey, resp.SerializeAsString());
    if (status.ok()) status = store_->SetValue(kOwnerKey, resp.user().SerializeAsString());
    if (status.ok()) status = store_->SetValue(kSignInRequiredKey, std::nullopt);
    if (status.ok() && switching) status = store_->SetValue(kLastSuccessKey, std::nullopt);
    if (!status.ok()) return status;
    const std::string token = resp.token();
    {
      absl::MutexLock lock(&mu_);
      owner_ = resp.user();
      account_ = std::move(resp);
      sign_in_required_ = false;
      next_attempt_ = absl::Now();  // a stopped background sync resumes
      state_cv_.SignalAll();
    }
    // The names and codes of the user's directory, for offline use. A failure here does
    // not undo the sign-in: the next sync fetches it again.
    absl::StatusOr<bool> fetched = FetchDirectory(token);
    if (!fetched.ok()) {
      Log(LogLevel::kWarning,
          absl::StrCat("sign-in: the directory was not fetched (the next sync tries again): ",
                       fetched.status().ToString()));
    }
    // An offline sign-out of whoever used the tablet before: settled now, before this
    // user's first sync (the device must be released first). A failure is logged and
    // retried at the next sync.
    SettleOwedSignOut().IgnoreError();
    return absl::OkStatus();
  }

  // Fetches the user's directory (OrgUnitService.GetScopeDirectory) unless the stored
  // copy is current, and stores it. Returns whether the stored copy changed. Called in the
  // serial queue (sign-in, sync), so no user switch runs meanwhile.
  absl::StatusOr<bool> FetchDirectory(const std::string& token) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::string> known = directory_.Version();
    if (!known.ok()) return known.status();
    kcnet::v1::GetScopeDirectoryRequest req;
    req.set_known_version(*known);
    kcnet::v1::ScopeDirectory resp;
    auto stub = kcnet::v1::OrgUnitService::NewStub(*channel);
    grpc::Status s = WithToken(
        token, [&](grpc::ClientContext* ctx) { return stub->GetScopeDirectory(ctx, req, &resp); });
    if (!s.ok()) return CallError(s);
    if (resp.not_modified()) return false;
    absl::Status status = directory_.Replace(resp);
    if (!status.ok()) return status;
    return true;
  }

  absl::Status SignOut(const SignOutOptions& opts) {
    absl::Status status = EnterQueue("SignOut");
    if (!status.ok()) return status;
    absl::Cleanup leave = [this] { LeaveQueue(); };
    return SignOutInQueue(opts);
  }

  // A unary call with the bearer token; a token the server refuses is renewed with the
  // device credential once. UNAUTHENTICATED when the credential is refused too.
  template <typename Call>
  grpc::Status WithToken(const std::string& first_token, const Call& call) {
    std::string token = first_token;
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      UnaryCall active(this, &ctx);
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      grpc::Status s = call(&ctx);
      if (s.error_code() != grpc::StatusCode::UNAUTHENTICATED || attempt > 0) return s;
      absl::StatusOr<std::string> renewed = FreshToken(/*force=*/true);
      if (!renewed.ok()) {
        return grpc::Status(static_cast<grpc::StatusCode>(renewed.status().code()),
                            std::string(renewed.status().message()));
      }
      token = *renewed;
    }
  }

  absl::Status SignOutInQueue(const SignOutOptions& opts) {
    std::optional<kcnet::v1::LoginResponse> account;
    bool refused = false;
    {
      absl::MutexLock lock(&mu_);
      account = account_;
      refused = sign_in_required_;
    }
    if (!account.has_value()) return absl::OkStatus();  // nobody signed in
    absl::StatusOr<int64_t> pending = UnsentCount();
    if (!pending.ok()) return pending.status();
    if (*pending > 0 && !opts.discard_pending) {
      return PendingChoice("sign-out", *pending, account->user().username(),
                           "SignOutOptions.discard_pending", "KCNET_SIGN_OUT_DISCARD_PENDING");
    }
    if (!refused && !options_.server_address.empty()) {
      absl::Status online = ReleaseAndRevoke();
      if (absl::IsUnavailable(online)) {
        // No network, and nothing of the user's waits for upload: the purge happens now and
        // the server part at the next connection (SettleOwedSignOut), whoever signs in.
        absl::StatusOr<std::optional<std::string>> owed = store_->GetValue(kSignOutOwedKey);
        if (!owed.ok()) return owed.status();
        if (owed->has_value()) {
          return absl::UnavailableError(
              absl::StrCat(online.message(),
                           "; the sign-out of a previous user is still owed to the server: "
                           "connect once, then sign out"));
        }
        absl::Status status = store_->SetValue(kSignOutOwedKey, account->SerializeAsString());
        if (!status.ok()) return status;
        Log(LogLevel::kInfo, absl::StrCat("sign-out of '", account->user().username(),
                                          "' without a network: the device is released and the "
                                          "credential revoked at the next connection"));
      } else if (!online.ok()) {
        return online;
      }
    }
    // Local part: the user's data leaves the device with them. Sequences continue: the
    // same user signing in again keeps its generation on the server.
    absl::Status status = store_->PurgeAll(/*restart_sequences=*/false);
    if (status.ok()) status = attachments_->DropDownloads();
    if (!status.ok()) return status;
    status = store_->SetValue(kAccountKey, std::nullopt);
    if (status.ok()) status = store_->SetValue(kSignInRequiredKey, std::nullopt);
    if (status.ok()) status = store_->SetValue(kLastSuccessKey, std::nullopt);
    if (!status.ok()) return status;
    absl::MutexLock lock(&mu_);
    account_.reset();
    sign_in_required_ = false;
    held_.clear();
    last_success_.reset();
    return absl::OkStatus();
  }

  // The online part of a sign-out: releases the device so that another user may sync on
  // it, then revokes the token and the device credential. When the server no longer
  // accepts this sign-in at all (credential refused) there is nothing to revoke; an
  // administrator releases the device then. UNAVAILABLE: no network.
  absl::Status ReleaseAndRevoke() {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::string> token = FreshToken();
    if (!token.ok() && !absl::IsUnauthenticated(token.status())) return token.status();
    if (token.ok()) {
      auto sync_stub = kcnet::v1::SyncService::NewStub(*channel);
      kcnet::v1::ReleaseDeviceRequest release;
      release.set_device_id(options_.device_id);
      kcnet::v1::ReleaseDeviceResponse released;
      grpc::Status s = WithToken(*token, [&](grpc::ClientContext* ctx) {
        return sync_stub->ReleaseDevice(ctx, release, &released);
      });
      // NOT_FOUND: this user never synced on the device; nothing to release.
      if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND &&
          s.error_code() != grpc::StatusCode::UNAUTHENTICATED) {
        return CallError(s);
      }
      if (s.error_code() != grpc::StatusCode::UNAUTHENTICATED) {
        {
          absl::MutexLock lock(&mu_);
          if (account_.has_value()) token = account_->token();  // renewed above, perhaps
        }
        auto auth_stub = kcnet::v1::AuthService::NewStub(*channel);
        kcnet::v1::LogoutRequest logout;
        logout.set_device_id(options_.device_id);
        kcnet::v1::LogoutResponse out;
        s = WithToken(
            *token, [&](grpc::ClientContext* ctx) { return auth_stub->Logout(ctx, logout, &out); });
        if (!s.ok() && s.error_code() != grpc::StatusCode::UNAUTHENTICATED) return CallError(s);
      }
    }
    return absl::OkStatus();
  }

  // Settles a sign-out made without a network, at the first connection after it (a
  // sign-in, a sync), whoever is signed in then: releases the device and revokes the
  // token and credential of the user who left, with that user's token or, once, one its
  // credential buys. Then forgets it. The same user signed in again: forgotten only (its
  // new sign-in replaced the credential; the device stays its own). A credential already
  // refused: nothing left to revoke (an administrator releases the device). Keeps it on
  // any other failure (logged) and returns that error.
  absl::Status SettleOwedSignOut() {
    absl::StatusOr<std::optional<std::string>> saved = store_->GetValue(kSignOutOwedKey);
    if (!saved.ok()) return saved.status();
    if (!saved->has_value()) return absl::OkStatus();
    kcnet::v1::LoginResponse owed;
    bool same_user = false;
    if (owed.ParseFromString(**saved)) {
      absl::MutexLock lock(&mu_);
      same_user = account_.has_value() && account_->user().id() == owed.user().id();
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    grpc::Status s;
    if (!same_user && !owed.device_credential().empty()) {
      auto auth_stub = kcnet::v1::AuthService::NewStub(*channel);
      auto sync_stub = kcnet::v1::SyncService::NewStub(*channel);
      std::string token = owed.token();
      // A call with the owed user's token; a refused token is renewed once with its credential.
      auto as_owed = [&](const auto& call) {
        for (int attempt = 0;; ++attempt) {
          grpc::ClientContext ctx;
          UnaryCall active(this, &ctx);
          ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          grpc::Status status = call(&ctx);
          if (status.error_code() != grpc::StatusCode::UNAUTHENTICATED || attempt > 0)
            return status;
          grpc::ClientContext refresh_ctx;
          UnaryCall refreshing(this, &refresh_ctx);
          refresh_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          kcnet::v1::RefreshTokenRequest req;
          req.set_device_id(options_.device_id);
          req.set_device_credential(owed.device_credential());
          kcnet::v1::LoginResponse fresh;
          status = auth_stub->RefreshToken(&refresh_ctx, req, &fresh);
          if (!status.ok()) return status;
          token = fresh.token();
        }
      };
      kcnet::v1::ReleaseDeviceRequest release;
      release.set_device_id(options_.device_id);
      kcnet::v1::ReleaseDeviceResponse released;
      s = as_owed([&](grpc::ClientContext* ctx) {
        return sync_stub->ReleaseDevice(ctx, release, &released);
      });
      if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) {
        kcnet::v1::LogoutRequest logout;
        logout.set_device_id(options_.device_id);
        kcnet::v1::LogoutResponse out;
        s = as_owed([&](grpc::ClientContext* ctx) { return auth_stub->Logout(ctx, logout, &out); });
      }
      if (!s.ok() && s.error_code() != grpc::StatusCode::UNAUTHENTICATED) {
        absl::Status status = CallError(s);
        Log(LogLevel::kWarning, absl::StrCat("the sign-out of '", owed.user().username(),
                                             "' is still owed to the server: ", status.message()));
        return status;
      }
    }
    absl::Status status = store_->SetValue(kSignOutOwedKey, std::nullopt);
    if (!status.ok()) return status;
    if (same_user) return absl::OkStatus();
    Log(s.ok() ? LogLevel::kInfo : LogLevel::kWarning,
        s.ok() ? absl::StrCat("the sign-out of '", owed.user().username(),
                              "' reached the server: device released, credential revoked")
               : absl::StrCat("the sign-out of '", owed.user().username(),
                              "': the server no longer accepts its sign-in (nothing left to "
                              "revoke); an administrator releases the device"));
    return absl::OkStatus();
  }

  // The bearer token for the next call, renewed with the device credential when it is
  // about to expire (or `force`, after the server refused it). UNAUTHENTICATED when the
  // server refuses the credential: sign_in_required is then set, stored, and observers
  // hear kSignInRequired. FAILED_PRECONDITION when nobody is signed in.
  absl::StatusOr<std::string> FreshToken(bool force = false) {
    std::optional<kcnet::v1::LoginResponse> account;
    {
      absl::MutexLock lock(&mu_);
      account = account_;
    }
    if (!account.has_value()) {
      return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
    }
    const bool expiring =
        account->expires_ms() != 0 &&
        absl::FromUnixMillis(account->expires_ms()) - kRefreshMargin <=
            absl::FromUnixMillis(store_->WallMs());  // the tablet's clock (ClientOptions::clock)
    if (!force && !expiring) return account->token();
    if (account->device_credential().empty()) {
      // A sign-in from before device credentials: only the password renews it.
      if (!force) return account->token();
      absl::Status status = absl::UnauthenticatedError(
          "the token was refused and this device holds no device credential");
      SignInRequired(status);
      return status;
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    grpc::ClientContext ctx;
    UnaryCall active(this, &ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    kcnet::v1::RefreshTokenRequest req;
    req.set_device_id(options_.device_id);
    req.set_device_credential(account->device_credential());
    kcnet::v1::LoginResponse resp;
    grpc::Status s = kcnet::v1::AuthService::NewStub(*channel)->RefreshToken(&ctx, req, &resp);
    if (!s.ok()) {
      absl::Status status = CallError(s);
      if (absl::IsUnauthenticated(status)) SignInRequired(status);
      return status;
    }
    account->set_token(resp.token());
    account->set_expires_ms(resp.expires_ms());
    *account->mutable_user() = resp.user();  // a new role or org units arrive with it
    absl::Status status = store_->SetValue(kAccountKey, account->SerializeAsString());
    if (!status.ok()) return status;
    absl::MutexLock lock(&mu_);
    // A sign-out or another sign-in meanwhile wins.
    if (account_.has_value() && account_->user().id() == account->user().id() &&
        account_->device_credential() == account->device_credential()) {
      account_ = *account;
    }
    return account->token();
  }

  // The server refused the device credential: remembered (across restarts), and the app
  // told once; background sync makes no attempt until a sign-in succeeds.
  void SignInRequired(const absl::Status& why) {
    store_->SetValue(kSignInRequiredKey, "1").IgnoreError();
    bool first = false;
    {
      absl::MutexLock lock(&mu_);
      first = !sign_in_required_;
      sign_in_required_ = true;
      state_cv_.SignalAll();
    }
    Log(LogLevel::kWarning, absl::StrCat("sign in again: ", why.message()));
    if (first) Notify({ChangeEvent::Source::kSignInRequired, {}});
  }

  absl::StatusOr<int64_t> ExportPending(const std::string& path) {
    if (path.empty()) return absl::InvalidArgumentError("path: required");
    absl::StatusOr<std::vector<sync::DeviceStore::OutboxEntry>> outbox = store_->Outbox();
    if (!outbox.ok()) return outbox.status();
    kcnet::v1::MutationBatch batch;
    for (const sync::DeviceStore::OutboxEntry& e : *outbox) {
      if (!e.acknowledged) *batch.add_mutations() = e.mutation;
    }
    // Written beside the target and renamed over it: a crash leaves the old file or the
    // new one, never half of one.
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out || !batch.SerializeToOstream(&out)) {
        return absl::FailedPreconditionError(
            absl::StrCat("path: cannot write ", tmp, ": ", std::strerror(errno)));
      }
      out.flush();
      if (!out) {
        return absl::FailedPreconditionError(
            absl::StrCat("path: cannot write ", tmp, ": ", std::strerror(errno)));
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int error = errno;
      std::remove(tmp.c_str());
      return absl::FailedPreconditionError(
          absl::StrCat("path: cannot replace ", path, ": ", std::strerror(error)));
    }
    return static_cast<int64_t>(batch.mutations_size());
  }

  std::optional<kcnet::v1::User> User() {
    absl::MutexLock lock(&mu_);
    if (!account_.has_value()) return std::nullopt;
    return account_->user();
  }

  // The signed-in user as the rules see them: their org units, and every commune this
  // device holds (the server gave it exactly the communes of the user's subtrees).
  absl::StatusOr<model::Actor> Actor() {
    absl::MutexLock lock(&mu_);
    if (!account_.has_value()) {
      return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
    }
    const kcnet::v1::User& user = account_->user();
    std::vector<int64_t> communes(user.org_unit_ids().begin(), user.org_unit_ids().end());
    communes.insert(communes.end(), held_.begin(), held_.end());
    model::Actor actor;
    actor.user_id = user.id();
    actor.role = user.role();
    actor.in_scope = [communes](int64_t commune) {
      return std::find(communes.begin(), communes.end(), commune) != communes.end();
    };
    return actor;
  }

  // Re-reads the communes the device holds (they change only when a sync subscribes or
  // purges one).
  absl::Status RefreshHeld() {
    absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> cursors = store_->Cursors();
    if (!cursors.ok()) return cursors.status();
    absl::MutexLock lock(&mu_);
    held_.clear();
    for (const auto& c : *cursors) held_.push_back(c.bucket());
    return absl::OkStatus();
  }

  // ---- writes ----

  // Writes `changes` with their outbox row; the store checks them against the schema and,
  // inside the write's own transaction, the rules. Errors name the record's field
  // ("visit.latitude: ...").
  // `also` runs inside the write's transaction (app-table rows written with the record);
  // without `notify` the caller notifies observers itself (NotifyWrite).
  absl::Status Write(std::vector<RecordChange> changes,
                     const std::function<absl::Status(sync::Db&, uint64_t)>& also = nullptr,
                     bool notify = true) {
    absl::StatusOr<model::Actor> actor = Actor();
    if (!actor.ok()) return actor.status();
    // An app whose schema is older than this build's (ClientOptions::schema) does not
    // have the fields it lacks: they are left out. (A type it lacks is refused by the store.)
    if (options_.schema != &model::KcnetSchema()) {
      for (RecordChange& c : changes) {
        const sync::RecordTypeSpec* spec = options_.schema->Find(c.type());
        if (spec == nullptr) continue;
        auto* fields = c.mutable_fields();
        fields->erase(std::remove_if(fields->begin(), fields->end(),
                                     [spec](const kcnet::v1::FieldChange& f) {
                                       return spec->Field(f.field()) == nullptr;
                                     }),
                      fields->end());
      }
    }
    Mutation m;  // for naming fields in errors
    for (const RecordChange& c : changes) *m.add_changes() = c;
    absl::StatusOr<uint64_t> seq =
        store_->Write(std::move(changes), model::ValidatorFor(*actor), also);
    if (!seq.ok()) {
      return absl::Status(seq.status().code(),
                          model::RecordFieldMessage(m, seq.status().message()));
    }
    if (notify) NotifyWrite(m);
    return absl::OkStatus();
  }

  // After a local write: the background sync comes sooner, observers hear of it.
  void NotifyWrite(const Mutation& m) {
    SyncSoon();
    if (HasObservers()) AwaitDelivery(Notify({ChangeEvent::Source::kLocal, RefsOf(m)}));
  }

  template <typename T>
  absl::StatusOr<T> Get(uint32_t type, const std::string& id) {
    const std::string name = TypeName(type);
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".id: '", id, "' is not a UUID (e.g. 0f8fad5b-d9cb-469f-a165-70867728950e)"));
    }
    absl::StatusOr<std::optional<RecordChange>> record = store_->Read(type, *bytes);
    if (!record.ok()) return record.status();
    if (!record->has_value() || (*record)->deleted()) {
      return absl::NotFoundError(absl::StrCat(name, " ", id, " not found on this device"));
    }
    return FromRecord<T>(**record);
  }

  // The commune (bucket) of an existing record, without decoding all of it.
  absl::StatusOr<int64_t> CommuneOf(uint32_t type, const std::string& id) {
    const std::string name = TypeName(type);
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("'", id, "' is not a UUID"));
    absl::StatusOr<std::optional<RecordChange>> record = store_->Read(type, *bytes);
    if (!record.ok()) return record.status();
    if (!record->has_value() || (*record)->deleted()) {
      return absl::NotFoundError(absl::StrCat(name, " ", id, " not found on this device"));
    }
    const uint32_t bucket_field = model::KcnetSchema().Find(type)->bucket_field;
    for (const auto& f : (*record)->fields()) {
      if (f.field() == bucket_field) return f.value().int_value();
    }
    return absl::DataLossError(absl::StrCat(name, " ", id, " has no commune"));
  }

  template <typename T>
  absl::StatusOr<std::vector<T>> List(sync::ListFilter filter) {
    absl::StatusOr<std::vector<RecordChange>> records = store_->List(filter);
    if (!records.ok()) return records.status();
    // In the order of the writes' clocks (the store's order is unspecified): events made in
    // the same millisecond keep the order they were made in.
    std::sort(records->begin(), records->end(), [](const RecordChange& a, const RecordChange& b) {
      return std::forward_as_tuple(a.hlc(), a.id()) < std::forward_as_tuple(b.hlc(), b.id());
    });
    std::vector<T> out;
    out.reserve(records->size());
    for (const RecordChange& r : *records) {
      absl::StatusOr<T> item = FromRecord<T>(r);
      if (!item.ok()) return item.status();
      out.push_back(*std::move(item));
    }
    return out;
  }

  absl::StatusOr<uint64_t> ConfirmedOp(uint32_t type, const std::string& id_text) {
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id_text);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<std::optional<RecordChange>> confirmed = store_->Read(type, *bytes, true);
    if (!confirmed.ok()) return confirmed.status();
    return confirmed->has_value() ? (*confirmed)->op() : 0;
  }

  // ---- observers and the notifier thread ----
  //
  // Events are queued under mu_ and delivered, in order, by one notifier thread with no
  // SDK lock held, so that an observer may call anything on the Client: a write from an
  // observer queues its own event (delivered after the observer returns), a SyncNow from
  // an observer runs on the notifier thread like any app thread.

  struct ObserverEntry {
    Observer fn;
    bool active = true;    // guarded by Impl::mu_
    bool running = false;  // guarded by Impl::mu_: its call is in progress
  };

  int AddObserver(Observer fn) {
    auto entry = std::make_shared<ObserverEntry>();
    entry->fn = std::move(fn);
    absl::MutexLock lock(&mu_);
    observers_[++last_observer_] = entry;
    return last_observer_;
  }

  void RemoveObserver(int handle) {
    std::shared_ptr<ObserverEntry> entry;  // destroyed last, outside mu_
    absl::MutexLock lock(&mu_);
    auto it = observers_.find(handle);
    if (it == observers_.end()) return;
    entry = std::move(it->second);
    observers_.erase(it);
    entry->active = false;
    // From the notifier thread (an observer removing itself or another) nothing else is
    // running; elsewhere wait for a call in progress.
    if (std::this_thread::get_id() != notifier_id_) {
      while (entry->running) state_cv_.Wait(&mu_);
    }
  }

  bool HasObservers() {
    absl::MutexLock lock(&mu_);
    return !observers_.empty();
  }

  // Queues `event`; returns its number (0 when nobody listens).
  uint64_t Notify(ChangeEvent event) {
    if (event.records.empty() && event.source != ChangeEvent::Source::kSignInRequired) return 0;
    absl::MutexLock lock(&mu_);
    if (observers_.empty() || notifier_stop_) return 0;
    events_.push_back(std::move(event));
    state_cv_.SignalAll();
    return ++events_queued_;
  }

  // Waits until event `number` was delivered, so that a write returns after its observers
  // ran (as the SDK has always promised). Not on the notifier thread (the event waits for
  // the observer that is running) nor inside a sync this thread runs (its progress
  // callback): the notifier may be waiting for that sync.
  void AwaitDelivery(uint64_t number) {
    if (number == 0) return;
    absl::MutexLock lock(&mu_);
    const std::thread::id self = std::this_thread::get_id();
    if (self == notifier_id_ || self == serial_owner_) return;
    while (events_delivered_ < number && !notifier_stop_) state_cv_.Wait(&mu_);
  }

  // The number of the last event queued (its downloads' and reports' events, for a sync).
  uint64_t QueuedSoFar() {
    absl::MutexLock lock(&mu_);
    return events_queued_;
  }

  void NotifierLoop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      while (events_.empty() && !notifier_stop_) state_cv_.Wait(&mu_);
      if (events_.empty()) return;  // stopping, and every queued event was delivered
      ChangeEvent event = std::move(events_.front());
      events_.pop_front();
      std::vector<std::shared_ptr<ObserverEntry>> entries;
      entries.reserve(observers_.size());
      for (const auto& [handle, entry] : observers_) entries.push_back(entry);
      for (const std::shared_ptr<ObserverEntry>& entry : entries) {
        if (!entry->active) continue;
        entry->running = true;
        mu_.Unlock();
        try {
          entry->fn(event);
        } catch (const std::exception& e) {
          Log(LogLevel::kError, absl::StrCat("an observer threw: ", e.what()));
        } catch (...) {
          Log(LogLevel::kError, "an observer threw an exception");
        }
        mu_.Lock();
        entry->running = false;
        state_cv_.SignalAll();
      }
      mu_.Unlock();
      entries.clear();  // a removed observer's destructor runs here, with no lock held
      mu_.Lock();
      ++events_delivered_;
      state_cv_.SignalAll();
    }
  }

  // Whether the calling thread is one of this client's own (the notifier, which runs the
  // observers, or the background sync).
  bool OnOwnThread() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::thread::id self = std::this_thread::get_id();
    return self == notifier_id_ || self == background_id_;
  }

  void StartNotifier() {
    absl::MutexLock lock(&mu_);
    notifier_ = std::thread([this] { NotifierLoop(); });
    notifier_id_ = notifier_.get_id();
  }

  // ---- sync ----

  absl::StatusOr<std::shared_ptr<grpc::Channel>> Channel() {
    if (options_.server_address.empty()) {
      return absl::FailedPreconditionError(
          "server_address: not set; this client works offline only");
    }
    absl::MutexLock lock(&mu_);
    if (channel_ == nullptr) {
      std::shared_ptr<grpc::ChannelCredentials> creds;
      if (options_.use_tls.value_or(!IsLoopback(options_.server_address))) {
        grpc::SslCredentialsOptions ssl;
        ssl.pem_root_certs = options_.tls_root_certs;
        creds = grpc::SslCredentials(ssl);
      } else {
        creds = grpc::InsecureChannelCredentials();
      }
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
      channel_ = grpc::CreateCustomChannel(options_.server_address, creds, args);
    }
    return channel_;
  }

  // A unary call in flight (sign-in, conflict review), registered so that Close() can
  // cancel it instead of waiting out its 30-second deadline.
  class UnaryCall {
   public:
    UnaryCall(Impl* impl, grpc::ClientContext* ctx) : impl_(impl), ctx_(ctx) {
      absl::MutexLock lock(&impl_->mu_);
      if (impl_->closed_) ctx_->TryCancel();  // cancels the call as soon as it starts
      impl_->calls_.insert(ctx_);
    }
    ~UnaryCall() {
      absl::MutexLock lock(&impl_->mu_);
      impl_->calls_.erase(ctx_);
    }
    UnaryCall(const UnaryCall&) = delete;
    UnaryCall& operator=(const UnaryCall&) = delete;

   private:
    Impl* const impl_;
    grpc::ClientContext* const ctx_;
  };

  // A unary call's context: the bearer token and a deadline. FAILED_PRECONDITION when
  // nobody is signed in.
  absl::StatusOr<std::unique_ptr<grpc::ClientContext>> CallContext() {
    std::unique_ptr<grpc::ClientContext> ctx = std::make_unique<grpc::ClientContext>();
    absl::MutexLock lock(&mu_);
    if (!account_.has_value()) {
      return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
    }
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", account_->token()));
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return ctx;
  }

  // A gRPC status as the SDK reports it: an unreachable server said plainly.
  absl::Status FromGrpc(const grpc::Status& s) {
    if (s.ok()) return absl::OkStatus();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(absl::StrCat("cannot reach the server at ",
                                                 options_.server_address, ": ", s.error_message()));
    }
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }

  absl::StatusOr<std::vector<kcnet::v1::Conflict>> ListConflicts(int64_t org_unit_id,
                                                                 bool include_resolved) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    auto stub = kcnet::v1::SyncService::NewStub(*channel);
    kcnet::v1::ListConflictsRequest req;
    req.set_org_unit_id(org_unit_id);
    req.set_include_resolved(include_resolved);
    req.set_page_size(500);
    std::vector<kcnet::v1::Conflict> out;
    do {
      absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ctx = CallContext();
      if (!ctx.ok()) return ctx.status();
      kcnet::v1::ListConflictsResponse resp;
      UnaryCall active(this, ctx->get());
      absl::Status status = FromGrpc(stub->ListConflicts(ctx->get(), req, &resp));
      if (!status.ok()) return status;
      for (kcnet::v1::Conflict& c : *resp.mutable_conflicts()) out.push_back(std::move(c));
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    return out;
  }

  absl::StatusOr<kcnet::v1::Conflict> ResolveConflict(uint64_t id, bool restore_loser) {
    if (id == 0) return absl::InvalidArgumentError("conflict_id: required");
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ctx = CallContext();
    if (!ctx.ok()) return ctx.status();
    kcnet::v1::ResolveConflictRequest req;
    req.set_id(id);
    req.set_restore_loser(restore_loser);
    kcnet::v1::Conflict resp;
    UnaryCall active(this, ctx->get());
    absl::Status status = FromGrpc(
        kcnet::v1::SyncService::NewStub(*channel)->ResolveConflict(ctx->get(), req, &resp));
    if (!status.ok()) return status;
    SyncSoon();  // a restored value is a new edit: bring it here soon
    return resp;
  }

  absl::StatusOr<SyncSummary> Sync(const std::function<void(const SyncProgress&)>& progress,
                                   bool background) {
    const std::thread::id self = std::this_thread::get_id();
    std::string token;
    uint64_t generation_at_start = 0;
    {
      // The serial queue: one sync at a time. Waiting here holds no lock, and a wait ends
      // early on CancelSync (the generation moves), Close, or for the background sync, a
      // stop or a suspension.
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("sync: the client is closed");
      if (serial_owner_ == self) {
        return absl::FailedPreconditionError(
            "SyncNow: called from the progress callback of a sync on this thread; that sync "
            "holds the queue (sync again after it returns)");
      }
      const uint64_t generation = cancel_generation_;
      generation_at_start = generation;
      auto abandoned = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return closed_ || cancel_generation_ != generation || (background && (stop_ || suspended_));
      };
      ++syncs_in_progress_;
      while (serial_owner_ != std::thread::id() && !abandoned()) state_cv_.Wait(&mu_);
      if (abandoned()) {
        --syncs_in_progress_;
        state_cv_.SignalAll();
        return absl::CancelledError("sync cancelled before it started");
      }
      if (!account_.has_value()) {
        --syncs_in_progress_;
        state_cv_.SignalAll();
        return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
      }
      if (sign_in_required_) {
        --syncs_in_progress_;
        state_cv_.SignalAll();
        return absl::UnauthenticatedError(
            "the server no longer accepts this device's sign-in; sign in again. Changes made "
            "here are kept");
      }
      serial_owner_ = self;
    }
    absl::Cleanup release = [this] {
      absl::MutexLock lock(&mu_);
      serial_owner_ = std::thread::id();
      syncing_ = nullptr;
      finishing_ = false;
      --syncs_in_progress_;
      state_cv_.SignalAll();
    };
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    // An expiring token is renewed with the device credential, without the password.
    absl::StatusOr<std::string> fresh = FreshToken();
    absl::StatusOr<SyncResult> result = absl::UnknownError("not run");
    if (fresh.ok()) {
      token = *fresh;
      SettleOwedSignOut().IgnoreError();  // an offline sign-out not settled at sign-in
    } else {
      result = fresh.status();
    }
    SyncProgress state;
    SyncClientOptions so;
    so.token = token;
    so.timeout = options_.sync_timeout;
    so.on_message = [&](const kcnet::v1::SyncServerMessage& msg) {
      ChangeEvent event;
      if (msg.has_welcome()) {
        state.buckets_total = msg.welcome().buckets_size();
      } else if (msg.has_changes()) {
        const kcnet::v1::ChangeBatch& batch = msg.changes();
        state.received_changes += batch.changes_size();
        state.buckets_complete += batch.checkpoints_size();
        state.buckets_complete = std::min(state.buckets_complete, state.buckets_total);
        event.source = ChangeEvent::Source::kSync;
        for (const RecordChange& c : batch.changes())
          event.records.push_back(RefOf(c.type(), c.id()));
      } else if (msg.has_push_ack()) {
        state.pushed_mutations += msg.push_ack().results_size();
      }
      if (progress) progress(state);
      Notify(std::move(event));  // delivered by the notifier: never under the sync
    };
    // At most two attempts: the second after the server refused the token and the device
    // credential bought a new one (a token revoked or expired by the server's clock).
    std::optional<SyncClient> client;
    for (int attempt = 0; fresh.ok() && attempt < 2; ++attempt) {
      so.token = token;
      client.emplace(*channel, store_.get(), so);
      {
        absl::MutexLock lock(&mu_);
        syncing_ = &*client;
        last_attempt_ = absl::Now();
        // A cancel between leaving the queue and here still ends this sync.
        if (closed_ || cancel_generation_ != generation_at_start ||
            (background && (stop_ || suspended_))) {
          client->Cancel();
        }
      }
      result = client->SyncOnce();
      {
        absl::MutexLock lock(&mu_);
        syncing_ = nullptr;
        finishing_ = true;  // still syncing until the result is recorded
      }
      if (attempt > 0 || !absl::IsUnauthenticated(result.status())) break;
      absl::StatusOr<std::string> renewed = FreshToken(/*force=*/true);
      if (!renewed.ok()) {
        result = renewed.status();  // why the credential was refused, or the network
        break;
      }
      token = *renewed;
    }
    RefreshHeld().IgnoreError();  // a failure here shows on the next write
    if (result.ok()) {
      // The directory follows the scope: one tiny not_modified answer when unchanged. Its
      // failure does not fail the sync (names fall back to ids until the next one).
      absl::StatusOr<bool> fetched = FetchDirectory(token);
      if (!fetched.ok() && !absl::IsCancelled(fetched.status())) {
        Log(LogLevel::kWarning,
            absl::StrCat("sync: the directory was not fetched: ", fetched.status().ToString()));
      }
    }
    // A server restored from a backup may lack bytes this device uploaded: queue them again
    // (Begin answers "already have it" for the ones it kept).
    const SyncResult* observed = result.ok() ? &*result : client ? &client->last_result() : nullptr;
    if (observed != nullptr) {
      absl::Status requeued = RequeueAfterRestore(*observed);
      if (!requeued.ok()) {
        Log(LogLevel::kWarning, absl::StrCat("sync: attachments not queued again after a restore: ",
                                             requeued.ToString()));
      }
    }
    // Attachments after the records, in their own calls: records never wait for photos,
    // and a failed upload does not fail the sync (it stays queued, resumes next time).
    AttachmentUploadSummary uploaded;
    absl::Status upload_status;
    if (result.ok() && options_.upload_attachments_in_sync) {
      upload_status = UploadPass(*channel, token, generation_at_start, background, &uploaded);
      if (!upload_status.ok()) {
        Log(absl::IsCancelled(upload_status) ? LogLevel::kInfo : LogLevel::kWarning,
            absl::StrCat("sync: attachments not all uploaded: ", upload_status.ToString()));
      }
    }
    const SyncResult none;
    const SyncResult& done = result.ok() ? *result : client ? client->last_result() : none;
    if (done.clock_skew_ms.has_value()) {
      absl::MutexLock lock(&mu_);
      clock_skew_ = absl::Milliseconds(*done.clock_skew_ms);
    }
    // Reports created by this sync (refusals roll records back: their views changed).
    SyncSummary summary;
    summary.pushed_mutations = static_cast<int64_t>(done.pushed_mutations);
    summary.received_changes = static_cast<int64_t>(done.received_changes);
    summary.applied_changes = static_cast<int64_t>(done.applied_changes);
    summary.attachments = uploaded;
    summary.attachments_error = upload_status;
    ChangeEvent reported{ChangeEvent::Source::kReport, {}};
    for (const sync::Report& r : done.reports) {
      summary.reports.push_back(ToReport(r));
      for (const RecordRef& ref : summary.reports.back().records) reported.records.push_back(ref);
    }
    Notify(std::move(reported));
    absl::Status status = result.status();
    if (status.code() == absl::StatusCode::kUnavailable ||
        status.code() == absl::StatusCode::kDeadlineExceeded) {
      absl::StatusOr<int64_t> pending = store_->PendingCount();
      status = absl::Status(
          status.code(), absl::StrCat("cannot reach the server at ", options_.server_address, " (",
                                      status.message(), "); ", pending.ok() ? *pending : 0,
                                      " change(s) are kept here and will upload on the next sync"));
    } else if (status.code() == absl::StatusCode::kUnauthenticated) {
      status = absl::UnauthenticatedError(
          absl::StrCat("the server no longer accepts this sign-in (", status.message(),
                       "); sign in again. Changes made here are kept"));
    }
    if (status.ok()) {
      store_->SetValue(kLastSuccessKey, absl::StrCat(NowMs())).IgnoreError();
    }
    {
      absl::MutexLock lock(&mu_);
      finishing_ = false;
      last_error_ = status;
      if (status.ok()) {
        last_success_ = absl::Now();
        failures_ = 0;
      } else if (!absl::IsCancelled(status)) {
        ++failures_;  // a cancelled sync is the app's decision, not the server's failure
      }
    }
    if (absl::IsCancelled(status)) {
      Log(LogLevel::kInfo, absl::StrCat("sync cancelled: ", status.message()));
    } else if (!status.ok()) {
      // SyncNow returns its failure to the app; only the background sync's needs the log.
      Log(background ? LogLevel::kWarning : LogLevel::kInfo,
          absl::StrCat(background ? "background sync failed: " : "sync failed: ",
                       status.ToString()));
    }
    std::move(release).Invoke();
    // SyncNow returns once its events reached the observers (the background sync does not
    // wait: nobody is waiting for it).
    if (!background) AwaitDelivery(QueuedSoFar());
    if (!status.ok()) return status;
    return summary;
  }

  void SyncSoon() {
    absl::MutexLock lock(&mu_);
    if (!background_) return;
    next_attempt_ = std::min(next_attempt_, absl::Now() + options_.write_delay);
    state_cv_.SignalAll();
  }

  void StartBackground() {
    absl::MutexLock lock(&mu_);
    if (background_ || closed_) return;
    background_ = true;
    stop_ = false;
    next_attempt_ = absl::Now();
    thread_ = std::thread([this] { BackgroundLoop(); });
    background_id_ = thread_.get_id();
  }

  absl::Status StopBackground() {
    std::thread thread;
    {
      absl::MutexLock lock(&mu_);
      if (!background_) return absl::OkStatus();
      if (OnOwnThread()) {
        return absl::FailedPreconditionError(
            "StopBackgroundSync: called from the SDK's own thread (an observer); stopping "
            "waits for that thread. Call it from an app thread");
      }
      if (stop_) return absl::OkStatus();  // another thread is stopping it
      stop_ = true;
      state_cv_.SignalAll();
      if (syncing_ != nullptr && serial_owner_ == background_id_) syncing_->Cancel();
      if (serial_owner_ == background_id_) {
        for (grpc::ClientContext* call : transfers_) call->TryCancel();
      }
      thread = std::move(thread_);
    }
    thread.join();
    absl::MutexLock lock(&mu_);
    background_ = false;
    background_id_ = std::thread::id();
    state_cv_.SignalAll();
    return absl::OkStatus();
  }

  // Cancels the running sync and every sync waiting for its turn.
  void CancelSync() {
    absl::MutexLock lock(&mu_);
    ++cancel_generation_;
    if (syncing_ != nullptr) syncing_->Cancel();
    for (grpc::ClientContext* call : transfers_) call->TryCancel();
    state_cv_.SignalAll();
  }

  void SetSuspended(bool suspended) {
    absl::MutexLock lock(&mu_);
    if (suspended_ == suspended) return;
    suspended_ = suspended;
    if (suspended) {
      ++cancel_generation_;
      if (syncing_ != nullptr) syncing_->Cancel();
      for (grpc::ClientContext* call : transfers_) call->TryCancel();
    } else {
      next_attempt_ = absl::Now();
    }
    state_cv_.SignalAll();
  }

  void SetHostReachable(bool reachable) {
    absl::MutexLock lock(&mu_);
    host_reachable_ = reachable;
    if (reachable) next_attempt_ = absl::Now();  // retry now, not after the backoff
    state_cv_.SignalAll();
  }

  void BackgroundLoop() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        // Wakes on stop, or when the due time arrives (SyncSoon may bring it forward);
        // waits without a deadline while suspended or the host is unreachable.
        while (!stop_ && (suspended_ || !host_reachable_ || absl::Now() < next_attempt_)) {
          if (suspended_ || !host_reachable_) {
            state_cv_.Wait(&mu_);
          } else {
            state_cv_.WaitWithDeadline(&mu_, next_attempt_);
          }
        }
        if (stop_) return;
        if (!account_.has_value() || sign_in_required_) {
          // Nothing to try until a sign-in succeeds (SignIn wakes the loop).
          next_attempt_ = absl::Now() + options_.interval;
          continue;
        }
      }
      absl::StatusOr<SyncSummary> result = Sync({}, /*background=*/true);
      absl::MutexLock lock(&mu_);
      if (result.ok() || absl::IsCancelled(result.status())) {
        next_attempt_ = absl::Now() + options_.interval;
      } else {
        const int shift = std::min(std::max(failures_ - 1, 0), 20);
        const absl::Duration cap =
            std::min(options_.max_backoff, options_.initial_backoff * (int64_t{1} << shift));
        std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Milliseconds(cap));
        next_attempt_ = absl::Now() + absl::Milliseconds(jitter(rng_));
        Log(LogLevel::kDebug, absl::StrCat("background sync: next attempt in ",
                                           absl::FormatDuration(next_attempt_ - absl::Now())));
      }
    }
  }

  absl::Status Close() {
    std::thread background;
    std::thread notifier;
    {
      absl::MutexLock lock(&mu_);
      if (serial_owner_ == std::this_thread::get_id()) {
        return absl::FailedPreconditionError(
            "Close: called from a sync's progress callback; close the client after SyncNow "
            "returns");
      }
      if (OnOwnThread()) {
        return absl::FailedPreconditionError(
            "Close: called from the SDK's own thread (an observer); close the client from an "
            "app thread");
      }
      if (closed_) return absl::OkStatus();
      closed_ = true;
      // Every sync ends now: the running one is cancelled (its call at once, also while
      // connecting), the queued ones leave the queue, no new one starts.
      ++cancel_generation_;
      if (syncing_ != nullptr) syncing_->Cancel();
      for (grpc::ClientContext* call : calls_) call->TryCancel();
      for (grpc::ClientContext* call : transfers_) call->TryCancel();
      stop_ = true;
      background = std::move(thread_);
      state_cv_.SignalAll();
    }
    if (background.joinable()) background.join();
    {
      absl::MutexLock lock(&mu_);
      background_ = false;
      background_id_ = std::thread::id();
      // Syncs on app threads (already cancelled) return before the Client goes away.
      while (syncs_in_progress_ > 0) state_cv_.Wait(&mu_);
      notifier_stop_ = true;  // the notifier delivers what is queued, then ends
      notifier = std::move(notifier_);
      state_cv_.SignalAll();
    }
    if (notifier.joinable()) notifier.join();
    std::map<int, std::shared_ptr<ObserverEntry>> observers;
    {
      absl::MutexLock lock(&mu_);
      observers.swap(observers_);
      notifier_id_ = std::thread::id();
    }
    observers.clear();  // the observers' destructors (C free callbacks), with no lock held
    return absl::OkStatus();
  }

  // Whether Close() cannot run on this thread (the destructor then closes elsewhere).
  bool OnOwnThreadNow() {
    absl::MutexLock lock(&mu_);
    return OnOwnThread();
  }

  SyncStatus Status() {
    SyncStatus s;
    absl::StatusOr<int64_t> pending = store_->PendingCount();
    absl::StatusOr<int64_t> unconfirmed = store_->UnconfirmedCount();
    absl::StatusOr<std::vector<sync::Report>> reports = store_->ListReports();
    s.pending_uploads = pending.ok() ? *pending : -1;
    s.unconfirmed = unconfirmed.ok() ? *unconfirmed : -1;
    s.reports = reports.ok() ? static_cast<int64_t>(reports->size()) : -1;
    absl::MutexLock lock(&mu_);
    s.last_success = last_success_;
    s.last_attempt = last_attempt_;
    s.last_error = last_error_;
    s.failures_in_a_row = failures_;
    s.syncing = syncing_ != nullptr || finishing_;
    s.background = background_;
    if (background_) s.next_attempt = next_attempt_;
    s.suspended = suspended_;
    s.host_reachable = host_reachable_;
    s.sign_in_required = sign_in_required_;
    s.clock_skew = clock_skew_;
    return s;
  }

  // ---- attachments ----

  // The calls of one transfer pass (attachment_queue.h): the bearer token, registered in
  // transfers_ so that CancelSync, a suspension and Close end them at once.
  class Transfers : public TransferCalls {
   public:
    Transfers(Impl* impl, std::shared_ptr<grpc::Channel> channel, std::string token,
              uint64_t generation, bool background)
        : impl_(impl),
          stub_(kcnet::v1::AttachmentService::NewStub(channel)),
          token_(std::move(token)),
          generation_(generation),
          background_(background) {}
    kcnet::v1::AttachmentService::StubInterface* Stub() override { return stub_.get(); }
    absl::StatusOr<std::unique_ptr<grpc::ClientContext>> NewContext(
        absl::Duration deadline) override {
      auto ctx = std::make_unique<grpc::ClientContext>();
      ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
      ctx->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
      absl::MutexLock lock(&impl_->mu_);
      if (StoppedLocked()) ctx->TryCancel();
      impl_->transfers_.insert(ctx.get());
      return ctx;
    }
    void Release(grpc::ClientContext* ctx) override {
      absl::MutexLock lock(&impl_->mu_);
      impl_->transfers_.erase(ctx);
    }
    bool Stopped() override {
      absl::MutexLock lock(&impl_->mu_);
      return StoppedLocked();
    }

   private:
    bool StoppedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl_->mu_) {
      return impl_->closed_ || impl_->cancel_generation_ != generation_ ||
             (background_ && (impl_->stop_ || impl_->suspended_));
    }
    Impl* const impl_;
    std::unique_ptr<kcnet::v1::AttachmentService::Stub> stub_;
    const std::string token_;
    const uint64_t generation_;
    const bool background_;
  };

  // Progress events to every listener (on the transfer's thread, no SDK lock held but the
  // listeners' own).
  void EmitProgress(const AttachmentProgress& p) {
    absl::MutexLock lock(&listeners_mu_);
    for (const auto& [handle, listener] : listeners_) listener(p);
  }

  // Whether the server holds an attachment's record (uploads need it there first): its
  // confirmed state exists. NOT_FOUND when the record is gone here (the server refused it).
  absl::StatusOr<bool> AttachmentRecordOnServer(const std::string& id) {
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<std::optional<RecordChange>> confirmed =
        store_->Read(model::kAttachmentType, *bytes, /*confirmed_only=*/true);
    if (!confirmed.ok()) return confirmed.status();
    if (confirmed->has_value()) return !(*confirmed)->deleted();
    absl::StatusOr<std::optional<RecordChange>> current =
        store_->Read(model::kAttachmentType, *bytes, /*confirmed_only=*/false);
    if (!current.ok()) return current.status();
    if (!current->has_value()) {
      return absl::NotFoundError(
          "Máy chủ từ chối bản ghi của tệp đính kèm (xem báo cáo). / The server refused the "
          "attachment's record (see the reports)");
    }
    return false;  // still waiting for its push
  }

  // After a sync's Welcome: when the server is another incarnation than the one the queue
  // last saw (a restore; the key is kept until it is handled, so a crash in between repeats
  // it) or the store recovered from the server's lost history, the attachments uploaded
  // from here whose bytes are still here are queued again (AttachmentQueue::RequeueUploaded).
  absl::Status RequeueAfterRestore(const SyncResult& done) {
    const uint64_t incarnation = done.welcome.incarnation();
    if (incarnation == 0) return absl::OkStatus();  // no Welcome, or an older server
    absl::StatusOr<std::optional<std::string>> known = store_->GetValue(kAttachmentIncarnationKey);
    if (!known.ok()) return known.status();
    const std::string current = absl::StrCat(incarnation);
    const bool changed = known->has_value() && **known != current;
    if (changed || done.recovery.recovered) {
      absl::StatusOr<int64_t> requeued = attachments_->RequeueUploaded();
      if (!requeued.ok()) return requeued.status();
      Log(LogLevel::kInfo,
          absl::StrCat("sync: the server was restored (",
                       done.recovery.why.empty() ? "a new incarnation" : done.recovery.why,
                       "): ", *requeued, " uploaded attachment(s) queued again to check"));
    }
    if (known->has_value() && !changed) return absl::OkStatus();
    return store_->SetValue(kAttachmentIncarnationKey, current);
  }

  // One upload pass on the calling thread (which holds the serial queue). *summary says
  // what it did also when it stopped early (the status says why).
  absl::Status UploadPass(std::shared_ptr<grpc::Channel> channel, const std::string& token,
                          uint64_t generation, bool background, AttachmentUploadSummary* summary) {
    Transfers calls(this, std::move(channel), token, generation, background);
    return attachments_->UploadAll(
        calls, [this](const std::string& id) { return AttachmentRecordOnServer(id); },
        [this](const AttachmentProgress& p) { EmitProgress(p); }, summary);
  }

  // Client::UploadAttachments: waits for the serial queue (without cancelling the running
  // sync), then runs one pass.
  absl::StatusOr<AttachmentUploadSummary> UploadAttachmentsNow() {
    const std::thread::id self = std::this_thread::get_id();
    uint64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("UploadAttachments: the client is closed");
      if (serial_owner_ == self) {
        return absl::FailedPreconditionError(
            "UploadAttachments: called from a sync's progress callback; call it after SyncNow "
            "returns");
      }
      generation = cancel_generation_;
      ++syncs_in_progress_;
      while (serial_owner_ != std::thread::id() && !closed_ && cancel_generation_ == generation) {
        state_cv_.Wait(&mu_);
      }
      if (closed_ || cancel_generation_ != generation) {
        --syncs_in_progress_;
        state_cv_.SignalAll();
        return absl::CancelledError("UploadAttachments: cancelled before it started");
      }
      serial_owner_ = self;
    }
    absl::Cleanup release = [this] {
      absl::MutexLock lock(&mu_);
      serial_owner_ = std::thread::id();
      --syncs_in_progress_;
      state_cv_.SignalAll();
    };
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::string> token = FreshToken();
    if (!token.ok()) return token.status();
    AttachmentUploadSummary out;
    absl::Status status = UploadPass(*channel, *token, generation, /*background=*/false, &out);
    if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) {
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the server at ", options_.server_address, " (", status.message(),
          "); the attachments stay queued and resume on the next sync"));
    }
    if (!status.ok()) return status;
    return out;
  }

  // The bytes of an attachment, downloaded first when needed.
  absl::StatusOr<std::string> FetchAttachment(const std::string& id, const std::string& sha256,
                                              int64_t size) {
    absl::StatusOr<bool> here = attachments_->HasBlob(sha256);
    if (!here.ok()) return here.status();
    if (*here || options_.server_address.empty()) {
      return attachments_->Fetch(nullptr, id, sha256, size, nullptr);
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) return channel.status();
    absl::StatusOr<std::string> token = FreshToken();
    if (!token.ok()) return token.status();
    uint64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return absl::FailedPreconditionError("OpenAttachment: the client is closed");
      generation = cancel_generation_;
    }
    Transfers calls(this, *channel, *token, generation, /*background=*/false);
    absl::StatusOr<std::string> path = attachments_->Fetch(
        &calls, id, sha256, size, [this](const AttachmentProgress& p) { EmitProgress(p); });
    if (!path.ok() &&
        (absl::IsUnavailable(path.status()) || absl::IsDeadlineExceeded(path.status()))) {
      return absl::UnavailableError(absl::StrCat(
          "Không tải được tệp đính kèm; thử lại khi có mạng. / Cannot download the attachment "
          "from ",
          options_.server_address, " (", path.status().message(), "); try again online"));
    }
    return path;
  }

  const ClientOptions options_;
  const std::unique_ptr<StoreLock> lock_;  // released after the store closes (below)
  const std::unique_ptr<sync::DeviceStore> store_;
  DeviceDirectory directory_;                     // the names and codes, in store_'s file
  std::unique_ptr<AttachmentQueue> attachments_;  // set by Client::Open
  absl::Mutex listeners_mu_;
  std::map<int, AttachmentListener> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  int last_listener_ ABSL_GUARDED_BY(listeners_mu_) = 0;

 private:
  absl::Mutex mu_;
  // Signalled on every change of the state below that someone may wait for.
  absl::CondVar state_cv_;
  std::optional<kcnet::v1::LoginResponse> account_ ABSL_GUARDED_BY(mu_);
  std::optional<kcnet::v1::User> owner_ ABSL_GUARDED_BY(mu_);  // whose data the store holds
  bool sign_in_required_ ABSL_GUARDED_BY(mu_) = false;         // the device credential was refused
  std::vector<int64_t> held_ ABSL_GUARDED_BY(mu_);             // the communes the device holds
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
  // Observers and their events.
  std::map<int, std::shared_ptr<ObserverEntry>> observers_ ABSL_GUARDED_BY(mu_);
  int last_observer_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<ChangeEvent> events_ ABSL_GUARDED_BY(mu_);
  uint64_t events_queued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t events_delivered_ ABSL_GUARDED_BY(mu_) = 0;
  bool notifier_stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread notifier_ ABSL_GUARDED_BY(mu_);
  std::thread::id notifier_id_ ABSL_GUARDED_BY(mu_);
  // Status.
  SyncClient* syncing_ ABSL_GUARDED_BY(mu_) = nullptr;
  // A sync has ended and its result (last_error_, ...) is not recorded yet: Status() still
  // says syncing, so that an app never sees a finished sync with the previous result.
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Time> last_success_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> last_attempt_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Duration> clock_skew_ ABSL_GUARDED_BY(mu_);  // at the last Welcome
  // The serial queue: the thread running a sync (none: free), the syncs waiting or
  // running, and the generation CancelSync moves to end them.
  std::thread::id serial_owner_ ABSL_GUARDED_BY(mu_);
  int syncs_in_progress_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cancel_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Lifecycle.
  std::set<grpc::ClientContext*> calls_ ABSL_GUARDED_BY(mu_);      // unary calls in flight
  std::set<grpc::ClientContext*> transfers_ ABSL_GUARDED_BY(mu_);  // attachment calls
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool suspended_ ABSL_GUARDED_BY(mu_) = false;
  bool host_reachable_ ABSL_GUARDED_BY(mu_) = true;
  // Background sync.
  bool background_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::thread::id background_id_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() {
  if (impl_ == nullptr) return;
  if (impl_->OnOwnThreadNow()) {
    // Destroyed from an observer: the notifier cannot join itself, so the close finishes
    // on a thread of its own once the observer returns.
    Log(LogLevel::kWarning, "a Client was destroyed from its own observer; closing it afterwards");
    std::thread([impl = std::move(impl_)]() mutable {
      impl->Close().IgnoreError();
      impl.reset();
    }).detach();
    return;
  }
  impl_->Close().IgnoreError();
}

void LogMessage(LogLevel level, const std::string& message) { Log(level, message); }

void SetLogSink(LogSink sink, LogLevel min_level) {
  const bool installed = static_cast<bool>(sink);
  {
    LogState& logs = Logs();
    absl::MutexLock lock(&logs.mu);
    if (installed) {
      logs.sink = std::make_shared<const LogSink>(std::move(sink));
      logs.min_level = min_level;
    } else {
      logs.sink = nullptr;
      logs.min_level = LogLevel::kError;
    }
  }
  // gRPC's own lines (its errors; more with GRPC_VERBOSITY=info or debug) go to the same
  // sink, so that an app that routes the SDK to logcat or os_log sees them there too; no
  // sink: gRPC's default (stderr) again.
  gpr_set_log_function(installed ? &ForwardGrpcLog : nullptr);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Open(ClientOptions options) {
  if (options.path.empty())
    return absl::InvalidArgumentError("path: the local store file is required");
  if (options.device_id.empty()) return absl::InvalidArgumentError("device_id: required");
  {
    std::error_code error;
    const std::filesystem::path folder = std::filesystem::path(options.path).parent_path();
    if (!folder.empty() && !std::filesystem::is_directory(folder, error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("path: the folder ", folder.string(), " does not exist"));
    }
  }
  if (!options.server_address.empty() && !absl::StrContains(options.server_address, ':')) {
    return absl::InvalidArgumentError(
        absl::StrCat("server_address: '", options.server_address, "' is not HOST:PORT"));
  }
  if (options.sync_timeout <= absl::ZeroDuration() ||
      options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff || options.interval <= absl::ZeroDuration() ||
      options.write_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "sync_timeout, initial_backoff, interval: must be positive; max_backoff at least "
        "initial_backoff; write_delay not negative");
  }
  if (!options.tls_ca_file.empty()) {
    std::ifstream file(options.tls_ca_file, std::ios::binary);
    std::stringstream pem;
    pem << file.rdbuf();
    if (!file.good() || pem.str().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls_ca_file: cannot read '", options.tls_ca_file, "' (a PEM file of the CA to trust)"));
    }
    if (!options.tls_root_certs.empty()) options.tls_root_certs += "\n";
    options.tls_root_certs += pem.str();
  }
  if (options.max_attachment_bytes <= 0 ||
      options.max_attachment_bytes > model::kAttachmentMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_attachment_bytes: must be 1-", model::kAttachmentMaxBytes));
  }
  if (options.attachment_budget_bytes < 0 || options.max_upload_attempts < 1) {
    return absl::InvalidArgumentError(
        "attachment_budget_bytes: must not be negative; max_upload_attempts: at least 1");
  }
  // One client per store file: taken before the store is opened, so that a second opener
  // never touches it.
  absl::StatusOr<std::unique_ptr<StoreLock>> lock = StoreLock::Acquire(options.path);
  if (!lock.ok()) return lock.status();
  sync::DeviceStoreOptions so;
  so.durable = options.durable;
  if (options.clock != nullptr) so.clock = options.clock;
  // Facility search: name weighs most, then the owner, then the products.
  so.app_tables = DeviceDirectoryTables();
  so.app_tables.push_back("_att_queue");
  so.app_tables.push_back("_att_blobs");
  so.search = {{.type = model::kFacilityType,
                .fields = {Facility::kNameFieldNumber, Facility::kOwnerNameFieldNumber,
                           Facility::kMainProductsFieldNumber},
                .weights = {4.0, 2.0, 1.0}}};
  if (options.schema == nullptr) options.schema = &model::KcnetSchema();
  absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store =
      sync::DeviceStore::Open(options.path, options.schema, options.device_id, so);
  if (!store.ok()) return store.status();
  AttachmentQueueOptions ao;
  ao.dir = options.attachment_dir.empty() ? options.path + ".attachments" : options.attachment_dir;
  ao.durable = options.durable;
  ao.budget_bytes = options.attachment_budget_bytes;
  ao.max_attempts = options.max_upload_attempts;
  ao.initial_backoff = options.initial_backoff;
  ao.max_backoff = options.max_backoff;
  ao.seed = options.seed;
  absl::StatusOr<std::unique_ptr<AttachmentQueue>> attachments =
      AttachmentQueue::Open(store->get(), std::move(ao));
  if (!attachments.ok()) return attachments.status();
  auto impl = std::make_unique<Impl>(std::move(options), *std::move(lock), *std::move(store));
  impl->attachments_ = *std::move(attachments);
  absl::Status status = impl->LoadAccount();
  if (status.ok()) status = impl->RefreshHeld();
  if (!status.ok()) return status;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

absl::Status Client::SignIn(const std::string& username, const std::string& password,
                            SignInOptions options) {
  return impl_->SignIn(username, password, options);
}
absl::Status Client::SignOut(SignOutOptions options) { return impl_->SignOut(options); }
absl::StatusOr<int64_t> Client::ExportPending(const std::string& path) {
  return impl_->ExportPending(path);
}
std::optional<kcnet::v1::User> Client::user() const { return impl_->User(); }

// --- Directory -------------------------------------------------------------------------

absl::StatusOr<kcnet::v1::OrgUnit> Client::GetOrgUnit(int64_t id) {
  absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> unit = impl_->directory_.OrgUnit(id);
  if (!unit.ok()) return unit.status();
  if (!unit->has_value()) {
    return absl::NotFoundError(absl::StrCat("org unit ", id, " is not in this device's directory"));
  }
  return **unit;
}

absl::StatusOr<kcnet::v1::OrgUnit> Client::FindOrgUnitByCode(const std::string& code) {
  if (code.empty()) return absl::InvalidArgumentError("code: required");
  absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> unit = impl_->directory_.OrgUnitByCode(code);
  if (!unit.ok()) return unit.status();
  if (!unit->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("no org unit with code '", code, "' in this device's directory"));
  }
  return **unit;
}

absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> Client::ListOrgUnits() {
  return impl_->directory_.OrgUnits();
}

absl::StatusOr<kcnet::v1::User> Client::GetDirectoryUser(int64_t user_id) {
  absl::StatusOr<std::optional<kcnet::v1::User>> user = impl_->directory_.User(user_id);
  if (!user.ok()) return user.status();
  if (!user->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("user ", user_id, " is not in this device's directory"));
  }
  return **user;
}

std::string Client::OrgUnitLabel(int64_t id) {
  absl::StatusOr<kcnet::v1::OrgUnit> unit = GetOrgUnit(id);
  if (!unit.ok()) return absl::StrCat(id);
  return absl::StrCat(unit->name(), " (", unit->code(), ")");
}

std::string Client::UserLabel(int64_t user_id) {
  absl::StatusOr<kcnet::v1::User> user = GetDirectoryUser(user_id);
  if (!user.ok() || user->display_name().empty()) return absl::StrCat(user_id);
  return user->display_name();
}

// --- Facilities ------------------------------------------------------------------------

absl::StatusOr<Facility> Client::RegisterFacility(Facility facility) {
  std::optional<kcnet::v1::User> user = impl_->User();
  if (!user.has_value())
    return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
  if (facility.commune_id() <= 0)
    return absl::InvalidArgumentError("facility.commune_id: required");
  if (facility.name().empty()) return absl::InvalidArgumentError("facility.name: required");
  if (facility.id().empty()) facility.set_id(model::NewRecordId());
  facility.set_created_by(user->id());
  facility.set_created_ms(NowMs());
  absl::StatusOr<RecordChange> change = model::ToChange(facility);
  if (!change.ok())
    return absl::InvalidArgumentError(absl::StrCat("facility.", change.status().message()));
  absl::Status status = impl_->Write({*std::move(change)});
  if (!status.ok()) return status;
  return facility;  // a new record reads exactly as written
}

absl::StatusOr<Facility> Client::UpdateFacility(const Facility& facility,
                                                const std::vector<std::string>& fields) {
  absl::StatusOr<Facility> current = GetFacility(facility.id());
  if (!current.ok()) return current.status();
  if (fields.empty()) return absl::InvalidArgumentError("fields: name the fields to change");
  Facility next = facility;
  next.set_commune_id(current->commune_id());
  absl::StatusOr<RecordChange> change =
      model::MaskedChange(next, fields, {"id", "commune_id", "created_by", "created_ms"}, "fields");
  if (!change.ok()) return change.status();
  absl::Status status = impl_->Write({*std::move(change)});
  if (!status.ok()) return status;
  return GetFacility(facility.id());
}

absl::StatusOr<Facility> Client::GetFacility(const std::string& id) {
  return impl_->Get<Facility>(model::kFacilityType, id);
}

absl::StatusOr<std::vector<Facility>> Client::FacilitiesOfCommune(int64_t commune_id) {
  if (commune_id <= 0) return absl::InvalidArgumentError("commune_id: must be positive");
  absl::StatusOr<std::vector<Facility>> out =
      impl_->List<Facility>({.type = model::kFacilityType, .buckets = {commune_id}});
  if (!out.ok()) return out;
  std::sort(out->begin(), out->end(), [](const Facility& a, const Facility& b) {
    return std::forward_as_tuple(a.name(), a.id()) < std::forward_as_tuple(b.name(), b.id());
  });
  return out;
}

absl::StatusOr<std::vector<FacilityHit>> Client::SearchFacilities(const std::string& query,
                                                                  int limit) {
  if (limit <= 0 || limit > 1000) return absl::InvalidArgumentError("limit: must be 1-1000");
  absl::StatusOr<std::vector<sync::SearchHit>> hits =
      impl_->store_->Search(model::kFacilityType, query, static_cast<size_t>(limit));
  if (!hits.ok()) return hits.status();
  std::vector<FacilityHit> out;
  for (const sync::SearchHit& hit : *hits) {
    absl::StatusOr<std::optional<RecordChange>> record =
        impl_->store_->Read(model::kFacilityType, hit.id);
    if (!record.ok()) return record.status();
    if (!record->has_value() || (*record)->deleted()) continue;
    absl::StatusOr<Facility> f = FromRecord<Facility>(**record);
    if (!f.ok()) return f.status();
    out.push_back({*std::move(f), hit.rank});
  }
  return out;
}

// --- Visits ----------------------------------------------------------------------------

absl::StatusOr<Visit> Client::RecordVisit(Visit visit) {
  std::optional<kcnet::v1::User> user = impl_->User();
  if (!user.has_value())
    return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
  absl::StatusOr<int64_t> commune = impl_->CommuneOf(model::kFacilityType, visit.facility_id());
  if (!commune.ok()) {
    return absl::Status(commune.status().code(),
                        absl::StrCat("visit.facility_id: ", commune.status().message()));
  }
  if (visit.id().empty()) visit.set_id(model::NewRecordId());
  visit.set_commune_id(*commune);
  visit.set_collaborator_id(user->id());
  if (visit.visited_ms() == 0) visit.set_visited_ms(NowMs());
  absl::StatusOr<RecordChange> change = model::ToChange(visit);
  if (!change.ok())
    return absl::InvalidArgumentError(absl::StrCat("visit.", change.status().message()));
  absl::Status status = impl_->Write({*std::move(change)});
  if (!status.ok()) return status;
  return visit;  // a new record reads exactly as written
}

absl::StatusOr<std::vector<Visit>> Client::VisitsOfFacility(const std::string& facility_id) {
  absl::StatusOr<Facility> facility = GetFacility(facility_id);
  if (!facility.ok()) return facility.status();
  absl::StatusOr<std::vector<Visit>> out = impl_->List<Visit>(
      {.type = model::kVisitType,
       .buckets = {facility->commune_id()},
       .equals = {{Visit::kFacilityIdFieldNumber, model::TextValue(facility->id())}}});
  if (!out.ok()) return out;
  std::sort(out->begin(), out->end(), [](const Visit& a, const Visit& b) {
    return std::forward_as_tuple(b.visited_ms(), b.id()) <
           std::forward_as_tuple(a.visited_ms(), a.id());
  });
  return out;
}

// --- Support requests ------------------------------------------------------------------

absl::StatusOr<SupportRequest> Client::DraftRequest(SupportRequest request) {
  std::optional<kcnet::v1::User> user = impl_->User();
  if (!user.has_value())
    return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
  absl::StatusOr<Facility> facility = GetFacility(request.facility_id());
  if (!facility.ok()) {
    return absl::Status(facility.status().code(),
                        absl::StrCat("support_request.facility_id: ", facility.status().message()));
  }
  if (request.id().empty()) request.set_id(model::NewRecordId());
  request.set_commune_id(facility->commune_id());
  request.set_author_id(user->id());
  request.set_status(kcnet::v1::REQUEST_STATUS_DRAFT);
  request.set_created_ms(NowMs());
  request.set_updated_ms(request.created_ms());
  request.clear_approved_amount_vnd();
  request.clear_approved_funding();
  request.clear_decision_note();
  absl::StatusOr<RecordChange> change = model::ToChange(request);
  if (!change.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("support_request.", change.status().message()));
  }
  absl::StatusOr<RecordChange> event = model::ToChange(
      model::NewRequestEvent(request, user->id(), kcnet::v1::REQUEST_ACTION_CREATE,
                             kcnet::v1::REQUEST_STATUS_DRAFT, "", 0, request.created_ms()));
  if (!event.ok()) return event.status();
  absl::Status status = impl_->Write({*std::move(change), *std::move(event)});
  if (!status.ok()) return status;
  return request;  // a new record reads exactly as written
}

absl::StatusOr<SupportRequest> Client::UpdateRequest(const SupportRequest& request,
                                                     const std::vector<std::string>& fields) {
  absl::StatusOr<SupportRequest> current = GetRequest(request.id());
  if (!current.ok()) return current.status();
  if (fields.empty()) return absl::InvalidArgumentError("fields: name the fields to change");
  SupportRequest next = request;
  next.set_commune_id(current->commune_id());
  next.set_updated_ms(NowMs());
  std::vector<std::string> paths = fields;
  paths.push_back("updated_ms");
  absl::StatusOr<RecordChange> change = model::MaskedChange(
      next, paths,
      {"id", "commune_id", "facility_id", "author_id", "status", "approved_amount_vnd",
       "approved_funding", "decision_note", "created_ms"},
      "fields");
  if (!change.ok()) return change.status();
  absl::Status status = impl_->Write({*std::move(change)});
  if (!status.ok()) return status;
  return GetRequest(request.id());
}

absl::StatusOr<SupportRequest> Client::Act(const std::string& request_id,
                                           kcnet::v1::RequestAction action,
                                           const std::string& note) {
  if (action == kcnet::v1::REQUEST_ACTION_APPROVE) {
    return absl::InvalidArgumentError("action: APPROVE needs an amount and funding: use Approve()");
  }
  if (action == kcnet::v1::REQUEST_ACTION_CREATE || !kcnet::v1::RequestAction_IsValid(action) ||
      action == kcnet::v1::REQUEST_ACTION_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat("action: ", static_cast<int>(action), " is not an action on a request"));
  }
  absl::StatusOr<SupportRequest> current = GetRequest(request_id);
  if (!current.ok()) return current.status();
  absl::StatusOr<model::Actor> actor = impl_->Actor();
  if (!actor.ok()) return actor.status();
  absl::StatusOr<uint64_t> op = impl_->ConfirmedOp(model::kSupportRequestType, request_id);
  if (!op.ok()) return op.status();
  absl::StatusOr<std::vector<RecordChange>> changes =
      model::RequestActionChanges(*current, *op, *actor, {.action = action, .note = note}, NowMs());
  if (!changes.ok()) return changes.status();
  absl::Status status = impl_->Write(*std::move(changes));
  if (!status.ok()) return status;
  return GetRequest(request_id);
}

absl::StatusOr<SupportRequest> Client::Approve(const std::string& id, int64_t amount_vnd,
                                               kcnet::v1::FundingSource funding,
                                               const std::string& note) {
  absl::StatusOr<SupportRequest> current = GetRequest(id);
  if (!current.ok()) return current.status();
  absl::StatusOr<model::Actor> actor = impl_->Actor();
  if (!actor.ok()) return actor.status();
  absl::StatusOr<uint64_t> op = impl_->ConfirmedOp(model::kSupportRequestType, id);
  if (!op.ok()) return op.status();
  absl::StatusOr<std::vector<RecordChange>> changes =
      model::RequestActionChanges(*current, *op, *actor,
                                  {.action = kcnet::v1::REQUEST_ACTION_APPROVE,
                                   .note = note,
                                   .approved_amount_vnd = amount_vnd,
                                   .funding = funding},
                                  NowMs());
  if (!changes.ok()) return changes.status();
  absl::Status status = impl_->Write(*std::move(changes));
  if (!status.ok()) return status;
  return GetRequest(id);
}

absl::StatusOr<SupportRequest> Client::GetRequest(const std::string& id) {
  return impl_->Get<SupportRequest>(model::kSupportRequestType, id);
}

absl::StatusOr<std::vector<RequestEvent>> Client::RequestEvents(const std::string& request_id) {
  absl::StatusOr<SupportRequest> request = GetRequest(request_id);
  if (!request.ok()) return request.status();
  absl::StatusOr<std::vector<RequestEvent>> out = impl_->List<RequestEvent>(
      {.type = model::kRequestEventType,
       .buckets = {request->commune_id()},
       .equals = {{RequestEvent::kRequestIdFieldNumber, model::TextValue(request->id())}}});
  if (!out.ok()) return out;
  // By time; within one millisecond, in clock order (List's order).
  std::stable_sort(out->begin(), out->end(), [](const RequestEvent& a, const RequestEvent& b) {
    return a.at_ms() < b.at_ms();
  });
  return out;
}

absl::StatusOr<std::vector<SupportRequest>> Client::RequestsAwaitingMyReview() {
  absl::StatusOr<model::Actor> actor = impl_->Actor();
  if (!actor.ok()) return actor.status();
  std::vector<kcnet::v1::RequestStatus> statuses;
  std::vector<kcnet::v1::RequestAction> actions;
  for (const model::Transition& t : model::RequestTransitions()) {
    const bool allowed = std::find(t.roles.begin(), t.roles.end(), actor->role) != t.roles.end();
    const bool mine_to_fix = actor->role == kcnet::v1::ROLE_COMMUNE_COLLABORATOR &&
                             t.from == kcnet::v1::REQUEST_STATUS_RETURNED &&
                             t.action == kcnet::v1::REQUEST_ACTION_SUBMIT;
    if (allowed && (IsReviewAction(t.action) || mine_to_fix)) {
      if (std::find(statuses.begin(), statuses.end(), t.from) == statuses.end()) {
        statuses.push_back(t.from);
      }
      actions.push_back(t.action);
    }
  }
  std::vector<SupportRequest> out;
  for (kcnet::v1::RequestStatus status : statuses) {
    absl::StatusOr<std::vector<SupportRequest>> some = impl_->List<SupportRequest>(
        {.type = model::kSupportRequestType,
         .equals = {{SupportRequest::kStatusFieldNumber, model::IntValue(status)}}});
    if (!some.ok()) return some.status();
    for (SupportRequest& r : *some) {
      bool can = false;
      for (kcnet::v1::RequestAction a : actions) {
        can = can || model::FindTransition(a, r.status(), *actor, r.author_id()).ok();
      }
      if (can && actor->in_scope(r.commune_id())) out.push_back(std::move(r));
    }
  }
  std::sort(out.begin(), out.end(), [](const SupportRequest& a, const SupportRequest& b) {
    return std::forward_as_tuple(a.updated_ms(), a.id()) <
           std::forward_as_tuple(b.updated_ms(), b.id());
  });
  return out;
}

absl::StatusOr<std::vector<SupportRequest>> Client::RequestsOfFacility(
    const std::string& facility_id) {
  absl::StatusOr<Facility> facility = GetFacility(facility_id);
  if (!facility.ok()) return facility.status();
  absl::StatusOr<std::vector<SupportRequest>> out = impl_->List<SupportRequest>(
      {.type = model::kSupportRequestType,
       .buckets = {facility->commune_id()},
       .equals = {{SupportRequest::kFacilityIdFieldNumber, model::TextValue(facility->id())}}});
  if (!out.ok()) return out;
  std::sort(out->begin(), out->end(), [](const SupportRequest& a, const SupportRequest& b) {
    return std::forward_as_tuple(b.created_ms(), b.id()) <
           std::forward_as_tuple(a.created_ms(), a.id());
  });
  return out;
}

// --- Uploads, reports, observers -------------------------------------------------------

absl::StatusOr<std::vector<PendingUpload>> Client::PendingUploads() {
  absl::StatusOr<std::vector<sync::DeviceStore::OutboxEntry>> outbox = impl_->store_->Outbox();
  if (!outbox.ok()) return outbox.status();
  std::vector<PendingUpload> out;
  out.reserve(outbox->size());
  for (const sync::DeviceStore::OutboxEntry& e : *outbox) {
    out.push_back({e.mutation.seq(), RefsOf(e.mutation), e.acknowledged});
  }
  return out;
}

absl::StatusOr<std::vector<Report>> Client::ListReports() {
  absl::StatusOr<std::vector<sync::Report>> reports = impl_->store_->ListReports();
  if (!reports.ok()) return reports.status();
  std::vector<Report> out;
  for (const sync::Report& r : *reports) out.push_back(ToReport(r));
  return out;
}

absl::StatusOr<std::vector<Report>> Client::TakeReports() {
  absl::StatusOr<std::vector<sync::Report>> reports = impl_->store_->TakeReports();
  if (!reports.ok()) return reports.status();
  std::vector<Report> out;
  for (const sync::Report& r : *reports) out.push_back(ToReport(r));
  return out;
}

int Client::AddObserver(Observer observer) { return impl_->AddObserver(std::move(observer)); }
void Client::RemoveObserver(int handle) { impl_->RemoveObserver(handle); }

// --- Attachments -----------------------------------------------------------------------

namespace {

// The SDK names owners by record type (RecordRef); the record by AttachmentOwnerType.
kcnet::v1::AttachmentOwnerType OwnerTypeOf(uint32_t record_type) {
  switch (record_type) {
    case model::kVisitType:
      return kcnet::v1::ATTACHMENT_OWNER_TYPE_VISIT;
    case model::kSupportRequestType:
      return kcnet::v1::ATTACHMENT_OWNER_TYPE_SUPPORT_REQUEST;
    case model::kFacilityType:
      return kcnet::v1::ATTACHMENT_OWNER_TYPE_FACILITY;
    default:
      return kcnet::v1::ATTACHMENT_OWNER_TYPE_UNSPECIFIED;
  }
}

uint32_t RecordTypeOf(kcnet::v1::AttachmentOwnerType owner) {
  switch (owner) {
    case kcnet::v1::ATTACHMENT_OWNER_TYPE_VISIT:
      return model::kVisitType;
    case kcnet::v1::ATTACHMENT_OWNER_TYPE_SUPPORT_REQUEST:
      return model::kSupportRequestType;
    case kcnet::v1::ATTACHMENT_OWNER_TYPE_FACILITY:
      return model::kFacilityType;
    default:
      return 0;
  }
}

AttachmentInfo InfoOf(const kcnet::v1::Attachment& a, const std::optional<QueueRow>& row,
                      bool local) {
  AttachmentInfo info;
  info.id = a.id();
  info.owner_type = RecordTypeOf(a.owner_type());
  info.owner_id = a.owner_id();
  info.commune_id = a.commune_id();
  info.sha256 = a.sha256();
  info.size = a.size_bytes();
  info.media_type = a.media_type();
  info.caption = a.caption();
  info.taken_ms = a.taken_at_ms();
  if (a.latitude() != 0 || a.longitude() != 0) {
    info.latitude = a.latitude();
    info.longitude = a.longitude();
  }
  info.author_id = a.author_id();
  info.local = local;
  if (row.has_value()) {
    info.state = row->state;
    info.bytes_sent = row->bytes_sent;
    info.failure = row->failure;
    info.priority = row->priority;
    info.attempts = row->attempts;
  } else {
    info.state = AttachmentState::kRemote;
  }
  return info;
}

// Reads a file an app names, at most `limit` + 1 bytes (more says "too big").
absl::StatusOr<std::string> ReadAttachmentFile(const std::string& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment.file_path: cannot read '", path, "': ", std::strerror(errno)));
  }
  std::string out;
  std::string buffer(1 << 16, '\0');
  while (in && static_cast<int64_t>(out.size()) <= limit) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    out.append(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment.file_path: cannot read '", path, "'"));
  }
  return out;
}

}  // namespace

absl::StatusOr<AttachmentInfo> Client::AddAttachment(NewAttachment a) {
  std::optional<kcnet::v1::User> user = impl_->User();
  if (!user.has_value()) {
    return absl::FailedPreconditionError("sign in first: no user is signed in on this device");
  }
  const kcnet::v1::AttachmentOwnerType owner_type = OwnerTypeOf(a.owner_type);
  if (owner_type == kcnet::v1::ATTACHMENT_OWNER_TYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "attachment.owner_type: must be 1 (facility), 2 (visit) or 3 (request)");
  }
  absl::StatusOr<int64_t> commune = impl_->CommuneOf(a.owner_type, a.owner_id);
  if (!commune.ok()) {
    return absl::Status(commune.status().code(),
                        absl::StrCat("attachment.owner_id: ", commune.status().message()));
  }
  if (!a.file_path.empty() && !a.bytes.empty()) {
    return absl::InvalidArgumentError("attachment.file_path: give a file or the bytes, not both");
  }
  const int64_t limit = impl_->options_.max_attachment_bytes;
  if (!a.file_path.empty()) {
    absl::StatusOr<std::string> read = ReadAttachmentFile(a.file_path, limit);
    if (!read.ok()) return read.status();
    a.bytes = *std::move(read);
  }
  if (a.bytes.empty()) {
    return absl::InvalidArgumentError(
        "attachment.bytes: empty (give file_path or the bytes of a photo or document)");
  }
  if (static_cast<int64_t>(a.bytes.size()) > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attachment.bytes: Tệp quá lớn / too big: ",
        a.bytes.size() > static_cast<size_t>(limit) ? absl::StrCat("over ", limit)
                                                    : absl::StrCat(a.bytes.size()),
        " bytes; the limit is ", limit, " (downscale photos first: docs/EMBEDDING.md)"));
  }
  const std::string sniffed = SniffMediaType(a.bytes);
  if (sniffed.empty()) {
    return absl::InvalidArgumentError(
        "attachment.media_type: Loại tệp không được chấp nhận / not an accepted type: the bytes "
        "are not a JPEG, PNG, WebP or PDF (checked by their first bytes, not the file name)");
  }
  if (!a.media_type.empty() && a.media_type != sniffed) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment.media_type: the bytes are ", sniffed, ", not ", a.media_type));
  }
  if (a.latitude.has_value() != a.longitude.has_value()) {
    return absl::InvalidArgumentError(
        "attachment.latitude: give latitude and longitude together, or neither");
  }
  if (a.latitude.has_value() && (*a.latitude < -90 || *a.latitude > 90 || *a.longitude < -180 ||
                                 *a.longitude > 180 || (*a.latitude == 0 && *a.longitude == 0))) {
    return absl::InvalidArgumentError(
        "attachment.latitude: must be WGS84 degrees (latitude -90..90, longitude -180..180)");
  }
  kcnet::v1::Attachment record;
  record.set_id(model::NewRecordId());
  record.set_commune_id(*commune);
  record.set_owner_type(owner_type);
  record.set_owner_id(a.owner_id);
  record.set_size_bytes(static_cast<int64_t>(a.bytes.size()));
  record.set_media_type(sniffed);
  record.set_caption(a.caption);
  const int64_t now = impl_->store_->WallMs();
  record.set_taken_at_ms(a.taken_ms != 0 ? a.taken_ms : now);
  if (a.latitude.has_value()) {
    record.set_latitude(*a.latitude);
    record.set_longitude(*a.longitude);
  }
  record.set_author_id(user->id());
  record.set_created_ms(now);
  AttachmentQueue& queue = *impl_->attachments_;
  Mutation m;
  {
    // The bytes first, durably; then the record, its queue row and its blob row in one
    // transaction. Refused: the bytes go again (unless another attachment holds them).
    absl::MutexLock add(&queue.add_mu());
    absl::StatusOr<std::string> sha = queue.StoreBytes(a.bytes);
    if (!sha.ok()) return sha.status();
    record.set_sha256(*sha);
    absl::StatusOr<RecordChange> change = model::ToChange(record);
    if (!change.ok()) return change.status();
    *m.add_changes() = *change;
    const int32_t priority = a.priority;
    const std::string id = record.id();
    const std::string media_type = record.media_type();
    const int64_t size = record.size_bytes();
    absl::Status status = impl_->Write(
        {*std::move(change)},
        [&](sync::Db& db, uint64_t) {
          return AttachmentQueue::AddRows(db, id, *sha, size, media_type, priority, now);
        },
        /*notify=*/false);
    if (!status.ok()) {
      queue.Forget(*sha).IgnoreError();
      return status;
    }
  }
  impl_->NotifyWrite(m);
  return GetAttachment(record.id());
}

absl::StatusOr<AttachmentInfo> Client::GetAttachment(const std::string& id) {
  absl::StatusOr<kcnet::v1::Attachment> a =
      impl_->Get<kcnet::v1::Attachment>(model::kAttachmentType, id);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::optional<QueueRow>> row = impl_->attachments_->Row(a->id());
  if (!row.ok()) return row.status();
  absl::StatusOr<bool> local = impl_->attachments_->HasBlob(a->sha256());
  if (!local.ok()) return local.status();
  return InfoOf(*a, *row, *local);
}

absl::StatusOr<std::vector<AttachmentInfo>> Client::AttachmentsOf(uint32_t owner_type,
                                                                  const std::string& owner_id) {
  if (OwnerTypeOf(owner_type) == kcnet::v1::ATTACHMENT_OWNER_TYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError("owner_type: must be 1 (facility), 2 (visit) or 3 (request)");
  }
  absl::StatusOr<int64_t> commune = impl_->CommuneOf(owner_type, owner_id);
  if (!commune.ok()) return commune.status();
  sync::ListFilter filter{model::kAttachmentType, {*commune}, {}};
  filter.equals.push_back({kcnet::v1::Attachment::kOwnerIdFieldNumber, model::TextValue(owner_id)});
  absl::StatusOr<std::vector<kcnet::v1::Attachment>> list =
      impl_->List<kcnet::v1::Attachment>(filter);
  if (!list.ok()) return list.status();
  std::sort(list->begin(), list->end(), [](const auto& x, const auto& y) {
    return std::forward_as_tuple(x.taken_at_ms(), x.id()) <
           std::forward_as_tuple(y.taken_at_ms(), y.id());
  });
  std::vector<AttachmentInfo> out;
  for (const kcnet::v1::Attachment& a : *list) {
    absl::StatusOr<std::optional<QueueRow>> row = impl_->attachments_->Row(a.id());
    if (!row.ok()) return row.status();
    absl::StatusOr<bool> local = impl_->attachments_->HasBlob(a.sha256());
    if (!local.ok()) return local.status();
    out.push_back(InfoOf(a, *row, *local));
  }
  return out;
}

absl::StatusOr<std::vector<AttachmentInfo>> Client::ListAttachments() {
  absl::StatusOr<std::vector<QueueRow>> rows = impl_->attachments_->Rows();
  if (!rows.ok()) return rows.status();
  absl::StatusOr<std::vector<kcnet::v1::Attachment>> list =
      impl_->List<kcnet::v1::Attachment>(sync::ListFilter{model::kAttachmentType, {}, {}});
  if (!list.ok()) return list.status();
  std::vector<AttachmentInfo> out;
  std::set<std::string> listed;
  auto add = [&](const kcnet::v1::Attachment& a, const std::optional<QueueRow>& row) {
    absl::StatusOr<bool> local = impl_->attachments_->HasBlob(a.sha256());
    if (!local.ok()) return local.status();
    out.push_back(InfoOf(a, row, *local));
    listed.insert(a.id());
    return absl::OkStatus();
  };
  // The queue first, in the order it runs (active rows lead).
  std::vector<QueueRow> ordered = *rows;
  std::stable_partition(ordered.begin(), ordered.end(), [](const QueueRow& r) {
    return r.state == AttachmentState::kQueued || r.state == AttachmentState::kUploading;
  });
  for (const QueueRow& row : ordered) {
    // Read one by one: before the first sync the commune is not subscribed yet, and a list
    // of the subscribed communes would miss this device's own pending attachments.
    absl::StatusOr<kcnet::v1::Attachment> a =
        impl_->Get<kcnet::v1::Attachment>(model::kAttachmentType, row.id);
    if (absl::IsNotFound(a.status())) continue;  // its record was refused or deleted
    if (!a.ok()) return a.status();
    absl::Status status = add(*a, row);
    if (!status.ok()) return status;
  }
  std::vector<const kcnet::v1::Attachment*> rest;
  for (const kcnet::v1::Attachment& a : *list) {
    if (!listed.contains(a.id())) rest.push_back(&a);
  }
  std::sort(rest.begin(), rest.end(), [](const auto* x, const auto* y) {
    return std::forward_as_tuple(x->taken_at_ms(), x->id()) <
           std::forward_as_tuple(y->taken_at_ms(), y->id());
  });
  for (const kcnet::v1::Attachment* a : rest) {
    absl::Status status = add(*a, std::nullopt);
    if (!status.ok()) return status;
  }
  return out;
}

absl::StatusOr<std::string> Client::OpenAttachment(const std::string& id) {
  absl::StatusOr<kcnet::v1::Attachment> a =
      impl_->Get<kcnet::v1::Attachment>(model::kAttachmentType, id);
  if (!a.ok()) return a.status();
  return impl_->FetchAttachment(a->id(), a->sha256(), a->size_bytes());
}

absl::Status Client::SetAttachmentPriority(const std::string& id, int32_t priority) {
  return impl_->attachments_->SetPriority(id, priority);
}

absl::Status Client::RetryAttachment(const std::string& id) {
  absl::Status status = impl_->attachments_->Retry(id);
  if (status.ok()) impl_->SyncSoon();
  return status;
}

absl::StatusOr<AttachmentUploadSummary> Client::UploadAttachments() {
  return impl_->UploadAttachmentsNow();
}

int Client::AddAttachmentListener(AttachmentListener listener) {
  absl::MutexLock lock(&impl_->listeners_mu_);
  impl_->listeners_[++impl_->last_listener_] = std::move(listener);
  return impl_->last_listener_;
}

void Client::RemoveAttachmentListener(int handle) {
  AttachmentListener gone;  // destroyed outside the lock
  absl::MutexLock lock(&impl_->listeners_mu_);
  auto it = impl_->listeners_.find(handle);
  if (it == impl_->listeners_.end()) return;
  gone = std::move(it->second);
  impl_->listeners_.erase(it);
}

absl::StatusOr<Client::AttachmentStorage> Client::AttachmentStorageUse() {
  absl::StatusOr<std::pair<int64_t, int64_t>> use = impl_->attachments_->StorageUse();
  if (!use.ok()) return use.status();
  AttachmentStorage out;
  out.total_bytes = use->first;
  out.evictable_bytes = use->second;
  out.budget_bytes = impl_->options_.attachment_budget_bytes;
  return out;
}

// --- Conflict review -------------------------------------------------------------------

absl::StatusOr<std::vector<kcnet::v1::Conflict>> Client::ListConflicts(int64_t org_unit_id,
                                                                       bool include_resolved) {
  if (org_unit_id < 0) return absl::InvalidArgumentError("org_unit_id: must not be negative");
  return impl_->ListConflicts(org_unit_id, include_resolved);
}

absl::StatusOr<kcnet::v1::Conflict> Client::ResolveConflict(uint64_t conflict_id,
                                                            bool restore_loser) {
  return impl_->ResolveConflict(conflict_id, restore_loser);
}

// --- Sync ------------------------------------------------------------------------------

absl::StatusOr<SyncSummary> Client::SyncNow(std::function<void(const SyncProgress&)> progress) {
  return impl_->Sync(progress, /*background=*/false);
}
void Client::StartBackgroundSync() { impl_->StartBackground(); }
absl::Status Client::StopBackgroundSync() { return impl_->StopBackground(); }
void Client::CancelSync() { impl_->CancelSync(); }
void Client::SetSuspended(bool suspended) { impl_->SetSuspended(suspended); }
void Client::SetHostReachable(bool reachable) { impl_->SetHostReachable(reachable); }
absl::Status Client::Close() { return impl_->Close(); }
SyncStatus Client::Status() { return impl_->Status(); }

absl::StatusOr<std::vector<kcnet::v1::BucketCheckpoint>> Client::Checkpoints() {
  absl::StatusOr<std::vector<kcnet::v1::BucketCursor>> cursors = impl_->store_->Cursors();
  if (!cursors.ok()) return cursors.status();
  std::vector<kcnet::v1::BucketCheckpoint> out;
  for (const auto& c : *cursors) {
    absl::StatusOr<kcnet::v1::BucketCheckpoint> cp = impl_->store_->Checkpoint(c.bucket());
    if (!cp.ok()) return cp.status();
    out.push_back(*cp);
  }
  return out;
}

}  // namespace kcnet::sdk
