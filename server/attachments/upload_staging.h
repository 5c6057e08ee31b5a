// UploadStaging: where the bytes of an upload session wait until their blob is whole, behind
// a seam with two implementations:
//   - FileUploadStaging (here, the default): one temp file per session,
//     DATA_DIR/uploads/ID.part, made durable by fdatasync and moved into the FileBlobStore
//     by a rename once its SHA-256 is verified;
//   - PostgreSQL (server/pgstore/pg_attachments.h): committed chunk rows that every
//     kcnet-server instance on the database sees, renamed into the blob's rows in one
//     transaction.
// Attachments (attachments.h) owns the protocol (offsets, commits, the SHA-256 check); a
// StagedUpload only keeps bytes. Nothing staged is ever visible as a finished blob.
//
// Thread-safety: UploadStaging is thread-safe. A StagedUpload is used by one session: its
// Write, Truncate, Hash and Finish are serialised by the caller, but up to
// max_concurrent_syncs() Syncs may run beside them and beside each other (committer threads
// make the first bytes durable while the stream writes further on).
#ifndef KCNET_SERVER_ATTACHMENTS_UPLOAD_STAGING_H_
#define KCNET_SERVER_ATTACHMENTS_UPLOAD_STAGING_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/attachments/blob_store.h"

namespace kcnet::server {

// The temp file of an upload session in `uploads_dir` (FileUploadStaging's).
std::string UploadTempPath(const std::string& uploads_dir, const std::string& upload_id);

// One session's staged bytes, open for writing.
class StagedUpload {
 public:
  virtual ~StagedUpload() = default;

  // The bytes staged when it was opened (durable or not).
  virtual int64_t size_at_open() const = 0;
  // How many Syncs may run at once. Each makes durable at least what was written before it
  // began, whatever the others do.
  virtual int max_concurrent_syncs() const { return 1; }
  // The fewest new bytes worth a Sync of their own (a commit starts once this many wait and
  // a Sync slot is free; at a flush, at the end and when the stream ends, any number).
  virtual int64_t min_commit_bytes() const { return 256 * 1024; }
  // Writes `data` at `offset` (the end of what was written). Not durable yet.
  virtual absl::Status Write(int64_t offset, absl::string_view data) = 0;
  // Makes the first `upto` bytes durable (and visible to every process that opens the
  // session later).
  virtual absl::Status Sync(int64_t upto) = 0;
  // Cuts the bytes back to `size`; `durable`: before returning, not only before the next
  // Sync.
  virtual absl::Status Truncate(int64_t size, bool durable) = 0;
  // The SHA-256 (raw) of the first `size` bytes as staged.
  virtual absl::StatusOr<std::string> Hash(int64_t size) = 0;
  // Makes the first `size` bytes (verified by the caller) the blob `sha_hex`, or drops them
  // when the blob exists already. The staged bytes are gone afterwards, and the object
  // must not be used again.
  virtual absl::Status Finish(const std::string& sha_hex, int64_t size) = 0;
};

class UploadStaging {
 public:
  virtual ~UploadStaging() = default;

  // Opens session `id`'s bytes (none yet: empty).
  virtual absl::StatusOr<std::unique_ptr<StagedUpload>> Open(const std::string& id) = 0;
  // The bytes staged for `id` (0 when none).
  virtual absl::StatusOr<int64_t> StagedSize(const std::string& id) = 0;
  // The sessions that have bytes staged.
  virtual absl::StatusOr<std::vector<std::string>> List() = 0;
  // Removes `id`'s bytes; true when there were some.
  virtual absl::StatusOr<bool> Remove(const std::string& id) = 0;
};

// The temp files of `uploads_dir` (created when missing), finished into `blobs` (may be null
// for a staging only listed and removed, as the collector of kcnet-admin does).
class FileUploadStaging : public UploadStaging {
 public:
  FileUploadStaging(std::string uploads_dir, BlobStore* blobs)
      : uploads_dir_(std::move(uploads_dir)), blobs_(blobs) {}

  absl::StatusOr<std::unique_ptr<StagedUpload>> Open(const std::string& id) override;
  absl::StatusOr<int64_t> StagedSize(const std::string& id) override;
  absl::StatusOr<std::vector<std::string>> List() override;
  absl::StatusOr<bool> Remove(const std::string& id) override;

 private:
  const std::string uploads_dir_;
  BlobStore* const blobs_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_UPLOAD_STAGING_H_
