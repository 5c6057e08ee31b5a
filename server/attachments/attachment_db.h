// AttachmentDb: the server's attachment bookkeeping, behind a seam with two
// implementations:
//   - SQLite (AttachmentDb::Open): the small file DATA_DIR/attachments.db, versioned by
//     sync::MigrateAppFile like plans.db, one per process;
//   - PostgreSQL (server/pgstore/pg_attachments.h): the tables in the schema
//     kcnet_attachments, shared by every kcnet-server instance on one database, so that
//     sessions, "already have it" and quotas are the same through every instance.
// What it keeps:
//   - upload sessions: id, who (user, province), what (attachment, sha256, size, media
//     type), the committed offset and the expiry (7 days after Begin);
//   - which province holds which blob (the per-province dedup: "already have it" only for
//     a blob this province uploaded), with who uploaded it, for the quotas;
//   - the garbage collector's marks: since when a blob has been unreferenced.
// The bytes themselves are in a BlobStore; references come from the Attachment records.
//
// Thread-safety: implementations are thread-safe (the SQLite one: one connection behind a
// mutex). Another process (the kcnet-admin gc-blobs command, another instance) may use the
// same file or database at the same time.
#ifndef KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_
#define KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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
  virtual ~AttachmentDb() = default;

  // The SQLite file at `path` (created, or migrated, when needed).
  static absl::StatusOr<std::unique_ptr<AttachmentDb>> Open(const std::string& path);

  // ---- Upload sessions ----
  virtual absl::Status CreateUpload(const UploadSession& session) = 0;
  virtual absl::StatusOr<std::optional<UploadSession>> GetUpload(const std::string& id) = 0;
  // The open session of this user for this hash in this province, if any.
  virtual absl::StatusOr<std::optional<UploadSession>> FindUpload(int64_t user_id,
                                                                  int64_t province_id,
                                                                  const std::string& sha256) = 0;
  virtual absl::Status SetCommitted(const std::string& id, int64_t committed) = 0;
  virtual absl::Status DeleteUpload(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<UploadSession>> AllUploads() = 0;

  // ---- Which province holds which blob ----
  virtual absl::StatusOr<bool> ProvinceHas(int64_t province_id, const std::string& sha256) = 0;
  // Records that `province_id` holds the blob (uploaded by `user_id`); OK when it did.
  virtual absl::Status AddProvinceBlob(int64_t province_id, const std::string& sha256, int64_t size,
                                       int64_t user_id, int64_t now_ms) = 0;
  // A finished upload: AddProvinceBlob and DeleteUpload(upload_id) in one transaction (one
  // fsync rather than two).
  virtual absl::Status FinishUpload(const std::string& upload_id, int64_t province_id,
                                    const std::string& sha256, int64_t size, int64_t user_id,
                                    int64_t now_ms) = 0;
  // Bytes counted against a user's / a province's quota: the blobs it uploaded plus its
  // open sessions' sizes (but not `except_upload`'s).
  virtual absl::StatusOr<int64_t> UserBytes(int64_t user_id,
                                            const std::string& except_upload = "") = 0;
  virtual absl::StatusOr<int64_t> ProvinceBytes(int64_t province_id,
                                                const std::string& except_upload = "") = 0;

  // ---- Garbage collection ----
  // Since when the blob has been seen unreferenced: `now_ms` the first time.
  virtual absl::StatusOr<int64_t> MarkUnreferenced(const std::string& sha256, int64_t now_ms) = 0;
  virtual absl::Status ClearMark(const std::string& sha256) = 0;
  // Forgets the blob: its provinces and its mark (its bytes were removed).
  virtual absl::Status ForgetBlob(const std::string& sha256) = 0;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_ATTACHMENT_DB_H_
