// Directory's device credentials (directory.h, "Device credentials"): a long-lived,
// revocable secret per (user, device id) that buys short-lived tokens without the password.
// Kept apart from directory.cc, in a table of its own created on first use, so that files
// written by older servers need no migration and the rest of the directory is untouched.
#include <sodium.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/directory/directory.h"
#include "server/directory/secrets.h"
#include "sync/sqlite.h"

namespace kcnet::server {
namespace {

using sync::Statement;
using sync::Transaction;

constexpr size_t kMaxDeviceIdBytes = 128;

// One message for every refused credential: a revoked one reads like one never issued.
constexpr absl::string_view kBadDeviceCredential =
    "device_credential: unknown or revoked for this device; sign in again with the password";

absl::Status CheckDeviceId(absl::string_view device_id) {
  if (device_id.empty() || device_id.size() > kMaxDeviceIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_id: must be 1-128 bytes, got ", device_id.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Directory::EnsureDeviceCredentialsLocked() {
  if (device_credentials_ready_) return absl::OkStatus();
  // Revoked rows stay (who revoked, when) for the audit; only live ones are looked up.
  absl::Status status = db_->Exec(
      "CREATE TABLE IF NOT EXISTS device_credentials("
      "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  device_id TEXT NOT NULL,"
      "  user_id INTEGER NOT NULL REFERENCES users(id),"
      "  hash BLOB NOT NULL,"
      "  created_ms INTEGER NOT NULL,"
      "  last_used_ms INTEGER NOT NULL,"
      "  revoked_ms INTEGER NOT NULL DEFAULT 0,"
      "  revoked_by INTEGER NOT NULL DEFAULT 0);"
      "CREATE INDEX IF NOT EXISTS device_credentials_device ON device_credentials(device_id);"
      "CREATE INDEX IF NOT EXISTS device_credentials_user ON device_credentials(user_id);");
  if (!status.ok()) return status;
  device_credentials_ready_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> Directory::IssueDeviceCredential(int64_t user_id,
                                                             absl::string_view device_id) {
  absl::Status status = CheckDeviceId(device_id);
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<UserEntry*> user = FindUserLocked(user_id);
  if (!user.ok()) return user.status();
  status = EnsureDeviceCredentialsLocked();
  if (!status.ok()) return status;
  const int64_t now_ms = options_.clock->NowMs();
  std::string credential = internal::NewSecret();
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<Statement*> revoke = db_->Prepare(
        "UPDATE device_credentials SET revoked_ms = ?1, revoked_by = ?2 "
        "WHERE device_id = ?3 AND user_id = ?2 AND revoked_ms = 0");
    if (!revoke.ok()) return revoke.status();
    internal::ResetOnExit reset(*revoke);
    (*revoke)->BindInt(1, now_ms);
    (*revoke)->BindInt(2, user_id);
    (*revoke)->BindText(3, device_id);
    status = (*revoke)->Run();
    if (!status.ok()) return status;
  }
  {
    absl::StatusOr<Statement*> insert = db_->Prepare(
        "INSERT INTO device_credentials(device_id, user_id, hash, created_ms, last_used_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?4)");
    if (!insert.ok()) return insert.status();
    internal::ResetOnExit reset(*insert);
    (*insert)->BindText(1, device_id);
    (*insert)->BindInt(2, user_id);
    (*insert)->BindBlob(3, internal::Sha256(credential));
    (*insert)->BindInt(4, now_ms);
    status = (*insert)->Run();
    if (!status.ok()) return status;
  }
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  return credential;
}

absl::StatusOr<LoginResult> Directory::RefreshToken(absl::string_view device_id,
                                                    absl::string_view credential) {
  if (!CheckDeviceId(device_id).ok() || credential.empty() || credential.size() > 1024) {
    return absl::UnauthenticatedError(kBadDeviceCredential);
  }
  const std::string presented = internal::Sha256(credential);
  absl::MutexLock lock(&mu_);
  absl::Status status = RefreshLocked();
  if (!status.ok()) return status;
  status = EnsureDeviceCredentialsLocked();
  if (!status.ok()) return status;
  // Every live credential of the device is compared, each in constant time, so the time
  // taken does not tell which bytes matched.
  int64_t row_id = 0;
  int64_t user_id = 0;
  {
    absl::StatusOr<Statement*> select = db_->Prepare(
        "SELECT id, user_id, hash FROM device_credentials WHERE device_id = ?1 AND "
        "revoked_ms = 0");
    if (!select.ok()) return select.status();
    internal::ResetOnExit reset(*select);
    (*select)->BindText(1, device_id);
    while (true) {
      absl::StatusOr<bool> has = (*select)->Step();
      if (!has.ok()) return has.status();
      if (!*has) break;
      const absl::string_view stored = (*select)->ColumnBlob(2);
      if (stored.size() == presented.size() &&
          sodium_memcmp(stored.data(), presented.data(), presented.size()) == 0) {
        row_id = (*select)->ColumnInt(0);
        user_id = (*select)->ColumnInt(1);
      }
    }
  }
  if (row_id == 0) return absl::UnauthenticatedError(kBadDeviceCredential);
  auto user = users_.find(user_id);
  if (user == users_.end()) return absl::UnauthenticatedError(kBadDeviceCredential);
  if (!user->second.user.active()) {
    return absl::UnauthenticatedError(
        absl::StrCat("account '", user->second.user.username(), "' is deactivated"));
  }
  const int64_t now_ms = options_.clock->NowMs();
  LoginResult result;
  result.token = internal::NewSecret();
  result.expires_ms = now_ms + absl::ToInt64Milliseconds(options_.token_ttl);
  const std::string token_hash = internal::Sha256(result.token);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  {
    absl::StatusOr<Statement*> insert = db_->Prepare(
        "INSERT INTO tokens(hash, user_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)");
    if (!insert.ok()) return insert.status();
    internal::ResetOnExit reset(*insert);
    (*insert)->BindBlob(1, token_hash);
    (*insert)->BindInt(2, user_id);
    (*insert)->BindInt(3, now_ms);
    (*insert)->BindInt(4, result.expires_ms);
    status = (*insert)->Run();
    if (!status.ok()) return status;
  }
  {
    absl::StatusOr<Statement*> used =
        db_->Prepare("UPDATE device_credentials SET last_used_ms = ?1 WHERE id = ?2");
    if (!used.ok()) return used.status();
    internal::ResetOnExit reset(*used);
    (*used)->BindInt(1, now_ms);
    (*used)->BindInt(2, row_id);
    status = (*used)->Run();
    if (!status.ok()) return status;
  }
  status = (*tx)->Commit();
  if (!status.ok()) return status;
  tokens_[token_hash] = TokenEntry{user_id, result.expires_ms};
  result.user = user->second.user;
  return result;
}

absl::StatusOr<int> Directory::RevokeDeviceCredentials(absl::string_view device_id, int64_t user_id,
                                                       int64_t by) {
  if (device_id.empty() && user_id == 0) {
    return absl::InvalidArgumentError("device_id: required when user_id is 0");
  }
  if (!device_id.empty()) {
    absl::Status status = CheckDeviceId(device_id);
    if (!status.ok()) return status;
  }
  if (user_id < 0) return absl::InvalidArgumentError("user_id: must be >= 0");
  absl::MutexLock lock(&mu_);
  return RevokeDeviceCredentialsLocked(device_id, user_id, by);
}

absl::StatusOr<int> Directory::RevokeDeviceCredentialsLocked(absl::string_view device_id,
                                                             int64_t user_id, int64_t by) {
  absl::Status status = EnsureDeviceCredentialsLocked();
  if (!status.ok()) return status;
  absl::StatusOr<Statement*> revoke = db_->Prepare(
      "UPDATE device_credentials SET revoked_ms = ?1, revoked_by = ?2 WHERE revoked_ms = 0 "
      "AND (?3 = '' OR device_id = ?3) AND (?4 = 0 OR user_id = ?4)");
  if (!revoke.ok()) return revoke.status();
  internal::ResetOnExit reset(*revoke);
  (*revoke)->BindInt(1, options_.clock->NowMs());
  (*revoke)->BindInt(2, by);
  (*revoke)->BindText(3, device_id);
  (*revoke)->BindInt(4, user_id);
  status = (*revoke)->Run();
  if (!status.ok()) return status;
  return static_cast<int>(db_->Changes());
}

}  // namespace kcnet::server
