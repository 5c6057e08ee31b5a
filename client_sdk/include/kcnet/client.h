// kcnet::sdk::Client: the SDK a tablet app embeds. One Client owns one local store (a
// SQLite file) for one device and works fully offline: every domain operation writes the
// record and its outbox row in one local transaction and returns at once; reads show the
// app's own pending writes over the state last confirmed by the server; a background sync
// on one serial queue pushes the outbox and pulls the device's communes over the server's
// sync stream, retrying with exponential backoff and jitter, resuming from its cursors.
//
//   auto client = kcnet::sdk::Client::Open({.path = "kcnet.db", .device_id = "tab-17",
//                                           .server_address = "kcnet.example.vn:443"});
//   (*client)->SignIn("cong_tac_vien_1", "mật khẩu");   // online once; kept for offline use
//   auto f = (*client)->RegisterFacility(facility);       // offline: queued for upload
//   (*client)->StartBackgroundSync();
//
// Errors are absl::Status: INVALID_ARGUMENT names the field ("facility.latitude: ..."),
// NOT_FOUND an unknown record, PERMISSION_DENIED / FAILED_PRECONDITION the business rule
// (sync/model/rules.h) the write breaks; a refused call changes nothing. Writes the server
// later refuses, and edits it merged with a conflict, come back as Reports (TakeReports,
// and observers).
//
// Thread-safety: thread-safe. Calls may come from any thread; writes are serialised by
// the store; syncs (SyncNow and the background sync) run one at a time. Change events are
// queued and delivered, in order, on the SDK's notifier thread with no SDK lock held, so
// observers may call any method of the Client; a local write returns once its event was
// delivered (unless it was made from an observer). The few calls that cannot be made from
// the SDK's own thread (Close, StopBackgroundSync) answer FAILED_PRECONDITION there
// instead of deadlocking.
//
// Lifecycle: one Client per store file (a second Open of the same file, in this process
// or another, answers FAILED_PRECONDITION naming it). CancelSync() ends the running sync;
// SetSuspended() and SetHostReachable() tell the background sync that the app went to the
// background or that the network changed (as Couchbase Lite's c4repl_setSuspended /
// setHostReachable). Close() (and the destructor) cancels any sync and returns promptly,
// whatever the server does.
#ifndef KCNET_CLIENT_SDK_INCLUDE_KCNET_CLIENT_H_
#define KCNET_CLIENT_SDK_INCLUDE_KCNET_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kcnet/attachments.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {
class Schema;
class Clock;  // sync/hlc.h
}  // namespace kcnet::sync

