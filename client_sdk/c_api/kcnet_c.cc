// The C ABI of the client SDK (client_sdk/include/kcnet_c.h) over kcnet::sdk::Client:
// every entry point checks its arguments, calls the C++ API inside a try/catch (no
// exception crosses the ABI), and turns results into serialized protobuf (domain.proto
// records, sdk.proto lists and state) in buffers the caller owns.
//
// Handles. A kcnet_client* is not a pointer to memory: it is a number (never reused) that
// names an entry of a process-wide registry of open clients, looked up under the
// registry's mutex on every call. So a closed handle, a handle closed twice or a made-up
// one is answered with INVALID_ARGUMENT, never by reading freed memory. Each call holds a
// reference to its client's entry while it runs (in_flight); kcnet_client_free closes the
// client (cancelling its syncs), removes the entry, waits for the calls in flight and only
// then destroys the client.
//
// Thread-safety: as kcnet_c.h says: every call is thread-safe, kcnet_client_free too. The
// registry and each entry's observer table are guarded by their mutexes; no lock is held
// while the SDK or an app callback runs.
#include "kcnet_c.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client_sdk/c_api/c_util.h"
#include "kcnet/client.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sdk.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "kcnet/v1/sync_service.pb.h"

namespace kcnet::capi {
namespace {

// One open client: the registry entry a kcnet_client* names.
struct ClientEntry {
  std::unique_ptr<kcnet::sdk::Client> sdk;
  absl::Mutex mu;
  absl::CondVar idle;  // signalled when in_flight drops
  int in_flight ABSL_GUARDED_BY(mu) = 0;
  int next_observer ABSL_GUARDED_BY(mu) = 1;
  // C handle -> the SDK's observer handle.
  absl::flat_hash_map<int, int> observers ABSL_GUARDED_BY(mu);
  // C handle -> the SDK's attachment listener handle.
  int next_listener ABSL_GUARDED_BY(mu) = 1;
  absl::flat_hash_map<int, int> listeners ABSL_GUARDED_BY(mu);
};

// The open clients, by handle value.
struct Registry {
  absl::Mutex mu;
  uintptr_t last ABSL_GUARDED_BY(mu) = 0;
  absl::flat_hash_map<uintptr_t, std::shared_ptr<ClientEntry>> live ABSL_GUARDED_BY(mu);
};

Registry& Clients() {
  static Registry* registry = new Registry;  // never destroyed: calls may come at exit
  return *registry;
}

// A call's reference to its client: keeps the entry (and its Client) alive and counted in
// in_flight until the call returns.
class ClientRef {
 public:
  ClientRef() = default;
  ~ClientRef() { Reset(); }
  ClientRef(const ClientRef&) = delete;
  ClientRef& operator=(const ClientRef&) = delete;

  void Reset() {
    if (entry_ == nullptr) return;
    absl::MutexLock lock(&entry_->mu);
    --entry_->in_flight;
    entry_->idle.SignalAll();
    entry_ = nullptr;
  }
  void Set(std::shared_ptr<ClientEntry> entry) {
    Reset();
    entry_ = std::move(entry);
  }
  ClientEntry* operator->() const { return entry_.get(); }
  const std::shared_ptr<ClientEntry>& entry() const { return entry_; }

 private:
  std::shared_ptr<ClientEntry> entry_;
};

constexpr char kNotOpen[] =
    "client: not an open kcnet_client (closed already, or not a handle kcnet_client_open "
    "returned)";

// Looks `handle` up and counts the call in flight. INVALID_ARGUMENT for NULL and for a
// handle that is not open (never dereferenced).
absl::Status Acquire(const kcnet_client* handle, ClientRef* out) {
  if (handle == nullptr) return absl::InvalidArgumentError("client: must not be NULL");
  std::shared_ptr<ClientEntry> entry;
  {
    Registry& registry = Clients();
    absl::MutexLock lock(&registry.mu);
    auto it = registry.live.find(reinterpret_cast<uintptr_t>(handle));
    if (it == registry.live.end()) return absl::InvalidArgumentError(kNotOpen);
    entry = it->second;
  }
  {
    absl::MutexLock lock(&entry->mu);
    ++entry->in_flight;
  }
  out->Set(std::move(entry));
  return absl::OkStatus();
}

}  // namespace
}  // namespace kcnet::capi

namespace kcnet::capi {
namespace {

namespace v1 = kcnet::v1;

#define KCNET_C_RETURN_IF_ERROR(expr)                \
  do {                                               \
    const absl::Status kcnet_c_status = (expr);      \
    if (!kcnet_c_status.ok()) return kcnet_c_status; \
  } while (false)

// Declares `ref`, the call's reference to the open client `handle`; returns the error
// when `handle` is NULL or not open.
#define KCNET_C_ACQUIRE(handle, ref) \
  ClientRef ref;                     \
  KCNET_C_RETURN_IF_ERROR(Acquire(handle, &ref))

// Runs `body` (returning absl::Status) with every exception caught; fills `error`.
template <typename Body>
bool Run(kcnet_error* error, Body&& body) noexcept {
  try {
    const absl::Status status = body();
    if (!status.ok()) {
      SetError(error, status);
      return false;
    }
    SetOk(error);
    return true;
  } catch (const std::bad_alloc&) {
    SetError(error, absl::StatusCode::kResourceExhausted, "out of memory");
  } catch (const std::exception& e) {
    SetError(error, absl::StatusCode::kInternal,
             absl::StrCat("internal error in libkcnet: ", e.what()));
  } catch (...) {
    SetError(error, absl::StatusCode::kInternal, "internal error in libkcnet");
  }
  return false;
}

absl::Status CheckOut(const kcnet_buffer* out, absl::string_view name) {
  if (out == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": must not be NULL"));
  return absl::OkStatus();
}

// The names of `count` fields (an update's field list).
absl::StatusOr<std::vector<std::string>> FieldList(const char* const* fields, size_t count) {
  if (count == 0) return absl::InvalidArgumentError("fields: name at least one field");
  if (fields == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("fields: must not be NULL (field_count is ", count, ")"));
  }
  if (count > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("field_count: ", count, " is too many"));
  }
  std::vector<std::string> names;
  names.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    KCNET_C_RETURN_IF_ERROR(
        CheckString(fields[i], absl::StrCat("fields[", i, "]"), false, /*non_empty=*/true));
    names.emplace_back(fields[i]);
  }
  return names;
}

