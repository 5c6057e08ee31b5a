#include "server/attachments/upload_staging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;

constexpr char kPartSuffix[] = ".part";

absl::Status Errno(absl::string_view what) {
  const int e = errno;
  const std::string text = absl::StrCat(what, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(text);
  return absl::InternalError(text);
}

absl::Status PwriteAll(int fd, absl::string_view data, int64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + static_cast<int64_t>(done)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("upload: write");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// One temp file, open for the session's life; the file descriptor never changes, so that
// a Sync (fdatasync) may run beside a Write.
class StagedFile : public StagedUpload {
 public:
  StagedFile(std::string path, int fd, int64_t size, BlobStore* blobs)
      : path_(std::move(path)), fd_(fd), size_at_open_(size), blobs_(blobs) {}
  ~StagedFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  int64_t size_at_open() const override { return size_at_open_; }
  // Two fdatasyncs of one file may overlap: the second writes the pages dirtied since the
  // first began while the first waits for its journal commit (ext4 joins them). A third
  // would only queue behind them.
  int max_concurrent_syncs() const override { return 2; }
  // Commits follow the stream in small groups, so that a byte waits about one fdatasync for
  // its ack, not a whole 256 KiB interval plus one. (PostgreSQL keeps the default: each
  // Sync rewrites the session's partial 256 KiB chunk row.)
  int64_t min_commit_bytes() const override { return 64 * 1024; }

  absl::Status Write(int64_t offset, absl::string_view data) override {
    return PwriteAll(fd_, data, offset);
  }

  // A commit makes the temp file's bytes and its size durable: fdatasync does both (it
  // skips only the times, which no one reads), and on ext4 costs less than fsync.
  absl::Status Sync(int64_t /*upto*/) override {
    if (::fdatasync(fd_) != 0) return Errno("upload: fdatasync");
    return absl::OkStatus();
  }

  absl::Status Truncate(int64_t size, bool durable) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return Errno("upload: truncate");
    if (durable) return SyncFd(fd_, "upload temp file");
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Hash(int64_t /*size*/) override { return Sha256OfFile(path_); }

  absl::Status Finish(const std::string& sha_hex, int64_t /*size*/) override {
    ::close(fd_);
    fd_ = -1;
    if (blobs_ == nullptr) return absl::FailedPreconditionError("upload: no blob store");
    // A blob another province (or another user) stored meanwhile has the same bytes.
    if (blobs_->Size(sha_hex).ok()) {
      ::unlink(path_.c_str());
      return absl::OkStatus();
    }
    return blobs_->Adopt(sha_hex, path_);
  }

 private:
  const std::string path_;
  int fd_;
  const int64_t size_at_open_;
  BlobStore* const blobs_;
};

}  // namespace

std::string UploadTempPath(const std::string& uploads_dir, const std::string& upload_id) {
  return (fs::path(uploads_dir) / absl::StrCat(upload_id, kPartSuffix)).string();
}

absl::StatusOr<std::unique_ptr<StagedUpload>> FileUploadStaging::Open(const std::string& id) {
  const std::string path = UploadTempPath(uploads_dir_, id);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return Errno(absl::StrCat("upload: open ", path));
  struct stat st;
  const int64_t size = ::fstat(fd, &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  return std::unique_ptr<StagedUpload>(new StagedFile(path, fd, size, blobs_));
}

absl::StatusOr<int64_t> FileUploadStaging::StagedSize(const std::string& id) {
  struct stat st;
  if (::stat(UploadTempPath(uploads_dir_, id).c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<std::vector<std::string>> FileUploadStaging::List() {
  std::vector<std::string> ids;
  std::error_code error;
  if (uploads_dir_.empty() || !fs::exists(uploads_dir_, error)) return ids;
  for (fs::directory_iterator it(uploads_dir_, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (absl::EndsWith(name, kPartSuffix)) {
      ids.push_back(name.substr(0, name.size() - (sizeof(kPartSuffix) - 1)));
    }
  }
  if (error) {
    return absl::InternalError(
        absl::StrCat("gc: cannot list ", uploads_dir_, ": ", error.message()));
  }
  return ids;
}

absl::StatusOr<bool> FileUploadStaging::Remove(const std::string& id) {
  return ::unlink(UploadTempPath(uploads_dir_, id).c_str()) == 0;
}

}  // namespace kcnet::server