namespace kcnet::sdk {

struct ClientOptions {
  std::string path;            // the local store file (created when missing)
  std::string device_id;       // stable per installation, 1-128 bytes
  std::string server_address;  // "host:port"; empty: offline only (SignIn/Sync fail)
  // TLS for the server connection. Unset ("auto", the default): TLS unless the server is
  // on this machine (127.0.0.0/8, localhost, [::1]), so that a real server is never
  // reached in plaintext by mistake. true / false force it on / off.
  std::optional<bool> use_tls;
  // The roots TLS trusts, as PEM text (tls_root_certs) or a PEM file (tls_ca_file, read at
  // Open; an app that bundles its CA). Both empty: the system's roots, which iOS builds of
  // gRPC do not have: iOS apps must bundle a CA file.
  std::string tls_root_certs;
  std::string tls_ca_file;
  // fsync each local commit (the default). Tests and benchmarks may turn it off.
  bool durable = true;
  // How long one sync may take before it is abandoned (and retried later).
  absl::Duration sync_timeout = absl::Minutes(2);
  // Background sync: after a failure the next attempt waits a random time in
  // [0, min(max_backoff, initial_backoff * 2^failures)] ("full jitter"); after a success,
  // `interval` (a local write starts a sync sooner, after `write_delay`).
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
  absl::Duration interval = absl::Minutes(1);
  absl::Duration write_delay = absl::Seconds(2);
  // Seed of the jitter (0: random). Tests fix it.
  uint64_t seed = 0;
  // The record types this app knows (sync/schema.h); nullptr: today's,
  // model::KcnetSchema(). A store keeps what a newer server sends that its schema does not
  // know and, opened again with a schema that knows it, has it in its columns
  // (docs/SYNC.md, "Upgrades"). Tests pass model::PreviousKcnetSchema() to play an app
  // one release behind; its writes leave out the fields that schema lacks. Must outlive
  // the client.
  const kcnet::sync::Schema* schema = nullptr;
  // The tablet's wall clock (sync/hlc.h; must outlive the client). Null: the system's.
  // It stamps local writes (the store's hybrid clock) and tells when the token is about to
  // expire. Tests give a tablet a wrong date with it (tests/fault/tablets_test.cc).
  sync::Clock* clock = nullptr;
  // Attachments (kcnet/attachments.h). Their bytes live in this folder, named by their
  // SHA-256 (empty: `path` + ".attachments", created when missing).
  std::string attachment_dir;
  // The largest attachment AddAttachment takes (the server's default limit).
  int64_t max_attachment_bytes = 25 << 20;
  // Bytes already uploaded (and downloaded ones) are kept up to this total, the least
  // recently opened evicted first. Bytes not yet uploaded never count against it and are
  // never evicted.
  int64_t attachment_budget_bytes = int64_t{256} << 20;
  // Each sync uploads the queue after the records (false: only UploadAttachments does).
  bool upload_attachments_in_sync = true;
  // A failed upload waits a random time in [0, min(max_backoff, initial_backoff *
  // 2^attempts)] before its next try (the sync's own backoff options); after this many
  // failed attempts it stays kFailed until RetryAttachment.
  int max_upload_attempts = 8;
};

// A record a change touched.
struct RecordRef {
  uint32_t type = 0;  // sync/model/record_types.h: 1 facility, 2 visit, 3 request, 4 event
  std::string id;     // UUID text
};

// A report owed to the user: a write the server refused (with its reason; the record shows
// the server's values again) or one it applied with a conflict (how it was resolved).
struct Report {
  uint64_t seq = 0;  // the local write's sequence
  bool refused = false;
  std::string reason;                // why it was refused, or the conflict's summary
  std::vector<RecordRef> records;    // what the write touched
  kcnet::v1::MutationResult result;  // the server's full answer
};

// What observers hear about.
struct ChangeEvent {
  // kSignInRequired: the server refused the device credential (revoked, user deactivated):
  // background sync stopped; nothing pending is lost; ask the user to sign in again
  // (`records` is empty). SyncStatus::sign_in_required says the same.
  enum class Source { kLocal, kSync, kReport, kSignInRequired };
  Source source = Source::kLocal;
  std::vector<RecordRef> records;  // records whose state changed
};

// The SDK's own log messages (background sync failures, cancellations, refused calls),
// and, while a sink is installed, gRPC's own lines ("grpc: ...", gpr_set_log_function).
// Apps route them to logcat / os_log with SetLogSink; by default errors go to stderr.
enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
using LogSink = std::function<void(LogLevel level, const std::string& message)>;
// Process-wide; thread-safe. Messages below `min_level` are dropped; an empty sink
// restores the default. The sink is called on any SDK thread with no SDK lock held.
void SetLogSink(LogSink sink, LogLevel min_level = LogLevel::kInfo);
// Sends a message to the sink (the C ABI logs what it cannot return through it).
void LogMessage(LogLevel level, const std::string& message);

struct SyncStatus {
  int64_t pending_uploads = 0;  // local writes not yet acknowledged by the server
  int64_t unconfirmed = 0;      // local writes the confirmed state does not show yet
  int64_t reports = 0;          // reports not yet taken
  std::optional<absl::Time> last_success;
  std::optional<absl::Time> last_attempt;
  absl::Status last_error;  // OK when the last attempt succeeded
  int failures_in_a_row = 0;
  bool syncing = false;
  bool background = false;  // background sync running
  std::optional<absl::Time> next_attempt;
  bool suspended = false;      // SetSuspended(true): the background sync is paused
  bool host_reachable = true;  // SetHostReachable(false): no attempts until reachable
  // The server refused this device's credential: sign in again with the password (kept
  // across restarts until a SignIn succeeds; the background sync makes no attempt).
  bool sign_in_required = false;
  // The tablet's clock minus the server's, measured at the last sync's Welcome. Beyond a
  // few minutes the tablet's date or time zone is wrong: tell the user to check it. Writes
  // are kept either way (the server re-stamps a clock too far ahead).
  std::optional<absl::Duration> clock_skew;
};

// Progress of a running sync (for a progress bar).
struct SyncProgress {
  int64_t buckets_total = 0;     // communes the device holds
  int64_t buckets_complete = 0;  // of those, complete in this sync
  int64_t received_changes = 0;  // records received in this sync so far
  int64_t pushed_mutations = 0;
};

// What one SyncNow() did.
struct SyncSummary {
  int64_t pushed_mutations = 0;
  int64_t received_changes = 0;
  int64_t applied_changes = 0;
  std::vector<Report> reports;  // created by this sync
  // The attachments' upload pass after the records (ClientOptions::upload_attachments_in_sync).
  // Its failure does not fail the sync: attachments_error says why it stopped (UNAVAILABLE:
  // the link; CANCELLED), and the queue resumes on the next sync.
  AttachmentUploadSummary attachments;
  absl::Status attachments_error;
};

// A ranked search hit.
struct FacilityHit {
  kcnet::v1::Facility facility;
  double rank = 0;  // lower is better
};

// A write waiting for upload.
struct PendingUpload {
  uint64_t seq = 0;
  std::vector<RecordRef> records;
  bool sent = false;  // acknowledged by the server, waiting for its download
                      // (listed until the download that shows it arrives)
};

class Client {
 public:
  // Opens (or creates) the local store. FAILED_PRECONDITION with the file's name when it
  // is not a kcnet device store, belongs to another device, or was written by a newer
  // kcnet; INVALID_ARGUMENT for bad options (the field named).
  // FAILED_PRECONDITION too when another Client (in this process or another) has the file
  // open; INVALID_ARGUMENT when tls_ca_file cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Open(ClientOptions options);
  // Closes (see Close()). From the SDK's own thread (an observer), the close finishes on a
  // thread of its own once the observer returns.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- Account -------------------------------------------------------------------------
  // Signs in online (AuthService.Login with the device id). The token, the device
  // credential and the user (role, org units) are kept in the store, so the app works
  // offline afterwards and after restarts, and syncs for months without the password: an
  // expired or refused token is renewed with the device credential (AuthService.RefreshToken).
  //
  // A store belongs to one user at a time. Signing in as another user than the one whose
  // data the store holds purges that data (records, cursors, reports) first; while that
  // user has writes not yet uploaded it is refused with FAILED_PRECONDITION naming them and
  // the choice: sync as that user first, or ExportPending() them to a file and sign in with
  // `discard_pending_of_previous_user`. A user still signed in is signed out first (see
  // SignOut). Nothing changes locally when the call fails.
  absl::Status SignIn(const std::string& username, const std::string& password) {
    return SignIn(username, password, SignInOptions{});
  }
  struct SignInOptions {
    // The previous user's pending writes are dropped (export them first).
    bool discard_pending_of_previous_user = false;
  };
  absl::Status SignIn(const std::string& username, const std::string& password,
                      SignInOptions options);
  // Signs the user out of this device, for a shared tablet: online, releases the device's
  // registration (SyncService.ReleaseDevice), revokes the token and the device credential
  // (AuthService.Logout), then purges the user's data from the store. With writes not yet
  // uploaded: FAILED_PRECONDITION naming them, unless `discard_pending` (ExportPending
  // first). Without a network, and with nothing pending (or `discard_pending`), the purge
  // happens at once and the release and revocation are owed: a small record that survives
  // the purge keeps the token and credential until the next connection (the next SignIn
  // or sync, whoever is signed in then) sends them, then forgets them; the same user
  // signing in again just forgets them. UNAVAILABLE (nothing changes) only while an
  // earlier offline sign-out is still owed. When the server no longer accepts the sign-in
  // (sign_in_required), only the local part runs; an administrator releases the device.
  struct SignOutOptions {
    bool discard_pending = false;
  };
  absl::Status SignOut(SignOutOptions options);
  absl::Status SignOut() { return SignOut(SignOutOptions{}); }
  // Writes every write not yet uploaded to `path` (a serialized kcnet.v1.MutationBatch, the
  // mutations in sequence order, replacing the file atomically) and returns how many. An
  // administrator can replay them; the app keeps the file before a discarding sign-out or
  // user switch. INVALID_ARGUMENT (path empty), the file system's error otherwise.
  absl::StatusOr<int64_t> ExportPending(const std::string& path);
  // The signed-in user; nullopt when nobody is.
  std::optional<kcnet::v1::User> user() const;

