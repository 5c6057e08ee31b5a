#include "server/attachments/attachment_db.h"

#include <iterator>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "sync/sqlite.h"

namespace kcnet::server {
namespace {

using sync::Statement;

constexpr int64_t kApplicationId = 0x4B434154;  // "KCAT"

// kMigrations[v] takes the layout from version v to v + 1. Never edit a shipped step.
constexpr const char* kMigrations[] = {
    // 0 -> 1: upload sessions, the provinces' blobs, the garbage collector's marks.
    "CREATE TABLE uploads("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  province_id INTEGER NOT NULL,"
    "  attachment_id TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  media_type TEXT NOT NULL,"
    "  committed INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL);"
    "CREATE INDEX uploads_owner ON uploads(user_id, province_id, sha256);"
    "CREATE TABLE province_blobs("
    "  province_id INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY(province_id, sha256)) WITHOUT ROWID;"
    "CREATE INDEX province_blobs_sha ON province_blobs(sha256);"
    "CREATE INDEX province_blobs_user ON province_blobs(user_id);"
    "CREATE TABLE gc_marks(sha256 TEXT PRIMARY KEY NOT NULL, since_ms INTEGER NOT NULL)"
    "  WITHOUT ROWID;",
};
static_assert(std::size(kMigrations) == kAttachmentsSchemaVersion);

constexpr char kUploadColumns[] =
    "id, user_id, province_id, attachment_id, sha256, size, media_type, committed, created_ms, "
    "expires_ms";

UploadSession SessionFrom(const Statement& st) {
  UploadSession s;
  s.id = std::string(st.ColumnText(0));
  s.user_id = st.ColumnInt(1);
  s.province_id = st.ColumnInt(2);
  s.attachment_id = std::string(st.ColumnText(3));
  s.sha256 = std::string(st.ColumnText(4));
  s.size = st.ColumnInt(5);
  s.media_type = std::string(st.ColumnText(6));
  s.committed = st.ColumnInt(7);
  s.created_ms = st.ColumnInt(8);
  s.expires_ms = st.ColumnInt(9);
  return s;
}

// Steps a prepared query and returns its first row as a session, if any.
absl::StatusOr<std::optional<UploadSession>> OneSession(Statement* st) {
  absl::StatusOr<bool> row = st->Step();
  if (!row.ok()) return row.status();
  std::optional<UploadSession> out;
  if (*row) out = SessionFrom(*st);
  st->Reset();
  return out;
}

// attachments.db: one connection behind a mutex.
class SqliteAttachmentDb : public AttachmentDb {
 public:
  explicit SqliteAttachmentDb(std::unique_ptr<sync::Db> db) : db_(std::move(db)) {}

  absl::Status CreateUpload(const UploadSession& session) override;
  absl::StatusOr<std::optional<UploadSession>> GetUpload(const std::string& id) override;
  absl::StatusOr<std::optional<UploadSession>> FindUpload(int64_t user_id, int64_t province_id,
                                                          const std::string& sha256) override;
  absl::Status SetCommitted(const std::string& id, int64_t committed) override;
  absl::Status DeleteUpload(const std::string& id) override;
  absl::StatusOr<std::vector<UploadSession>> AllUploads() override;
  absl::StatusOr<bool> ProvinceHas(int64_t province_id, const std::string& sha256) override;
  absl::Status AddProvinceBlob(int64_t province_id, const std::string& sha256, int64_t size,
                               int64_t user_id, int64_t now_ms) override;
  absl::Status FinishUpload(const std::string& upload_id, int64_t province_id,
                            const std::string& sha256, int64_t size, int64_t user_id,
                            int64_t now_ms) override;
  absl::StatusOr<int64_t> UserBytes(int64_t user_id, const std::string& except_upload) override;
  absl::StatusOr<int64_t> ProvinceBytes(int64_t province_id,
                                        const std::string& except_upload) override;
  absl::StatusOr<int64_t> MarkUnreferenced(const std::string& sha256, int64_t now_ms) override;
  absl::Status ClearMark(const std::string& sha256) override;
  absl::Status ForgetBlob(const std::string& sha256) override;

