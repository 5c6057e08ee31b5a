#include "server/attachments/attachments.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kcnet/v1/domain.pb.h"
#include "server/records/record_access.h"
#include "sync/crc32c.h"
#include "sync/model/record_types.h"
#include "sync/model/rules.h"
#include "sync/upload_trace.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;
namespace v1 = kcnet::v1;

constexpr char kAttachmentsFile[] = "attachments.db";
constexpr char kBlobsDir[] = "blobs";
constexpr char kUploadsDir[] = "uploads";

absl::Status UploadNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("upload_id: không có phiên tải lên '", id.substr(0, 64),
                                          "' (hết hạn?) / no upload session '", id.substr(0, 64),
                                          "' (expired? Begin again)"));
}

absl::Status WrongOffset(int64_t committed, int64_t got) {
  return absl::FailedPreconditionError(
      absl::StrCat("offset: gửi tiếp từ committed_offset=", committed,
                   " / resume from committed_offset=", committed, ", got offset ", got));
}

std::string NewUploadId() {
  unsigned char raw[16];
  randombytes_buf(raw, sizeof(raw));
  return HexOf(absl::string_view(reinterpret_cast<const char*>(raw), sizeof(raw)));
}

}  // namespace

absl::Status CheckAttachmentOptions(const AttachmentOptions& o) {
  if (o.max_bytes <= 0 || o.max_bytes > model::kAttachmentMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat("attachment_max_bytes: must be between 1 and ",
                                                   model::kAttachmentMaxBytes, ", got ",
                                                   o.max_bytes));
  }
  if (o.media_types.empty()) {
    return absl::InvalidArgumentError("attachment_media_types: must name at least one type");
  }
  const auto& known = model::AttachmentMediaTypes();
  for (const std::string& t : o.media_types) {
    if (std::find(known.begin(), known.end(), t) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attachment_media_types: '", t, "' is not one of ", absl::StrJoin(known, ", ")));
    }
  }
  if (o.max_upload_streams < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment_max_upload_streams: must not be negative (0: no limit), got ",
                     o.max_upload_streams));
  }
  if (o.busy_retry_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("busy_retry_after: must be positive");
  }
  if (o.user_quota_bytes < 0 || o.province_quota_bytes < 0) {
    return absl::InvalidArgumentError("attachment_quota: must not be negative");
  }
  if (o.upload_ttl <= absl::ZeroDuration() || o.gc_grace < absl::ZeroDuration() ||
      o.gc_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("blob_gc: durations must not be negative");
  }
  return absl::OkStatus();
}

absl::Status CheckMagic(const std::string& media_type, absl::string_view head) {
  bool ok = false;
  if (media_type == "image/jpeg") {
    ok = head.size() >= 3 && head.substr(0, 3) == absl::string_view("\xFF\xD8\xFF", 3);
  } else if (media_type == "image/png") {
    ok = head.size() >= 8 && head.substr(0, 8) == absl::string_view("\x89PNG\r\n\x1A\n", 8);
  } else if (media_type == "image/webp") {
    ok = head.size() >= 12 && head.substr(0, 4) == "RIFF" && head.substr(8, 4) == "WEBP";
  } else if (media_type == "application/pdf") {
    ok = head.size() >= 5 && head.substr(0, 5) == "%PDF-";
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("media_type: nội dung không phải ", media_type,
                                                 " / the bytes are not ", media_type,
                                                 " (checked by their first bytes)"));
}