  // --- Directory: names and codes (offline) --------------------------------------------
  // The org units of the user's scope and of the path above it (id, parent, official code,
  // name, level), and the users who work there (id, display name, role, active: nothing
  // else), as last fetched from the server: at sign-in, and after each sync when the
  // server's copy changed (OrgUnitService.GetScopeDirectory; an unchanged one costs one
  // tiny answer). Read from the store, offline too; purged with the rest of the user's
  // data on sign-out and user switch.
  // NOT_FOUND when this device's directory does not hold the id or code (not fetched yet,
  // or outside the user's directory): show the id then.
  absl::StatusOr<kcnet::v1::OrgUnit> GetOrgUnit(int64_t id);
  // By official code, exactly as the server spells it ("90101"; codes are fixed-width with
  // leading zeros). INVALID_ARGUMENT (code empty).
  absl::StatusOr<kcnet::v1::OrgUnit> FindOrgUnitByCode(const std::string& code);
  // Every org unit of the directory, ordered by id.
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> ListOrgUnits();
  // A user of the directory: a kcnet.v1.User with only id, display_name, role and active.
  absl::StatusOr<kcnet::v1::User> GetDirectoryUser(int64_t user_id);
  // For display: "Xã An Bình (90101)" and "Nguyễn Văn An"; the id as text ("4") when the
  // directory does not know it.
  std::string OrgUnitLabel(int64_t id);
  std::string UserLabel(int64_t user_id);