 private:
  absl::StatusOr<int64_t> SumLocked(const std::string& sql, int64_t key,
                                    const std::string& except_upload)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::unique_ptr<sync::Db> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<AttachmentDb>> AttachmentDb::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path);
  if (!db.ok()) return db.status();
  absl::Status status = sync::MigrateAppFile(**db, {.application_id = kApplicationId,
                                                    .name = "kcnet attachments file",
                                                    .schema = "attachments",
                                                    .migrations = kMigrations,
                                                    .version = kAttachmentsSchemaVersion});
  if (!status.ok()) return status;
  return std::unique_ptr<AttachmentDb>(new SqliteAttachmentDb(*std::move(db)));
}

absl::Status SqliteAttachmentDb::CreateUpload(const UploadSession& s) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      absl::StrCat("INSERT INTO uploads(", kUploadColumns, ") VALUES (?,?,?,?,?,?,?,?,?,?)"));
  if (!st.ok()) return st.status();
  (*st)->BindText(1, s.id);
  (*st)->BindInt(2, s.user_id);
  (*st)->BindInt(3, s.province_id);
  (*st)->BindText(4, s.attachment_id);
  (*st)->BindText(5, s.sha256);
  (*st)->BindInt(6, s.size);
  (*st)->BindText(7, s.media_type);
  (*st)->BindInt(8, s.committed);
  (*st)->BindInt(9, s.created_ms);
  (*st)->BindInt(10, s.expires_ms);
  return (*st)->Run();
}

absl::StatusOr<std::optional<UploadSession>> SqliteAttachmentDb::GetUpload(const std::string& id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st =
      db_->Prepare(absl::StrCat("SELECT ", kUploadColumns, " FROM uploads WHERE id = ?"));
  if (!st.ok()) return st.status();
  (*st)->BindText(1, id);
  return OneSession(*st);
}

absl::StatusOr<std::optional<UploadSession>> SqliteAttachmentDb::FindUpload(
    int64_t user_id, int64_t province_id, const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      absl::StrCat("SELECT ", kUploadColumns,
                   " FROM uploads WHERE user_id = ? AND province_id = ? AND sha256 = ? "
                   "ORDER BY expires_ms DESC LIMIT 1"));
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, user_id);
  (*st)->BindInt(2, province_id);
  (*st)->BindText(3, sha256);
  return OneSession(*st);
}

absl::Status SqliteAttachmentDb::SetCommitted(const std::string& id, int64_t committed) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare("UPDATE uploads SET committed = ? WHERE id = ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, committed);
  (*st)->BindText(2, id);
  // Without the WAL's fsync (synchronous=NORMAL for this commit only): the bytes up to
  // `committed` are already fsynced in the temp file, and the row survives a crash of the
  // process. A power cut may lose the newest offsets: the session then resumes at an older
  // one (its bytes durable too) and the client re-sends the difference; nothing is wrong.
  if (absl::Status s = db_->Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  absl::Status status = (*st)->Run();
  absl::Status restored = db_->Exec("PRAGMA synchronous=FULL");
  return status.ok() ? restored : status;
}

absl::Status SqliteAttachmentDb::DeleteUpload(const std::string& id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare("DELETE FROM uploads WHERE id = ?");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, id);
  return (*st)->Run();
}

absl::StatusOr<std::vector<UploadSession>> SqliteAttachmentDb::AllUploads() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st =
      db_->Prepare(absl::StrCat("SELECT ", kUploadColumns, " FROM uploads ORDER BY id"));
  if (!st.ok()) return st.status();
  std::vector<UploadSession> out;
  while (true) {
    absl::StatusOr<bool> row = (*st)->Step();
    if (!row.ok()) {
      (*st)->Reset();
      return row.status();
    }
    if (!*row) break;
    out.push_back(SessionFrom(**st));
  }
  (*st)->Reset();
  return out;
}

absl::StatusOr<bool> SqliteAttachmentDb::ProvinceHas(int64_t province_id,
                                                     const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st =
      db_->Prepare("SELECT 1 FROM province_blobs WHERE province_id = ? AND sha256 = ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, province_id);
  (*st)->BindText(2, sha256);
  absl::StatusOr<bool> row = (*st)->Step();
  (*st)->Reset();
  return row;
}

absl::Status SqliteAttachmentDb::AddProvinceBlob(int64_t province_id, const std::string& sha256,
                                                 int64_t size, int64_t user_id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "INSERT OR IGNORE INTO province_blobs(province_id, sha256, size, user_id, created_ms) "
      "VALUES (?,?,?,?,?)");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, province_id);
  (*st)->BindText(2, sha256);
  (*st)->BindInt(3, size);
  (*st)->BindInt(4, user_id);
  (*st)->BindInt(5, now_ms);
  return (*st)->Run();
}

