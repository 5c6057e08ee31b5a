#include "server/pgstore/pg_attachments.h"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/attachments/sha256.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_schema.h"

namespace kcnet::pgstore {
namespace {

using server::DirRows;
using server::DirValue;
using server::UploadSession;

constexpr char kUploadColumns[] =
    "id, user_id, province_id, attachment_id, sha256, size, media_type, committed, created_ms, "
    "expires_ms";

// Chunks read per query while hashing or re-hashing: 4 MiB.
constexpr int64_t kChunksPerRead = 16;

UploadSession SessionFrom(const DirRows& rows, size_t r) {
  UploadSession s;
  s.id = rows.Text(r, 0);
  s.user_id = rows.Int(r, 1);
  s.province_id = rows.Int(r, 2);
  s.attachment_id = rows.Text(r, 3);
  s.sha256 = rows.Text(r, 4);
  s.size = rows.Int(r, 5);
  s.media_type = rows.Text(r, 6);
  s.committed = rows.Int(r, 7);
  s.created_ms = rows.Int(r, 8);
  s.expires_ms = rows.Int(r, 9);
  return s;
}

absl::Status CheckName(const std::string& sha_hex) {
  if (!server::IsSha256Hex(sha_hex)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256: '", sha_hex.substr(0, 64), "' is not 64 lowercase hex characters"));
  }
  return absl::OkStatus();
}

std::string StagedKey(const std::string& upload_id) { return absl::StrCat("upload:", upload_id); }

// ---------------------------------------------------------------------------------------
// The bookkeeping: attachments.db's SQL on PostgreSQL.

class PgAttachmentDb : public server::AttachmentDb {
 public:
  PgAttachmentDb(std::string conninfo, std::unique_ptr<PgConn> conn)
      : session_(std::move(conninfo), std::move(conn), "kcnet_attachments", "the attachments'") {}

  absl::Status Migrate() {
    absl::MutexLock lock(&mu_);
    return session_.Migrate();
  }

  absl::Status CreateUpload(const UploadSession& s) override {
    return Exec(absl::StrCat("INSERT INTO uploads(", kUploadColumns,
                             ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                {DirValue::Text(s.id), DirValue::Int(s.user_id), DirValue::Int(s.province_id),
                 DirValue::Text(s.attachment_id), DirValue::Text(s.sha256), DirValue::Int(s.size),
                 DirValue::Text(s.media_type), DirValue::Int(s.committed),
                 DirValue::Int(s.created_ms), DirValue::Int(s.expires_ms)});
  }

  absl::StatusOr<std::optional<UploadSession>> GetUpload(const std::string& id) override {
    return OneSession(absl::StrCat("SELECT ", kUploadColumns, " FROM uploads WHERE id = ?1"),
                      {DirValue::Text(id)});
  }

  absl::StatusOr<std::optional<UploadSession>> FindUpload(int64_t user_id, int64_t province_id,
                                                          const std::string& sha256) override {
    return OneSession(absl::StrCat("SELECT ", kUploadColumns,
                                   " FROM uploads WHERE user_id = ?1 AND province_id = ?2 AND "
                                   "sha256 = ?3 ORDER BY expires_ms DESC LIMIT 1"),
                      {DirValue::Int(user_id), DirValue::Int(province_id), DirValue::Text(sha256)});
  }

  // Without waiting for the WAL's flush (synchronous_commit off for this transaction only),
  // as the SQLite file's synchronous=NORMAL: the bytes up to `committed` are already
  // durable in their chunk rows (a synchronous commit). A crash or a fail-over may lose the
  // newest offsets: the session then resumes at an older one, whose bytes are durable too,
  // and the client re-sends the difference; nothing is wrong.
  absl::Status SetCommitted(const std::string& id, int64_t committed) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = session_.Begin("BEGIN; SET LOCAL synchronous_commit TO off"); !s.ok()) {
      return s;
    }
    absl::StatusOr<DirRows> rows = session_.Query("UPDATE uploads SET committed = ?1 WHERE id = ?2",
                                                  {DirValue::Int(committed), DirValue::Text(id)});
    if (!rows.ok()) {
      session_.Rollback();
      return rows.status();
    }
    return session_.Commit();
  }