absl::StatusOr<std::unique_ptr<Attachments>> Attachments::Open(const std::string& data_dir,
                                                               const std::string& records_path,
                                                               const AttachmentOptions& options,
                                                               const Deps& deps, Storage storage) {
  if (absl::Status s = CheckAttachmentOptions(options); !s.ok()) return s;
  std::unique_ptr<Attachments> a(new Attachments(options, deps));
  const fs::path dir(data_dir);
  if (storage.db != nullptr) {
    a->db_ = std::move(storage.db);
  } else {
    absl::StatusOr<std::unique_ptr<AttachmentDb>> db =
        AttachmentDb::Open((dir / kAttachmentsFile).string());
    if (!db.ok()) return db.status();
    a->db_ = *std::move(db);
  }
  if (storage.blobs != nullptr) {
    a->blobs_ = std::move(storage.blobs);
  } else {
    absl::StatusOr<std::unique_ptr<FileBlobStore>> blobs =
        FileBlobStore::Open((dir / kBlobsDir).string());
    if (!blobs.ok()) return blobs.status();
    a->blobs_ = *std::move(blobs);
  }
  absl::StatusOr<std::unique_ptr<RecordReferences>> refs = RecordReferences::Open(records_path);
  if (!refs.ok()) return refs.status();
  if (deps.refresh_references) {
    a->references_ =
        std::make_unique<RefreshedReferences>(*std::move(refs), deps.refresh_references);
  } else {
    a->references_ = *std::move(refs);
  }
  if (storage.staging != nullptr) {
    a->staging_ = std::move(storage.staging);
  } else {
    a->uploads_dir_ = (dir / kUploadsDir).string();
    std::error_code error;
    fs::create_directories(a->uploads_dir_, error);
    if (error) {
      return absl::PermissionDeniedError(
          absl::StrCat("data_dir: cannot create ", a->uploads_dir_, ": ", error.message()));
    }
    a->staging_ = std::make_unique<FileUploadStaging>(a->uploads_dir_, a->blobs_.get());
  }
  if (options.gc_interval > absl::ZeroDuration()) {
    Attachments* self = a.get();
    a->collector_ = std::thread([self] { self->CollectorLoop(); });
  }
  for (int i = 0; i < kCommitterThreads; ++i) {
    Attachments* self = a.get();
    a->committers_.emplace_back([self] { self->CommitterLoop(); });
  }
  return a;
}

Attachments::~Attachments() {
  Stop();
  // The committers run what is queued, then end (no stream is left to queue more).
  {
    absl::MutexLock lock(&commit_mu_);
    committers_stop_ = true;
  }
  for (std::thread& t : committers_) t.join();
  std::vector<std::shared_ptr<Active>> open;
  {
    absl::MutexLock lock(&active_mu_);
    for (auto& entry : active_) open.push_back(entry.second);
  }
  for (const std::shared_ptr<Active>& a : open) {
    absl::MutexLock lock(&a->mu);
    a->staged.reset();
  }
}

void Attachments::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (collector_.joinable()) collector_.join();
}

void Attachments::CollectorLoop() {
  while (true) {
    {
      absl::MutexLock lock(&stop_mu_);
      auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(stop_mu_) { return stopping_; };
      if (stop_mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.gc_interval)) return;
    }
    absl::StatusOr<GcReport> report = CollectGarbage();
    if (deps_.logger == nullptr) continue;
    if (!report.ok()) {
      deps_.logger->Warning(absl::StrCat("blob gc: ", report.status().message()));
    } else if (report->blobs_removed + report->sessions_expired + report->temp_files_removed > 0) {
      deps_.logger->Info(absl::StrCat("blob gc: removed ", report->blobs_removed, " blobs (",
                                      report->bytes_removed, " bytes), ", report->sessions_expired,
                                      " expired uploads, ", report->temp_files_removed,
                                      " temp files"));
    }
  }
}

absl::StatusOr<GcReport> Attachments::CollectGarbage() {
  GcOptions gc;
  gc.now_ms = deps_.clock->NowMs();
  gc.grace = options_.gc_grace;
  gc.staging = staging_.get();
  gc.active = [this](const std::string& id) {
    std::shared_ptr<Active> a = FindActive(id);
    if (a == nullptr) return false;
    absl::MutexLock lock(&a->mu);
    return a->attached;
  };
  return server::CollectGarbage(*db_, *blobs_, *references_, gc);
}

absl::StatusOr<int64_t> Attachments::ProvinceOf(int64_t org_unit_id) {
  int64_t id = org_unit_id;
  for (int depth = 0; id > 0 && depth < 64; ++depth) {
    absl::StatusOr<v1::OrgUnit> unit = deps_.directory->GetOrgUnit(id);
    if (!unit.ok()) break;
    if (unit->level() == v1::ORG_UNIT_LEVEL_PROVINCE) return unit->id();
    id = unit->parent_id();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("commune_id: org unit ", org_unit_id, " lies in no province"));
}

