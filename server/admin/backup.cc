#include "server/admin/backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/plans/budget.h"
#include "server/plans/plan_store.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;

constexpr char kStoreFile[] = "kcnet.db";
constexpr char kPlansFile[] = "plans.db";

// The *.db files of `dir`: the record store first, then the others by name.
absl::StatusOr<std::vector<std::string>> Databases(const std::string& dir) {
  std::error_code error;
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && absl::EndsWith(name, ".db")) names.push_back(name);
  }
  if (error) {
    return absl::NotFoundError(absl::StrCat("cannot read directory ", dir, ": ", error.message()));
  }
  if (names.empty()) return absl::NotFoundError(absl::StrCat(dir, " holds no database (*.db)"));
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    if ((a == kStoreFile) != (b == kStoreFile)) return a == kStoreFile;
    return a < b;
  });
  return names;
}

// Makes the directory's entries (a rename, a new file) durable.
absl::Status SyncDirectory(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", dir, " to sync it"));
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync of ", dir, " failed"));
  return absl::OkStatus();
}

// The attachment bytes' folder of a data directory (server/attachments: blobs/ab/cd/HASH).
constexpr char kBlobsDir[] = "blobs";

bool IsBlobName(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Copies the file `from` to `to` durably: a temp file written and fsynced, then renamed.
absl::Status CopyFileDurably(const fs::path& from, const fs::path& to) {
  const int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return absl::NotFoundError(absl::StrCat("cannot read ", from.string()));
  const std::string temp = to.string() + ".partial";
  const int out = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    close(in);
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", temp));
  }
  char buffer[1 << 16];
  bool ok = true;
  for (;;) {
    const ssize_t got = read(in, buffer, sizeof buffer);
    if (got == 0) break;
    if (got < 0 || write(out, buffer, static_cast<size_t>(got)) != got) {
      ok = false;
      break;
    }
  }
  ok = ok && fsync(out) == 0;
  close(in);
  close(out);
  std::error_code error;
  if (ok) fs::rename(temp, to, error);
  if (!ok || error) {
    fs::remove(temp, error);
    return absl::InternalError(
        absl::StrCat("copy of ", from.string(), " to ", to.string(), " failed"));
  }
  return absl::OkStatus();
}

// Copies every finished blob of `from_dir`/blobs that `to_dir`/blobs lacks (a blob is
// immutable and named by its SHA-256, so a present name already holds the same bytes;
// temp files of uploads in progress are skipped), keeping the fan-out folders. Returns
// the blobs folder's entry of a backup or restore: how many bytes were copied. A data
// directory without blobs copies nothing and reports nothing.
absl::StatusOr<std::optional<CopiedDatabase>> CopyBlobs(const fs::path& from_dir,
                                                        const fs::path& to_dir) {
  const fs::path from = from_dir / kBlobsDir;
  std::error_code error;
  if (!fs::is_directory(from, error)) return std::nullopt;
  const absl::Time start = absl::Now();
  const fs::path to = to_dir / kBlobsDir;
  int64_t bytes = 0;
  int64_t files = 0;
  std::vector<fs::path> touched_dirs;
  for (fs::recursive_directory_iterator it(from, error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file() || !IsBlobName(it->path().filename().string())) continue;
    const fs::path target = to / fs::relative(it->path(), from);
    if (fs::exists(target, error)) continue;
    fs::create_directories(target.parent_path(), error);
    if (error) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", target.parent_path().string(), ": ", error.message()));
    }
    absl::Status status = CopyFileDurably(it->path(), target);
    if (!status.ok()) return status;
    bytes += static_cast<int64_t>(fs::file_size(target, error));
    ++files;
    touched_dirs.push_back(target.parent_path());
  }
  if (error) {
    return absl::InternalError(absl::StrCat("cannot read ", from.string(), ": ", error.message()));
  }
  std::sort(touched_dirs.begin(), touched_dirs.end());
  touched_dirs.erase(std::unique(touched_dirs.begin(), touched_dirs.end()), touched_dirs.end());
  for (const fs::path& dir : touched_dirs) {
    for (fs::path d = dir; d != to.parent_path() && !d.empty(); d = d.parent_path()) {
      absl::Status status = SyncDirectory(d.string());
      if (!status.ok()) return status;
    }
  }
  return CopiedDatabase{absl::StrCat(kBlobsDir, "/ (", files, " new files)"), bytes,
                        absl::ToDoubleSeconds(absl::Now() - start)};
}