int64_t ToMs(const std::optional<absl::Time>& time) {
  return time.has_value() ? absl::ToUnixMillis(*time) : 0;
}

void ToProto(const kcnet::sdk::RecordRef& ref, v1::RecordRef* out) {
  out->set_type(ref.type);
  out->set_id(ref.id);
}

void ToProto(const kcnet::sdk::Report& report, v1::Report* out) {
  out->set_seq(report.seq);
  out->set_refused(report.refused);
  out->set_reason(report.reason);
  for (const kcnet::sdk::RecordRef& ref : report.records) ToProto(ref, out->add_records());
  *out->mutable_result() = report.result;
}

v1::ChangeSource ToProto(kcnet::sdk::ChangeEvent::Source source) {
  switch (source) {
    case kcnet::sdk::ChangeEvent::Source::kLocal:
      return v1::CHANGE_SOURCE_LOCAL;
    case kcnet::sdk::ChangeEvent::Source::kSync:
      return v1::CHANGE_SOURCE_SYNC;
    case kcnet::sdk::ChangeEvent::Source::kReport:
      return v1::CHANGE_SOURCE_REPORT;
    case kcnet::sdk::ChangeEvent::Source::kSignInRequired:
      return v1::CHANGE_SOURCE_SIGN_IN_REQUIRED;
  }
  return v1::CHANGE_SOURCE_UNSPECIFIED;
}

v1::AttachmentState ToProto(kcnet::sdk::AttachmentState state) {
  return static_cast<v1::AttachmentState>(static_cast<int>(state) + 1);  // see sdk.proto
}

void ToProto(const kcnet::sdk::AttachmentInfo& info, v1::AttachmentInfo* out) {
  v1::Attachment* a = out->mutable_attachment();
  a->set_id(info.id);
  a->set_commune_id(info.commune_id);
  switch (info.owner_type) {
    case KCNET_RECORD_VISIT:
      a->set_owner_type(v1::ATTACHMENT_OWNER_TYPE_VISIT);
      break;
    case KCNET_RECORD_SUPPORT_REQUEST:
      a->set_owner_type(v1::ATTACHMENT_OWNER_TYPE_SUPPORT_REQUEST);
      break;
    case KCNET_RECORD_FACILITY:
      a->set_owner_type(v1::ATTACHMENT_OWNER_TYPE_FACILITY);
      break;
    default:
      break;
  }
  a->set_owner_id(info.owner_id);
  a->set_sha256(info.sha256);
  a->set_size_bytes(info.size);
  a->set_media_type(info.media_type);
  a->set_caption(info.caption);
  a->set_taken_at_ms(info.taken_ms);
  if (info.latitude.has_value()) a->set_latitude(*info.latitude);
  if (info.longitude.has_value()) a->set_longitude(*info.longitude);
  a->set_author_id(info.author_id);
  out->set_state(ToProto(info.state));
  out->set_bytes_sent(info.bytes_sent);
  out->set_failure(info.failure);
  out->set_priority(info.priority);
  out->set_attempts(info.attempts);
  out->set_local(info.local);
}

void ToProto(const kcnet::sdk::AttachmentUploadSummary& summary, v1::AttachmentUploadSummary* out) {
  out->set_uploaded(summary.uploaded);
  out->set_failed(summary.failed);
  out->set_payload_bytes(summary.payload_bytes);
  out->set_remaining(summary.remaining);
}

absl::Status PutAttachments(absl::StatusOr<std::vector<kcnet::sdk::AttachmentInfo>> infos,
                            kcnet_buffer* out) {
  if (!infos.ok()) return infos.status();
  v1::AttachmentInfoList list;
  for (const kcnet::sdk::AttachmentInfo& info : *infos) ToProto(info, list.add_attachments());
  return PutMessage(list, out);
}

v1::ReportList ToProto(const std::vector<kcnet::sdk::Report>& reports) {
  v1::ReportList list;
  for (const kcnet::sdk::Report& report : reports) ToProto(report, list.add_reports());
  return list;
}

// Puts a StatusOr<message> into `out` (which may be NULL for write results).
template <typename T>
absl::Status PutResult(const absl::StatusOr<T>& result, kcnet_buffer* out) {
  if (!result.ok()) return result.status();
  return PutMessage(*result, out);
}

absl::Status PutRequests(absl::StatusOr<std::vector<v1::SupportRequest>> requests,
                         kcnet_buffer* out_list) {
  if (!requests.ok()) return requests.status();
  v1::SupportRequestList list;
  for (v1::SupportRequest& request : *requests) *list.add_requests() = std::move(request);
  return PutMessage(list, out_list);
}

// The shared body of the request actions.
bool Act(kcnet_client* client, const char* request_id, int action, const char* note,
         kcnet_buffer* out, kcnet_error* error, absl::string_view note_name = "note") {
  return Run(error, [&]() -> absl::Status {
    ClearBuffer(out);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(request_id, "request_id", false, true));
    if (!v1::RequestAction_IsValid(action) || action == v1::REQUEST_ACTION_UNSPECIFIED ||
        action == v1::REQUEST_ACTION_CREATE || action == v1::REQUEST_ACTION_APPROVE) {
      return absl::InvalidArgumentError(absl::StrCat(
          "action: ", action,
          " is not an action to take here (SUBMIT, ENDORSE, RETURN, REJECT, START, COMPLETE, "
          "CANCEL or COMMENT; approve with kcnet_request_approve)"));
    }
    // A comment needs its text; the note of the other actions may be NULL.
    const bool comment = action == v1::REQUEST_ACTION_COMMENT;
    KCNET_C_RETURN_IF_ERROR(CheckString(note, note_name, !comment, comment));
    return PutResult(c->sdk->Act(request_id, static_cast<v1::RequestAction>(action),
                                 note == nullptr ? "" : note),
                     out);
  });
}

// The size of the first kcnet_client_options (it ended with `seed`): the smallest
// struct_size accepted.
constexpr size_t kOptionsFirstSize = offsetof(kcnet_client_options, seed) + sizeof(uint64_t);

