// The server's directory: the org-unit tree, the users and their assignments, password
// sign-in and bearer tokens, kept in one SQLite file of its own or, for several server
// instances, in PostgreSQL (the storage seam: directory_store.h; one set of rules here for
// both).
//
// Org units have stable ids given by the system; the official code, name, level and
// parent are attributes (codes are reused across reorganisations, see DOMAIN.md). The
// whole tree, the users and the live tokens are cached in memory, so tree checks and
// Authenticate() cost a hash lookup. Another process (kcnet-admin) may change the same
// file while a server has it open: every call first checks SQLite's data_version and
// reloads the caches when another connection has committed, so a user deactivated by the
// admin tool is refused at once. On a shared store (PostgreSQL) every account change and
// revocation bumps a generation counter in its transaction; the caches check it at most
// every shared_refresh_interval (so a revocation on one instance is refused by the others
// within that), and a token missing from the cache is looked up in the store, so a token
// issued by one instance is accepted by every other at once.
//
// Passwords are hashed with Argon2id (libsodium crypto_pwhash_str). Tokens are 32 random
// bytes, base64url-encoded; only their SHA-256 is stored. Repeated failed sign-ins for a
// username lock it out for a window that doubles with each further failure. An attempt is
// counted before its password is hashed (so parallel guesses cannot all pass the check),
// and the counters of existing accounts are kept in the store, counted by one atomic
// upsert (a restart does not clear a lock-out; instances on one store share the count).
// Unknown usernames are counted in memory, per process.
//
// Every account change (create, role and org units, profile, password reset,
// deactivation, activation) appends an audit entry in the same transaction: who, when,
// what changed (never a password). ListAudit() reads them.
//
// Thread-safety: Directory is thread-safe. One absl::Mutex guards the connection and the
// caches; the slow password hashing runs outside it, so sign-ins do not stall
// Authenticate().
#ifndef KCNET_SERVER_DIRECTORY_DIRECTORY_H_
#define KCNET_SERVER_DIRECTORY_DIRECTORY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kcnet/v1/domain.pb.h"
#include "server/directory/directory_store.h"
#include "sync/hlc.h"

namespace kcnet::server {

// The version of the directory file's layout (PRAGMA user_version). A file written by a
// newer kcnet is refused at open; older files are migrated step by step.
inline constexpr int kDirectorySchemaVersion = 2;

// Argon2id cost parameters (libsodium's values, checked against sodium.h in the .cc).
inline constexpr uint64_t kArgon2OpsLimitInteractive = 2;
inline constexpr size_t kArgon2MemLimitInteractive = size_t{64} << 20;
inline constexpr uint64_t kArgon2OpsLimitMin = 1;  // tests only: fast, weak
inline constexpr size_t kArgon2MemLimitMin = 8192;

struct DirectoryOptions {
  sync::Clock* clock = sync::SystemClock();  // must outlive the Directory
  absl::Duration token_ttl = absl::Hours(12);
  // Argon2id cost of new password hashes. A hash made with other costs still verifies
  // and is re-hashed with these at the next successful sign-in.
  uint64_t password_ops_limit = kArgon2OpsLimitInteractive;
  size_t password_mem_limit = kArgon2MemLimitInteractive;
  // Lock-out: after `lockout_after_failures` consecutive failed sign-ins for a username,
  // attempts are refused for `lockout_initial`, doubling with each further failure up to
  // `lockout_max`. A streak whose last failure is over 15 minutes old is forgotten.
  int lockout_after_failures = 5;
  absl::Duration lockout_initial = absl::Seconds(1);
  absl::Duration lockout_max = absl::Minutes(5);
  // On a shared store (PostgreSQL): how often the caches ask whether another instance
  // changed accounts or revoked tokens (one small query). Zero: at every call.
  absl::Duration shared_refresh_interval = absl::Milliseconds(250);
};

// Who makes an account change, for the audit trail. The default is a local operator
// (kcnet-admin on the server's machine), which has no account.
struct AuditActor {
  int64_t user_id = 0;
  std::string username = "local-admin";
};

// One audit entry: `actor` (user id 0 for a local operator) did `action` to user
// `target_user_id` at `at_ms`; `details` says what changed ("role: a -> b; ...").
struct AuditEntry {
  int64_t id = 0;
  int64_t at_ms = 0;
  int64_t actor_id = 0;
  std::string actor;
  std::string action;  // create_user, assign_user, update_profile, reset_password, ...
  int64_t target_user_id = 0;
  std::string details;
};

// Checks a phone number: at most 32 of "0-9 + - space ( )". INVALID_ARGUMENT naming "phone".
absl::Status CheckPhone(absl::string_view phone);

// The caller behind a valid token: who it is and where it works.
struct Principal {
  int64_t user_id = 0;
  std::string username;
  kcnet::v1::Role role = kcnet::v1::ROLE_UNSPECIFIED;
  std::vector<int64_t> org_unit_ids;  // roots of the subtrees the user works in
};

// What a successful Login() returns.
struct LoginResult {
  std::string token;       // the bearer token; shown once, never stored in clear
  int64_t expires_ms = 0;  // Unix ms, by the directory's clock
  kcnet::v1::User user;
};

// One org unit to add by official codes (see AddOrgUnits()).
struct NewOrgUnit {
  std::string code;
  std::string name;
  kcnet::v1::OrgUnitLevel level = kcnet::v1::ORG_UNIT_LEVEL_UNSPECIFIED;
  std::string parent_code;  // empty for a root
};

// Which users ListUsers() returns.
struct UserFilter {
  // Only users assigned to at least one unit inside these subtrees; empty: everyone.
  std::vector<int64_t> within;
  bool include_inactive = true;
};

class Directory {
 public:
  // Opens (creating if needed) the directory file at `path` (":memory:" works), migrating
  // an older layout. Fails with FAILED_PRECONDITION when the file was written by a newer
  // kcnet or is some other SQLite file, with INTERNAL when libsodium cannot start, or with
  // the storage error.
  static absl::StatusOr<std::unique_ptr<Directory>> Open(const std::string& path,
                                                         DirectoryOptions options = {});
  // The same on any store (directory_store.h; PostgreSQL: pg_directory_store.h).
  static absl::StatusOr<std::unique_ptr<Directory>> Open(std::unique_ptr<DirectoryStore> store,
                                                         DirectoryOptions options = {});
  ~Directory();
  Directory(const Directory&) = delete;
  Directory& operator=(const Directory&) = delete;