absl::StatusOr<v1::BeginUploadResponse> Attachments::Begin(const Principal& caller,
                                                           const v1::BeginUploadRequest& req) {
  if (req.sha256().size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256: phải là 32 byte / must be the 32 bytes of a SHA-256, got ", req.sha256().size()));
  }
  if (req.size() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("size: phải lớn hơn 0 / must be above 0, got ", req.size()));
  }
  if (req.size() > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "size: tệp quá lớn (tối đa ", options_.max_bytes, " byte) / too large: ", req.size(),
        " bytes, the limit is ", options_.max_bytes));
  }
  if (std::find(options_.media_types.begin(), options_.media_types.end(), req.media_type()) ==
      options_.media_types.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("media_type: loại tệp không được nhận / '", req.media_type().substr(0, 64),
                     "' is not accepted (", absl::StrJoin(options_.media_types, ", "), ")"));
  }
  // The record the bytes belong to: visible to the caller, saying the same as the request.
  RecordAccess access(
      RecordServiceDeps{.directory = deps_.directory, .store = deps_.store, .clock = deps_.clock});
  v1::Attachment record;
  absl::StatusOr<uint64_t> read =
      access.Read(caller, model::kAttachmentType, req.attachment_id(), &record);
  if (!read.ok()) {
    if (read.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(
          absl::StrCat("attachment_id: '", req.attachment_id().substr(0, 64), "' is not a UUID"));
    }
    if (read.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("attachment_id: không có tệp đính kèm / attachment ",
                                              req.attachment_id().substr(0, 64),
                                              " not found (sync its record first)"));
    }
    return read.status();
  }
  const std::string sha = HexOf(req.sha256());
  if (record.sha256() != sha || record.size_bytes() != req.size() ||
      record.media_type() != req.media_type()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256: không khớp bản ghi / sha256, size and media_type must be the attachment "
        "record's (",
        record.sha256(), ", ", record.size_bytes(), ", ", record.media_type(), ")"));
  }
  absl::StatusOr<int64_t> province = ProvinceOf(record.commune_id());
  if (!province.ok()) return province.status();

  v1::BeginUploadResponse resp;
  absl::StatusOr<bool> has = db_->ProvinceHas(*province, sha);
  if (!has.ok()) return has.status();
  if (*has && blobs_->Size(sha).ok()) {
    resp.set_already_have(true);
    return resp;
  }
  const int64_t now = deps_.clock->NowMs();
  absl::StatusOr<std::optional<UploadSession>> found =
      db_->FindUpload(caller.user_id, *province, sha);
  if (!found.ok()) return found.status();
  std::optional<UploadSession> session = *found;
  if (session.has_value() && session->expires_ms <= now) {
    // Expired: the collector removes it; a new session starts at 0.
    session.reset();
  }
  if (!session.has_value()) {
    if (options_.user_quota_bytes > 0) {
      absl::StatusOr<int64_t> used = db_->UserBytes(caller.user_id);
      if (!used.ok()) return used.status();
      if (*used + req.size() > options_.user_quota_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("quota per user: hết hạn mức của người dùng / the user's quota of ",
                         options_.user_quota_bytes, " bytes is used (", *used, " bytes)"));
      }
    }
    if (options_.province_quota_bytes > 0) {
      absl::StatusOr<int64_t> used = db_->ProvinceBytes(*province);
      if (!used.ok()) return used.status();
      if (*used + req.size() > options_.province_quota_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("quota per province: hết hạn mức của tỉnh / the province's quota of ",
                         options_.province_quota_bytes, " bytes is used (", *used, " bytes)"));
      }
    }
    UploadSession s;
    s.id = NewUploadId();
    s.user_id = caller.user_id;
    s.province_id = *province;
    s.attachment_id = record.id();
    s.sha256 = sha;
    s.size = req.size();
    s.media_type = req.media_type();
    s.created_ms = now;
    s.expires_ms = now + absl::ToInt64Milliseconds(options_.upload_ttl);
    // The row before the file: the collector takes a file without a row for no one's.
    if (absl::Status st = db_->CreateUpload(s); !st.ok()) return st;
    session = s;
  }
  // What a stream may have committed since the row was read.
  int64_t committed = session->committed;
  if (std::shared_ptr<Active> a = FindActive(session->id); a != nullptr) {
    absl::MutexLock lock(&a->mu);
    committed = a->session.committed;
  } else if (committed > 0) {
    // Not open: the staged bytes must still hold the committed ones. A data dir restored
    // from a backup has the row but not the temp file: the session starts again at 0
    // (Activate checks the same when a stream attaches).
    absl::StatusOr<int64_t> staged = staging_->StagedSize(session->id);
    if (!staged.ok()) return staged.status();
    if (*staged < committed) {
      if (absl::Status s = db_->SetCommitted(session->id, 0); !s.ok()) return s;
      session->committed = 0;
      committed = 0;
    }
  }
  if (committed == session->size) {
    // Every byte is durable but the check never ran (the server stopped between the two):
    // run it now. A match stores the blob; a mismatch restarts the session at 0.
    absl::StatusOr<std::shared_ptr<Active>> a = Activate(*session);
    if (!a.ok()) return a.status();
    absl::MutexLock lock(&(*a)->mu);
    if ((*a)->session.committed == (*a)->session.size && !(*a)->attached) {
      absl::StatusOr<ChunkResult> done = FinishLocked(**a);
      if (done.ok()) {
        resp.set_already_have(true);
        return resp;
      }
      if (done.status().code() != absl::StatusCode::kDataLoss) return done.status();
    }
    committed = (*a)->session.committed;
  }
  resp.set_upload_id(session->id);
  resp.set_committed_offset(committed);
  resp.set_expires_ms(session->expires_ms);
  resp.set_max_chunk_bytes(static_cast<int32_t>(kMaxChunkBytes));
  resp.set_commit_interval_bytes(static_cast<int32_t>(kCommitIntervalBytes));
  return resp;
}