// Duration options: >= 0 ms (0 keeps the SDK's validation to decide).
absl::Status CheckDuration(int64_t ms, absl::string_view name) {
  if (ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.", name, ": must be >= 0, got ", ms));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace kcnet::capi

using kcnet::capi::Acquire;
using kcnet::capi::CheckOut;
using kcnet::capi::CheckString;
using kcnet::capi::ClearBuffer;
using kcnet::capi::ClientRef;
using kcnet::capi::ParseMessage;
using kcnet::capi::PutMessage;
using kcnet::capi::PutRequests;
using kcnet::capi::PutResult;
using kcnet::capi::Run;

extern "C" {

// ---- Errors, version, buffers ---------------------------------------------------------

const char* kcnet_code_name(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return "UNKNOWN_CODE";
  }
  return kNames[code];
}

const char* kcnet_version(void) { return KCNET_VERSION_STRING; }

void kcnet_buffer_free(kcnet_buffer* buffer) {
  if (buffer == nullptr) return;
  std::free(buffer->data);
  buffer->data = nullptr;
  buffer->size = 0;
}

// ---- Opening and closing ---------------------------------------------------------------

void kcnet_client_options_init_sized(kcnet_client_options* options, size_t struct_size) {
  if (options == nullptr || struct_size < kcnet::capi::kOptionsFirstSize) return;
  kcnet_client_options defaults{};
  const kcnet::sdk::ClientOptions sdk;
  defaults.use_tls = false;  // with tls_mode KCNET_TLS_AUTO: TLS unless the server is local
  defaults.durable = sdk.durable;
  defaults.sync_timeout_ms = absl::ToInt64Milliseconds(sdk.sync_timeout);
  defaults.initial_backoff_ms = absl::ToInt64Milliseconds(sdk.initial_backoff);
  defaults.max_backoff_ms = absl::ToInt64Milliseconds(sdk.max_backoff);
  defaults.interval_ms = absl::ToInt64Milliseconds(sdk.interval);
  defaults.write_delay_ms = absl::ToInt64Milliseconds(sdk.write_delay);
  defaults.seed = sdk.seed;
  defaults.tls_mode = KCNET_TLS_AUTO;
  defaults.tls_ca_file = nullptr;
  defaults.attachment_dir = nullptr;
  defaults.attachment_budget_bytes = sdk.attachment_budget_bytes;
  // The caller's struct may be older (smaller) or newer (larger) than this library's.
  const size_t size = std::min(struct_size, sizeof(kcnet_client_options));
  defaults.struct_size = size;
  std::memcpy(options, &defaults, size);
  if (struct_size > size) {
    // A newer header's fields this library does not know: zero (their "unset").
    std::memset(reinterpret_cast<char*>(options) + size, 0, struct_size - size);
    options->struct_size = struct_size;
  }
}

void kcnet_client_options_init(kcnet_client_options* options) {
  kcnet_client_options_init_sized(options, kcnet::capi::kOptionsFirstSize);
}

kcnet_client* kcnet_client_open(const kcnet_client_options* options, kcnet_error* out_error) {
  kcnet_client* opened = nullptr;
  Run(out_error, [&]() -> absl::Status {
    if (options == nullptr) return absl::InvalidArgumentError("options: must not be NULL");
    // An app built against an older kcnet_c.h passes a smaller struct: its fields are read,
    // the newer ones keep their defaults. A larger one comes from a newer kcnet_c.h than
    // this library knows.
    const size_t size = options->struct_size;
    if (size < kcnet::capi::kOptionsFirstSize || size > sizeof(kcnet_client_options)) {
      return absl::InvalidArgumentError(
          absl::StrCat("options.struct_size: ", size,
                       " is not the size of a kcnet_client_options this "
                       "library knows (",
                       kcnet::capi::kOptionsFirstSize, " to ", sizeof(kcnet_client_options),
                       "); call kcnet_client_options_init first"));
    }
    kcnet_client_options o;
    kcnet_client_options_init_sized(&o, sizeof o);
    std::memcpy(&o, options, size);
    const bool has_tls_mode = size >= offsetof(kcnet_client_options, tls_mode) + sizeof(o.tls_mode);
    const bool has_ca_file =
        size >= offsetof(kcnet_client_options, tls_ca_file) + sizeof(o.tls_ca_file);
    const bool has_attachments = size >= offsetof(kcnet_client_options, attachment_budget_bytes) +
                                             sizeof(o.attachment_budget_bytes);
    if (has_attachments) {
      KCNET_C_RETURN_IF_ERROR(CheckString(o.attachment_dir, "options.attachment_dir", true));
      if (o.attachment_budget_bytes < 0) {
        return absl::InvalidArgumentError("options.attachment_budget_bytes: must not be negative");
      }
    }
    KCNET_C_RETURN_IF_ERROR(CheckString(o.path, "options.path", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckString(o.device_id, "options.device_id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckString(o.server_address, "options.server_address", true));
    KCNET_C_RETURN_IF_ERROR(CheckString(o.tls_root_certs, "options.tls_root_certs", true));
    if (has_ca_file) {
      KCNET_C_RETURN_IF_ERROR(CheckString(o.tls_ca_file, "options.tls_ca_file", true));
    }
    if (has_tls_mode && o.tls_mode != KCNET_TLS_AUTO && o.tls_mode != KCNET_TLS_ON &&
        o.tls_mode != KCNET_TLS_OFF) {
      return absl::InvalidArgumentError(
          absl::StrCat("options.tls_mode: ", o.tls_mode,
                       " is not KCNET_TLS_AUTO (0), KCNET_TLS_ON (1) or KCNET_TLS_OFF (2)"));
    }
    KCNET_C_RETURN_IF_ERROR(kcnet::capi::CheckDuration(o.sync_timeout_ms, "sync_timeout_ms"));
    KCNET_C_RETURN_IF_ERROR(kcnet::capi::CheckDuration(o.initial_backoff_ms, "initial_backoff_ms"));
    KCNET_C_RETURN_IF_ERROR(kcnet::capi::CheckDuration(o.max_backoff_ms, "max_backoff_ms"));
    KCNET_C_RETURN_IF_ERROR(kcnet::capi::CheckDuration(o.interval_ms, "interval_ms"));
    KCNET_C_RETURN_IF_ERROR(kcnet::capi::CheckDuration(o.write_delay_ms, "write_delay_ms"));
    kcnet::sdk::ClientOptions sdk_options;
    sdk_options.path = o.path;
    sdk_options.device_id = o.device_id;
    if (o.server_address != nullptr) sdk_options.server_address = o.server_address;
    if (!has_tls_mode) {
      sdk_options.use_tls = o.use_tls;  // the first version: use_tls decided, as it did
    } else if (o.tls_mode == KCNET_TLS_ON || (o.tls_mode == KCNET_TLS_AUTO && o.use_tls)) {
      sdk_options.use_tls = true;
    } else if (o.tls_mode == KCNET_TLS_OFF) {
      sdk_options.use_tls = false;
    }  // else auto: TLS unless the server is on this machine
    if (o.tls_root_certs != nullptr) sdk_options.tls_root_certs = o.tls_root_certs;
    if (has_ca_file && o.tls_ca_file != nullptr) sdk_options.tls_ca_file = o.tls_ca_file;
    sdk_options.durable = o.durable;
    sdk_options.sync_timeout = absl::Milliseconds(o.sync_timeout_ms);
    sdk_options.initial_backoff = absl::Milliseconds(o.initial_backoff_ms);
    sdk_options.max_backoff = absl::Milliseconds(o.max_backoff_ms);
    sdk_options.interval = absl::Milliseconds(o.interval_ms);
    sdk_options.write_delay = absl::Milliseconds(o.write_delay_ms);
    sdk_options.seed = o.seed;
    if (has_attachments) {
      if (o.attachment_dir != nullptr) sdk_options.attachment_dir = o.attachment_dir;
      sdk_options.attachment_budget_bytes = o.attachment_budget_bytes;
    }
    absl::StatusOr<std::unique_ptr<kcnet::sdk::Client>> sdk =
        kcnet::sdk::Client::Open(std::move(sdk_options));
    if (!sdk.ok()) return sdk.status();
    auto entry = std::make_shared<kcnet::capi::ClientEntry>();
    entry->sdk = *std::move(sdk);
    kcnet::capi::Registry& registry = kcnet::capi::Clients();
    absl::MutexLock lock(&registry.mu);
    // Handle values are never reused, so a stale handle never names a newer client.
    const uintptr_t handle = ++registry.last << 4;
    registry.live[handle] = std::move(entry);
    opened = reinterpret_cast<kcnet_client*>(handle);
    return absl::OkStatus();
  });
  return opened;
}

bool kcnet_client_free(kcnet_client* client, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    if (client == nullptr) return absl::OkStatus();
    ClientRef ref;
    absl::Status status = Acquire(client, &ref);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          "client: closed already (a second close), or not a handle kcnet_client_open returned");
    }
    // Cancels every sync and stops the background sync and the observers' thread;
    // FAILED_PRECONDITION (nothing done) from an observer or a progress callback.
    KCNET_C_RETURN_IF_ERROR(ref->sdk->Close());
    {
      kcnet::capi::Registry& registry = kcnet::capi::Clients();
      absl::MutexLock lock(&registry.mu);
      if (registry.live.erase(reinterpret_cast<uintptr_t>(client)) == 0) {
        return absl::InvalidArgumentError("client: closed already (closed on another thread)");
      }
    }
    std::shared_ptr<kcnet::capi::ClientEntry> entry = ref.entry();
    ref.Reset();
    {
      // Calls in flight on other threads were cancelled or end soon; wait for them.
      absl::MutexLock lock(&entry->mu);
      while (entry->in_flight > 0) entry->idle.Wait(&entry->mu);
    }
    entry->sdk.reset();  // closes the store and releases its lock
    return absl::OkStatus();
  });
}

void kcnet_client_close(kcnet_client* client) {
  kcnet_error error;
  if (!kcnet_client_free(client, &error)) {
    kcnet::sdk::LogMessage(kcnet::sdk::LogLevel::kError,
                           absl::StrCat("kcnet_client_close: ", error.message));
  }
}

// ---- Account --------------------------------------------------------------------------

bool kcnet_client_sign_in(kcnet_client* client, const char* username, const char* password,
                          kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(username, "username", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckString(password, "password", false, true));
    return c->sdk->SignIn(username, password);
  });
}

