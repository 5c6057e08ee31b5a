// AttachmentQueue (attachment_queue.h): the attachment folder, the upload queue and the
// transfers.
#include "client_sdk/attachment_queue.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client_sdk/attachment_digest.h"
#include "sync/crc32c.h"
#include "sync/upload_trace.h"

namespace kcnet::sdk {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Fsyncs a folder (so that a rename into it is durable).
absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Errno(absl::StrCat("open ", dir));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno(absl::StrCat("fsync ", dir));
  return absl::OkStatus();
}

// The file's size, or -1 when it does not exist.
// A download's partial file: 64 lower-case hex digits and ".part".
bool IsPartName(const std::string& name) {
  if (name.size() != 64 + 5 || !absl::EndsWith(name, ".part")) return false;
  return std::all_of(name.begin(), name.begin() + 64,
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_size);
}

// A gRPC status as the SDK reports it (the code kept, the server's message kept).
absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// A failure of the link or of the sign-in, not of the attachment: the pass ends and the
// next one resumes (no attempt counted; the token is renewed by the next sync).
bool IsConnectionFailure(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s) ||
         absl::IsUnauthenticated(s);
}

// A refusal that trying again cannot change.
bool IsPermanent(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsPermissionDenied(s) || absl::IsNotFound(s) ||
         absl::IsFailedPrecondition(s) || absl::IsOutOfRange(s);
}

QueueRow ReadRow(sync::Statement& st) {
  QueueRow r;
  r.id = std::string(st.ColumnText(0));
  r.sha256 = std::string(st.ColumnText(1));
  r.size = st.ColumnInt(2);
  r.media_type = std::string(st.ColumnText(3));
  r.state = static_cast<AttachmentState>(st.ColumnInt(4));
  r.bytes_sent = st.ColumnInt(5);
  r.failure = std::string(st.ColumnText(6));
  r.priority = static_cast<int32_t>(st.ColumnInt(7));
  r.attempts = static_cast<int32_t>(st.ColumnInt(8));
  r.next_try_ms = st.ColumnInt(9);
  r.added_ms = st.ColumnInt(10);
  return r;
}

constexpr char kRowColumns[] =
    "SELECT id, sha256, size, media_type, state, bytes_sent, failure, priority, attempts, "
    "next_try_ms, added_ms FROM _att_queue";
// The queue's order: the app's priority, then smallest first, then oldest first.
constexpr char kQueueOrder[] = " ORDER BY priority DESC, size ASC, added_ms ASC, id ASC";

// The 32 bytes of a SHA-256 written as 64 lower-case hex digits; false when it is not one.
bool ShaBytes(const std::string& hex, std::string* out) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  *out = absl::HexStringToBytes(hex);
  return true;
}

bool Active(AttachmentState s) {
  return s == AttachmentState::kQueued || s == AttachmentState::kUploading;
}

}  // namespace

std::string SniffMediaType(absl::string_view b) {
  if (b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF &&
      static_cast<unsigned char>(b[1]) == 0xD8 && static_cast<unsigned char>(b[2]) == 0xFF) {
    return "image/jpeg";
  }
  if (absl::StartsWith(b, absl::string_view("\x89PNG\r\n\x1a\n", 8))) return "image/png";
  if (b.size() >= 12 && absl::StartsWith(b, "RIFF") && b.substr(8, 4) == "WEBP") {
    return "image/webp";
  }
  if (absl::StartsWith(b, "%PDF-")) return "application/pdf";
  return "";
}

std::string SniffMediaTypeOf(const std::string& first_bytes) { return SniffMediaType(first_bytes); }

AttachmentQueue::AttachmentQueue(sync::DeviceStore* store, AttachmentQueueOptions options)
    : store_(store),
      options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {}

absl::StatusOr<std::unique_ptr<AttachmentQueue>> AttachmentQueue::Open(
    sync::DeviceStore* store, AttachmentQueueOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("attachment_dir: required");
  std::error_code ec;
  fs::create_directories(fs::path(options.dir) / "tmp", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("attachment_dir: cannot create ", options.dir, ": ", ec.message()));
  }
  std::unique_ptr<AttachmentQueue> queue(new AttachmentQueue(store, std::move(options)));
  absl::Status status = queue->Tidy();
  if (!status.ok()) return status;
  return queue;
}

int64_t AttachmentQueue::NowMs() const { return store_->WallMs(); }

std::string AttachmentQueue::PathOf(const std::string& sha256) const {
  return absl::StrCat(options_.dir, "/", sha256.substr(0, 2), "/", sha256);
}