absl::Status SqliteAttachmentDb::FinishUpload(const std::string& upload_id, int64_t province_id,
                                              const std::string& sha256, int64_t size,
                                              int64_t user_id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<sync::Transaction>> tx = sync::Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> add = db_->Prepare(
      "INSERT OR IGNORE INTO province_blobs(province_id, sha256, size, user_id, created_ms) "
      "VALUES (?,?,?,?,?)");
  if (!add.ok()) return add.status();
  (*add)->BindInt(1, province_id);
  (*add)->BindText(2, sha256);
  (*add)->BindInt(3, size);
  (*add)->BindInt(4, user_id);
  (*add)->BindInt(5, now_ms);
  if (absl::Status s = (*add)->Run(); !s.ok()) return s;
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM uploads WHERE id = ?");
  if (!del.ok()) return del.status();
  (*del)->BindText(1, upload_id);
  if (absl::Status s = (*del)->Run(); !s.ok()) return s;
  return (*tx)->Commit();
}

absl::StatusOr<int64_t> SqliteAttachmentDb::SumLocked(const std::string& sql, int64_t key,
                                                      const std::string& except_upload) {
  absl::StatusOr<Statement*> st = db_->Prepare(sql);
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, key);
  (*st)->BindText(2, except_upload);
  absl::StatusOr<bool> row = (*st)->Step();
  if (!row.ok()) {
    (*st)->Reset();
    return row.status();
  }
  const int64_t sum = *row ? (*st)->ColumnInt(0) : 0;
  (*st)->Reset();
  return sum;
}

absl::StatusOr<int64_t> SqliteAttachmentDb::UserBytes(int64_t user_id,
                                                      const std::string& except_upload) {
  absl::MutexLock lock(&mu_);
  return SumLocked(
      "SELECT (SELECT coalesce(sum(size), 0) FROM province_blobs WHERE user_id = ?1) + "
      "(SELECT coalesce(sum(size), 0) FROM uploads WHERE user_id = ?1 AND id != ?2)",
      user_id, except_upload);
}

absl::StatusOr<int64_t> SqliteAttachmentDb::ProvinceBytes(int64_t province_id,
                                                          const std::string& except_upload) {
  absl::MutexLock lock(&mu_);
  return SumLocked(
      "SELECT (SELECT coalesce(sum(size), 0) FROM province_blobs WHERE province_id = ?1) + "
      "(SELECT coalesce(sum(size), 0) FROM uploads WHERE province_id = ?1 AND id != ?2)",
      province_id, except_upload);
}

absl::StatusOr<int64_t> SqliteAttachmentDb::MarkUnreferenced(const std::string& sha256,
                                                             int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> insert =
      db_->Prepare("INSERT OR IGNORE INTO gc_marks(sha256, since_ms) VALUES (?, ?)");
  if (!insert.ok()) return insert.status();
  (*insert)->BindText(1, sha256);
  (*insert)->BindInt(2, now_ms);
  if (absl::Status s = (*insert)->Run(); !s.ok()) return s;
  absl::StatusOr<Statement*> st = db_->Prepare("SELECT since_ms FROM gc_marks WHERE sha256 = ?");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, sha256);
  absl::StatusOr<bool> row = (*st)->Step();
  if (!row.ok()) {
    (*st)->Reset();
    return row.status();
  }
  const int64_t since = *row ? (*st)->ColumnInt(0) : now_ms;
  (*st)->Reset();
  return since;
}

absl::Status SqliteAttachmentDb::ClearMark(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare("DELETE FROM gc_marks WHERE sha256 = ?");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, sha256);
  return (*st)->Run();
}

absl::Status SqliteAttachmentDb::ForgetBlob(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  for (const char* sql :
       {"DELETE FROM province_blobs WHERE sha256 = ?", "DELETE FROM gc_marks WHERE sha256 = ?"}) {
    absl::StatusOr<Statement*> st = db_->Prepare(sql);
    if (!st.ok()) return st.status();
    (*st)->BindText(1, sha256);
    if (absl::Status s = (*st)->Run(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kcnet::server
