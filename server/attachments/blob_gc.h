// The attachment housekeeping shared by the server's garbage-collector thread and
// kcnet-admin (gc-blobs, verify-blobs):
//   - CollectGarbage: removes expired upload sessions with their temp files, temp files no
//     session owns, and blobs no live Attachment record has referenced for `grace` (a
//     first pass marks a blob unreferenced, a pass after the grace removes it; a blob
//     referenced again meanwhile loses its mark). Never removes a referenced blob.
//   - VerifyBlobs: re-hashes every blob and lists those whose bytes no longer match
//     their name, and (given the references) the hashes live records name that have no
//     blob: not uploaded yet, or lost (e.g. uploaded after the backup a restore used).
//
// Thread-safety: safe to run while the server serves (the stores are thread-safe and the
// `active` callback keeps sessions with a stream attached).
#ifndef KCNET_SERVER_ATTACHMENTS_BLOB_GC_H_
#define KCNET_SERVER_ATTACHMENTS_BLOB_GC_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/attachments/attachment_db.h"
#include "server/attachments/blob_store.h"
#include "server/attachments/references.h"
#include "server/attachments/upload_staging.h"

namespace kcnet::server {

struct GcOptions {
  int64_t now_ms = 0;
  absl::Duration grace = absl::Hours(24);
  // Where the sessions' bytes are: `staging`, or when null the temp files of `uploads_dir`.
  UploadStaging* staging = nullptr;
  std::string uploads_dir;
  // True for a session a stream is writing to now (never collected); null: none.
  std::function<bool(const std::string& upload_id)> active;
};

struct GcReport {
  int64_t blobs_removed = 0;
  int64_t bytes_removed = 0;
  int64_t blobs_marked = 0;  // unreferenced, within their grace
  int64_t sessions_expired = 0;
  int64_t temp_files_removed = 0;  // of expired sessions and of none
};

absl::StatusOr<GcReport> CollectGarbage(AttachmentDb& db, BlobStore& blobs,
                                        AttachmentReferences& references, const GcOptions& options);

struct VerifyReport {
  int64_t blobs = 0;
  int64_t bytes = 0;
  std::vector<std::string> damaged;  // names of blobs whose bytes do not hash to their name
  // Hashes named by live attachment records with no blob here (sorted); empty without
  // references.
  std::vector<std::string> missing;
};

absl::StatusOr<VerifyReport> VerifyBlobs(BlobStore& blobs,
                                         AttachmentReferences* references = nullptr);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_BLOB_GC_H_
