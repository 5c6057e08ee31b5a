// AttachmentReferences: which Attachment records (synced record type 5) reference a blob.
// The reference count of a blob is the number of live (not deleted) attachment records
// naming its hash; it is read from the records themselves (kcnet.db's `attachment` table,
// indexed by sha256), so it is right however the records arrived (unary calls, the sync
// stream, a restore) and can never drift from them.
//
// Thread-safety: RecordReferences is thread-safe (its own read-only connection behind a
// mutex); the server keeps writing kcnet.db meanwhile (WAL readers never block it).
#ifndef KCNET_SERVER_ATTACHMENTS_REFERENCES_H_
#define KCNET_SERVER_ATTACHMENTS_REFERENCES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "sync/sqlite.h"

namespace kcnet::server {

// One live attachment record naming a hash: where it is and what it says the bytes are.
struct BlobReference {
  int64_t commune_id = 0;
  std::string media_type;
};

class AttachmentReferences {
 public:
  virtual ~AttachmentReferences() = default;
  // The live attachment records naming `sha256` (hex).
  virtual absl::StatusOr<std::vector<BlobReference>> Referencing(const std::string& sha256) = 0;
  // Every referenced hash with its reference count.
  virtual absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> Counts() = 0;
  // Brings what Referencing() reads up to date, for a caller that found references but
  // none it may use (a record written a moment ago on another instance). Nothing to do
  // for a reader of the live records.
  virtual absl::Status Refresh() { return absl::OkStatus(); }
};

class RecordReferences : public AttachmentReferences {
 public:
  // Opens `records_path` (kcnet.db) read-only. FAILED_PRECONDITION when it has no
  // attachment table (a file of a server older than attachments).
  static absl::StatusOr<std::unique_ptr<RecordReferences>> Open(const std::string& records_path);

  absl::StatusOr<std::vector<BlobReference>> Referencing(const std::string& sha256) override;
  absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> Counts() override;

 private:
  explicit RecordReferences(std::unique_ptr<sync::Db> db) : db_(std::move(db)) {}
  absl::Mutex mu_;
  std::unique_ptr<sync::Db> db_ ABSL_GUARDED_BY(mu_);
};

// References read from another AttachmentReferences after a refresh of what it reads
// (kcnet-server on PostgreSQL: the local mirror of the records catching up,
// pgstore::PgRecordMirror). Counts() refreshes first and fails when the refresh fails, so
// the collector never judges a blob by a stale copy; Referencing() refreshes and looks
// again only when it finds no reference (a record written a moment ago elsewhere), and
// Refresh() lets a caller who found only references it may not use look again.
class RefreshedReferences : public AttachmentReferences {
 public:
  RefreshedReferences(std::unique_ptr<AttachmentReferences> inner,
                      std::function<absl::Status()> refresh)
      : inner_(std::move(inner)), refresh_(std::move(refresh)) {}

  absl::StatusOr<std::vector<BlobReference>> Referencing(const std::string& sha256) override;
  absl::StatusOr<absl::flat_hash_map<std::string, int64_t>> Counts() override;
  absl::Status Refresh() override { return refresh_(); }

 private:
  std::unique_ptr<AttachmentReferences> inner_;
  std::function<absl::Status()> refresh_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_REFERENCES_H_