  absl::Status DeleteUpload(const std::string& id) override {
    return Exec("DELETE FROM uploads WHERE id = ?1", {DirValue::Text(id)});
  }

  absl::StatusOr<std::vector<UploadSession>> AllUploads() override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<DirRows> rows =
        session_.Query(absl::StrCat("SELECT ", kUploadColumns, " FROM uploads ORDER BY id"), {});
    if (!rows.ok()) return rows.status();
    std::vector<UploadSession> out;
    for (size_t r = 0; r < rows->size(); ++r) out.push_back(SessionFrom(*rows, r));
    return out;
  }

  absl::StatusOr<bool> ProvinceHas(int64_t province_id, const std::string& sha256) override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<DirRows> rows =
        session_.Query("SELECT 1 FROM province_blobs WHERE province_id = ?1 AND sha256 = ?2",
                       {DirValue::Int(province_id), DirValue::Text(sha256)});
    if (!rows.ok()) return rows.status();
    return !rows->empty();
  }

  absl::Status AddProvinceBlob(int64_t province_id, const std::string& sha256, int64_t size,
                               int64_t user_id, int64_t now_ms) override {
    return Exec(kAddProvinceBlob,
                {DirValue::Int(province_id), DirValue::Text(sha256), DirValue::Int(size),
                 DirValue::Int(user_id), DirValue::Int(now_ms)});
  }

  absl::Status FinishUpload(const std::string& upload_id, int64_t province_id,
                            const std::string& sha256, int64_t size, int64_t user_id,
                            int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = session_.Begin("BEGIN"); !s.ok()) return s;
    absl::StatusOr<DirRows> added = session_.Query(
        kAddProvinceBlob, {DirValue::Int(province_id), DirValue::Text(sha256), DirValue::Int(size),
                           DirValue::Int(user_id), DirValue::Int(now_ms)});
    if (added.ok()) {
      added = session_.Query("DELETE FROM uploads WHERE id = ?1", {DirValue::Text(upload_id)});
    }
    if (!added.ok()) {
      session_.Rollback();
      return added.status();
    }
    return session_.Commit();
  }

  absl::StatusOr<int64_t> UserBytes(int64_t user_id, const std::string& except_upload) override {
    return Sum(
        "SELECT ((SELECT coalesce(sum(size), 0) FROM province_blobs WHERE user_id = ?1) + "
        "(SELECT coalesce(sum(size), 0) FROM uploads WHERE user_id = ?1 AND id <> ?2))::bigint",
        user_id, except_upload);
  }

  absl::StatusOr<int64_t> ProvinceBytes(int64_t province_id,
                                        const std::string& except_upload) override {
    return Sum(
        "SELECT ((SELECT coalesce(sum(size), 0) FROM province_blobs WHERE province_id = ?1) + "
        "(SELECT coalesce(sum(size), 0) FROM uploads WHERE province_id = ?1 AND id <> ?2))"
        "::bigint",
        province_id, except_upload);
  }

  absl::StatusOr<int64_t> MarkUnreferenced(const std::string& sha256, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    // The first instance to see it unreferenced sets the time; every later one reads it.
    absl::StatusOr<DirRows> rows = session_.Query(
        "INSERT INTO gc_marks(sha256, since_ms) VALUES (?1, ?2) "
        "ON CONFLICT (sha256) DO UPDATE SET since_ms = gc_marks.since_ms RETURNING since_ms",
        {DirValue::Text(sha256), DirValue::Int(now_ms)});
    if (!rows.ok()) return rows.status();
    return rows->empty() ? now_ms : rows->Int(0, 0);
  }

  absl::Status ClearMark(const std::string& sha256) override {
    return Exec("DELETE FROM gc_marks WHERE sha256 = ?1", {DirValue::Text(sha256)});
  }

  absl::Status ForgetBlob(const std::string& sha256) override {
    absl::MutexLock lock(&mu_);
    for (const char* sql : {"DELETE FROM province_blobs WHERE sha256 = ?1",
                            "DELETE FROM gc_marks WHERE sha256 = ?1"}) {
      absl::StatusOr<DirRows> rows = session_.Query(sql, {DirValue::Text(sha256)});
      if (!rows.ok()) return rows.status();
    }
    return absl::OkStatus();
  }

 private:
  static constexpr char kAddProvinceBlob[] =
      "INSERT INTO province_blobs(province_id, sha256, size, user_id, created_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (province_id, sha256) DO NOTHING";

  absl::Status Exec(const std::string& sql, const std::vector<DirValue>& params) {
    absl::MutexLock lock(&mu_);
    return session_.Query(sql, params).status();
  }

  absl::StatusOr<std::optional<UploadSession>> OneSession(const std::string& sql,
                                                          const std::vector<DirValue>& params) {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<DirRows> rows = session_.Query(sql, params);
    if (!rows.ok()) return rows.status();
    std::optional<UploadSession> out;
    if (!rows->empty()) out = SessionFrom(*rows, 0);
    return out;
  }

  absl::StatusOr<int64_t> Sum(const char* sql, int64_t key, const std::string& except_upload) {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<DirRows> rows =
        session_.Query(sql, {DirValue::Int(key), DirValue::Text(except_upload)});
    if (!rows.ok()) return rows.status();
    return rows->empty() ? 0 : rows->Int(0, 0);
  }

  absl::Mutex mu_;
  PgSqlSession session_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------
