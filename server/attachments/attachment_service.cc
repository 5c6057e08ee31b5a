#include "server/attachments/attachment_service.h"

#include <algorithm>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "server/rpc/storage_rpc_runner.h"
#include "sync/crc32c.h"
#include "sync/upload_trace.h"

namespace kcnet::server {
namespace {

using grpc::CallbackServerContext;
namespace v1 = kcnet::v1;

constexpr char kUploadMethod[] = "/kcnet.v1.AttachmentService/Upload";

// The caller of a stream, from its bearer token.
absl::StatusOr<Principal> StreamCaller(Directory* directory, const CallbackServerContext& ctx) {
  absl::StatusOr<std::string> token = BearerToken(ctx);
  if (!token.ok()) return token.status();
  absl::StatusOr<Principal> caller = directory->Authenticate(*token);
  if (!caller.ok()) {
    return absl::UnauthenticatedError(absl::StrCat("authorization: ", caller.status().message()));
  }
  return caller;
}

// One Upload stream: reads a chunk, hands it to Attachments, reads the next. Acks of a
// chunk that asked for ack_received come from the read callbacks; acks of a commit, and the
// end of the upload (its SHA-256 check), from Attachments' committer threads (OnCommit).
// They are written one at a time (a newer ack replaces one not yet sent; both offsets are
// the largest told so far, as offsets only grow).
class UploadReactor : public grpc::ServerBidiReactor<v1::UploadChunk, v1::UploadAck> {
 public:
  UploadReactor(Attachments* attachments, Directory* directory, const StreamObservers& observers,
                CallbackServerContext* ctx)
      : attachments_(attachments), observers_(observers), ctx_(ctx) {
    if (observers_.grpc_metrics != nullptr) {
      call_metrics_.emplace(observers_.grpc_metrics, kUploadMethod);
    }
    absl::StatusOr<Principal> caller = StreamCaller(directory, *ctx);
    if (!caller.ok()) {
      End(ToGrpcStatus(caller.status()));
      return;
    }
    caller_ = *std::move(caller);
    // A busy server says so before reading a byte of the stream: what the client sent
    // already is dropped with the call, and it comes back after the retry-after.
    if (absl::Status admitted = attachments_->AdmitUploadStream(); !admitted.ok()) {
      ctx->AddTrailingMetadata(
          kRetryAfterMetadata,
          absl::StrCat(absl::ToInt64Milliseconds(attachments_->busy_retry_after())));
      End(ToGrpcStatus(admitted));
      return;
    }
    admitted_ = true;
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (ok && call_metrics_.has_value()) call_metrics_->Received();
    if (!ok) {
      // The client half-closed (or the call broke): commit what came, say so, finish.
      int64_t committed = -1;
      bool complete = false;
      if (stream_.has_value()) {
        absl::StatusOr<int64_t> c = attachments_->Detach(*stream_, &complete);
        stream_.reset();
        if (c.ok()) committed = *c;
      }
      absl::MutexLock lock(&mu_);
      if (ending_) return;  // a commit's end already finished the call
      if (committed > last_committed_) QueueAckLocked(committed, committed, complete);
      FinishWhenIdleLocked(grpc::Status::OK);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (ending_) return;  // finished meanwhile (the upload completed, or a commit failed)
    }
    absl::Status status;
    ChunkResult result;
    int64_t committed = 0;
    if (!stream_.has_value()) {
      absl::StatusOr<Attachments::Stream> s = attachments_->Attach(
          caller_, chunk_.upload_id(), [this](const CommitEvent& event) { OnCommit(event); });
      if (s.ok()) {
        stream_ = *s;
      } else {
        status = s.status();
      }
    }
    if (status.ok()) {
      absl::StatusOr<ChunkResult> r = attachments_->Write(*stream_, chunk_, &committed);
      if (r.ok()) {
        result = *r;
      } else {
        status = r.status();
      }
    }
    if (!status.ok()) {
      if (stream_.has_value()) {
        attachments_->Detach(*stream_).IgnoreError();
        stream_.reset();
      }
      absl::MutexLock lock(&mu_);
      FailLocked(status, committed);
      return;
    }
    // Let the chunk's 64 KiB go now rather than keep it for the next parse: 200 idle
    // streams would otherwise hold 12.5 MiB between their chunks.
    std::string().swap(*chunk_.mutable_data());
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    if (result.ack) QueueAckLocked(result.committed, result.received, false);
    StartRead(&chunk_);
  }