absl::StatusOr<v1::UploadState> Attachments::GetUpload(const Principal& caller,
                                                       const std::string& upload_id) {
  absl::StatusOr<std::optional<UploadSession>> s = db_->GetUpload(upload_id);
  if (!s.ok()) return s.status();
  if (!s->has_value() || (*s)->user_id != caller.user_id ||
      (*s)->expires_ms <= deps_.clock->NowMs()) {
    return UploadNotFound(upload_id);
  }
  v1::UploadState out;
  out.set_upload_id(upload_id);
  out.set_committed_offset((*s)->committed);
  out.set_size((*s)->size);
  out.set_expires_ms((*s)->expires_ms);
  if (std::shared_ptr<Active> a = FindActive(upload_id); a != nullptr) {
    absl::MutexLock lock(&a->mu);
    out.set_committed_offset(a->session.committed);
  }
  return out;
}

std::shared_ptr<Attachments::Active> Attachments::FindActive(const std::string& id) {
  absl::MutexLock lock(&active_mu_);
  auto it = active_.find(id);
  return it == active_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<Attachments::Active>> Attachments::Activate(
    const UploadSession& session) {
  auto fresh = std::make_shared<Active>();
  {
    absl::MutexLock lock(&fresh->mu);
    fresh->session = session;
  }
  std::shared_ptr<Active> a;
  {
    absl::MutexLock lock(&active_mu_);
    a = active_.try_emplace(session.id, fresh).first->second;
  }
  absl::MutexLock lock(&a->mu);
  // A commit of an earlier stream may be running on the file: let it end first.
  Active* raw = a.get();
  auto idle = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mu) { return raw->commits_running == 0; };
  a->mu.Await(absl::Condition(&idle));
  if (a->over) return UploadNotFound(session.id);
  if (a->staged == nullptr) {
    absl::StatusOr<std::unique_ptr<StagedUpload>> staged = staging_->Open(session.id);
    if (!staged.ok()) return staged.status();
    a->staged = *std::move(staged);
    a->received = -1;  // cut back below
    if (a->staged->size_at_open() < a->session.committed) {
      // The file lost bytes that were committed (a data dir restored from a backup, which
      // holds no temp files): they are gone, so the session starts again at 0 rather than
      // finish with a hole and fail its SHA-256.
      if (absl::Status s = WriteCommittedRow(*a, session.id, 0, /*forward_only=*/false); !s.ok())
        return s;
      a->session.committed = 0;
    }
  }
  if (a->received != a->session.committed) {
    // Whatever lies past the committed offset was never acknowledged (a restart, or a
    // stream cut while it wrote): cut it off.
    if (absl::Status s = a->staged->Truncate(a->session.committed, /*durable=*/false); !s.ok()) {
      return s;
    }
    a->received = a->session.committed;
  }
  if (a->hashed > a->session.committed) a->hashed = -1;  // hashed bytes were cut off
  if (a->session.committed == 0 && a->hashed != 0) {
    a->sha.Reset();
    a->hashed = 0;
  }
  return a;
}