// Copies the database `from` into the new file `to` in one backup step: one read
// transaction on `from`, so the copy is one consistent snapshot even while another
// process writes (WAL readers never wait for the writer). `to` is committed with
// synchronous=FULL.
absl::Status CopyDatabase(const std::string& from, const std::string& to) {
  sqlite3* src = nullptr;
  sqlite3* dst = nullptr;
  auto close_both = [&] {
    if (src != nullptr) sqlite3_close_v2(src);
    if (dst != nullptr) sqlite3_close_v2(dst);
  };
  int rc = sqlite3_open_v2(from.c_str(), &src, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string why = src != nullptr ? sqlite3_errmsg(src) : sqlite3_errstr(rc);
    close_both();
    return absl::NotFoundError(absl::StrCat("cannot open ", from, ": ", why));
  }
  sqlite3_busy_timeout(src, 5000);
  rc = sqlite3_open_v2(to.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    close_both();
    return absl::InternalError(absl::StrCat("cannot create ", to, ": ", sqlite3_errstr(rc)));
  }
  sqlite3_exec(dst, "PRAGMA synchronous = FULL", nullptr, nullptr, nullptr);
  sqlite3_backup* backup = sqlite3_backup_init(dst, "main", src, "main");
  if (backup == nullptr) {
    const std::string why = sqlite3_errmsg(dst);
    close_both();
    return absl::InternalError(absl::StrCat("backup of ", from, ": ", why));
  }
  // -1: every page in one step. The source may be busy for a moment (a checkpoint or
  // recovery holding a lock): retry for a few seconds.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  do {
    rc = sqlite3_backup_step(backup, -1);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) absl::SleepFor(absl::Milliseconds(20));
  } while ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && absl::Now() < give_up);
  const int step_rc = rc;
  rc = sqlite3_backup_finish(backup);
  const std::string why = sqlite3_errmsg(dst);
  close_both();
  if (step_rc != SQLITE_DONE) {
    return absl::UnavailableError(
        absl::StrCat("backup of ", from, " did not finish: ", sqlite3_errstr(step_rc)));
  }
  if (rc != SQLITE_OK) return absl::InternalError(absl::StrCat("backup of ", from, ": ", why));
  return absl::OkStatus();
}

}  // namespace