absl::Status AttachmentQueue::Tidy() {
  absl::MutexLock lock(&blob_mu_);
  std::error_code ec;
  // Temp files: an add a crash or a close interrupted. A download's partial file
  // (<sha256>.part) stays: the next Fetch continues from its end (verified at the end).
  for (const auto& entry : fs::directory_iterator(fs::path(options_.dir) / "tmp", ec)) {
    if (!IsPartName(entry.path().filename().string())) fs::remove(entry.path(), ec);
  }
  std::set<std::string> known;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare("SELECT sha256 FROM _att_blobs");
    if (!st.ok()) return st.status();
    absl::Cleanup reset = [&] { (*st)->Reset(); };
    while (true) {
      absl::StatusOr<bool> has = (*st)->Step();
      if (!has.ok()) return has.status();
      if (!*has) return absl::OkStatus();
      known.insert(std::string((*st)->ColumnText(0)));
    }
  });
  if (!status.ok()) return status;
  // Bytes without their row: the add did not commit (a crash between bytes and record).
  for (const auto& dir : fs::directory_iterator(options_.dir, ec)) {
    if (!dir.is_directory() || dir.path().filename() == "tmp") continue;
    std::error_code inner;
    for (const auto& file : fs::directory_iterator(dir.path(), inner)) {
      if (!known.contains(file.path().filename().string())) fs::remove(file.path(), inner);
    }
  }
  // Rows without their bytes (the folder damaged or cleared by hand).
  std::vector<std::string> lost;
  for (const std::string& sha : known) {
    if (FileSize(PathOf(sha)) < 0) lost.push_back(sha);
  }
  if (lost.empty()) return absl::OkStatus();
  return store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
    for (const std::string& sha : lost) {
      absl::StatusOr<sync::Statement*> st = db.Prepare("DELETE FROM _att_blobs WHERE sha256 = ?1");
      if (!st.ok()) return st.status();
      (*st)->BindText(1, sha);
      absl::Status s = (*st)->Run();
      (*st)->Reset();
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

absl::Status AttachmentQueue::WriteDurably(absl::string_view bytes, const std::string& final_path) {
  uint64_t nonce = 0;
  {
    absl::MutexLock lock(&rng_mu_);
    nonce = rng_();
  }
  const std::string tmp = absl::StrCat(options_.dir, "/tmp/", absl::Hex(nonce), ".adding");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno(absl::StrCat("attachment_dir: cannot create ", tmp));
  absl::Cleanup drop = [&] { std::remove(tmp.c_str()); };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const absl::Status s = Errno(absl::StrCat("attachment_dir: cannot write ", tmp));
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (options_.durable && ::fsync(fd) != 0) {
    const absl::Status s = Errno(absl::StrCat("attachment_dir: cannot fsync ", tmp));
    ::close(fd);
    return s;
  }
  ::close(fd);
  const std::string folder = fs::path(final_path).parent_path().string();
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", folder, ": ", ec.message()));
  if (std::rename(tmp.c_str(), final_path.c_str()) != 0) {
    return Errno(absl::StrCat("cannot rename ", tmp, " to ", final_path));
  }
  std::move(drop).Cancel();
  if (options_.durable) return SyncDir(folder);
  return absl::OkStatus();
}

absl::StatusOr<std::string> AttachmentQueue::StoreBytes(absl::string_view bytes) {
  const std::string sha = Sha256HexOf(bytes);
  const std::string path = PathOf(sha);
  absl::MutexLock lock(&blob_mu_);
  if (FileSize(path) == static_cast<int64_t>(bytes.size())) return sha;  // already here
  absl::Status status = WriteDurably(bytes, path);
  if (!status.ok()) return status;
  return sha;
}

absl::Status AttachmentQueue::AddRows(sync::Db& db, const std::string& id,
                                      const std::string& sha256, int64_t size,
                                      const std::string& media_type, int32_t priority,
                                      int64_t now_ms) {
  absl::StatusOr<sync::Statement*> st = db.Prepare(
      "INSERT INTO _att_queue(id, sha256, size, media_type, state, priority, added_ms) "
      "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, id);
  (*st)->BindText(2, sha256);
  (*st)->BindInt(3, size);
  (*st)->BindText(4, media_type);
  (*st)->BindInt(5, priority);
  (*st)->BindInt(6, now_ms);
  absl::Status status = (*st)->Run();
  (*st)->Reset();
  if (!status.ok()) return status;
  st = db.Prepare(
      "INSERT INTO _att_blobs(sha256, size, last_used_ms) VALUES (?1, ?2, ?3) "
      "ON CONFLICT(sha256) DO UPDATE SET last_used_ms = excluded.last_used_ms");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, sha256);
  (*st)->BindInt(2, size);
  (*st)->BindInt(3, now_ms);
  status = (*st)->Run();
  (*st)->Reset();
  return status;
}

absl::Status AttachmentQueue::Forget(const std::string& sha256) {
  absl::MutexLock lock(&blob_mu_);
  absl::StatusOr<bool> has = HasBlob(sha256);
  if (!has.ok()) return has.status();
  if (!*has) std::remove(PathOf(sha256).c_str());
  return absl::OkStatus();
}

absl::StatusOr<bool> AttachmentQueue::HasBlob(const std::string& sha256) {
  bool has = false;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st =
        db.Prepare("SELECT count(*) FROM _att_blobs WHERE sha256 = ?1");
    if (!st.ok()) return st.status();
    (*st)->BindText(1, sha256);
    absl::StatusOr<bool> row = (*st)->Step();
    if (row.ok() && *row) has = (*st)->ColumnInt(0) > 0;
    (*st)->Reset();
    return row.status();
  });
  if (!status.ok()) return status;
  return has;
}