absl::Status Attachments::AdmitUploadStream() {
  const int limit = options_.max_upload_streams;
  const int before = upload_streams_.fetch_add(1);
  if (limit <= 0 || before < limit) return absl::OkStatus();
  upload_streams_.fetch_sub(1);
  return absl::ResourceExhaustedError(absl::StrCat(
      "uploads: máy chủ đang bận, thử lại sau ",
      absl::ToInt64Milliseconds(options_.busy_retry_after), " ms / the server is serving ", limit,
      " uploads; retry after ", absl::ToInt64Milliseconds(options_.busy_retry_after), " ms"));
}

void Attachments::EndUploadStream() { upload_streams_.fetch_sub(1); }

absl::StatusOr<Attachments::Stream> Attachments::Attach(const Principal& caller,
                                                        const std::string& upload_id,
                                                        OnCommit on_commit) {
  absl::StatusOr<std::optional<UploadSession>> s = db_->GetUpload(upload_id);
  if (!s.ok()) return s.status();
  if (!s->has_value() || (*s)->user_id != caller.user_id ||
      (*s)->expires_ms <= deps_.clock->NowMs()) {
    return UploadNotFound(upload_id);
  }
  absl::StatusOr<std::shared_ptr<Active>> a = Activate(**s);
  if (!a.ok()) return a.status();
  absl::MutexLock lock(&(*a)->mu);
  if ((*a)->over) return UploadNotFound(upload_id);
  (*a)->attached = true;
  (*a)->on_commit = std::move(on_commit);
  return Stream{.upload_id = upload_id, .generation = ++(*a)->generation};
}

absl::Status Attachments::CommitLocked(Active& a) {
  Active* raw = &a;
  auto idle = [raw]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mu) { return raw->commits_running == 0; };
  a.mu.Await(absl::Condition(&idle));
  a.commit_again = false;
  if (a.over || a.staged == nullptr) return absl::OkStatus();  // the running commit finished it
  if (a.received == a.session.committed) return absl::OkStatus();
  if (absl::Status s = a.staged->Sync(a.received); !s.ok()) return s;
  if (absl::Status s = WriteCommittedRow(a, a.session.id, a.received, /*forward_only=*/true);
      !s.ok())
    return s;
  a.session.committed = a.received;
  return absl::OkStatus();
}

absl::Status Attachments::WriteCommittedRow(Active& a, const std::string& id, int64_t offset,
                                            bool forward_only) {
  absl::MutexLock lock(&a.row_mu);
  if (forward_only && offset <= a.row_committed) return absl::OkStatus();
  if (absl::Status s = db_->SetCommitted(id, offset); !s.ok()) return s;
  a.row_committed = offset;
  return absl::OkStatus();
}

void Attachments::Forget(Active& a) {
  absl::MutexLock lock(&active_mu_);
  active_.erase(a.session.id);
}

absl::StatusOr<ChunkResult> Attachments::FinishLocked(Active& a, bool forget) {
  std::string raw;
  if (a.hashed == a.session.size) {
    raw = a.sha.Finish();
    a.hashed = -1;
  } else {
    absl::StatusOr<std::string> read = a.staged->Hash(a.session.size);
    if (!read.ok()) return read.status();
    raw = *std::move(read);
  }
  const std::string actual = HexOf(raw);
  if (actual != a.session.sha256) {
    // Start again at 0: the bytes are unknown to be right anywhere.
    if (absl::Status s = a.staged->Truncate(0, /*durable=*/true); !s.ok()) return s;
    if (absl::Status s = WriteCommittedRow(a, a.session.id, 0, /*forward_only=*/false); !s.ok())
      return s;
    a.session.committed = 0;
    a.received = 0;
    a.sha.Reset();
    a.hashed = 0;
    return absl::DataLossError(
        absl::StrCat("sha256: dữ liệu hỏng, tải lại từ đầu / the bytes hash to ", actual, ", not ",
                     a.session.sha256, ": the upload starts again at 0"));
  }
  // The staged bytes become the blob (or are dropped when another province, or another
  // user, stored the same bytes meanwhile); the staging is closed either way.
  std::unique_ptr<StagedUpload> staged = std::move(a.staged);
  if (absl::Status s = staged->Finish(a.session.sha256, a.session.size); !s.ok()) return s;
  if (absl::Status s = db_->FinishUpload(a.session.id, a.session.province_id, a.session.sha256,
                                         a.session.size, a.session.user_id, deps_.clock->NowMs());
      !s.ok()) {
    return s;
  }
  a.over = true;
  a.attached = false;
  a.on_commit = nullptr;
  if (forget) Forget(a);
  return ChunkResult{
      .ack = true, .committed = a.session.size, .received = a.session.size, .complete = true};
}