int64_t DatabaseHolder(const std::string& db_path) {
  // Every connection to a WAL database keeps a shared lock on the "DMS" byte of its -shm
  // file (offset 128 in SQLite's unix VFS) for as long as it is open; a writer lock on
  // that byte conflicts with it, so F_GETLK names a holder in another process.
  const std::string shm = db_path + "-shm";
  const int fd = open(shm.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;  // no shared memory file: nobody has it open in WAL mode
  struct flock lock = {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 128;
  lock.l_len = 1;
  const int rc = fcntl(fd, F_GETLK, &lock);
  close(fd);
  if (rc != 0 || lock.l_type == F_UNLCK) return 0;
  return lock.l_pid > 0 ? lock.l_pid : 1;
}

absl::StatusOr<std::vector<CopiedDatabase>> BackupDataDir(
    const std::string& data_dir, const std::string& to,
    const std::function<void(const std::string& name)>& after_copy) {
  absl::StatusOr<std::vector<std::string>> names = Databases(data_dir);
  if (!names.ok()) return names.status();
  std::error_code error;
  if (fs::exists(to, error) && !fs::is_empty(to, error)) {
    return absl::AlreadyExistsError(
        absl::StrCat("--to=", to, " is not empty; a backup goes into a new directory"));
  }
  fs::create_directories(to, error);
  if (error) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", to, ": ", error.message()));
  }
  std::vector<CopiedDatabase> copied;
  for (const std::string& name : *names) {
    const absl::Time start = absl::Now();
    const std::string target = (fs::path(to) / name).string();
    const std::string partial = target + ".partial";
    fs::remove(partial, error);
    absl::Status status = CopyDatabase((fs::path(data_dir) / name).string(), partial);
    if (status.ok()) {
      fs::rename(partial, target, error);
      if (error)
        status = absl::InternalError(absl::StrCat("rename to ", target, ": ", error.message()));
    }
    if (!status.ok()) {
      fs::remove(partial, error);
      return status;
    }
    copied.push_back({name, static_cast<int64_t>(fs::file_size(target, error)),
                      absl::ToDoubleSeconds(absl::Now() - start)});
    if (after_copy) after_copy(name);
  }
  // The attachment bytes, after the databases: every attachment record in the kcnet.db
  // copy whose bytes had arrived is then in it (blobs are only ever added, and removed
  // after a day unreferenced).
  absl::StatusOr<std::optional<CopiedDatabase>> blobs = CopyBlobs(data_dir, to);
  if (!blobs.ok()) return blobs.status();
  if (blobs->has_value()) copied.push_back(**blobs);
  absl::Status status = SyncDirectory(to);
  if (!status.ok()) return status;
  return copied;
}

absl::StatusOr<std::vector<CopiedDatabase>> RestoreDataDir(const std::string& data_dir,
                                                           const std::string& from) {
  absl::StatusOr<std::vector<std::string>> names = Databases(from);
  if (!names.ok()) return names.status();
  std::error_code error;
  fs::create_directories(data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", data_dir, ": ", error.message()));
  }
  // Refuse before touching anything: a running server would go on writing into files
  // that the restore replaces.
  std::vector<std::string> present = *names;
  if (absl::StatusOr<std::vector<std::string>> current = Databases(data_dir); current.ok()) {
    present.insert(present.end(), current->begin(), current->end());
  }
  for (const std::string& name : present) {
    const int64_t pid = DatabaseHolder((fs::path(data_dir) / name).string());
    if (pid != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat((fs::path(data_dir) / name).string(), " is open in process ", pid,
                       " (the server runs?): stop the server before a restore"));
    }
  }
  std::vector<CopiedDatabase> copied;
  for (const std::string& name : *names) {
    const absl::Time start = absl::Now();
    const fs::path target = fs::path(data_dir) / name;
    const std::string restoring = target.string() + ".restoring";
    fs::remove(restoring, error);
    fs::remove(restoring + "-journal", error);
    absl::Status status = CopyDatabase((fs::path(from) / name).string(), restoring);
    if (status.ok() && name == kStoreFile) {
      // The restored store is a new incarnation: devices that synced with the lost future
      // of this backup learn so in their next Welcome and recover.
      status = sync::ServerStore::BeginIncarnation(restoring, /*restored=*/true);
    }
    if (!status.ok()) {
      fs::remove(restoring, error);
      return status;
    }
    // The old write-ahead log belongs to the file being replaced: SQLite would replay it
    // over the restored one.
    fs::remove(target.string() + "-wal", error);
    fs::remove(target.string() + "-shm", error);
    fs::rename(restoring, target, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("rename to ", target.string(), ": ", error.message()));
    }
    copied.push_back({name, static_cast<int64_t>(fs::file_size(target, error)),
                      absl::ToDoubleSeconds(absl::Now() - start)});
  }
  // The backup's attachment bytes join those of the data directory (blobs it holds that
  // the backup lacks stay; the collector removes them once unreferenced for its grace).
  absl::StatusOr<std::optional<CopiedDatabase>> blobs = CopyBlobs(from, data_dir);
  if (!blobs.ok()) return blobs.status();
  if (blobs->has_value()) copied.push_back(**blobs);
  absl::Status status = SyncDirectory(data_dir);
  if (!status.ok()) return status;
  // The plans copy may hold what committed after the record store's copy: make them agree.
  const fs::path store_path = fs::path(data_dir) / kStoreFile;
  const fs::path plans_path = fs::path(data_dir) / kPlansFile;
  if (fs::exists(store_path, error) && fs::exists(plans_path, error)) {
    absl::StatusOr<std::unique_ptr<sync::ServerStore>> records =
        sync::ServerStore::Open(store_path.string(), &kcnet::model::KcnetSchema());
    if (!records.ok()) return records.status();
    absl::StatusOr<std::unique_ptr<PlanStore>> plans = PlanStore::Open(plans_path.string());
    if (!plans.ok()) return plans.status();
    status = ReconcileWithRecords(**plans, **records);
    if (!status.ok()) return status;
  }
  return copied;
}

}  // namespace kcnet::server