  // From a committer thread (Attachments holds the session's lock; no call back into it).
  void OnCommit(const CommitEvent& event) {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    if (!event.status.ok()) {
      FailLocked(event.status, event.committed);
      return;
    }
    QueueAckLocked(event.committed, event.received, event.complete);
    if (event.complete) FinishWhenIdleLocked(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    sync::UploadTrace("srv", "ack_written", ok ? 1 : 0, 0);
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) pending_.reset();  // the client is gone; nothing more to tell it
    if (pending_.has_value()) {
      SendPendingLocked();
    } else if (finish_.has_value()) {
      End(*finish_);
      finish_.reset();
    }
  }

  void OnDone() override {
    if (stream_.has_value()) attachments_->Detach(*stream_).IgnoreError();
    if (admitted_) attachments_->EndUploadStream();
    // One log line per stream, as for every RPC; the latency is the stream's lifetime.
    const grpc::Status status =
        ended_.value_or(grpc::Status(grpc::StatusCode::CANCELLED, "upload: the client went away"));
    if (observers_.logger != nullptr) {
      observers_.logger->Rpc({.method = kUploadMethod,
                              .caller = caller_.username.empty()
                                            ? absl::string_view("-")
                                            : absl::string_view(caller_.username),
                              .code = static_cast<absl::StatusCode>(status.error_code()),
                              .message = status.error_message(),
                              .latency_ms = absl::ToDoubleMilliseconds(absl::Now() - started_)});
    }
    if (call_metrics_.has_value()) call_metrics_->Handled(status.error_code());
    delete this;
  }

 private:
  void QueueAckLocked(int64_t committed, int64_t received, bool complete)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    last_committed_ = std::max(last_committed_, committed);
    last_received_ = std::max({last_received_, received, last_committed_});
    v1::UploadAck ack;
    ack.set_committed_offset(last_committed_);
    ack.set_complete(complete);
    ack.set_received_offset(last_received_);
    pending_ = ack;
    if (!writing_) SendPendingLocked();
  }
  // Ends the call with `status` (and the committed offset in the trailers of the errors
  // whose client resumes from it).
  void FailLocked(const absl::Status& status, int64_t committed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ending_) return;
    if (status.code() == absl::StatusCode::kFailedPrecondition ||
        status.code() == absl::StatusCode::kInvalidArgument ||
        status.code() == absl::StatusCode::kDataLoss) {
      ctx_->AddTrailingMetadata(kCommittedOffsetMetadata, absl::StrCat(committed));
    }
    FinishWhenIdleLocked(ToGrpcStatus(status));
  }
  void SendPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_ = *pending_;
    pending_.reset();
    writing_ = true;
    if (call_metrics_.has_value()) call_metrics_->Sent();
    sync::UploadTrace("srv", "ack_send", out_.committed_offset(), out_.received_offset());
    StartWrite(&out_);
  }
  void FinishWhenIdleLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ending_) return;
    ending_ = true;
    if (writing_ || pending_.has_value()) {
      finish_ = status;
    } else {
      End(status);
    }
  }
  // Finish, remembering the status for the log line and the metrics (OnDone).
  void End(const grpc::Status& status) {
    ended_ = status;
    Finish(status);
  }

  Attachments* const attachments_;
  const StreamObservers observers_;
  CallbackServerContext* const ctx_;
  const absl::Time started_ = absl::Now();
  std::optional<metrics::GrpcServerMetrics::Call> call_metrics_;
  std::optional<grpc::Status> ended_;  // set once, by End, before gRPC calls OnDone
  Principal caller_;
  bool admitted_ = false;  // counted in Attachments' upload streams
  v1::UploadChunk chunk_;
  std::optional<Attachments::Stream> stream_;  // touched by the read callbacks only

  absl::Mutex mu_;
  v1::UploadAck out_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::UploadAck> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int64_t last_committed_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_received_ ABSL_GUARDED_BY(mu_) = -1;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;  // Finish is called or waits for the last write
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