absl::StatusOr<ChunkResult> Attachments::Write(const Stream& stream, const v1::UploadChunk& chunk,
                                               int64_t* committed) {
  std::shared_ptr<Active> a = FindActive(stream.upload_id);
  if (a == nullptr) return UploadNotFound(stream.upload_id);
  absl::MutexLock lock(&a->mu);
  *committed = a->session.committed;
  if (a->over) return UploadNotFound(stream.upload_id);
  if (a->generation != stream.generation) {
    return absl::AbortedError(
        "upload_id: một kết nối khác đã tiếp nhận phiên này / another stream took over this "
        "upload");
  }
  if (a->staged == nullptr) {
    // A finish that failed closed the staging: the stream must attach again.
    return absl::AbortedError("upload_id: phiên cần bắt đầu lại / attach the upload again");
  }
  if (chunk.upload_id() != stream.upload_id) {
    return absl::InvalidArgumentError("upload_id: every chunk of a stream names the same upload");
  }
  const int64_t n = static_cast<int64_t>(chunk.data().size());
  sync::UploadTrace("srv", "recv", chunk.offset(), n);
  if (n == 0 || n > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data: phải từ 1 đến 65536 byte / must hold 1 to ", kMaxChunkBytes, " bytes, got ", n));
  }
  {
    // No more than two commit intervals past the committed offset: wait for the running
    // commit (a client that keeps to the re-send bound never does).
    Active* raw = a.get();
    auto room = [raw, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(raw->mu) {
      return raw->commits_running == 0 || raw->over ||
             raw->received + n - raw->session.committed <= 2 * kCommitIntervalBytes;
    };
    if (!room()) sync::UploadTrace("srv", "room_wait", a->received, a->session.committed);
    a->mu.Await(absl::Condition(&room));
    *committed = a->session.committed;
    if (a->over) return UploadNotFound(stream.upload_id);
    if (a->generation != stream.generation) {
      return absl::AbortedError(
          "upload_id: một kết nối khác đã tiếp nhận phiên này / another stream took over this "
          "upload");
    }
  }
  if (chunk.offset() != a->received) {
    // Keep what arrived before, then say where to go on from.
    if (absl::Status s = CommitLocked(*a); !s.ok()) return s;
    *committed = a->session.committed;
    return WrongOffset(a->session.committed, chunk.offset());
  }
  if (chunk.offset() + n > a->session.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: vượt quá kích thước / goes past the announced size ", a->session.size,
                     " (offset ", chunk.offset(), " + ", n, ")"));
  }
  if (sync::Crc32c(chunk.data()) != chunk.crc32c()) {
    if (absl::Status s = CommitLocked(*a); !s.ok()) return s;
    *committed = a->session.committed;
    return absl::InvalidArgumentError(absl::StrCat(
        "crc32c: dữ liệu hỏng trên đường truyền / the chunk at offset ", chunk.offset(),
        " does not match its CRC32C (not stored; resume from "
        "committed_offset=",
        a->session.committed, ")"));
  }
  if (chunk.offset() == 0) {
    const int64_t need = std::min<int64_t>(12, a->session.size);
    if (n < need) {
      return absl::InvalidArgumentError(
          absl::StrCat("data: the first chunk must hold at least ", need, " bytes"));
    }
    if (absl::Status s = CheckMagic(a->session.media_type, chunk.data()); !s.ok()) return s;
  }
  if (absl::Status s = a->staged->Write(chunk.offset(), chunk.data()); !s.ok()) return s;
  sync::UploadTrace("srv", "written", chunk.offset() + n, 0);
  if (a->hashed == chunk.offset()) {
    a->sha.Update(chunk.data());
    a->hashed += n;
  }
  a->received += n;
  // Commits run on committer threads; the bytes waiting for one count from the highest
  // offset a running commit covers.
  const int64_t base = a->committing >= 0 ? a->committing : a->session.committed;
  if (a->received - base >= a->staged->min_commit_bytes() || chunk.flush() ||
      a->received == a->session.size) {
    StartCommitLocked(a);
  }
  ChunkResult result;
  result.ack = chunk.ack_received();
  result.committed = a->session.committed;
  result.received = a->received;
  *committed = a->session.committed;
  return result;
}