bool kcnet_client_sign_in_with(kcnet_client* client, const char* username, const char* password,
                               uint32_t flags, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(username, "username", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckString(password, "password", false, true));
    if ((flags & ~uint32_t{KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER}) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("flags: unknown bits in ", flags));
    }
    kcnet::sdk::Client::SignInOptions options;
    options.discard_pending_of_previous_user =
        (flags & KCNET_SIGN_IN_DISCARD_PENDING_OF_PREVIOUS_USER) != 0;
    return c->sdk->SignIn(username, password, options);
  });
}

bool kcnet_client_sign_out(kcnet_client* client, kcnet_error* out_error) {
  return kcnet_client_sign_out_with(client, 0, out_error);
}

bool kcnet_client_sign_out_with(kcnet_client* client, uint32_t flags, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    if ((flags & ~uint32_t{KCNET_SIGN_OUT_DISCARD_PENDING}) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("flags: unknown bits in ", flags));
    }
    kcnet::sdk::Client::SignOutOptions options;
    options.discard_pending = (flags & KCNET_SIGN_OUT_DISCARD_PENDING) != 0;
    return c->sdk->SignOut(options);
  });
}

bool kcnet_client_export_pending(kcnet_client* client, const char* path, int64_t* out_count,
                                 kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(path, "path", false, true));
    absl::StatusOr<int64_t> count = c->sdk->ExportPending(path);
    if (!count.ok()) return count.status();
    if (out_count != nullptr) *out_count = *count;
    return absl::OkStatus();
  });
}

bool kcnet_client_sign_in_required(kcnet_client* client, bool* out_required,
                                   kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    if (out_required == nullptr) {
      return absl::InvalidArgumentError("out_required: must not be NULL");
    }
    *out_required = c->sdk->Status().sign_in_required;
    return absl::OkStatus();
  });
}