  // --- Facilities ----------------------------------------------------------------------
  // Registers a facility in one of the user's communes (id made here when empty;
  // created_by/created_ms set here).
  absl::StatusOr<kcnet::v1::Facility> RegisterFacility(kcnet::v1::Facility facility);
  // Sets the fields named in `fields` ("name", "workers", ...) from `facility`.
  absl::StatusOr<kcnet::v1::Facility> UpdateFacility(const kcnet::v1::Facility& facility,
                                                     const std::vector<std::string>& fields);
  absl::StatusOr<kcnet::v1::Facility> GetFacility(const std::string& id);
  // Facilities of a commune, by name.
  absl::StatusOr<std::vector<kcnet::v1::Facility>> FacilitiesOfCommune(int64_t commune_id);
  // Facilities whose name, owner or products contain every word of `query` (as a prefix),
  // ignoring case and diacritics (đ reads as d); best first.
  absl::StatusOr<std::vector<FacilityHit>> SearchFacilities(const std::string& query,
                                                            int limit = 20);

  // --- Visits --------------------------------------------------------------------------
  // Records a visit to a facility (commune, collaborator and, when 0, the time set here).
  absl::StatusOr<kcnet::v1::Visit> RecordVisit(kcnet::v1::Visit visit);
  // Visits of a facility, newest first.
  absl::StatusOr<std::vector<kcnet::v1::Visit>> VisitsOfFacility(const std::string& facility_id);

