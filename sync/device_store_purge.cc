// DeviceStore::PurgeAll (device_store.h): the store forgets its user's data, for a
// sign-out or a user switch on a shared tablet; and WithAppTables, the access to the
// tables of the store's user (app_tables) that PurgeAll empties too. Kept apart from
// device_store.cc.
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "sync/device_store.h"
#include "sync/sqlite.h"

namespace kcnet::sync {

absl::Status DeviceStore::PurgeAll(bool restart_sequences) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  std::set<int64_t> buckets;
  absl::StatusOr<std::vector<int64_t>> held = records_->Buckets();
  if (!held.ok()) return held.status();
  buckets.insert(held->begin(), held->end());
  {
    absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT bucket FROM _cursors");
    if (!stmt.ok()) return stmt.status();
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) {
        (*stmt)->Reset();
        return has.status();
      }
      if (!*has) break;
      buckets.insert((*stmt)->ColumnInt(0));
    }
    (*stmt)->Reset();
  }
  absl::Status status;
  for (int64_t bucket : buckets) {
    status = records_->DeleteBucket(bucket);
    if (!status.ok()) return status;
  }
  // Rows of any other bucket too (none are expected), and every search row.
  for (const RecordTypeSpec& type : schema_->types()) {
    status = db_->Exec(absl::StrCat("DELETE FROM ", type.name));
    if (!status.ok()) return status;
  }
  for (const SearchSpec& spec : options_.search) {
    status = db_->Exec(absl::StrCat("DELETE FROM _search_", schema_->Find(spec.type)->name));
    if (!status.ok()) return status;
  }
  for (const std::string& table : options_.app_tables) {
    status = db_->Exec(absl::StrCat("DELETE FROM ", table));
    if (!status.ok()) return status;
  }
  status = db_->Exec(
      "DELETE FROM _buckets; DELETE FROM _cursors; DELETE FROM _outbox; DELETE FROM _reports; "
      "DELETE FROM _pending; DELETE FROM _unknown;");
  if (!status.ok()) return status;
  if (restart_sequences) {
    status = records_->SetMeta("last_seq", 0);
    if (!status.ok()) return status;
  }
  status = (*txn)->Commit();
  if (!status.ok()) return status;
  if (restart_sequences) last_seq_ = 0;
  return absl::OkStatus();
}

absl::Status DeviceStore::WithAppTables(bool write, const std::function<absl::Status(Db&)>& fn) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn =
      Transaction::Begin(db_.get(), write ? Transaction::Kind::kWrite : Transaction::Kind::kRead);
  if (!txn.ok()) return txn.status();
  absl::Status status = fn(*db_);
  if (!status.ok()) return status;  // rolled back
  return (*txn)->Commit();
}

}  // namespace kcnet::sync