// One Download: the blob's bytes from the asked offset, 64 KiB per message.
class DownloadReactor : public grpc::ServerWriteReactor<v1::DownloadChunk> {
 public:
  DownloadReactor(Attachments* attachments, Directory* directory, CallbackServerContext* ctx,
                  const v1::DownloadRequest* req)
      : attachments_(attachments) {
    absl::StatusOr<Principal> caller = StreamCaller(directory, *ctx);
    if (!caller.ok()) {
      Finish(ToGrpcStatus(caller.status()));
      return;
    }
    if (req->offset() < 0 || req->length() < 0) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat(req->offset() < 0 ? "offset" : "length", ": must not be negative"))));
      return;
    }
    absl::StatusOr<Attachments::BlobInfo> blob = attachments->OpenDownload(*caller, req->sha256());
    if (!blob.ok()) {
      Finish(ToGrpcStatus(blob.status()));
      return;
    }
    blob_ = *std::move(blob);
    if (req->offset() >= blob_.size) {
      Finish(ToGrpcStatus(absl::OutOfRangeError(
          absl::StrCat("offset: phải nhỏ hơn kích thước / must be below the size ", blob_.size,
                       ", got ", req->offset()))));
      return;
    }
    next_ = req->offset();
    end_ = req->length() == 0 ? blob_.size : std::min(blob_.size, req->offset() + req->length());
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download: the client went away"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (next_ >= end_) {
      Finish(grpc::Status::OK);
      return;
    }
    const int64_t n = std::min(kMaxChunkBytes, end_ - next_);
    absl::StatusOr<std::string> data = attachments_->ReadBlob(blob_.sha256, next_, n);
    if (!data.ok() || data->empty()) {
      Finish(ToGrpcStatus(data.ok() ? absl::DataLossError("blob: shorter than its size")
                                    : data.status()));
      return;
    }
    chunk_.Clear();
    chunk_.set_offset(next_);
    chunk_.set_crc32c(sync::Crc32c(*data));
    chunk_.set_total_size(blob_.size);
    chunk_.set_media_type(blob_.media_type);
    next_ += static_cast<int64_t>(data->size());
    chunk_.set_data(*std::move(data));
    StartWrite(&chunk_);
  }

  Attachments* const attachments_;
  Attachments::BlobInfo blob_;
  int64_t next_ = 0;
  int64_t end_ = 0;
  v1::DownloadChunk chunk_;
};

class AttachmentServiceImpl : public v1::AttachmentService::CallbackService {
 public:
  AttachmentServiceImpl(Attachments* attachments, Directory* directory, RpcRunner* runner,
                        StreamObservers observers)
      : attachments_(attachments), directory_(directory), runner_(runner), observers_(observers) {}

  grpc::ServerUnaryReactor* Begin(CallbackServerContext* ctx, const v1::BeginUploadRequest* req,
                                  v1::BeginUploadResponse* resp) override {
    return runner_->Run(ctx, "/kcnet.v1.AttachmentService/Begin",
                        [=, this](const Principal* p) -> absl::Status {
                          absl::StatusOr<v1::BeginUploadResponse> r = attachments_->Begin(*p, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }

  grpc::ServerUnaryReactor* GetUpload(CallbackServerContext* ctx, const v1::GetUploadRequest* req,
                                      v1::UploadState* resp) override {
    return runner_->Run(ctx, "/kcnet.v1.AttachmentService/GetUpload",
                        [=, this](const Principal* p) -> absl::Status {
                          absl::StatusOr<v1::UploadState> r =
                              attachments_->GetUpload(*p, req->upload_id());
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }

  grpc::ServerUnaryReactor* ListAttachments(CallbackServerContext* ctx,
                                            const v1::ListAttachmentsRequest* req,
                                            v1::ListAttachmentsResponse* resp) override {
    return runner_->Run(ctx, "/kcnet.v1.AttachmentService/ListAttachments",
                        [=, this](const Principal* p) -> absl::Status {
                          absl::StatusOr<std::vector<v1::Attachment>> r =
                              attachments_->List(*p, req->owner_type(), req->owner_id());
                          if (!r.ok()) return r.status();
                          for (v1::Attachment& a : *r) *resp->add_attachments() = std::move(a);
                          return absl::OkStatus();
                        });
  }

  grpc::ServerBidiReactor<v1::UploadChunk, v1::UploadAck>* Upload(
      CallbackServerContext* ctx) override {
    return new UploadReactor(attachments_, directory_, observers_, ctx);
  }

  grpc::ServerWriteReactor<v1::DownloadChunk>* Download(CallbackServerContext* ctx,
                                                        const v1::DownloadRequest* req) override {
    return new DownloadReactor(attachments_, directory_, ctx, req);
  }

 private:
  Attachments* const attachments_;
  Directory* const directory_;
  RpcRunner* const runner_;
  const StreamObservers observers_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeAttachmentService(Attachments* attachments, Directory* directory,
                                                     RpcRunner* runner, StreamObservers observers) {
  return std::make_unique<AttachmentServiceImpl>(attachments, directory, runner, observers);
}

}  // namespace kcnet::server