  // --- Support requests ----------------------------------------------------------------
  // Drafts a request for a facility (status DRAFT, author = the user).
  absl::StatusOr<kcnet::v1::SupportRequest> DraftRequest(kcnet::v1::SupportRequest request);
  // Edits a draft or returned request's fields named in `fields`.
  absl::StatusOr<kcnet::v1::SupportRequest> UpdateRequest(const kcnet::v1::SupportRequest& request,
                                                          const std::vector<std::string>& fields);
  // A life-cycle action (SUBMIT, ENDORSE, RETURN, REJECT, APPROVE, START, COMPLETE, CANCEL)
  // or a COMMENT, checked offline against the same rules as the server.
  absl::StatusOr<kcnet::v1::SupportRequest> Act(const std::string& request_id,
                                                kcnet::v1::RequestAction action,
                                                const std::string& note = "");
  absl::StatusOr<kcnet::v1::SupportRequest> Submit(const std::string& id) {
    return Act(id, kcnet::v1::REQUEST_ACTION_SUBMIT);
  }
  absl::StatusOr<kcnet::v1::SupportRequest> Endorse(const std::string& id,
                                                    const std::string& note) {
    return Act(id, kcnet::v1::REQUEST_ACTION_ENDORSE, note);
  }
  absl::StatusOr<kcnet::v1::SupportRequest> Return(const std::string& id, const std::string& note) {
    return Act(id, kcnet::v1::REQUEST_ACTION_RETURN, note);
  }
  absl::StatusOr<kcnet::v1::SupportRequest> Reject(const std::string& id, const std::string& note) {
    return Act(id, kcnet::v1::REQUEST_ACTION_REJECT, note);
  }
  absl::StatusOr<kcnet::v1::SupportRequest> Approve(const std::string& id, int64_t amount_vnd,
                                                    kcnet::v1::FundingSource funding,
                                                    const std::string& note);
  absl::StatusOr<kcnet::v1::SupportRequest> Comment(const std::string& id,
                                                    const std::string& text) {
    return Act(id, kcnet::v1::REQUEST_ACTION_COMMENT, text);
  }
  absl::StatusOr<kcnet::v1::SupportRequest> GetRequest(const std::string& id);
  // The request's audit trail, oldest first.
  absl::StatusOr<std::vector<kcnet::v1::RequestEvent>> RequestEvents(const std::string& request_id);
  // Requests in the user's communes on which the user may take a review action now
  // (endorse/return/reject for a district coordinator, approve for the province), oldest
  // first; for a collaborator, their own returned requests.
  absl::StatusOr<std::vector<kcnet::v1::SupportRequest>> RequestsAwaitingMyReview();
  // Requests of a facility, newest first.
  absl::StatusOr<std::vector<kcnet::v1::SupportRequest>> RequestsOfFacility(
      const std::string& facility_id);

  // --- Uploads, reports, observers -----------------------------------------------------
  absl::StatusOr<std::vector<PendingUpload>> PendingUploads();
  // Reports not yet taken (oldest first); Take removes them.
  absl::StatusOr<std::vector<Report>> ListReports();
  absl::StatusOr<std::vector<Report>> TakeReports();

  using Observer = std::function<void(const ChangeEvent&)>;
  // Returns a handle for RemoveObserver. After RemoveObserver returns, the observer is
  // not called again (a call in progress finishes first, unless RemoveObserver is called
  // from an observer). The observer (and what it captured) is destroyed exactly once,
  // after its last call, when it is removed or the Client closes, with no SDK lock held.
  int AddObserver(Observer observer);
  void RemoveObserver(int handle);

  // --- Attachments (kcnet/attachments.h, docs/ATTACHMENTS.md) ----------------------------
  // Adds a photo or document to a visit, request or facility the user may write, offline:
  // the bytes are stored under their SHA-256 (fsynced, then renamed into place), then, in
  // one local transaction, the Attachment record and its upload-queue row. A crash in
  // between leaves bytes without a record, removed at the next Open; never a record
  // without bytes. Errors name the field and change nothing: INVALID_ARGUMENT
  // ("attachment.media_type: ..." when the bytes are not the type named or not an allowed
  // type, "attachment.bytes: ..." empty or over max_attachment_bytes, "attachment.file_path:
  // ..." unreadable), NOT_FOUND for an owner this device does not hold (out of scope
  // reads the same), PERMISSION_DENIED / FAILED_PRECONDITION as the rules say.
  absl::StatusOr<AttachmentInfo> AddAttachment(NewAttachment attachment);
  absl::StatusOr<AttachmentInfo> GetAttachment(const std::string& id);
  // The attachments of a record (ordered by taken_ms, then id), this device's and others'.
  absl::StatusOr<std::vector<AttachmentInfo>> AttachmentsOf(uint32_t owner_type,
                                                            const std::string& owner_id);
  // Every attachment this device holds metadata of, in upload order for the queued ones
  // first (the order the queue runs), then the others by taken_ms.
  absl::StatusOr<std::vector<AttachmentInfo>> ListAttachments();
  // The path of a local file holding the attachment's bytes, for the app to show (read
  // only; valid until the next eviction: copy it to keep it). Bytes that are not here
  // (made elsewhere, or evicted) are downloaded first (online, resumable, verified by
  // their SHA-256) and cached under the budget. UNAVAILABLE offline when not here.
  absl::StatusOr<std::string> OpenAttachment(const std::string& id);
  // Changes an attachment's upload priority (higher first).
  absl::Status SetAttachmentPriority(const std::string& id, int32_t priority);
  // Puts a kFailed attachment back in the queue (attempts reset).
  absl::Status RetryAttachment(const std::string& id);
  // Uploads the queue now, on the calling thread, one attachment at a time in queue order
  // (each in its own calls, resuming at the server's committed offset). Needs a signed-in
  // user and the server; the sync runs this after its push. Stops at the first
  // connection failure (UNAVAILABLE: retried by the next sync); a refused attachment
  // (bad bytes, out of scope) becomes kFailed with the reason and the pass goes on.
  absl::StatusOr<AttachmentUploadSummary> UploadAttachments();
  // Byte-level progress of uploads and downloads (see AttachmentListener). Returns a
  // handle for RemoveAttachmentListener; after it returns the listener is not called again.
  int AddAttachmentListener(AttachmentListener listener);
  void RemoveAttachmentListener(int handle);
  // Bytes of attachments held here: all of them, and those the budget covers (uploaded
  // or downloaded, evictable).
  struct AttachmentStorage {
    int64_t total_bytes = 0;
    int64_t evictable_bytes = 0;
    int64_t budget_bytes = 0;
  };
  absl::StatusOr<AttachmentStorage> AttachmentStorageUse();

