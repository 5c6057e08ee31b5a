#include "server/attachments/references.h"

#include "absl/strings/str_cat.h"

namespace kcnet::server {

absl::StatusOr<std::unique_ptr<RecordReferences>> RecordReferences::Open(
    const std::string& records_path) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db =
      sync::Db::Open(records_path, {.durable = false, .read_only = true});
  if (!db.ok()) return db.status();
  absl::StatusOr<int64_t> has = (*db)->QueryInt(
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'attachment'");
  if (!has.ok()) return has.status();
  if (*has == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(records_path, ": no attachment table (start kcnet-server once to add it)"));
  }
  return std::unique_ptr<RecordReferences>(new RecordReferences(*std::move(db)));
}

absl::StatusOr<std::vector<BlobReference>> RecordReferences::Referencing(
    const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<sync::Statement*> st =
      db_->Prepare("SELECT commune_id, media_type FROM attachment WHERE sha256 = ? AND _del = 0");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, sha256);
  std::vector<BlobReference> out;
  while (true) {
    absl::StatusOr<bool> row = (*st)->Step();
    if (!row.ok()) {
      (*st)->Reset();
      return row.status();
    }
    if (!*row) break;
    out.push_back({(*st)->ColumnInt(0), std::string((*st)->ColumnText(1))});
  }
  (*st)->Reset();
  return out;
}

absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> RecordReferences::Counts() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<sync::Statement*> st = db_->Prepare(
      "SELECT sha256, count(*) FROM attachment WHERE _del = 0 AND sha256 IS NOT NULL "
      "GROUP BY sha256");
  if (!st.ok()) return st.status();
  absl::flat_hash_map<std::string, int64_t> out;
  while (true) {
    absl::StatusOr<bool> row = (*st)->Step();
    if (!row.ok()) {
      (*st)->Reset();
      return row.status();
    }
    if (!*row) break;
    out[std::string((*st)->ColumnText(0))] = (*st)->ColumnInt(1);
  }
  (*st)->Reset();
  return out;
}

absl::StatusOr<std::vector<BlobReference>> RefreshedReferences::Referencing(
    const std::string& sha256) {
  absl::StatusOr<std::vector<BlobReference>> found = inner_->Referencing(sha256);
  if (!found.ok() || !found->empty()) return found;
  if (absl::Status status = refresh_(); !status.ok()) return status;
  return inner_->Referencing(sha256);
}

absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> RefreshedReferences::Counts() {
  if (absl::Status status = refresh_(); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("references: cannot refresh: ", status.message()));
  }
  return inner_->Counts();
}

}  // namespace kcnet::server