absl::StatusOr<std::vector<QueueRow>> AttachmentQueue::Rows() {
  std::vector<QueueRow> out;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare(absl::StrCat(kRowColumns, kQueueOrder));
    if (!st.ok()) return st.status();
    absl::Cleanup reset = [&] { (*st)->Reset(); };
    while (true) {
      absl::StatusOr<bool> has = (*st)->Step();
      if (!has.ok()) return has.status();
      if (!*has) return absl::OkStatus();
      out.push_back(ReadRow(**st));
    }
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::optional<QueueRow>> AttachmentQueue::Row(const std::string& id) {
  std::optional<QueueRow> out;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare(absl::StrCat(kRowColumns, " WHERE id = ?1"));
    if (!st.ok()) return st.status();
    (*st)->BindText(1, id);
    absl::StatusOr<bool> has = (*st)->Step();
    if (has.ok() && *has) out = ReadRow(**st);
    (*st)->Reset();
    return has.status();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status AttachmentQueue::UpdateRow(const std::string& id, AttachmentState state,
                                        int64_t bytes_sent, const std::string& failure,
                                        std::optional<int32_t> attempts,
                                        std::optional<int64_t> next_try_ms) {
  return store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare(
        "UPDATE _att_queue SET state = ?2, bytes_sent = ?3, failure = ?4, "
        "attempts = coalesce(?5, attempts), next_try_ms = coalesce(?6, next_try_ms) "
        "WHERE id = ?1");
    if (!st.ok()) return st.status();
    (*st)->BindText(1, id);
    (*st)->BindInt(2, static_cast<int64_t>(state));
    (*st)->BindInt(3, bytes_sent);
    (*st)->BindText(4, failure);
    if (attempts.has_value()) {
      (*st)->BindInt(5, *attempts);
    } else {
      (*st)->BindNull(5);
    }
    if (next_try_ms.has_value()) {
      (*st)->BindInt(6, *next_try_ms);
    } else {
      (*st)->BindNull(6);
    }
    absl::Status s = (*st)->Run();
    (*st)->Reset();
    return s;
  });
}

absl::Status AttachmentQueue::SetPriority(const std::string& id, int32_t priority) {
  return store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st =
        db.Prepare("UPDATE _att_queue SET priority = ?2 WHERE id = ?1");
    if (!st.ok()) return st.status();
    (*st)->BindText(1, id);
    (*st)->BindInt(2, priority);
    absl::Status s = (*st)->Run();
    (*st)->Reset();
    if (s.ok() && db.Changes() == 0) {
      return absl::NotFoundError(
          absl::StrCat("id: attachment ", id, " was not added on this device (only those queue)"));
    }
    return s;
  });
}

absl::Status AttachmentQueue::Retry(const std::string& id) {
  absl::StatusOr<std::optional<QueueRow>> row = Row(id);
  if (!row.ok()) return row.status();
  if (!row->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("id: attachment ", id, " was not added on this device"));
  }
  if ((*row)->state != AttachmentState::kFailed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "id: attachment ", id, " is ", AttachmentStateName((*row)->state), ", not failed"));
  }
  return UpdateRow(id, AttachmentState::kQueued, (*row)->bytes_sent, "", 0, 0);
}

absl::StatusOr<std::pair<int64_t, int64_t>> AttachmentQueue::StorageUse() {
  std::pair<int64_t, int64_t> out{0, 0};
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<int64_t> total = db.QueryInt("SELECT coalesce(sum(size), 0) FROM _att_blobs");
    if (!total.ok()) return total.status();
    absl::StatusOr<int64_t> evictable = db.QueryInt(
        "SELECT coalesce(sum(size), 0) FROM _att_blobs b WHERE NOT EXISTS (SELECT 1 FROM "
        "_att_queue q WHERE q.sha256 = b.sha256 AND q.state != 2)");
    if (!evictable.ok()) return evictable.status();
    out = {*total, *evictable};
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status AttachmentQueue::Evict(const std::string& keep) {
  absl::MutexLock lock(&blob_mu_);
  // Only blobs no queue row still needs (every attachment added here with these bytes is
  // uploaded): bytes not yet uploaded are never candidates.
  std::vector<std::pair<std::string, int64_t>> candidates;
  int64_t total = 0;
  absl::Status status = store_->WithAppTables(false, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare(
        "SELECT sha256, size FROM _att_blobs b WHERE NOT EXISTS (SELECT 1 FROM _att_queue q "
        "WHERE q.sha256 = b.sha256 AND q.state != 2) ORDER BY last_used_ms ASC, sha256 ASC");
    if (!st.ok()) return st.status();
    absl::Cleanup reset = [&] { (*st)->Reset(); };
    while (true) {
      absl::StatusOr<bool> has = (*st)->Step();
      if (!has.ok()) return has.status();
      if (!*has) return absl::OkStatus();
      std::string sha((*st)->ColumnText(0));
      const int64_t size = (*st)->ColumnInt(1);
      total += size;
      if (sha != keep) candidates.emplace_back(std::move(sha), size);
    }
  });
  if (!status.ok()) return status;
  for (const auto& candidate : candidates) {
    if (total <= options_.budget_bytes) break;
    // The row goes first: a crash before the file is removed leaves a file without a row,
    // which the next Open removes.
    status = store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
      absl::StatusOr<sync::Statement*> st = db.Prepare("DELETE FROM _att_blobs WHERE sha256 = ?1");
      if (!st.ok()) return st.status();
      (*st)->BindText(1, candidate.first);
      absl::Status s = (*st)->Run();
      (*st)->Reset();
      return s;
    });
    if (!status.ok()) return status;
    std::remove(PathOf(candidate.first).c_str());
    total -= candidate.second;
  }
  return absl::OkStatus();
}

absl::Duration AttachmentQueue::Backoff(int attempts) {
  const int shift = std::min(std::max(attempts - 1, 0), 20);
  const absl::Duration cap =
      std::min(options_.max_backoff, options_.initial_backoff * (int64_t{1} << shift));
  absl::MutexLock lock(&rng_mu_);
  std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Milliseconds(cap));
  return absl::Milliseconds(jitter(rng_));
}