  // ---- Org units ------------------------------------------------------------------

  // The unit with this id, or NOT_FOUND.
  absl::StatusOr<kcnet::v1::OrgUnit> GetOrgUnit(int64_t id);
  // The names of the units with these ids, by id, read under one lock and one freshness
  // check (a national report names 3,321 communes); unknown ids are left out.
  absl::StatusOr<absl::flat_hash_map<int64_t, std::string>> OrgUnitNames(
      const std::vector<int64_t>& ids);
  // The unit currently holding this official code, or NOT_FOUND.
  absl::StatusOr<kcnet::v1::OrgUnit> FindByCode(absl::string_view code);
  // The children of `parent_id` (0: the roots), ordered by code. NOT_FOUND when the
  // parent does not exist.
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> ListChildren(int64_t parent_id);
  // True when `unit_id` is `root_id` or one of its descendants; false when either is
  // unknown.
  bool IsWithin(int64_t unit_id, int64_t root_id);
  // Every unit id in the union of the subtrees of `roots`, ascending. NOT_FOUND when a
  // root does not exist.
  absl::StatusOr<std::vector<int64_t>> Subtree(const std::vector<int64_t>& roots);
  // The commune-level unit ids (the sync buckets) in the union of the subtrees of
  // `roots`, ascending. NOT_FOUND when a root does not exist.
  absl::StatusOr<std::vector<int64_t>> Communes(const std::vector<int64_t>& roots);
  // The number of org units.
  size_t OrgUnitCount();

  // Adds one unit under `parent_id` (0: a root), effective from now. Fails with
  // INVALID_ARGUMENT naming the field (code: 1-32 of [A-Za-z0-9._-]; name: 1-200 bytes of
  // UTF-8 without control characters; level: a known level, deeper than the parent's),
  // NOT_FOUND for an unknown parent, ALREADY_EXISTS when the code is taken.
  absl::StatusOr<kcnet::v1::OrgUnit> CreateOrgUnit(absl::string_view code, absl::string_view name,
                                                   kcnet::v1::OrgUnitLevel level,
                                                   int64_t parent_id);
  // Adds `units` in one transaction, effective from now, parents before children in
  // whatever order they are listed; a parent_code names a unit of `units` or of the
  // directory. Returns the new units in the order given. All or nothing: fails with the
  // same errors as CreateOrgUnit() (naming the unit's code) and nothing is added.
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> AddOrgUnits(const std::vector<NewOrgUnit>& units);

  // ---- Users ----------------------------------------------------------------------