  // --- Conflict review (online; district coordinators and province officers) ----------
  // Conflicts the server recorded in the user's communes (or under `org_unit_id`), oldest
  // first; every page is fetched.
  absl::StatusOr<std::vector<kcnet::v1::Conflict>> ListConflicts(int64_t org_unit_id = 0,
                                                                 bool include_resolved = false);
  // Marks a conflict resolved, keeping the value that won or writing the overwritten one
  // back (a new edit every device receives on its next sync).
  absl::StatusOr<kcnet::v1::Conflict> ResolveConflict(uint64_t conflict_id, bool restore_loser);

  // --- Sync ----------------------------------------------------------------------------
  // Syncs now on the calling thread (waiting for a running background sync to finish
  // first): push everything pending, pull until caught up. Needs a signed-in user.
  // `progress` runs on the calling thread; it may call the Client, but a SyncNow from it
  // answers FAILED_PRECONDITION (the sync it reports on holds the queue). CANCELLED when
  // CancelSync(), SetSuspended(true) or Close() ended it, FAILED_PRECONDITION after Close().
  absl::StatusOr<SyncSummary> SyncNow(std::function<void(const SyncProgress&)> progress = {});
  // Starts/stops the background sync thread (idempotent). Stop cancels a running sync and
  // waits for the thread to end; FAILED_PRECONDITION when called from the SDK's own thread
  // (an observer), which that wait would deadlock.
  void StartBackgroundSync();
  absl::Status StopBackgroundSync();
  // Ends the running sync (SyncNow or background) and those waiting for their turn with
  // CANCELLED, at once, whatever the server does. Nothing already stored is undone; the
  // background sync tries again after `interval`. Any thread, also from callbacks.
  void CancelSync();
  // The app went to the background (true) or came back (false). Suspended: the background
  // sync starts no new attempt and the running sync is cancelled; SyncNow still works (a
  // background task the OS granted). Resuming retries at once. Any thread.
  void SetSuspended(bool suspended);
  // The network changed. Unreachable (false): the background sync waits instead of failing
  // and backing off. Reachable (true): it retries now instead of waiting out its backoff.
  void SetHostReachable(bool reachable);
  // Cancels any sync and the unary calls in flight (sign-in, conflict review), stops the
  // background sync, waits for the syncs of other threads to return, delivers the events
  // already queued, destroys the observers and returns: within about a second whatever
  // the server does (gRPC's cancellation is prompt). Afterwards syncs answer
  // FAILED_PRECONDITION; the store stays open (and locked) until the destructor.
  // Idempotent. FAILED_PRECONDITION from the SDK's own thread (an observer) or from a
  // sync's progress callback.
  absl::Status Close();
  SyncStatus Status();
  // Every bucket's checksum, for comparing a replica with the server (tools, tests).
  absl::StatusOr<std::vector<kcnet::v1::BucketCheckpoint>> Checkpoints();

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_INCLUDE_KCNET_CLIENT_H_