bool kcnet_client_user(kcnet_client* client, bool* out_signed_in, kcnet_buffer* out_user,
                       kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_user);
    KCNET_C_ACQUIRE(client, c);
    if (out_signed_in == nullptr) {
      return absl::InvalidArgumentError("out_signed_in: must not be NULL");
    }
    *out_signed_in = false;
    const std::optional<kcnet::v1::User> user = c->sdk->user();
    if (!user.has_value()) return absl::OkStatus();
    KCNET_C_RETURN_IF_ERROR(PutMessage(*user, out_user));
    *out_signed_in = true;
    return absl::OkStatus();
  });
}

// ---- Directory ------------------------------------------------------------------------

bool kcnet_directory_org_unit(kcnet_client* client, int64_t id, kcnet_buffer* out_unit,
                              kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_unit);
    KCNET_C_ACQUIRE(client, c);
    if (id <= 0) return absl::InvalidArgumentError(absl::StrCat("id: must be > 0, got ", id));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_unit, "out_unit"));
    return PutResult(c->sdk->GetOrgUnit(id), out_unit);
  });
}

bool kcnet_directory_org_unit_by_code(kcnet_client* client, const char* code,
                                      kcnet_buffer* out_unit, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_unit);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(code, "code", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_unit, "out_unit"));
    return PutResult(c->sdk->FindOrgUnitByCode(code), out_unit);
  });
}

bool kcnet_directory_org_units(kcnet_client* client, kcnet_buffer* out_list,
                               kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> units = c->sdk->ListOrgUnits();
    if (!units.ok()) return units.status();
    kcnet::v1::OrgUnitList list;
    for (kcnet::v1::OrgUnit& unit : *units) *list.add_org_units() = std::move(unit);
    return PutMessage(list, out_list);
  });
}

bool kcnet_directory_user(kcnet_client* client, int64_t user_id, kcnet_buffer* out_user,
                          kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_user);
    KCNET_C_ACQUIRE(client, c);
    if (user_id <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("user_id: must be > 0, got ", user_id));
    }
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_user, "out_user"));
    return PutResult(c->sdk->GetDirectoryUser(user_id), out_user);
  });
}

// ---- Facilities -----------------------------------------------------------------------

bool kcnet_facility_register(kcnet_client* client, kcnet_bytes facility, kcnet_buffer* out_facility,
                             kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_facility);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::Facility record;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(facility, "facility", &record));
    return PutResult(c->sdk->RegisterFacility(std::move(record)), out_facility);
  });
}

bool kcnet_facility_update(kcnet_client* client, kcnet_bytes facility, const char* const* fields,
                           size_t field_count, kcnet_buffer* out_facility, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_facility);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::Facility record;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(facility, "facility", &record));
    absl::StatusOr<std::vector<std::string>> names = kcnet::capi::FieldList(fields, field_count);
    if (!names.ok()) return names.status();
    return PutResult(c->sdk->UpdateFacility(record, *names), out_facility);
  });
}

bool kcnet_facility_get(kcnet_client* client, const char* id, kcnet_buffer* out_facility,
                        kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_facility);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_facility, "out_facility"));
    return PutResult(c->sdk->GetFacility(id), out_facility);
  });
}

bool kcnet_facility_list_by_commune(kcnet_client* client, int64_t commune_id,
                                    kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    if (commune_id <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("commune_id: must be > 0, got ", commune_id));
    }
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::Facility>> facilities =
        c->sdk->FacilitiesOfCommune(commune_id);
    if (!facilities.ok()) return facilities.status();
    kcnet::v1::FacilityList list;
    for (kcnet::v1::Facility& facility : *facilities) {
      *list.add_facilities() = std::move(facility);
    }
    return PutMessage(list, out_list);
  });
}

bool kcnet_facility_search(kcnet_client* client, const char* query, int limit,
                           kcnet_buffer* out_hits, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_hits);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(query, "query"));
    if (limit < 1 || limit > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("limit: must be 1 to 1000, got ", limit));
    }
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_hits, "out_hits"));
    absl::StatusOr<std::vector<kcnet::sdk::FacilityHit>> hits =
        c->sdk->SearchFacilities(query, limit);
    if (!hits.ok()) return hits.status();
    kcnet::v1::FacilityHitList list;
    for (kcnet::sdk::FacilityHit& hit : *hits) {
      kcnet::v1::FacilityHit* out = list.add_hits();
      *out->mutable_facility() = std::move(hit.facility);
      out->set_rank(hit.rank);
    }
    return PutMessage(list, out_hits);
  });
}

// ---- Visits ---------------------------------------------------------------------------

bool kcnet_visit_record(kcnet_client* client, kcnet_bytes visit, kcnet_buffer* out_visit,
                        kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_visit);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::Visit record;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(visit, "visit", &record));
    return PutResult(c->sdk->RecordVisit(std::move(record)), out_visit);
  });
}

bool kcnet_visit_list_by_facility(kcnet_client* client, const char* facility_id,
                                  kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(facility_id, "facility_id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::Visit>> visits = c->sdk->VisitsOfFacility(facility_id);
    if (!visits.ok()) return visits.status();
    kcnet::v1::VisitList list;
    for (kcnet::v1::Visit& visit : *visits) *list.add_visits() = std::move(visit);
    return PutMessage(list, out_list);
  });
}

// ---- Support requests -----------------------------------------------------------------

bool kcnet_request_draft(kcnet_client* client, kcnet_bytes request, kcnet_buffer* out_request,
                         kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_request);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::SupportRequest record;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(request, "request", &record));
    return PutResult(c->sdk->DraftRequest(std::move(record)), out_request);
  });
}

bool kcnet_request_update(kcnet_client* client, kcnet_bytes request, const char* const* fields,
                          size_t field_count, kcnet_buffer* out_request, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_request);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::SupportRequest record;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(request, "request", &record));
    absl::StatusOr<std::vector<std::string>> names = kcnet::capi::FieldList(fields, field_count);
    if (!names.ok()) return names.status();
    return PutResult(c->sdk->UpdateRequest(record, *names), out_request);
  });
}

bool kcnet_request_act(kcnet_client* client, const char* request_id, int action, const char* note,
                       kcnet_buffer* out_request, kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, action, note, out_request, out_error);
}

bool kcnet_request_submit(kcnet_client* client, const char* request_id, kcnet_buffer* out_request,
                          kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, kcnet::v1::REQUEST_ACTION_SUBMIT, nullptr,
                          out_request, out_error);
}