  // Creates an active user. Fails with INVALID_ARGUMENT naming the field (username: 3-64
  // of [a-z0-9._-]; display_name: 1-200 bytes of UTF-8; password: 8-1024 bytes; role: not
  // unspecified; org_unit_ids: at least one; phone: see CheckPhone()), NOT_FOUND for an
  // unknown org unit, ALREADY_EXISTS when the username is taken; nothing is stored then.
  // Every change below is audited as made by `by`.
  absl::StatusOr<kcnet::v1::User> CreateUser(absl::string_view username,
                                             absl::string_view display_name,
                                             absl::string_view password, kcnet::v1::Role role,
                                             const std::vector<int64_t>& org_unit_ids,
                                             absl::string_view phone = {},
                                             const AuditActor& by = {});
  // Replaces a user's role and org units; tokens stay valid and carry the new
  // assignment. Fails like CreateUser() for role and org units, NOT_FOUND for an unknown
  // user.
  absl::StatusOr<kcnet::v1::User> AssignUser(int64_t user_id, kcnet::v1::Role role,
                                             const std::vector<int64_t>& org_unit_ids,
                                             const AuditActor& by = {});
  // Sets a new password, revokes all the user's tokens and device credentials (every
  // tablet signs in again with the new password) and clears its lock-out. Fails
  // with INVALID_ARGUMENT (password) or NOT_FOUND.
  absl::Status ResetPassword(int64_t user_id, absl::string_view new_password,
                             const AuditActor& by = {});
  // Deactivates the user and revokes its tokens; sign-in is refused from then on.
  // Idempotent. Fails with NOT_FOUND for an unknown user.
  absl::Status DeactivateUser(int64_t user_id, const AuditActor& by = {});
  // Lets a deactivated user sign in again (its old tokens stay revoked). Idempotent.
  // Fails with NOT_FOUND for an unknown user.
  absl::Status ActivateUser(int64_t user_id, const AuditActor& by = {});
  // Changes a user's display name and phone. INVALID_ARGUMENT names the field (display
  // name: 1-200 bytes of UTF-8 without control characters; phone: at most 32 of
  // "0-9 + - space ( )"), NOT_FOUND for an unknown user; nothing changes on failure.
  absl::StatusOr<kcnet::v1::User> UpdateProfile(int64_t user_id, absl::string_view display_name,
                                                absl::string_view phone, const AuditActor& by = {});
  // Audit entries with id > after_id, oldest first, at most `limit`.
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(int64_t after_id, size_t limit);
  // The user with this id / username, or NOT_FOUND.
  absl::StatusOr<kcnet::v1::User> GetUser(int64_t id);
  absl::StatusOr<kcnet::v1::User> FindUser(absl::string_view username);
  // Users matching `filter`, ordered by username. NOT_FOUND when a `within` unit is
  // unknown.
  absl::StatusOr<std::vector<kcnet::v1::User>> ListUsers(const UserFilter& filter = {});

  // ---- Sign-in and tokens ---------------------------------------------------------

  // Checks the password and issues a token valid for token_ttl. Fails with
  // UNAUTHENTICATED and the same message for an unknown username and a wrong password
  // (and for a deactivated user, unless the password is right), or RESOURCE_EXHAUSTED
  // saying when to retry while the username is locked out (the password is then not
  // checked).
  absl::StatusOr<LoginResult> Login(absl::string_view username, absl::string_view password);
  // The principal behind `token`, or UNAUTHENTICATED when the token is unknown, expired,
  // logged out, or its user was deactivated. A hash lookup; no password hashing.
  absl::StatusOr<Principal> Authenticate(absl::string_view token);
  // Revokes `token`. OK also when it was already unknown or expired.
  absl::Status Logout(absl::string_view token);

  // ---- Device credentials (device_credentials.cc, table device_credentials) -------
  // A device credential lets a tablet that was offline for months get new tokens without
  // the password: 32 random bytes (base64url), bound to one user and one device id, stored
  // only as its SHA-256, valid until revoked (sign-out, an administrator). Created with
  // the table on first use, so files of older servers need no migration.
  //
  // Issues a credential for `user_id` on `device_id` (1-128 bytes), revoking the user's
  // earlier one for that device id. INVALID_ARGUMENT (device_id), NOT_FOUND (user_id);
  // nothing changes on failure.
  absl::StatusOr<std::string> IssueDeviceCredential(int64_t user_id, absl::string_view device_id);
  // A new token (token_ttl) for the user of a live credential of `device_id`. The
  // credential is compared in constant time. UNAUTHENTICATED with one message for an
  // unknown, revoked or other device's credential; UNAUTHENTICATED naming the account
  // when its user was deactivated.
  absl::StatusOr<LoginResult> RefreshToken(absl::string_view device_id,
                                           absl::string_view credential);
  // Revokes the live credentials of `device_id` (empty: any device) of `user_id` (0: any
  // user); at least one must be given (INVALID_ARGUMENT). `by` is recorded with each
  // revocation. Returns how many were revoked.
  absl::StatusOr<int> RevokeDeviceCredentials(absl::string_view device_id, int64_t user_id,
                                              int64_t by);

 private:
  struct UserEntry {
    kcnet::v1::User user;
    std::string password_hash;
  };
  struct TokenEntry {
    int64_t user_id = 0;
    int64_t expires_ms = 0;
  };
  // The failure streak of a username that is not an account (accounts: in the store).
  struct FailureEntry {
    int failures = 0;
    int64_t last_failure_ms = 0;
    int64_t locked_until_ms = 0;
  };