void Attachments::StartCommitLocked(const std::shared_ptr<Active>& a) {
  const int64_t covered = a->committing >= 0 ? a->committing : a->session.committed;
  if (a->received <= covered) return;
  if (a->commits_running >= a->staged->max_concurrent_syncs()) {
    a->commit_again = true;
    return;
  }
  ++a->commits_running;
  a->committing = a->received;
  a->commit_again = false;
  sync::UploadTrace("srv", "commit_queued", a->received, a->commits_running);
  absl::MutexLock lock(&commit_mu_);
  commits_.push_back(QueuedCommit{.active = a, .target = a->received});
}

void Attachments::CommitterLoop() {
  while (true) {
    QueuedCommit commit;
    {
      absl::MutexLock lock(&commit_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
        return !commits_.empty() || committers_stop_;
      };
      commit_mu_.Await(absl::Condition(&ready));
      if (commits_.empty()) return;
      commit = std::move(commits_.front());
      commits_.pop_front();
    }
    RunCommit(commit.active, commit.target);
  }
}

void Attachments::RunCommit(const std::shared_ptr<Active>& a, int64_t target) {
  StagedUpload* staged = nullptr;
  std::string id;
  {
    absl::MutexLock lock(&a->mu);
    staged = a->staged.get();
    id = a->session.id;
  }
  // The staging stays open: whoever would close or cut it waits for commits_running to
  // reach 0. Another commit of the session may run beside this one; each fdatasync covers
  // what was written before it began, so `target` is durable when this one returns,
  // whichever ends first.
  sync::UploadTrace("srv", "commit_start", target, 0);
  absl::Status status = staged->Sync(target);
  sync::UploadTrace("srv", "synced", target, 0);
  if (status.ok()) status = WriteCommittedRow(*a, id, target, /*forward_only=*/true);
  sync::UploadTrace("srv", "row_written", target, 0);
  absl::MutexLock lock(&a->mu);
  if (--a->commits_running == 0) a->committing = -1;
  const bool advanced = status.ok() && target > a->session.committed;
  if (advanced) a->session.committed = target;
  auto tell = [&a](const CommitEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->mu) {
    if (a->on_commit) a->on_commit(event);
  };
  CommitEvent event{.status = status,
                    .committed = a->session.committed,
                    .received = a->received,
                    .complete = false};
  if (!status.ok()) {
    a->commit_again = false;
    tell(event);
    return;
  }
  if (advanced) tell(event);
  if (a->session.committed == a->session.size && a->attached) {
    // Every byte is durable: said so above before the check (the client may begin its
    // next upload meanwhile); the SHA-256 and the blob's storing run once no commit of the
    // session runs any more (the last one to end does them).
    if (a->commits_running > 0) return;
    OnCommit on_commit = a->on_commit;  // FinishLocked clears it
    sync::UploadTrace("srv", "finish_start", a->session.size, 0);
    absl::StatusOr<ChunkResult> done = FinishLocked(*a, /*forget=*/false);
    sync::UploadTrace("srv", "finish_end", a->session.size, done.ok() ? 1 : 0);
    CommitEvent end{.status = done.status(),
                    .committed = a->session.committed,
                    .received = a->received,
                    .complete = done.ok()};
    if (on_commit) on_commit(end);
    // Only now may the stream's Detach find the session gone (and its reactor be freed):
    // until here it waits for this lock.
    if (done.ok()) Forget(*a);
    return;
  }
  if (a->commit_again && a->staged != nullptr) StartCommitLocked(a);
}

absl::StatusOr<int64_t> Attachments::Detach(const Stream& stream, bool* complete) {
  if (complete != nullptr) *complete = false;
  std::shared_ptr<Active> a = FindActive(stream.upload_id);
  if (a == nullptr) return absl::NotFoundError("upload over");
  absl::MutexLock lock(&a->mu);
  if (a->generation != stream.generation) return a->session.committed;
  absl::Status status = CommitLocked(*a);  // waits for a running commit first
  if (a->over) {
    if (complete != nullptr) *complete = true;
    return a->session.committed;
  }
  a->attached = false;
  a->on_commit = nullptr;
  a->staged.reset();
  a->received = a->session.committed;
  if (!status.ok()) return status;
  return a->session.committed;
}