bool kcnet_request_endorse(kcnet_client* client, const char* request_id, const char* note,
                           kcnet_buffer* out_request, kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, kcnet::v1::REQUEST_ACTION_ENDORSE, note, out_request,
                          out_error);
}

bool kcnet_request_return(kcnet_client* client, const char* request_id, const char* note,
                          kcnet_buffer* out_request, kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, kcnet::v1::REQUEST_ACTION_RETURN, note, out_request,
                          out_error);
}

bool kcnet_request_reject(kcnet_client* client, const char* request_id, const char* note,
                          kcnet_buffer* out_request, kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, kcnet::v1::REQUEST_ACTION_REJECT, note, out_request,
                          out_error);
}

bool kcnet_request_comment(kcnet_client* client, const char* request_id, const char* text,
                           kcnet_buffer* out_request, kcnet_error* out_error) {
  return kcnet::capi::Act(client, request_id, kcnet::v1::REQUEST_ACTION_COMMENT, text, out_request,
                          out_error, "text");
}

bool kcnet_request_approve(kcnet_client* client, const char* request_id, int64_t amount_vnd,
                           int funding, const char* note, kcnet_buffer* out_request,
                           kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_request);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(request_id, "request_id", false, true));
    if (amount_vnd <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("amount_vnd: must be > 0, got ", amount_vnd));
    }
    if (!kcnet::v1::FundingSource_IsValid(funding) ||
        funding == kcnet::v1::FUNDING_SOURCE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat("funding: ", funding, " is not a funding source (1 LOCAL, 2 NATIONAL)"));
    }
    KCNET_C_RETURN_IF_ERROR(CheckString(note, "note", /*nullable=*/true));
    return PutResult(
        c->sdk->Approve(request_id, amount_vnd, static_cast<kcnet::v1::FundingSource>(funding),
                        note == nullptr ? "" : note),
        out_request);
  });
}

bool kcnet_request_get(kcnet_client* client, const char* id, kcnet_buffer* out_request,
                       kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_request);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_request, "out_request"));
    return PutResult(c->sdk->GetRequest(id), out_request);
  });
}

bool kcnet_request_events(kcnet_client* client, const char* request_id, kcnet_buffer* out_list,
                          kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(request_id, "request_id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::RequestEvent>> events = c->sdk->RequestEvents(request_id);
    if (!events.ok()) return events.status();
    kcnet::v1::RequestEventList list;
    for (kcnet::v1::RequestEvent& event : *events) *list.add_events() = std::move(event);
    return PutMessage(list, out_list);
  });
}

bool kcnet_request_list_awaiting_review(kcnet_client* client, kcnet_buffer* out_list,
                                        kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    return PutRequests(c->sdk->RequestsAwaitingMyReview(), out_list);
  });
}

bool kcnet_request_list_by_facility(kcnet_client* client, const char* facility_id,
                                    kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(facility_id, "facility_id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    return PutRequests(c->sdk->RequestsOfFacility(facility_id), out_list);
  });
}

// ---- Uploads and reports --------------------------------------------------------------

bool kcnet_upload_list_pending(kcnet_client* client, kcnet_buffer* out_list,
                               kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::sdk::PendingUpload>> uploads = c->sdk->PendingUploads();
    if (!uploads.ok()) return uploads.status();
    kcnet::v1::PendingUploadList list;
    for (const kcnet::sdk::PendingUpload& upload : *uploads) {
      kcnet::v1::PendingUpload* out = list.add_uploads();
      out->set_seq(upload.seq);
      out->set_sent(upload.sent);
      for (const kcnet::sdk::RecordRef& ref : upload.records) {
        kcnet::capi::ToProto(ref, out->add_records());
      }
    }
    return PutMessage(list, out_list);
  });
}

bool kcnet_report_list(kcnet_client* client, kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::sdk::Report>> reports = c->sdk->ListReports();
    if (!reports.ok()) return reports.status();
    return PutMessage(kcnet::capi::ToProto(*reports), out_list);
  });
}

bool kcnet_report_take(kcnet_client* client, kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    // Required: taken reports are gone from the store, so they must reach the caller.
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::sdk::Report>> reports = c->sdk->TakeReports();
    if (!reports.ok()) return reports.status();
    return PutMessage(kcnet::capi::ToProto(*reports), out_list);
  });
}

// ---- Observers ------------------------------------------------------------------------

int kcnet_client_add_observer_with_free(kcnet_client* client, kcnet_observer_fn callback,
                                        void* context, kcnet_context_free_fn free_context,
                                        kcnet_error* out_error) {
  int handle = 0;
  Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    if (callback == nullptr) return absl::InvalidArgumentError("callback: must not be NULL");
    // Owns the context: its free callback runs once, when the SDK destroys the observer
    // (after its last call, when it is removed or the client is freed). Made last, so that
    // a refused call leaves the context with the caller.
    struct Context {
      void* context;
      kcnet_context_free_fn free_context;
      ~Context() {
        if (free_context != nullptr) free_context(context);
      }
    };
    auto owned = std::make_shared<Context>(Context{context, nullptr});
    const int sdk_handle =
        c->sdk->AddObserver([callback, owned](const kcnet::sdk::ChangeEvent& change) {
          // Runs on the SDK's notifier thread: nothing may escape from here.
          try {
            kcnet::v1::ChangeEvent event;
            event.set_source(kcnet::capi::ToProto(change.source));
            for (const kcnet::sdk::RecordRef& ref : change.records) {
              kcnet::capi::ToProto(ref, event.add_records());
            }
            const std::string bytes = event.SerializeAsString();
            callback(owned->context, static_cast<int>(event.source()),
                     kcnet_bytes{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
          } catch (...) {
            // Out of memory while building the event: this notification is dropped.
          }
        });
    owned->free_context = free_context;
    absl::MutexLock lock(&c->mu);
    handle = c->next_observer++;
    c->observers[handle] = sdk_handle;
    return absl::OkStatus();
  });
  return handle;
}

int kcnet_client_add_observer(kcnet_client* client, kcnet_observer_fn callback, void* context,
                              kcnet_error* out_error) {
  return kcnet_client_add_observer_with_free(client, callback, context, nullptr, out_error);
}