// A few connections for the bytes: commits of several uploads, downloads and the collector
// run at once.

class PgPool {
 public:
  PgPool(std::string conninfo, int size) : conninfo_(std::move(conninfo)), size_(size) {}

  // Runs `fn` on a connection (a new one when none is free and fewer than `size` are
  // open; else waits for one). A connection that was lost is dropped afterwards.
  absl::Status With(const std::function<absl::Status(PgConn&)>& fn) {
    std::unique_ptr<PgConn> conn;
    {
      absl::MutexLock lock(&mu_);
      auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !free_.empty() || open_ < size_;
      };
      mu_.Await(absl::Condition(&available));
      if (!free_.empty()) {
        conn = std::move(free_.back());
        free_.pop_back();
      } else {
        ++open_;
      }
    }
    if (conn == nullptr) {
      absl::StatusOr<std::unique_ptr<PgConn>> fresh = PgConn::Connect(conninfo_);
      if (!fresh.ok()) {
        absl::MutexLock lock(&mu_);
        --open_;
        return fresh.status();
      }
      conn = *std::move(fresh);
    }
    absl::Status status = fn(*conn);
    absl::MutexLock lock(&mu_);
    if (conn->ok()) {
      free_.push_back(std::move(conn));
    } else {
      --open_;
    }
    return status;
  }

 private:
  const std::string conninfo_;
  const int size_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<PgConn>> free_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // free or in use
};