absl::Status AttachmentQueue::UploadAll(
    TransferCalls& calls, const std::function<absl::StatusOr<bool>(const std::string&)>& ready,
    const Listener& listener, AttachmentUploadSummary* out) {
  *out = AttachmentUploadSummary{};
  AttachmentUploadSummary& summary = *out;
  absl::StatusOr<std::vector<QueueRow>> rows = Rows();
  if (!rows.ok()) return rows.status();
  // Uploads overlap by one: the next one starts once every byte of the running one is
  // committed (its SHA-256 check, the server's blob rename and the rows' writes then run
  // beside the next one's Begin and first chunks). So at most one upload has bytes in
  // flight, and a cut costs what it did without the overlap.
  absl::Mutex mu;
  int unfinished = 0;    // uploads running
  bool in_tail = false;  // the newest running upload has every byte committed
  int64_t newest = 0;    // the newest upload's number
  absl::Status ended;    // the link failed, or the pass was stopped: no new upload
  absl::Status broken;   // the device's store failed
  // The end of one row's upload: the summary, and the row's state when it failed.
  auto settle = [&](const QueueRow& row, const absl::Status& status, int64_t payload) {
    {
      absl::MutexLock lock(&mu);
      summary.payload_bytes += payload;
      if (status.ok()) {
        ++summary.uploaded;
        return;
      }
      if (!IsConnectionFailure(status)) ++summary.failed;
    }
    absl::StatusOr<std::optional<QueueRow>> now = Row(row.id);
    const int64_t sent = now.ok() && now->has_value() ? (*now)->bytes_sent : row.bytes_sent;
    if (IsConnectionFailure(status)) {
      // The link's failure, not the attachment's: the next pass resumes at the committed
      // offset; the sync's own backoff paces the retries.
      UpdateRow(row.id, sent > 0 ? AttachmentState::kUploading : AttachmentState::kQueued, sent,
                std::string(status.message()))
          .IgnoreError();
      absl::MutexLock lock(&mu);
      if (ended.ok()) ended = status;
      return;
    }
    const int attempts = row.attempts + 1;
    const bool give_up = IsPermanent(status) || attempts >= options_.max_attempts;
    const AttachmentState state = give_up ? AttachmentState::kFailed : AttachmentState::kQueued;
    absl::Status stored = UpdateRow(
        row.id, state, sent, std::string(status.message()), attempts,
        give_up ? 0 : absl::ToUnixMillis(absl::FromUnixMillis(NowMs()) + Backoff(attempts)));
    if (!stored.ok()) {
      absl::MutexLock lock(&mu);
      if (broken.ok()) broken = stored;
      return;
    }
    if (listener) {
      AttachmentProgress p;
      p.id = row.id;
      p.state = state;
      p.bytes_done = sent;
      p.bytes_received = sent;
      p.bytes_sent = sent;
      p.size = row.size;
      p.failure = std::string(status.message());
      listener(p);
    }
  };
  std::vector<std::thread> uploads;
  for (const QueueRow& row : *rows) {
    if (!Active(row.state) || row.next_try_ms > NowMs()) continue;
    if (calls.Stopped()) {
      absl::MutexLock lock(&mu);
      if (ended.ok()) ended = absl::CancelledError("the upload of attachments was cancelled");
      break;
    }
    {
      absl::MutexLock lock(&mu);
      if (!ended.ok() || !broken.ok()) break;
    }
    absl::StatusOr<bool> is_ready = ready(row.id);
    if (!is_ready.ok()) {
      settle(row, is_ready.status(), 0);
      continue;
    }
    if (!*is_ready) continue;  // its record is not on the server yet: after the next push
    int64_t number = 0;
    {
      absl::MutexLock lock(&mu);
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return unfinished == 0 || (unfinished == 1 && in_tail) || !ended.ok() || !broken.ok();
      };
      mu.Await(absl::Condition(&room));
      if (!ended.ok() || !broken.ok()) break;
      ++unfinished;
      in_tail = false;
      number = ++newest;
    }
    uploads.emplace_back([&, row, number] {
      int64_t payload = 0;
      auto committed_all = [&mu, &in_tail, &newest, number] {
        absl::MutexLock lock(&mu);
        if (newest == number) in_tail = true;
      };
      int64_t busy_waits = 0;
      const absl::Status status =
          UploadOne(calls, row, listener, &payload, committed_all, &busy_waits);
      {
        absl::MutexLock lock(&mu);
        summary.busy_waits += busy_waits;
      }
      settle(row, status, payload);
      absl::MutexLock lock(&mu);
      --unfinished;
    });
  }
  for (std::thread& upload : uploads) upload.join();
  if (!broken.ok()) return broken;
  absl::Status evicted = Evict();
  if (!evicted.ok()) return evicted;
  absl::StatusOr<std::vector<QueueRow>> left = Rows();
  if (!left.ok()) return left.status();
  for (const QueueRow& row : *left) summary.remaining += Active(row.state) ? 1 : 0;
  return ended;
}

bool AttachmentQueue::WaitBusy(TransferCalls& calls, absl::Duration d) {
  absl::Duration jitter;
  {
    absl::MutexLock lock(&rng_mu_);
    std::uniform_int_distribution<int64_t> half(0, absl::ToInt64Milliseconds(d) / 2);
    jitter = absl::Milliseconds(half(rng_));
  }
  const absl::Time until = absl::Now() + d + jitter;
  while (absl::Now() < until) {
    if (calls.Stopped()) return false;
    absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
  }
  return !calls.Stopped();
}