bool kcnet_client_remove_observer(kcnet_client* client, int handle, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    int sdk_handle = 0;
    {
      absl::MutexLock lock(&c->mu);
      auto it = c->observers.find(handle);
      if (it == c->observers.end()) {
        return absl::NotFoundError(
            absl::StrCat("handle: ", handle, " is not an observer of this client"));
      }
      sdk_handle = it->second;
      c->observers.erase(it);
    }
    c->sdk->RemoveObserver(sdk_handle);  // outside our lock: it may wait for a callback
    return absl::OkStatus();
  });
}

// ---- Attachments ----------------------------------------------------------------------

bool kcnet_attachment_add(kcnet_client* client, kcnet_bytes new_attachment, kcnet_buffer* out_info,
                          kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_info);
    KCNET_C_ACQUIRE(client, c);
    kcnet::v1::NewAttachment in;
    KCNET_C_RETURN_IF_ERROR(ParseMessage(new_attachment, "new_attachment", &in));
    kcnet::sdk::NewAttachment a;
    a.owner_type = in.owner_type();
    a.owner_id = in.owner_id();
    a.file_path = in.file_path();
    a.bytes = in.data();
    a.media_type = in.media_type();
    a.caption = in.caption();
    a.taken_ms = in.taken_ms();
    if (in.has_location()) {
      a.latitude = in.latitude();
      a.longitude = in.longitude();
    }
    a.priority = in.priority();
    absl::StatusOr<kcnet::sdk::AttachmentInfo> info = c->sdk->AddAttachment(std::move(a));
    if (!info.ok()) return info.status();
    kcnet::v1::AttachmentInfo message;
    kcnet::capi::ToProto(*info, &message);
    return PutMessage(message, out_info);
  });
}

bool kcnet_attachment_get(kcnet_client* client, const char* id, kcnet_buffer* out_info,
                          kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_info);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_info, "out_info"));
    absl::StatusOr<kcnet::sdk::AttachmentInfo> info = c->sdk->GetAttachment(id);
    if (!info.ok()) return info.status();
    kcnet::v1::AttachmentInfo message;
    kcnet::capi::ToProto(*info, &message);
    return PutMessage(message, out_info);
  });
}

bool kcnet_attachment_list(kcnet_client* client, kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    return kcnet::capi::PutAttachments(c->sdk->ListAttachments(), out_list);
  });
}

bool kcnet_attachment_list_by_owner(kcnet_client* client, uint32_t owner_type, const char* owner_id,
                                    kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(owner_id, "owner_id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    return kcnet::capi::PutAttachments(c->sdk->AttachmentsOf(owner_type, owner_id), out_list);
  });
}

bool kcnet_attachment_open(kcnet_client* client, const char* id, kcnet_buffer* out_path,
                           kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_path);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_path, "out_path"));
    absl::StatusOr<std::string> path = c->sdk->OpenAttachment(id);
    if (!path.ok()) return path.status();
    // The path's bytes, in a buffer as every output (a StringValue-free raw copy).
    auto* data = static_cast<uint8_t*>(std::malloc(path->size() + 1));
    if (data == nullptr) return absl::ResourceExhaustedError("out of memory");
    std::memcpy(data, path->data(), path->size());
    data[path->size()] = 0;  // a NUL after the bytes, for C callers (not counted in size)
    *out_path = kcnet_buffer{data, path->size()};
    return absl::OkStatus();
  });
}

bool kcnet_attachment_upload_now(kcnet_client* client, kcnet_buffer* out_summary,
                                 kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_summary);
    KCNET_C_ACQUIRE(client, c);
    absl::StatusOr<kcnet::sdk::AttachmentUploadSummary> summary = c->sdk->UploadAttachments();
    if (!summary.ok()) return summary.status();
    kcnet::v1::AttachmentUploadSummary message;
    kcnet::capi::ToProto(*summary, &message);
    return PutMessage(message, out_summary);
  });
}

bool kcnet_attachment_set_priority(kcnet_client* client, const char* id, int32_t priority,
                                   kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    return c->sdk->SetAttachmentPriority(id, priority);
  });
}

bool kcnet_attachment_retry(kcnet_client* client, const char* id, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckString(id, "id", false, true));
    return c->sdk->RetryAttachment(id);
  });
}

int kcnet_attachment_add_listener(kcnet_client* client, kcnet_attachment_progress_fn callback,
                                  void* context, kcnet_context_free_fn free_context,
                                  kcnet_error* out_error) {
  int handle = 0;
  Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    if (callback == nullptr) return absl::InvalidArgumentError("callback: must not be NULL");
    struct Context {
      void* context;
      kcnet_context_free_fn free_context;
      ~Context() {
        if (free_context != nullptr) free_context(context);
      }
    };
    auto owned = std::make_shared<Context>(Context{context, nullptr});
    const int sdk_handle =
        c->sdk->AddAttachmentListener([callback, owned](const kcnet::sdk::AttachmentProgress& p) {
          try {
            kcnet::v1::AttachmentProgress message;
            message.set_id(p.id);
            message.set_state(kcnet::capi::ToProto(p.state));
            message.set_download(p.download);
            message.set_bytes_done(p.bytes_done);
            message.set_bytes_sent(p.bytes_sent);
            message.set_bytes_received(p.bytes_received);
            message.set_size(p.size);
            message.set_failure(p.failure);
            const std::string bytes = message.SerializeAsString();
            callback(owned->context,
                     kcnet_bytes{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
          } catch (...) {
            // Out of memory: this progress event is dropped.
          }
        });
    owned->free_context = free_context;
    absl::MutexLock lock(&c->mu);
    handle = c->next_listener++;
    c->listeners[handle] = sdk_handle;
    return absl::OkStatus();
  });
  return handle;
}

bool kcnet_attachment_remove_listener(kcnet_client* client, int handle, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    int sdk_handle = 0;
    {
      absl::MutexLock lock(&c->mu);
      auto it = c->listeners.find(handle);
      if (it == c->listeners.end()) {
        return absl::NotFoundError(
            absl::StrCat("handle: ", handle, " is not an attachment listener of this client"));
      }
      sdk_handle = it->second;
      c->listeners.erase(it);
    }
    c->sdk->RemoveAttachmentListener(sdk_handle);
    return absl::OkStatus();
  });
}

// ---- Sync -----------------------------------------------------------------------------