absl::StatusOr<Attachments::BlobInfo> Attachments::OpenDownload(const Principal& caller,
                                                                absl::string_view sha256_raw) {
  if (sha256_raw.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256: phải là 32 byte / must be the 32 bytes of a SHA-256, got ", sha256_raw.size()));
  }
  const std::string sha = HexOf(sha256_raw);
  const absl::Status not_found = absl::NotFoundError(
      absl::StrCat("sha256: không tìm thấy / no attachment ", sha, " you may see"));
  model::Actor actor = ActorFor(deps_.directory, caller);
  // The first in-scope reference whose province holds the bytes; nullopt when none does.
  auto find = [&]() -> absl::StatusOr<std::optional<BlobInfo>> {
    absl::StatusOr<std::vector<BlobReference>> refs = references_->Referencing(sha);
    if (!refs.ok()) return refs.status();
    for (const BlobReference& ref : *refs) {
      if (!actor.in_scope || !actor.in_scope(ref.commune_id)) continue;
      absl::StatusOr<int64_t> province = ProvinceOf(ref.commune_id);
      if (!province.ok()) continue;
      absl::StatusOr<bool> has = db_->ProvinceHas(*province, sha);
      if (!has.ok()) return has.status();
      if (!*has) continue;
      absl::StatusOr<int64_t> size = blobs_->Size(sha);
      if (!size.ok()) {
        if (size.status().code() == absl::StatusCode::kNotFound) return std::nullopt;
        return size.status();
      }
      return BlobInfo{.sha256 = sha, .size = *size, .media_type = ref.media_type};
    }
    return std::nullopt;
  };
  absl::StatusOr<std::optional<BlobInfo>> found = find();
  if (found.ok() && !found->has_value()) {
    // The references seen may be a copy behind the records (PostgreSQL: this instance's
    // mirror); the caller's own record may have been written a moment ago, after another
    // province's record naming the same bytes. Look once more after catching up.
    if (absl::Status refreshed = references_->Refresh(); !refreshed.ok()) return refreshed;
    found = find();
  }
  if (!found.ok()) return found.status();
  if (!found->has_value()) return not_found;
  return **found;
}

absl::StatusOr<std::vector<v1::Attachment>> Attachments::List(const Principal& caller,
                                                              v1::AttachmentOwnerType type,
                                                              const std::string& owner_id) {
  RecordAccess access(
      RecordServiceDeps{.directory = deps_.directory, .store = deps_.store, .clock = deps_.clock});
  absl::StatusOr<uint64_t> read;
  int64_t commune = 0;
  switch (type) {
    case v1::ATTACHMENT_OWNER_TYPE_VISIT: {
      v1::Visit owner;
      read = access.Read(caller, model::kVisitType, owner_id, &owner);
      commune = owner.commune_id();
      break;
    }
    case v1::ATTACHMENT_OWNER_TYPE_SUPPORT_REQUEST: {
      v1::SupportRequest owner;
      read = access.Read(caller, model::kSupportRequestType, owner_id, &owner);
      commune = owner.commune_id();
      break;
    }
    case v1::ATTACHMENT_OWNER_TYPE_FACILITY: {
      v1::Facility owner;
      read = access.Read(caller, model::kFacilityType, owner_id, &owner);
      commune = owner.commune_id();
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "owner_type: phải là VISIT, SUPPORT_REQUEST hoặc FACILITY / must be VISIT, "
          "SUPPORT_REQUEST or FACILITY");
  }
  if (!read.ok()) {
    if (read.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(
          absl::StrCat("owner_id: '", owner_id.substr(0, 64), "' is not a UUID"));
    }
    if (read.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(
          absl::StrCat("owner_id: không tìm thấy / record ", owner_id.substr(0, 64), " not found"));
    }
    return read.status();
  }
  // An attachment lives in its owner's commune.
  sync::ListQuery query;
  query.type = model::kAttachmentType;
  query.buckets = {commune};
  v1::Value owner_value;
  owner_value.set_string_value(owner_id);
  query.equals.push_back({v1::Attachment::kOwnerIdFieldNumber, owner_value});
  query.newest_first = false;
  query.limit = 500;
  absl::StatusOr<std::vector<v1::RecordChange>> records = deps_.store->List(query);
  if (!records.ok()) return records.status();
  std::vector<v1::Attachment> out;
  for (const v1::RecordChange& record : *records) {
    v1::Attachment a;
    if (absl::Status s = model::FromChange(record, &a); !s.ok()) return s;
    if (a.owner_type() == type) out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<std::string> Attachments::ReadBlob(const std::string& sha256, int64_t offset,
                                                  int64_t length) {
  return blobs_->Read(sha256, offset, length);
}

}  // namespace kcnet::server