absl::Status AttachmentQueue::UploadOne(TransferCalls& calls, const QueueRow& row,
                                        const Listener& listener, int64_t* payload,
                                        const std::function<void()>& committed_all,
                                        int64_t* busy_waits) {
  if (FileSize(PathOf(row.sha256)) != row.size) {
    return absl::FailedPreconditionError(
        "the bytes of this attachment are missing on this device (the attachment folder was "
        "changed outside the SDK)");
  }
  std::string sha_bytes;
  if (!ShaBytes(row.sha256, &sha_bytes)) {
    return absl::DataLossError(absl::StrCat("sha256: '", row.sha256, "' is damaged"));
  }
  auto progress = [&](AttachmentState state, int64_t done, int64_t sent) {
    if (!listener) return;
    AttachmentProgress p;
    p.id = row.id;
    p.state = state;
    p.bytes_done = done;
    p.bytes_received = std::min(done, sent);
    p.bytes_sent = sent;
    p.size = row.size;
    listener(p);
  };
  absl::Status last;
  // A session the server restarted (DATA_LOSS), expired (NOT_FOUND) or whose offset moved
  // (FAILED_PRECONDITION) is begun again, a few times per pass.
  for (int round = 0; round < 4; ++round) {
    if (calls.Stopped()) return absl::CancelledError("the upload of attachments was cancelled");
    kcnet::v1::BeginUploadRequest req;
    req.set_sha256(sha_bytes);
    req.set_size(row.size);
    req.set_media_type(row.media_type);
    req.set_attachment_id(row.id);
    kcnet::v1::BeginUploadResponse resp;
    {
      absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ctx =
          calls.NewContext(absl::Seconds(30));
      if (!ctx.ok()) return ctx.status();
      sync::UploadTrace("dev", "begin", row.size, 0);
      grpc::Status s = calls.Stub()->Begin(ctx->get(), req, &resp);
      sync::UploadTrace("dev", "begun", resp.committed_offset(), resp.already_have() ? 1 : 0);
      calls.Release(ctx->get());
      if (!s.ok()) return FromGrpc(s);
    }
    if (resp.already_have()) {
      absl::Status s = UpdateRow(row.id, AttachmentState::kUploaded, row.size, "", 0, 0);
      if (!s.ok()) return s;
      progress(AttachmentState::kUploaded, row.size, 0);
      return absl::OkStatus();
    }
    const int64_t offset = resp.committed_offset();
    // The row is written when the server's offset is news to it (a resume); a new upload's
    // row stays queued until its first second of acks or its end (an fsync saved a photo).
    absl::Status s;
    if (offset != row.bytes_sent) s = UpdateRow(row.id, AttachmentState::kUploading, offset, "");
    if (!s.ok()) return s;
    progress(AttachmentState::kUploading, offset, offset);
    bool complete = false;
    int64_t committed = offset;
    absl::Duration retry_after;
    last = StreamFrom(calls, row, resp.upload_id(), offset, listener, payload, committed_all,
                      &complete, &committed, &retry_after);
    if (retry_after > absl::ZeroDuration() && *busy_waits < kMaxBusyWaits) {
      // The server serves too many uploads at once and read none of this stream's bytes:
      // come back when it says, with the same session (not a failed attempt).
      ++*busy_waits;
      if (!WaitBusy(calls, retry_after)) {
        return absl::CancelledError("the upload of attachments was cancelled");
      }
      --round;
      continue;
    }
    if (!complete && committed > offset && !absl::IsDataLoss(last)) {
      // What the stream got committed, for the next pass's resume and ListAttachments.
      s = UpdateRow(row.id, AttachmentState::kUploading, committed, "");
      if (!s.ok()) return s;
    }
    if (complete) {
      sync::UploadTrace("dev", "complete", row.size, 0);
      s = UpdateRow(row.id, AttachmentState::kUploaded, row.size, "", 0, 0);
      if (!s.ok()) return s;
      progress(AttachmentState::kUploaded, row.size, row.size);
      return absl::OkStatus();
    }
    if (last.ok()) {
      last = absl::UnavailableError("the server ended the upload before it was complete");
    }
    if (!(absl::IsDataLoss(last) || absl::IsNotFound(last) || absl::IsFailedPrecondition(last))) {
      return last;
    }
  }
  return last;
}

int64_t AttachmentQueue::NextChunkBytes() {
  const double rate = link_bytes_per_s_.load();
  const int64_t smallest = std::min<int64_t>(kSmallestChunkBytes, options_.chunk_bytes);
  if (rate <= 0) return smallest;  // unknown yet: the first received ack tells
  // About half a second of the link per chunk, a power of two between 2 KiB and chunk_bytes.
  int64_t bytes = smallest;
  while (bytes * 2 <= options_.chunk_bytes && static_cast<double>(bytes * 2) <= rate / 2) {
    bytes *= 2;
  }
  return bytes;
}