// Runs `fn` inside BEGIN ... COMMIT on `conn` (ROLLBACK when it fails).
absl::Status InTransaction(PgConn& conn, const std::function<absl::Status()>& fn) {
  if (absl::Status s = conn.Exec("BEGIN"); !s.ok()) return s;
  absl::Status status = fn();
  if (!status.ok()) {
    if (conn.ok()) conn.Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return conn.Exec("COMMIT");
}

// Reads chunks [first, last] of `key` in order and hands each to `fn`.
absl::Status ForEachChunk(PgConn& conn, const std::string& key, int64_t first, int64_t last,
                          const std::function<void(int64_t n, absl::string_view data)>& fn) {
  for (int64_t from = first; from <= last; from += kChunksPerRead) {
    const int64_t to = std::min(last, from + kChunksPerRead - 1);
    absl::StatusOr<PgResult> rows = conn.QueryBinary(
        "SELECT n::bigint, data FROM kcnet_attachments.chunks WHERE key = $1 AND n BETWEEN $2 "
        "AND $3 ORDER BY n",
        {PgParam::Text(key), PgParam::Int(from), PgParam::Int(to)});
    if (!rows.ok()) return rows.status();
    for (int r = 0; r < rows->rows(); ++r) fn(rows->GetBinaryInt(r, 0), rows->Get(r, 1));
    if (rows->rows() < to - from + 1) break;  // past the end
  }
  return absl::OkStatus();
}

// Bytes of `key`'s chunks: n * kPgChunkBytes + the last chunk's length (0: none).
absl::StatusOr<int64_t> StagedBytes(PgConn& conn, const std::string& key) {
  absl::StatusOr<PgResult> rows = conn.Query(
      "SELECT n, length(data) FROM kcnet_attachments.chunks WHERE key = $1 ORDER BY n DESC "
      "LIMIT 1",
      {PgParam::Text(key)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() == 0) return 0;
  return rows->GetInt(0, 0) * kPgChunkBytes + rows->GetInt(0, 1);
}

// Inserts `bytes` as the chunks of `key` (inside the caller's transaction).
absl::Status InsertChunks(PgConn& conn, const std::string& key, absl::string_view bytes) {
  for (int64_t n = 0; n * kPgChunkBytes < static_cast<int64_t>(bytes.size()); ++n) {
    absl::StatusOr<PgResult> done =
        conn.Query("INSERT INTO kcnet_attachments.chunks(key, n, data) VALUES ($1, $2, $3)",
                   {PgParam::Text(key), PgParam::Int(n),
                    PgParam::Bytes(std::string(bytes.substr(n * kPgChunkBytes, kPgChunkBytes)))});
    if (!done.ok()) return done.status();
  }
  return absl::OkStatus();
}

class PgBlobStore : public server::BlobStore {
 public:
  explicit PgBlobStore(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {}

  absl::StatusOr<int64_t> Size(const std::string& sha_hex) override {
    if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
    int64_t size = -1;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      absl::StatusOr<PgResult> rows = conn.Query(
          "SELECT size FROM kcnet_attachments.blobs WHERE sha256 = $1", {PgParam::Text(sha_hex)});
      if (!rows.ok()) return rows.status();
      if (rows->rows() > 0) size = rows->GetInt(0, 0);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    if (size < 0) return absl::NotFoundError(absl::StrCat("blob ", sha_hex, ": none"));
    return size;
  }

  absl::StatusOr<std::string> Read(const std::string& sha_hex, int64_t offset,
                                   int64_t length) override {
    if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
    if (offset < 0 || length < 0) return absl::InvalidArgumentError("offset/length: negative");
    std::string out;
    bool found = true;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      if (length > 0) {
        // Only the slice of each chunk in the range (the column is not compressed, so
        // PostgreSQL reads just that part of the TOASTed value).
        const int64_t end = offset + length;
        absl::StatusOr<PgResult> rows = conn.QueryBinary(
            "SELECT substring(data FROM (greatest($2::bigint - n::bigint * 262144, 0) + 1)::int "
            "FOR (least($3::bigint - n::bigint * 262144, 262144) - "
            "greatest($2::bigint - n::bigint * 262144, 0))::int) "
            "FROM kcnet_attachments.chunks WHERE key = $1 AND n BETWEEN $4 AND $5 ORDER BY n",
            {PgParam::Text(sha_hex), PgParam::Int(offset), PgParam::Int(end),
             PgParam::Int(offset / kPgChunkBytes), PgParam::Int((end - 1) / kPgChunkBytes)});
        if (!rows.ok()) return rows.status();
        for (int r = 0; r < rows->rows(); ++r) absl::StrAppend(&out, rows->Get(r, 0));
        if (!out.empty()) return absl::OkStatus();
      }
      // Nothing read: past the end, or no blob.
      absl::StatusOr<PgResult> exists = conn.Query(
          "SELECT 1 FROM kcnet_attachments.blobs WHERE sha256 = $1", {PgParam::Text(sha_hex)});
      if (!exists.ok()) return exists.status();
      found = exists->rows() > 0;
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    if (!found) return absl::NotFoundError(absl::StrCat("blob ", sha_hex, ": none"));
    return out;
  }

  absl::Status Adopt(const std::string& sha_hex, const std::string& path) override {
    if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("blob store: cannot read ", path));
    std::stringstream bytes;
    bytes << in.rdbuf();
    absl::Status status = Store(sha_hex, bytes.str());
    if (status.ok()) std::remove(path.c_str());
    return status;
  }

  absl::StatusOr<std::string> Put(absl::string_view bytes) override {
    const std::string sha_hex = server::HexOf(server::Sha256Of(bytes));
    if (absl::Status s = Store(sha_hex, bytes); !s.ok()) return s;
    return sha_hex;
  }

  absl::Status Remove(const std::string& sha_hex) override {
    if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
    return pool_->With([&](PgConn& conn) {
      return InTransaction(conn, [&]() -> absl::Status {
        for (const char* sql : {"DELETE FROM kcnet_attachments.blobs WHERE sha256 = $1",
                                "DELETE FROM kcnet_attachments.chunks WHERE key = $1"}) {
          absl::StatusOr<PgResult> done = conn.Query(sql, {PgParam::Text(sha_hex)});
          if (!done.ok()) return done.status();
        }
        return absl::OkStatus();
      });
    });
  }

  absl::Status ForEach(
      const std::function<absl::Status(const std::string& sha_hex, int64_t size)>& fn) override {
    // The list first, then `fn` with no connection held (it may read the blob).
    std::vector<std::pair<std::string, int64_t>> blobs;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      absl::StatusOr<PgResult> rows =
          conn.Query("SELECT sha256, size FROM kcnet_attachments.blobs ORDER BY sha256");
      if (!rows.ok()) return rows.status();
      for (int r = 0; r < rows->rows(); ++r) {
        blobs.emplace_back(std::string(rows->Get(r, 0)), rows->GetInt(r, 1));
      }
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    for (const auto& blob : blobs) {
      if (absl::Status s = fn(blob.first, blob.second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Rehash(const std::string& sha_hex) override {
    if (absl::Status s = CheckName(sha_hex); !s.ok()) return s;
    absl::StatusOr<int64_t> size = Size(sha_hex);
    if (!size.ok()) return size.status();
    server::Sha256 sha;
    absl::Status status = pool_->With([&](PgConn& conn) {
      return ForEachChunk(conn, sha_hex, 0, (*size - 1) / kPgChunkBytes,
                          [&sha](int64_t, absl::string_view data) { sha.Update(data); });
    });
    if (!status.ok()) return status;
    return server::HexOf(sha.Finish());
  }

 private:
  // The blob `sha_hex` made of `bytes`, in one transaction; nothing when it exists.
  absl::Status Store(const std::string& sha_hex, absl::string_view bytes) {
    return pool_->With([&](PgConn& conn) {
      return InTransaction(conn, [&]() -> absl::Status {
        absl::StatusOr<PgResult> added = conn.Query(
            "INSERT INTO kcnet_attachments.blobs(sha256, size, created_ms) VALUES ($1, $2, "
            "(extract(epoch FROM now()) * 1000)::bigint) ON CONFLICT (sha256) DO NOTHING",
            {PgParam::Text(sha_hex), PgParam::Int(static_cast<int64_t>(bytes.size()))});
        if (!added.ok()) return added.status();
        if (added->affected() == 0) return absl::OkStatus();
        return InsertChunks(conn, sha_hex, bytes);
      });
    });
  }

  std::shared_ptr<PgPool> pool_;
};

// One upload's staged chunks. In memory: the bytes from the start of the chunk that holds
// the durable end (base_) to what the stream wrote, so that a commit can write whole
// chunks (rewriting the partly filled one of the commit before).
class PgStagedUpload : public server::StagedUpload {
 public:
  PgStagedUpload(std::shared_ptr<PgPool> pool, std::string upload_id, std::string writer,
                 int64_t size)
      : pool_(std::move(pool)),
        upload_id_(std::move(upload_id)),
        key_(StagedKey(upload_id_)),
        writer_(std::move(writer)),
        size_at_open_(size) {}

  int64_t size_at_open() const override { return size_at_open_; }

  absl::Status Write(int64_t offset, absl::string_view data) override {
    absl::MutexLock lock(&mu_);
    if (!loaded_) return absl::FailedPreconditionError("upload: staged bytes not loaded");
    if (offset != base_ + static_cast<int64_t>(buffer_.size())) {
      return absl::InternalError(absl::StrCat("upload: write at ", offset, ", staged up to ",
                                              base_ + static_cast<int64_t>(buffer_.size())));
    }
    buffer_.append(data.data(), data.size());
    return absl::OkStatus();
  }

  absl::Status Sync(int64_t upto) override {
    struct Row {
      int64_t n;
      std::string data;
    };
    std::vector<Row> rows;
    {
      absl::MutexLock lock(&mu_);
      if (upto <= synced_) return absl::OkStatus();
      if (upto > base_ + static_cast<int64_t>(buffer_.size())) {
        return absl::InternalError("upload: commit past the bytes written");
      }
      for (int64_t n = synced_ / kPgChunkBytes; n * kPgChunkBytes < upto; ++n) {
        const int64_t from = n * kPgChunkBytes;
        const int64_t to = std::min(from + kPgChunkBytes, upto);
        rows.push_back({n, buffer_.substr(from - base_, to - from)});
      }
    }
    absl::Status status = pool_->With([&](PgConn& conn) {
      return InTransaction(conn, [&]() -> absl::Status {
        if (absl::Status s = CheckWriter(conn); !s.ok()) return s;
        for (Row& row : rows) {
          absl::StatusOr<PgResult> done = conn.Query(
              "INSERT INTO kcnet_attachments.chunks(key, n, data) VALUES ($1, $2, $3) "
              "ON CONFLICT (key, n) DO UPDATE SET data = EXCLUDED.data",
              {PgParam::Text(key_), PgParam::Int(row.n), PgParam::Bytes(std::move(row.data))});
          if (!done.ok()) return done.status();
        }
        return absl::OkStatus();
      });
    });
    if (!status.ok()) return status;
    absl::MutexLock lock(&mu_);
    synced_ = upto;
    const int64_t new_base = upto / kPgChunkBytes * kPgChunkBytes;
    if (new_base > base_) {
      buffer_.erase(0, static_cast<size_t>(new_base - base_));
      base_ = new_base;
    }
    return absl::OkStatus();
  }

  absl::Status Truncate(int64_t size, bool /*durable*/) override {
    absl::MutexLock lock(&mu_);
    const int64_t last = size / kPgChunkBytes;  // the chunk that holds byte `size`, if any
    const int64_t tail = size % kPgChunkBytes;
    std::string kept;
    absl::Status status = pool_->With([&](PgConn& conn) {
      return InTransaction(conn, [&]() -> absl::Status {
        absl::StatusOr<PgResult> done =
            conn.Query("DELETE FROM kcnet_attachments.chunks WHERE key = $1 AND n > $2",
                       {PgParam::Text(key_), PgParam::Int(tail > 0 ? last : last - 1)});
        if (!done.ok()) return done.status();
        if (tail == 0) return absl::OkStatus();
        absl::StatusOr<PgResult> cut = conn.QueryBinary(
            "UPDATE kcnet_attachments.chunks SET data = substring(data FROM 1 FOR $3) "
            "WHERE key = $1 AND n = $2 RETURNING data",
            {PgParam::Text(key_), PgParam::Int(last), PgParam::Int(tail)});
        if (!cut.ok()) return cut.status();
        if (cut->rows() > 0) kept = std::string(cut->Get(0, 0));
        return absl::OkStatus();
      });
    });
    if (!status.ok()) return status;
    if (static_cast<int64_t>(kept.size()) != tail) {
      return absl::DataLossError(
          absl::StrCat("upload ", upload_id_, ": staged bytes end before ", size));
    }
    base_ = last * kPgChunkBytes;
    buffer_ = std::move(kept);
    synced_ = size;
    loaded_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Hash(int64_t size) override {
    server::Sha256 sha;
    absl::Status status = pool_->With([&](PgConn& conn) {
      return ForEachChunk(conn, key_, 0, size <= 0 ? -1 : (size - 1) / kPgChunkBytes,
                          [&sha](int64_t, absl::string_view data) { sha.Update(data); });
    });
    if (!status.ok()) return status;
    return sha.Finish();
  }

  absl::Status Finish(const std::string& sha_hex, int64_t size) override {
    return pool_->With([&](PgConn& conn) {
      return InTransaction(conn, [&]() -> absl::Status {
        absl::StatusOr<PgResult> added = conn.Query(
            "INSERT INTO kcnet_attachments.blobs(sha256, size, created_ms) VALUES ($1, $2, "
            "(extract(epoch FROM now()) * 1000)::bigint) ON CONFLICT (sha256) DO NOTHING",
            {PgParam::Text(sha_hex), PgParam::Int(size)});
        if (!added.ok()) return added.status();
        // The staged rows become the blob's (a rename), or go when the blob was there.
        absl::StatusOr<PgResult> moved =
            added->affected() > 0
                ? conn.Query("UPDATE kcnet_attachments.chunks SET key = $2 WHERE key = $1",
                             {PgParam::Text(key_), PgParam::Text(sha_hex)})
                : conn.Query("DELETE FROM kcnet_attachments.chunks WHERE key = $1",
                             {PgParam::Text(key_)});
        return moved.status();
      });
    });
  }

 private:
  // Under the session row's lock: this stream is still its writer (else another instance
  // took the upload over: ABORTED), and the session still exists (else NOT_FOUND).
  absl::Status CheckWriter(PgConn& conn) {
    absl::StatusOr<PgResult> rows =
        conn.Query("SELECT writer FROM kcnet_attachments.uploads WHERE id = $1 FOR UPDATE",
                   {PgParam::Text(upload_id_)});
    if (!rows.ok()) return rows.status();
    if (rows->rows() == 0) {
      return absl::NotFoundError(absl::StrCat("upload_id: no upload session '", upload_id_, "'"));
    }
    if (rows->Get(0, 0) != writer_) {
      return absl::AbortedError(
          "upload_id: một kết nối khác đã tiếp nhận phiên này / another stream (on another "
          "instance) took over this upload");
    }
    return absl::OkStatus();
  }

  std::shared_ptr<PgPool> pool_;
  const std::string upload_id_;
  const std::string key_;
  const std::string writer_;
  const int64_t size_at_open_;

  absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;  // Truncate() loaded the tail
  int64_t base_ ABSL_GUARDED_BY(mu_) = 0;     // offset of buffer_[0], a chunk boundary
  std::string buffer_ ABSL_GUARDED_BY(mu_);
  int64_t synced_ ABSL_GUARDED_BY(mu_) = 0;  // bytes in the chunk rows
};

class PgUploadStaging : public server::UploadStaging {
 public:
  explicit PgUploadStaging(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {}

  absl::StatusOr<std::unique_ptr<server::StagedUpload>> Open(const std::string& id) override {
    // This stream becomes the session's writer, on every instance.
    unsigned char raw[16];
    randombytes_buf(raw, sizeof(raw));
    const std::string writer =
        server::HexOf(absl::string_view(reinterpret_cast<const char*>(raw), sizeof(raw)));
    int64_t size = 0;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      absl::StatusOr<PgResult> claimed =
          conn.Query("UPDATE kcnet_attachments.uploads SET writer = $2 WHERE id = $1",
                     {PgParam::Text(id), PgParam::Text(writer)});
      if (!claimed.ok()) return claimed.status();
      absl::StatusOr<int64_t> staged = StagedBytes(conn, StagedKey(id));
      if (!staged.ok()) return staged.status();
      size = *staged;
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return std::unique_ptr<server::StagedUpload>(new PgStagedUpload(pool_, id, writer, size));
  }

  absl::StatusOr<int64_t> StagedSize(const std::string& id) override {
    int64_t size = 0;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      absl::StatusOr<int64_t> staged = StagedBytes(conn, StagedKey(id));
      if (!staged.ok()) return staged.status();
      size = *staged;
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return size;
  }

  absl::StatusOr<std::vector<std::string>> List() override {
    std::vector<std::string> ids;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      // "upload:" < key < "upload;": the staged keys, by the primary key's index.
      absl::StatusOr<PgResult> rows = conn.Query(
          "SELECT DISTINCT substring(key FROM 8) FROM kcnet_attachments.chunks "
          "WHERE key >= 'upload:' AND key < 'upload;' AND n = 0");
      if (!rows.ok()) return rows.status();
      for (int r = 0; r < rows->rows(); ++r) ids.emplace_back(rows->Get(r, 0));
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return ids;
  }

  absl::StatusOr<bool> Remove(const std::string& id) override {
    bool removed = false;
    absl::Status status = pool_->With([&](PgConn& conn) -> absl::Status {
      absl::StatusOr<PgResult> done = conn.Query(
          "DELETE FROM kcnet_attachments.chunks WHERE key = $1", {PgParam::Text(StagedKey(id))});
      if (!done.ok()) return done.status();
      removed = done->affected() > 0;
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return removed;
  }

 private:
  std::shared_ptr<PgPool> pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<server::AttachmentDb>> OpenPgAttachmentDb(
    const std::string& conninfo) {
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  auto db = std::make_unique<PgAttachmentDb>(conninfo, *std::move(conn));
  if (absl::Status s = db->Migrate(); !s.ok()) return s;
  return std::unique_ptr<server::AttachmentDb>(std::move(db));
}

absl::StatusOr<PgBlobStorage> OpenPgBlobStorage(const std::string& conninfo, int connections) {
  auto pool = std::make_shared<PgPool>(conninfo, std::max(1, connections));
  // Connects (and migrates) once now, so that a wrong conninfo fails at the start.
  absl::Status status = pool->With([](PgConn& conn) { return Migrate(conn); });
  if (!status.ok()) return status;
  PgBlobStorage out;
  out.blobs = std::make_unique<PgBlobStore>(pool);
  out.staging = std::make_unique<PgUploadStaging>(pool);
  return out;
}

absl::StatusOr<server::Attachments::Storage> OpenPgAttachmentStorage(const std::string& conninfo) {
  absl::StatusOr<std::unique_ptr<server::AttachmentDb>> db = OpenPgAttachmentDb(conninfo);
  if (!db.ok()) return db.status();
  absl::StatusOr<PgBlobStorage> bytes = OpenPgBlobStorage(conninfo);
  if (!bytes.ok()) return bytes.status();
  server::Attachments::Storage storage;
  storage.db = *std::move(db);
  storage.blobs = std::move(bytes->blobs);
  storage.staging = std::move(bytes->staging);
  return storage;
}

}  // namespace kcnet::pgstore
