// Directory's device credentials (directory.h, "Device credentials"): a long-lived,
// revocable secret per (user, device id) that buys short-lived tokens without the password.
// Kept apart from directory.cc, in a table of its own (on SQLite created on first use, so
// that files written by older servers need no migration).
#include <sodium.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/directory/directory.h"
#include "server/directory/secrets.h"

namespace kcnet::server {
namespace {

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

absl::StatusOr<std::string> Directory::IssueDeviceCredential(int64_t user_id,
                                                             absl::string_view device_id) {
  absl::Status status = CheckDeviceId(device_id);
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<UserEntry*> user = FindUserLocked(user_id, /*fresh=*/true);
  if (!user.ok()) return user.status();
  status = store_->EnsureDeviceCredentials();
  if (!status.ok()) return status;
  const int64_t now_ms = options_.clock->NowMs();
  std::string credential = internal::NewSecret();
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> done = store_->Exec(
      "UPDATE device_credentials SET revoked_ms = ?1, revoked_by = ?2 "
      "WHERE device_id = ?3 AND user_id = ?2 AND revoked_ms = 0",
      {DirValue::Int(now_ms), DirValue::Int(user_id), DirValue::Text(device_id)});
  if (!done.ok()) return done.status();
  done = store_->Exec(
      "INSERT INTO device_credentials(device_id, user_id, hash, created_ms, last_used_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?4)",
      {DirValue::Text(device_id), DirValue::Int(user_id),
       DirValue::Blob(internal::Sha256(credential)), DirValue::Int(now_ms)});
  if (!done.ok()) return done.status();
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
  status = store_->EnsureDeviceCredentials();
  if (!status.ok()) return status;
  // Every live credential of the device is compared, each in constant time, so the time
  // taken does not tell which bytes matched.
  int64_t row_id = 0;
  int64_t user_id = 0;
  {
    absl::StatusOr<DirRows> rows = store_->Query(
        "SELECT id, user_id, hash FROM device_credentials WHERE device_id = ?1 AND "
        "revoked_ms = 0",
        {DirValue::Text(device_id)});
    if (!rows.ok()) return rows.status();
    for (size_t r = 0; r < rows->size(); ++r) {
      const std::string stored = rows->Blob(r, 2);
      if (stored.size() == presented.size() &&
          sodium_memcmp(stored.data(), presented.data(), presented.size()) == 0) {
        row_id = rows->Int(r, 0);
        user_id = rows->Int(r, 1);
      }
    }
  }
  if (user_id != 0 && !users_.contains(user_id) && store_->shared()) {
    status = LoadLocked();  // a user created on another instance a moment ago
    if (!status.ok()) return status;
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
  absl::StatusOr<std::unique_ptr<DirTransaction>> tx = DirTransaction::Begin(store_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> done = store_->Exec(
      "INSERT INTO tokens(hash, user_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
      {DirValue::Blob(token_hash), DirValue::Int(user_id), DirValue::Int(now_ms),
       DirValue::Int(result.expires_ms)});
  if (!done.ok()) return done.status();
  done = store_->Exec("UPDATE device_credentials SET last_used_ms = ?1 WHERE id = ?2",
                      {DirValue::Int(now_ms), DirValue::Int(row_id)});
  if (!done.ok()) return done.status();
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
  absl::Status status = store_->EnsureDeviceCredentials();
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> revoked = store_->Exec(
      "UPDATE device_credentials SET revoked_ms = ?1, revoked_by = ?2 WHERE revoked_ms = 0 "
      "AND (?3 = '' OR device_id = ?3) AND (?4 = 0 OR user_id = ?4)",
      {DirValue::Int(options_.clock->NowMs()), DirValue::Int(by), DirValue::Text(device_id),
       DirValue::Int(user_id)});
  if (!revoked.ok()) return revoked.status();
  return static_cast<int>(*revoked);
}

}  // namespace kcnet::server