absl::Status AttachmentQueue::StreamFrom(TransferCalls& calls, const QueueRow& row,
                                         const std::string& upload_id, int64_t offset,
                                         const Listener& listener, int64_t* payload,
                                         const std::function<void()>& committed_all, bool* complete,
                                         int64_t* committed, absl::Duration* retry_after) {
  *retry_after = absl::ZeroDuration();
  std::FILE* file = std::fopen(PathOf(row.sha256).c_str(), "rb");
  if (file == nullptr) return Errno(absl::StrCat("cannot read ", PathOf(row.sha256)));
  absl::Cleanup close_file = [file] { std::fclose(file); };
  if (std::fseek(file, static_cast<long>(offset), SEEK_SET) != 0) {
    return Errno(absl::StrCat("cannot seek ", PathOf(row.sha256)));
  }
  // Slow links get time: ten minutes plus 4 KiB/s.
  absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ctx =
      calls.NewContext(absl::Minutes(10) + absl::Seconds(row.size / 4096));
  if (!ctx.ok()) return ctx.status();
  absl::Cleanup release = [&] { calls.Release(ctx->get()); };
  std::unique_ptr<grpc::ClientReaderWriterInterface<kcnet::v1::UploadChunk, kcnet::v1::UploadAck>>
      stream = calls.Stub()->Upload(ctx->get());

  absl::Mutex mu;
  int64_t acked = offset;     // committed: durable on the server
  int64_t received = offset;  // written on the server, not durable past `acked`
  bool done = false;          // the server's last ack arrived
  bool reader_end = false;
  std::atomic<int64_t> sent{offset};
  // The link's rate, from the received acks: over the first ack (from the stream's start),
  // then over windows of a second or more.
  absl::Time window_start = absl::Now();
  int64_t window_bytes_from = offset;
  // Progress events: one per ack (the reader below), and the same numbers again when none
  // came for kProgressHeartbeat (the heartbeat below), one listener call at a time.
  absl::Mutex listener_mu;
  absl::Time last_event = absl::Now();  // guarded by mu
  auto tell = [&](int64_t done_bytes, int64_t received_bytes) {
    AttachmentProgress p;
    p.id = row.id;
    p.state = AttachmentState::kUploading;
    p.bytes_done = done_bytes;
    p.bytes_received = received_bytes;
    p.bytes_sent = std::max(sent.load(), received_bytes);
    p.size = row.size;
    absl::MutexLock lock(&listener_mu);
    listener(p);
  };
  // Acknowledgements arrive on their own thread while the chunks go out. The queue row
  // (durable, an fsync on the device) is written at most once a second from here, and by
  // UploadOne when the stream ends: a progress event per ack, a row write per second.
  std::thread reader([&] {
    kcnet::v1::UploadAck ack;
    absl::Time row_written = absl::Now();
    int64_t row_offset = offset;
    bool told_committed_all = false;
    while (stream->Read(&ack)) {
      sync::UploadTrace("dev", "ack", ack.committed_offset(), ack.received_offset());
      const absl::Time now = absl::Now();
      int64_t now_acked = 0, now_received = 0;
      bool last = false;
      {
        absl::MutexLock lock(&mu);
        acked = std::max(acked, ack.committed_offset());
        received = std::max({received, acked, ack.received_offset()});
        done = done || ack.complete();
        now_acked = acked;
        now_received = received;
        last = done;
        if (!last) last_event = now;
        const absl::Duration window = now - window_start;
        if (received > window_bytes_from &&
            (link_bytes_per_s_.load() <= 0 || window >= absl::Seconds(1))) {
          link_bytes_per_s_.store(static_cast<double>(received - window_bytes_from) /
                                  absl::ToDoubleSeconds(window));
        }
        if (window >= absl::Seconds(1)) {
          window_start = now;
          window_bytes_from = received;
        }
      }
      if (now_acked == row.size && !told_committed_all) {
        told_committed_all = true;
        if (committed_all) committed_all();
      }
      if (last) continue;
      if (now_acked > row_offset && now - row_written >= absl::Seconds(1)) {
        UpdateRow(row.id, AttachmentState::kUploading, now_acked, "").IgnoreError();
        row_written = now;
        row_offset = now_acked;
      }
      if (listener) tell(now_acked, now_received);
    }
    absl::MutexLock lock(&mu);
    reader_end = true;
  });
  // The heartbeat: ends with the reader (the stream is over) or at the last ack.
  std::thread heartbeat;
  if (listener) {
    heartbeat = std::thread([&] {
      absl::MutexLock lock(&mu);
      auto over = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return reader_end || done; };
      while (!mu.AwaitWithDeadline(absl::Condition(&over), last_event + kProgressHeartbeat)) {
        const absl::Time now = absl::Now();
        if (now - last_event < kProgressHeartbeat) continue;  // an ack came meanwhile
        last_event = now;
        const int64_t now_acked = acked, now_received = received;
        mu.Unlock();
        sync::UploadTrace("dev", "heartbeat", now_acked, now_received);
        tell(now_acked, now_received);
        mu.Lock();
      }
    });
  }
  std::string buffer(static_cast<size_t>(options_.chunk_bytes), '\0');
  int64_t position = offset;
  absl::Time last_ask = absl::InfinitePast();
  // Whether the chunks stopped on this side (cancelled, the file, no ack): then the call is
  // cancelled. When the server ended the call (its reader ended, a write failed), it is
  // left alone, so that Finish gives the server's status (a busy server's retry-after).
  bool cancel = false;
  while (position < row.size) {
    // At most max_in_flight_bytes beyond the committed offset: what a cut can cost.
    {
      absl::MutexLock lock(&mu);
      const int64_t limit = options_.max_in_flight_bytes;
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return reader_end || position - acked < limit;
      };
      if (!room()) sync::UploadTrace("dev", "window_wait", position, acked);
      mu.AwaitWithTimeout(absl::Condition(&room), absl::Minutes(2));
      if (reader_end) break;
      if (position - acked >= limit) {  // no ack for two minutes: a dead link
        cancel = true;
        break;
      }
    }
    if (calls.Stopped()) {
      cancel = true;
      break;
    }
    const int64_t chunk_bytes = NextChunkBytes();
    const size_t want = static_cast<size_t>(std::min<int64_t>(chunk_bytes, row.size - position));
    const size_t got = std::fread(buffer.data(), 1, want, file);
    if (got != want) {
      cancel = true;
      break;
    }
    kcnet::v1::UploadChunk chunk;
    chunk.set_upload_id(upload_id);
    chunk.set_offset(position);
    chunk.set_data(buffer.data(), got);
    chunk.set_crc32c(sync::Crc32c(chunk.data()));
    // A received ack for every chunk of a slow link (small chunks), else a few a second:
    // the progress between two commits and the measure of the rate.
    const absl::Time now = absl::Now();
    if (chunk_bytes < options_.chunk_bytes || now - last_ask >= absl::Milliseconds(250)) {
      chunk.set_ack_received(true);
      last_ask = now;
    }
    sync::UploadTrace("dev", "send", position, static_cast<int64_t>(got));
    if (!stream->Write(chunk)) break;
    sync::UploadTrace("dev", "sent", position + static_cast<int64_t>(got), 0);
    position += static_cast<int64_t>(got);
    *payload += static_cast<int64_t>(got);
    sent.store(position);
  }
  if (cancel) (*ctx)->TryCancel();  // the chunks stopped here: end the call
  stream->WritesDone();
  reader.join();
  if (heartbeat.joinable()) heartbeat.join();
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu);
    *complete = done;
    *committed = acked;
  }
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    const auto& trailers = (*ctx)->GetServerTrailingMetadata();
    const auto it = trailers.find("kcnet-retry-after-ms");
    int64_t ms = 0;
    if (it != trailers.end() &&
        absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &ms) && ms > 0) {
      *retry_after = absl::Milliseconds(std::min<int64_t>(ms, 60'000));
    }
  }
  if (position < row.size && status.ok()) {
    return absl::UnavailableError("the upload stopped before every chunk was sent");
  }
  if (calls.Stopped() && !*complete) {
    return absl::CancelledError("the upload of attachments was cancelled");
  }
  return FromGrpc(status);
}

