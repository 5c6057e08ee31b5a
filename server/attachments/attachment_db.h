// AttachmentDb: the server's small SQLite file of attachment bookkeeping
// (DATA_DIR/attachments.db, versioned by sync::MigrateAppFile like plans.db):
//   - upload sessions: id, who (user, province), what (attachment, sha256, size, media
//     type), the committed offset and the expiry (7 days after Begin);
//   - which province holds which blob (the per-province dedup: "already have it" only for
//     a blob this province uploaded), with who uploaded it, for the quotas;
//   - the garbage collector's marks: since when a blob has been unreferenced.
// The bytes themselves are in a BlobStore; references come from the Attachment records.
//
// Thread-safety: thread-safe (one connection behind a mutex). Another process (the
// kcnet-admin gc-blobs command) may use the same file at the same time.
#ifndef KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_
#define KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "sync/sqlite.h"

namespace kcnet::server {

// The layout version of attachments.db (its PRAGMA user_version).
inline constexpr int64_t kAttachmentsSchemaVersion = 1;

struct UploadSession {
  std::string id;
  int64_t user_id = 0;
  int64_t province_id = 0;
  std::string attachment_id;
  std::string sha256;  // lowercase hex
  int64_t size = 0;
  std::string media_type;
  int64_t committed = 0;  // bytes durable in the session's temp file
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
};

class AttachmentDb {
 public:
  static absl::StatusOr<std::unique_ptr<AttachmentDb>> Open(const std::string& path);

  // ---- Upload sessions ----
  absl::Status CreateUpload(const UploadSession& session);
  absl::StatusOr<std::optional<UploadSession>> GetUpload(const std::string& id);
  // The open session of this user for this hash in this province, if any.
  absl::StatusOr<std::optional<UploadSession>> FindUpload(int64_t user_id, int64_t province_id,
                                                          const std::string& sha256);
  absl::Status SetCommitted(const std::string& id, int64_t committed);
  absl::Status DeleteUpload(const std::string& id);
  absl::StatusOr<std::vector<UploadSession>> AllUploads();

  // ---- Which province holds which blob ----
  absl::StatusOr<bool> ProvinceHas(int64_t province_id, const std::string& sha256);
  // Records that `province_id` holds the blob (uploaded by `user_id`); OK when it did.
  absl::Status AddProvinceBlob(int64_t province_id, const std::string& sha256, int64_t size,
                               int64_t user_id, int64_t now_ms);
  // A finished upload: AddProvinceBlob and DeleteUpload(upload_id) in one transaction (one
  // fsync rather than two).
  absl::Status FinishUpload(const std::string& upload_id, int64_t province_id,
                            const std::string& sha256, int64_t size, int64_t user_id,
                            int64_t now_ms);
  // Bytes counted against a user's / a province's quota: the blobs it uploaded plus its
  // open sessions' sizes (but not `except_upload`'s).
  absl::StatusOr<int64_t> UserBytes(int64_t user_id, const std::string& except_upload = "");
  absl::StatusOr<int64_t> ProvinceBytes(int64_t province_id, const std::string& except_upload = "");

  // ---- Garbage collection ----
  // Since when the blob has been seen unreferenced: `now_ms` the first time.
  absl::StatusOr<int64_t> MarkUnreferenced(const std::string& sha256, int64_t now_ms);
  absl::Status ClearMark(const std::string& sha256);
  // Forgets the blob: its provinces and its mark (its bytes were removed).
  absl::Status ForgetBlob(const std::string& sha256);

 private:
  explicit AttachmentDb(std::unique_ptr<sync::Db> db) : db_(std::move(db)) {}
  absl::StatusOr<int64_t> SumLocked(const std::string& sql, int64_t key,
                                    const std::string& except_upload)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::unique_ptr<sync::Db> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_