  Directory(std::unique_ptr<DirectoryStore> store, DirectoryOptions options);

  // Reloads every cache from the store.
  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reloads when another connection committed since the last load. On a shared store the
  // question is asked at most every shared_refresh_interval, unless `force`.
  absl::Status RefreshLocked(bool force = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inside a write transaction: marks a change other instances must reload for. Returns
  // the store's new version (-1: the store needs no marks).
  absl::StatusOr<int64_t> MarkChangeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After the commit of a change marked `version` whose cache updates the caller makes.
  void ChangeCommittedLocked(int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A shared store: caches the live token with this hash when the store has it.
  absl::Status LookUpTokenLocked(const std::string& token_hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CacheOrgUnitLocked(const kcnet::v1::OrgUnit& unit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Validates a new unit against the cache; `parent` is null for a root.
  absl::Status CheckNewOrgUnitLocked(absl::string_view code, absl::string_view name,
                                     kcnet::v1::OrgUnitLevel level,
                                     const kcnet::v1::OrgUnit* parent)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<kcnet::v1::OrgUnit> InsertOrgUnitLocked(absl::string_view code,
                                                         absl::string_view name,
                                                         kcnet::v1::OrgUnitLevel level,
                                                         int64_t parent_id, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAssignmentLocked(kcnet::v1::Role role, const std::vector<int64_t>& units)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteAssignmentLocked(int64_t user_id, const std::vector<int64_t>& units)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RevokeTokensLocked(int64_t user_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RevokeDeviceCredentials() inside the caller's transaction (device_credentials.cc).
  absl::StatusOr<int> RevokeDeviceCredentialsLocked(absl::string_view device_id, int64_t user_id,
                                                    int64_t by) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DeleteExpiredTokensLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts one sign-in attempt as failed (before its hash is checked): in the store for an
  // account, in memory for another username. Returns the end of the lock-out (Unix ms)
  // when the username is locked out (the attempt is then not counted), else 0.
  absl::StatusOr<int64_t> RecordFailureLocked(const std::string& username, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The end of the lock-out after `failures` consecutive failures at now_ms (0: none).
  int64_t LockedUntilMs(int failures, int64_t now_ms) const;
  // Forgets the failure streak of `username`, in memory and in the store.
  absl::Status ClearFailuresLocked(const std::string& username) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AuditLocked(const AuditActor& by, absl::string_view action, int64_t target,
                           absl::string_view details) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<int64_t> SubtreeLocked(const std::vector<int64_t>& roots)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsWithinLocked(int64_t unit_id, int64_t root_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refreshes from the store and finds the user; NOT_FOUND ("user_id: ...") when absent.
  // `fresh` (writes): a shared store is asked even within the refresh interval.
  absl::StatusOr<UserEntry*> FindUserLocked(int64_t user_id, bool fresh = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On a shared store, after a cache miss: reloads when another instance changed
  // something since (created the missing user or unit a moment ago). Nothing on a file.
  absl::Status RefreshOnMissLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The hash of a password nobody has, verified for unknown usernames so that they take
  // as long as known ones.
  const std::string& DummyHash();
  absl::StatusOr<std::string> HashPassword(absl::string_view password) const;

  const DirectoryOptions options_;
  std::once_flag dummy_once_;
  std::string dummy_hash_;

  absl::Mutex mu_;
  std::unique_ptr<DirectoryStore> store_ ABSL_GUARDED_BY(mu_);
  int64_t data_version_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time last_version_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<int64_t, kcnet::v1::OrgUnit> units_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int64_t> unit_by_code_ ABSL_GUARDED_BY(mu_);
  // parent id (0 for roots) -> child ids, in no particular order.
  absl::flat_hash_map<int64_t, std::vector<int64_t>> children_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, UserEntry> users_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int64_t> user_by_name_ ABSL_GUARDED_BY(mu_);
  // SHA-256 of the token -> its user and expiry.
  absl::flat_hash_map<std::string, TokenEntry> tokens_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, FailureEntry> failures_ ABSL_GUARDED_BY(mu_);
  int64_t last_token_sweep_ms_ ABSL_GUARDED_BY(mu_) = 0;
};

// "commune_collaborator", ... ; "unspecified" for anything else.
std::string RoleName(kcnet::v1::Role role);
// The role named by RoleName(), or INVALID_ARGUMENT listing the valid names.
absl::StatusOr<kcnet::v1::Role> ParseRole(absl::string_view name);
// "province", "district", "commune", "nation"; "unspecified" for anything else.
std::string LevelName(kcnet::v1::OrgUnitLevel level);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_DIRECTORY_DIRECTORY_H_
