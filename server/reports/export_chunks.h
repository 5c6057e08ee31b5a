// ExportChunkWriter: the server side of an export call (ReportService.ExportReport,
// RecordExportService.ExportRecords): one finished file sent as ExportChunk messages of
// 64 KiB, the first carrying the file's name, then OK. A subclass authenticates the caller
// and builds the file in its constructor, then calls SendFile() with the finished
// ExportFile (read from disk chunk by chunk: memory stays flat however long the file),
// Send() with bytes in memory, or Finish() with the error.
//
// Thread-safety: a gRPC reactor; gRPC calls it one callback at a time. It deletes itself
// when the call is done.
#ifndef KCNET_SERVER_REPORTS_EXPORT_CHUNKS_H_
#define KCNET_SERVER_REPORTS_EXPORT_CHUNKS_H_

#include <cstddef>
#include <optional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "kcnet/v1/reports.pb.h"
#include "server/reports/export_file.h"
#include "server/rpc/storage_rpc_runner.h"

namespace kcnet::server::reports {

class ExportChunkWriter : public grpc::ServerWriteReactor<kcnet::v1::ExportChunk> {
 public:
  static constexpr size_t kChunkBytes = 64 << 10;

  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 protected:
  // The caller of `ctx` (its bearer token), or nullopt after finishing the call with
  // UNAUTHENTICATED.
  std::optional<Principal> Authenticate(const grpc::CallbackServerContext& ctx,
                                        Directory& directory);
  // Sends `bytes` as the file `name` (an empty file is one chunk with the name only).
  void Send(std::string name, std::string bytes);
  // Sends the finished `file` as `name`, chunk by chunk from disk.
  void SendFile(std::string name, ExportBytes file);

 private:
  void Next();

  std::string name_;
  std::string bytes_;
  std::optional<ExportBytes> file_;
  size_t offset_ = 0;
  kcnet::v1::ExportChunk chunk_;
};

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_EXPORT_CHUNKS_H_