bool kcnet_sync_now(kcnet_client* client, kcnet_progress_fn progress, void* progress_context,
                    kcnet_buffer* out_summary, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_summary);
    KCNET_C_ACQUIRE(client, c);
    std::function<void(const kcnet::sdk::SyncProgress&)> on_progress;
    if (progress != nullptr) {
      on_progress = [progress, progress_context](const kcnet::sdk::SyncProgress& p) {
        try {
          kcnet::v1::SyncProgress message;
          message.set_buckets_total(p.buckets_total);
          message.set_buckets_complete(p.buckets_complete);
          message.set_received_changes(p.received_changes);
          message.set_pushed_mutations(p.pushed_mutations);
          const std::string bytes = message.SerializeAsString();
          progress(progress_context,
                   kcnet_bytes{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
        } catch (...) {
          // Out of memory: this progress update is dropped.
        }
      };
    }
    absl::StatusOr<kcnet::sdk::SyncSummary> summary = c->sdk->SyncNow(on_progress);
    if (!summary.ok()) return summary.status();
    kcnet::v1::SyncSummary message;
    message.set_pushed_mutations(summary->pushed_mutations);
    message.set_received_changes(summary->received_changes);
    message.set_applied_changes(summary->applied_changes);
    for (const kcnet::sdk::Report& report : summary->reports) {
      kcnet::capi::ToProto(report, message.add_reports());
    }
    kcnet::capi::ToProto(summary->attachments, message.mutable_attachments());
    message.set_attachments_error_code(static_cast<int32_t>(summary->attachments_error.code()));
    message.set_attachments_error_message(std::string(summary->attachments_error.message()));
    return PutMessage(message, out_summary);
  });
}

bool kcnet_sync_start_background(kcnet_client* client, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    c->sdk->StartBackgroundSync();
    return absl::OkStatus();
  });
}

bool kcnet_sync_stop_background(kcnet_client* client, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    return c->sdk->StopBackgroundSync();
  });
}

bool kcnet_sync_cancel(kcnet_client* client, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    c->sdk->CancelSync();
    return absl::OkStatus();
  });
}

bool kcnet_sync_set_suspended(kcnet_client* client, bool suspended, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    c->sdk->SetSuspended(suspended);
    return absl::OkStatus();
  });
}

bool kcnet_sync_set_host_reachable(kcnet_client* client, bool reachable, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    KCNET_C_ACQUIRE(client, c);
    c->sdk->SetHostReachable(reachable);
    return absl::OkStatus();
  });
}

bool kcnet_sync_status(kcnet_client* client, kcnet_buffer* out_status, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_status);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_status, "out_status"));
    const kcnet::sdk::SyncStatus status = c->sdk->Status();
    kcnet::v1::SyncStatus message;
    message.set_pending_uploads(status.pending_uploads);
    message.set_unconfirmed(status.unconfirmed);
    message.set_reports(status.reports);
    message.set_last_success_ms(kcnet::capi::ToMs(status.last_success));
    message.set_last_attempt_ms(kcnet::capi::ToMs(status.last_attempt));
    message.set_last_error_code(static_cast<int32_t>(status.last_error.code()));
    message.set_last_error_message(std::string(status.last_error.message()));
    message.set_failures_in_a_row(status.failures_in_a_row);
    message.set_syncing(status.syncing);
    message.set_background(status.background);
    message.set_next_attempt_ms(kcnet::capi::ToMs(status.next_attempt));
    message.set_sign_in_required(status.sign_in_required);
    message.set_suspended(status.suspended);
    message.set_host_reachable(status.host_reachable);
    if (status.clock_skew.has_value()) {
      message.set_has_clock_skew(true);
      message.set_clock_skew_ms(absl::ToInt64Milliseconds(*status.clock_skew));
    }
    return PutMessage(message, out_status);
  });
}

bool kcnet_sync_checkpoints(kcnet_client* client, kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::BucketCheckpoint>> checkpoints = c->sdk->Checkpoints();
    if (!checkpoints.ok()) return checkpoints.status();
    kcnet::v1::BucketCheckpointList list;
    for (kcnet::v1::BucketCheckpoint& checkpoint : *checkpoints) {
      *list.add_checkpoints() = std::move(checkpoint);
    }
    return PutMessage(list, out_list);
  });
}

// ---- Conflict review ------------------------------------------------------------------

bool kcnet_conflict_list(kcnet_client* client, int64_t org_unit_id, bool include_resolved,
                         kcnet_buffer* out_list, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_list);
    KCNET_C_ACQUIRE(client, c);
    KCNET_C_RETURN_IF_ERROR(CheckOut(out_list, "out_list"));
    absl::StatusOr<std::vector<kcnet::v1::Conflict>> conflicts =
        c->sdk->ListConflicts(org_unit_id, include_resolved);
    if (!conflicts.ok()) return conflicts.status();
    kcnet::v1::ListConflictsResponse list;  // every page: next_page_token stays empty
    for (kcnet::v1::Conflict& conflict : *conflicts) *list.add_conflicts() = std::move(conflict);
    return PutMessage(list, out_list);
  });
}

bool kcnet_conflict_resolve(kcnet_client* client, uint64_t conflict_id, bool restore_loser,
                            kcnet_buffer* out_conflict, kcnet_error* out_error) {
  return Run(out_error, [&]() -> absl::Status {
    ClearBuffer(out_conflict);
    KCNET_C_ACQUIRE(client, c);
    return PutResult(c->sdk->ResolveConflict(conflict_id, restore_loser), out_conflict);
  });
}

// ---- Log ------------------------------------------------------------------------------

void kcnet_log_set_callback(kcnet_log_fn callback, void* context, int min_level) {
  try {
    if (callback == nullptr) {
      kcnet::sdk::SetLogSink(nullptr);
      return;
    }
    const int level = min_level < KCNET_LOG_DEBUG   ? KCNET_LOG_DEBUG
                      : min_level > KCNET_LOG_ERROR ? KCNET_LOG_ERROR
                                                    : min_level;
    kcnet::sdk::SetLogSink(
        [callback, context](kcnet::sdk::LogLevel l, const std::string& message) {
          callback(context, static_cast<int>(l), message.c_str());
        },
        static_cast<kcnet::sdk::LogLevel>(level));
  } catch (...) {
    // Out of memory: the previous sink stays.
  }
}

}  // extern "C"
