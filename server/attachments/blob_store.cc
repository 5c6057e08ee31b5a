#include "server/attachments/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "server/attachments/sha256.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;

constexpr char kTempDir[] = ".tmp";

absl::Status Errno(absl::string_view what) {
  const int e = errno;
  const std::string text = absl::StrCat(what, ": ", std::strerror(e));
  if (e == ENOENT) return absl::NotFoundError(text);
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(text);
  return absl::InternalError(text);
}

absl::Status CheckName(const std::string& sha_hex) {
  if (!IsSha256Hex(sha_hex)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256: '", sha_hex, "' is not 64 lowercase hex characters"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string HexOf(absl::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xF]);
  }
  return out;
}

absl::StatusOr<std::string> RawFromHex(absl::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return absl::InvalidArgumentError("odd number of hex digits");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]);
    const int lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("not lowercase hex");
    out.push_back(static_cast<char>(hi << 4 | lo));
  }
  return out;
}

bool IsSha256Hex(absl::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string Sha256Of(absl::string_view bytes) {
  Sha256 sha;
  sha.Update(bytes);
  return sha.Finish();
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", path));
  Sha256 sha;
  std::string buffer(1 << 16, '\0');
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = Errno(absl::StrCat("read ", path));
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    sha.Update(absl::string_view(buffer.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return sha.Finish();
}

absl::Status SyncFd(int fd, absl::string_view what) {
  if (::fsync(fd) != 0) return Errno(absl::StrCat("fsync ", what));
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open folder ", dir));
  absl::Status status = SyncFd(fd, dir);
  ::close(fd);
  return status;
}

absl::StatusOr<std::unique_ptr<FileBlobStore>> FileBlobStore::Open(const std::string& root) {
  std::error_code error;
  fs::create_directories(fs::path(root) / kTempDir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("blob store: cannot create ", root, ": ", error.message()));
  }
  return std::unique_ptr<FileBlobStore>(new FileBlobStore(root));
}

std::string FileBlobStore::PathOf(const std::string& sha_hex) const {
  return (fs::path(root_) / sha_hex.substr(0, 2) / sha_hex.substr(2, 2) / sha_hex).string();
}

absl::StatusOr<int64_t> FileBlobStore::Size(const std::string& sha_hex) {
  if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
  struct stat st;
  if (::stat(PathOf(sha_hex).c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", sha_hex, ": none"));
    return Errno(absl::StrCat("stat blob ", sha_hex));
  }
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<std::string> FileBlobStore::Read(const std::string& sha_hex, int64_t offset,
                                                int64_t length) {
  if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
  if (offset < 0 || length < 0) return absl::InvalidArgumentError("offset/length: negative");
  const int fd = ::open(PathOf(sha_hex).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", sha_hex, ": none"));
    return Errno(absl::StrCat("open blob ", sha_hex));
  }
  std::string out(static_cast<size_t>(length), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + got, out.size() - got,
                              static_cast<off_t>(offset + static_cast<int64_t>(got)));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = Errno(absl::StrCat("read blob ", sha_hex));
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

absl::Status FileBlobStore::Adopt(const std::string& sha_hex, const std::string& path) {
  if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
  const fs::path target(PathOf(sha_hex));
  std::error_code error;
  const bool created = fs::create_directories(target.parent_path(), error);
  if (error) {
    return absl::InternalError(absl::StrCat("blob store: cannot create ",
                                            target.parent_path().string(), ": ", error.message()));
  }
  if (::rename(path.c_str(), target.c_str()) != 0) {
    return Errno(absl::StrCat("rename ", path, " to ", target.string()));
  }
  // The rename is durable once its folder is, and a fan-out folder made just now once its
  // parents are (an older one was synced by the Adopt that made it).
  absl::Status status = SyncDir(target.parent_path().string());
  if (status.ok() && created) status = SyncDir(target.parent_path().parent_path().string());
  if (status.ok() && created) status = SyncDir(root_);
  return status;
}

absl::StatusOr<std::string> FileBlobStore::Put(absl::string_view bytes) {
  const std::string sha_hex = HexOf(Sha256Of(bytes));
  static std::atomic<uint64_t> counter{0};
  const std::string temp = (fs::path(root_) / kTempDir /
                            absl::StrCat(sha_hex, ".", ::getpid(), ".", counter.fetch_add(1)))
                               .string();
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return Errno(absl::StrCat("create ", temp));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = Errno(absl::StrCat("write ", temp));
      ::close(fd);
      ::unlink(temp.c_str());
      return status;
    }
    done += static_cast<size_t>(n);
  }
  absl::Status status = SyncFd(fd, temp);
  ::close(fd);
  if (status.ok()) status = Adopt(sha_hex, temp);
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return sha_hex;
}

absl::Status FileBlobStore::Remove(const std::string& sha_hex) {
  if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
  const std::string path = PathOf(sha_hex);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno(absl::StrCat("remove blob ", sha_hex));
  }
  return SyncDir(fs::path(path).parent_path().string());
}

absl::Status FileBlobStore::ForEach(
    const std::function<absl::Status(const std::string& sha_hex, int64_t size)>& fn) {
  std::error_code error;
  for (fs::recursive_directory_iterator it(root_, error), end; !error && it != end;
       it.increment(error)) {
    if (it->path().filename() == kTempDir) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    const std::string name = it->path().filename().string();
    if (!IsSha256Hex(name) || it.depth() != 2) continue;
    absl::Status status = fn(name, static_cast<int64_t>(it->file_size()));
    if (!status.ok()) return status;
  }
  if (error) {
    return absl::InternalError(
        absl::StrCat("blob store: cannot list ", root_, ": ", error.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileBlobStore::Rehash(const std::string& sha_hex) {
  if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
  absl::StatusOr<std::string> raw = Sha256OfFile(PathOf(sha_hex));
  if (!raw.ok()) return raw.status();
  return HexOf(*raw);
}

}  // namespace kcnet::server
