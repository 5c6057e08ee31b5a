#include "server/reports/export_chunks.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kcnet::server::reports {

void ExportChunkWriter::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "export: the client went away"));
    return;
  }
  Next();
}

std::optional<Principal> ExportChunkWriter::Authenticate(const grpc::CallbackServerContext& ctx,
                                                         Directory& directory) {
  absl::StatusOr<std::string> token = BearerToken(ctx);
  if (!token.ok()) {
    Finish(ToGrpcStatus(token.status()));
    return std::nullopt;
  }
  absl::StatusOr<Principal> caller = directory.Authenticate(*token);
  if (!caller.ok()) {
    Finish(ToGrpcStatus(
        absl::UnauthenticatedError(absl::StrCat("authorization: ", caller.status().message()))));
    return std::nullopt;
  }
  return *std::move(caller);
}

void ExportChunkWriter::Send(std::string name, std::string bytes) {
  name_ = std::move(name);
  bytes_ = std::move(bytes);
  offset_ = 0;
  Next();
}

void ExportChunkWriter::SendFile(std::string name, ExportBytes file) {
  name_ = std::move(name);
  file_.emplace(std::move(file));
  offset_ = 0;
  Next();
}

void ExportChunkWriter::Next() {
  const size_t size = file_.has_value() ? file_->size() : bytes_.size();
  if (offset_ >= size && offset_ > 0) {
    file_.reset();  // the temporary file's space is freed now
    Finish(grpc::Status::OK);
    return;
  }
  chunk_.Clear();
  if (offset_ == 0) {
    chunk_.set_file_name(name_);
    chunk_.set_total_bytes(static_cast<int64_t>(size));
  }
  const size_t n = std::min(kChunkBytes, size - offset_);
  if (file_.has_value()) {
    std::string data = file_->Read(n);
    if (data.size() != n) {
      file_.reset();
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "export: cannot read the finished file"));
      return;
    }
    chunk_.set_data(std::move(data));
  } else {
    chunk_.set_data(bytes_.substr(offset_, n));
  }
  offset_ += std::max<size_t>(n, 1);
  StartWrite(&chunk_);
}

}  // namespace kcnet::server::reports