absl::StatusOr<int64_t> AttachmentQueue::RequeueUploaded() {
  int64_t requeued = 0;
  absl::Status status = store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
    absl::StatusOr<sync::Statement*> st = db.Prepare(
        "UPDATE _att_queue SET state = ?1, bytes_sent = 0, failure = '', attempts = 0, "
        "next_try_ms = 0 WHERE state = ?2 AND sha256 IN (SELECT sha256 FROM _att_blobs)");
    if (!st.ok()) return st.status();
    (*st)->BindInt(1, static_cast<int64_t>(AttachmentState::kQueued));
    (*st)->BindInt(2, static_cast<int64_t>(AttachmentState::kUploaded));
    absl::Status s = (*st)->Run();
    (*st)->Reset();
    requeued = db.Changes();
    return s;
  });
  if (!status.ok()) return status;
  return requeued;
}

absl::Status AttachmentQueue::DropDownloads() {
  absl::MutexLock fetching(&fetch_mu_);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(options_.dir) / "tmp", ec)) {
    if (IsPartName(entry.path().filename().string())) fs::remove(entry.path(), ec);
  }
  if (ec) return absl::InternalError(absl::StrCat("attachment_dir: ", ec.message()));
  return absl::OkStatus();
}

absl::Status AttachmentQueue::DownloadToPart(TransferCalls* calls, const std::string& id,
                                             const std::string& sha_bytes, int64_t size,
                                             const std::string& part, const Listener& listener,
                                             int64_t* resumed_from) {
  int64_t have = std::max<int64_t>(FileSize(part), 0);
  if (have > size) {
    std::remove(part.c_str());
    have = 0;
  }
  *resumed_from = have;
  std::FILE* out = std::fopen(part.c_str(), "ab");
  if (out == nullptr) return Errno(absl::StrCat("cannot write ", part));
  absl::Cleanup close_out = [&out] {
    if (out != nullptr) std::fclose(out);
  };
  absl::Status status;
  if (have < size) {
    absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ctx =
        calls->NewContext(absl::Minutes(10) + absl::Seconds(size / 4096));
    if (!ctx.ok()) return ctx.status();
    absl::Cleanup release = [&] { calls->Release(ctx->get()); };
    kcnet::v1::DownloadRequest req;
    req.set_sha256(sha_bytes);
    req.set_offset(have);
    std::unique_ptr<grpc::ClientReaderInterface<kcnet::v1::DownloadChunk>> reader =
        calls->Stub()->Download(ctx->get(), req);
    kcnet::v1::DownloadChunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != have) {
        status = absl::DataLossError(
            absl::StrCat("download: a chunk at offset ", chunk.offset(), ", expected ", have));
      } else if (sync::Crc32c(chunk.data()) != chunk.crc32c()) {
        status = absl::DataLossError(absl::StrCat("download: chunk at ", have, ": bad crc32c"));
      } else if (std::fwrite(chunk.data().data(), 1, chunk.data().size(), out) !=
                 chunk.data().size()) {
        status = Errno(absl::StrCat("cannot write ", part));
      }
      if (!status.ok()) {
        (*ctx)->TryCancel();
        break;
      }
      have += static_cast<int64_t>(chunk.data().size());
      if (listener) {
        AttachmentProgress p;
        p.id = id;
        p.state = AttachmentState::kRemote;
        p.download = true;
        p.bytes_done = have;
        p.bytes_received = have;
        p.bytes_sent = have;
        p.size = size;
        listener(p);
      }
    }
    grpc::Status s = reader->Finish();
    if (status.ok()) status = FromGrpc(s);
  }
  if (std::fflush(out) != 0 || (options_.durable && ::fsync(::fileno(out)) != 0)) {
    if (status.ok()) status = Errno(absl::StrCat("cannot write ", part));
  }
  std::fclose(out);
  out = nullptr;
  if (!status.ok()) {
    if (absl::IsDataLoss(status)) std::remove(part.c_str());
    return status;  // a cut keeps the part: the next Fetch resumes from its end
  }
  if (have != size) {
    return absl::UnavailableError(
        absl::StrCat("download: ", have, " of ", size, " bytes arrived; try again"));
  }
  // The whole file against its address.
  {
    std::FILE* in = std::fopen(part.c_str(), "rb");
    if (in == nullptr) return Errno(absl::StrCat("cannot read ", part));
    Sha256 sha;
    std::string buffer(1 << 16, '\0');
    size_t n = 0;
    while ((n = std::fread(buffer.data(), 1, buffer.size(), in)) > 0) {
      sha.Update(absl::string_view(buffer.data(), n));
    }
    std::fclose(in);
    if (sha.Finish() != sha_bytes) {
      std::remove(part.c_str());
      return absl::DataLossError(
          "download: the bytes do not match their SHA-256 (removed; try again)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> AttachmentQueue::Fetch(TransferCalls* calls, const std::string& id,
                                                   const std::string& sha256, int64_t size,
                                                   const Listener& listener) {
  const std::string path = PathOf(sha256);
  {
    absl::MutexLock lock(&blob_mu_);
    absl::StatusOr<bool> has = HasBlob(sha256);
    if (!has.ok()) return has.status();
    if (*has) {
      const int64_t now = NowMs();
      absl::Status touched = store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
        absl::StatusOr<sync::Statement*> st =
            db.Prepare("UPDATE _att_blobs SET last_used_ms = ?2 WHERE sha256 = ?1");
        if (!st.ok()) return st.status();
        (*st)->BindText(1, sha256);
        (*st)->BindInt(2, now);
        absl::Status s = (*st)->Run();
        (*st)->Reset();
        return s;
      });
      if (!touched.ok()) return touched;
      return path;
    }
  }
  if (calls == nullptr) {
    return absl::UnavailableError(
        "Ảnh/tệp này chưa có trên máy; cần kết nối để tải về. / The attachment's bytes are not "
        "on this device; connect to download them");
  }
  std::string sha_bytes;
  if (!ShaBytes(sha256, &sha_bytes)) {
    return absl::DataLossError(absl::StrCat("sha256: '", sha256, "' is damaged"));
  }
  absl::MutexLock fetching(&fetch_mu_);
  {
    // Another download may have brought the bytes while this one waited.
    absl::StatusOr<bool> has = HasBlob(sha256);
    if (!has.ok()) return has.status();
    if (*has) return path;
  }
  const std::string part = absl::StrCat(options_.dir, "/tmp/", sha256, ".part");
  int64_t resumed_from = 0;
  absl::Status status = DownloadToPart(calls, id, sha_bytes, size, part, listener, &resumed_from);
  if (absl::IsDataLoss(status) && resumed_from > 0) {
    // The partial file kept from before (a cut, a restart) was damaged: it is gone; once
    // more from 0.
    status = DownloadToPart(calls, id, sha_bytes, size, part, listener, &resumed_from);
  }
  if (!status.ok()) return status;
  {
    absl::MutexLock lock(&blob_mu_);
    const std::string folder = fs::path(path).parent_path().string();
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (std::rename(part.c_str(), path.c_str()) != 0) {
      return Errno(absl::StrCat("cannot rename ", part, " to ", path));
    }
    if (options_.durable) {
      absl::Status s = SyncDir(folder);
      if (!s.ok()) return s;
    }
    const int64_t now = NowMs();
    absl::Status s = store_->WithAppTables(true, [&](sync::Db& db) -> absl::Status {
      absl::StatusOr<sync::Statement*> st = db.Prepare(
          "INSERT INTO _att_blobs(sha256, size, last_used_ms) VALUES (?1, ?2, ?3) "
          "ON CONFLICT(sha256) DO UPDATE SET last_used_ms = excluded.last_used_ms");
      if (!st.ok()) return st.status();
      (*st)->BindText(1, sha256);
      (*st)->BindInt(2, size);
      (*st)->BindInt(3, now);
      absl::Status r = (*st)->Run();
      (*st)->Reset();
      return r;
    });
    if (!s.ok()) return s;
  }
  absl::Status evicted = Evict(sha256);
  if (!evicted.ok()) return evicted;
  return path;
}

const char* AttachmentStateName(AttachmentState state) {
  switch (state) {
    case AttachmentState::kQueued:
      return "queued";
    case AttachmentState::kUploading:
      return "uploading";
    case AttachmentState::kUploaded:
      return "uploaded";
    case AttachmentState::kFailed:
      return "failed";
    case AttachmentState::kRemote:
      return "remote";
  }
  return "unknown";
}

}  // namespace kcnet::sdk
