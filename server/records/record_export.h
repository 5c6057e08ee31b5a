// RecordExportService (proto/kcnet/v1/record_export.proto): facilities, visits or support
// requests of the caller's scope, one row per record, honouring the console's filters
// (the registry's for facilities and visits, the review queue's RequestFilter for
// requests; for facilities and visits also the queue's filter when sent), written row by
// row to a temporary file (server/reports/export_file.h, CSV or XLSX, enum values as labels
// in the request's language) and streamed from it in chunks of 64 KiB, with no row cap and
// flat memory.
//
// Thread-safety: the service is thread-safe; the dependencies must outlive it.
#ifndef KCNET_SERVER_RECORDS_RECORD_EXPORT_H_
#define KCNET_SERVER_RECORDS_RECORD_EXPORT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/record_export.pb.h"
#include "server/directory/directory.h"
#include "server/records/record_access.h"
#include "server/records/record_services.h"
#include "server/reports/export.h"
#include "server/reports/export_file.h"

namespace kcnet::server {

// Writes the rows of an export for `caller` to `sink` (bad input: INVALID_ARGUMENT naming
// the field, before anything is written; an org unit out of scope: NOT_FOUND).
absl::Status WriteRecordExport(RecordAccess& access, const Principal& caller,
                               const kcnet::v1::ExportRecordsRequest& req, reports::RowSink& sink);

// The same rows in memory (tests and the benchmark).
absl::StatusOr<reports::ReportTable> RecordExportTable(RecordAccess& access,
                                                       const Principal& caller,
                                                       const kcnet::v1::ExportRecordsRequest& req);

std::unique_ptr<grpc::Service> MakeRecordExportService(const RecordServiceDeps& deps);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_RECORD_EXPORT_H_
