// Attachments on PostgreSQL (docs/POSTGRES.md): what lets every kcnet-server instance on one
// database serve the same photos. A blob uploaded through instance A is "already have it"
// and downloadable through B; an upload begun on A resumes on B from its committed offset;
// quotas and the collector's marks count across instances.
//
// All of it lives in the schema kcnet_attachments (PgSchema's migration 5, pg_schema.h):
//   - the bookkeeping (server::AttachmentDb): uploads, province_blobs, gc_marks, as the
//     SQLite attachments.db's tables, on a PgSqlSession (pg_directory_store.h);
//   - the bytes (server::BlobStore and server::UploadStaging):
//       blobs(sha256, size, created_ms)   one row per finished blob
//       chunks(key, n, data)              the bytes in chunks of 256 KiB (kPgChunkBytes):
//                                         key = the blob's SHA-256 (hex) for a blob,
//                                         "upload:<id>" for an upload's staged bytes.
//     A commit of an upload writes its chunks (a partly filled last chunk is rewritten by
//     the next commit) in one transaction, so the committed offset is durable and visible
//     to every instance. Finishing renames the staged chunks to the blob's key and inserts
//     the blobs row in one transaction (a rename: PostgreSQL keeps the TOASTed bytes where
//     they are); nothing partial is ever visible as a finished blob. The bytea column is
//     STORAGE EXTERNAL (photos do not compress), so a ranged read fetches only its slice.
//   - uploads.writer: the instance stream that last opened the session; a commit checks it
//     under the row's lock, so when a device moves to another instance the old stream's
//     next commit is ABORTED instead of writing over the new one's.
//
// Thread-safety: every object here is thread-safe: the AttachmentDb is one connection
// behind a mutex; the blob store and the staging share a pool of connections.
#ifndef KCNET_SERVER_PGSTORE_PG_ATTACHMENTS_H_
#define KCNET_SERVER_PGSTORE_PG_ATTACHMENTS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/attachments/attachment_db.h"
#include "server/attachments/attachments.h"
#include "server/attachments/blob_store.h"
#include "server/attachments/upload_staging.h"

namespace kcnet::pgstore {

// The size of a chunk row: the commit interval of uploads.
inline constexpr int64_t kPgChunkBytes = 256 * 1024;

// The bookkeeping on `conninfo` (migrated to the current schema). UNAVAILABLE when it cannot
// connect.
absl::StatusOr<std::unique_ptr<server::AttachmentDb>> OpenPgAttachmentDb(
    const std::string& conninfo);

// The blob store and the upload staging on `conninfo`, sharing up to `connections`
// connections (opened as needed).
struct PgBlobStorage {
  std::unique_ptr<server::BlobStore> blobs;
  std::unique_ptr<server::UploadStaging> staging;
};
absl::StatusOr<PgBlobStorage> OpenPgBlobStorage(const std::string& conninfo, int connections = 4);

// All three, for Attachments::Open.
absl::StatusOr<server::Attachments::Storage> OpenPgAttachmentStorage(const std::string& conninfo);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_ATTACHMENTS_H_
