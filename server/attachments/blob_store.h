// BlobStore: the bytes of attachments, content-addressed by their SHA-256 (lowercase hex,
// as in the Attachment record). A blob is immutable: it appears whole or not at all.
// FileBlobStore, the default, keeps each blob in a file under a root folder, fanned out
// by the hash's first two bytes (ROOT/ab/cd/abcd...); it writes a temp file, fsyncs it,
// renames it into place and fsyncs the folder, so nothing partial is ever visible as a
// finished blob, and a blob that was acknowledged survives a power cut.
//
// Also here: the SHA-256 and hex helpers the attachment code shares.
//
// Thread-safety: FileBlobStore is thread-safe (each call works on files alone; two
// Adopt()s of the same hash both leave the same bytes).
#ifndef KCNET_SERVER_ATTACHMENTS_BLOB_STORE_H_
#define KCNET_SERVER_ATTACHMENTS_BLOB_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kcnet::server {

// Lowercase hex of raw bytes, and back (INVALID_ARGUMENT for anything else).
std::string HexOf(absl::string_view raw);
absl::StatusOr<std::string> RawFromHex(absl::string_view hex);
// True for 64 lowercase hex characters.
bool IsSha256Hex(absl::string_view hex);
// The SHA-256 (32 raw bytes) of `bytes`, and of a file's contents (read in chunks).
std::string Sha256Of(absl::string_view bytes);
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

// Makes what was written to `fd` durable (fsync), or the status naming `what`.
absl::Status SyncFd(int fd, absl::string_view what);
// fsyncs a folder, so that a rename or a new file in it survives a power cut.
absl::Status SyncDir(const std::string& dir);

class BlobStore {
 public:
  virtual ~BlobStore() = default;

  // The blob's size in bytes; NOT_FOUND when there is none.
  virtual absl::StatusOr<int64_t> Size(const std::string& sha_hex) = 0;
  // `length` bytes from `offset` (fewer at the end); NOT_FOUND when there is no blob.
  virtual absl::StatusOr<std::string> Read(const std::string& sha_hex, int64_t offset,
                                           int64_t length) = 0;
  // Makes the complete file at `path` (on the store's file system, already fsynced) the
  // blob `sha_hex`. The caller has verified its hash. The file is moved, not copied.
  virtual absl::Status Adopt(const std::string& sha_hex, const std::string& path) = 0;
  // Stores `bytes` as the blob named by their SHA-256; returns that name.
  virtual absl::StatusOr<std::string> Put(absl::string_view bytes) = 0;
  // Removes a blob; OK when it was not there.
  virtual absl::Status Remove(const std::string& sha_hex) = 0;
  // Calls `fn` for every blob (name, size); stops at the first error and returns it.
  virtual absl::Status ForEach(
      const std::function<absl::Status(const std::string& sha_hex, int64_t size)>& fn) = 0;
  // The SHA-256 (hex) of the blob's bytes as they are now: equal to its name unless the
  // bytes were damaged.
  virtual absl::StatusOr<std::string> Rehash(const std::string& sha_hex) = 0;
};

class FileBlobStore : public BlobStore {
 public:
  // Creates `root` (and its temp folder) when missing.
  static absl::StatusOr<std::unique_ptr<FileBlobStore>> Open(const std::string& root);

  absl::StatusOr<int64_t> Size(const std::string& sha_hex) override;
  absl::StatusOr<std::string> Read(const std::string& sha_hex, int64_t offset,
                                   int64_t length) override;
  absl::Status Adopt(const std::string& sha_hex, const std::string& path) override;
  absl::StatusOr<std::string> Put(absl::string_view bytes) override;
  absl::Status Remove(const std::string& sha_hex) override;
  absl::Status ForEach(
      const std::function<absl::Status(const std::string& sha_hex, int64_t size)>& fn) override;
  absl::StatusOr<std::string> Rehash(const std::string& sha_hex) override;

  // Where blob `sha_hex` lives (for tests and tools).
  std::string PathOf(const std::string& sha_hex) const;

 private:
  explicit FileBlobStore(std::string root) : root_(std::move(root)) {}
  const std::string root_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_BLOB_STORE_H_
