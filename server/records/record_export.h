// RecordExportService (proto/kcnet/v1/record_export.proto): facilities, visits or support
// requests of the caller's scope, one row per record, honouring the console's filters
// (the registry's for facilities and visits, the review queue's RequestFilter for
// requests), written as CSV or XLSX by server/reports/export.h and streamed in chunks of
// 64 KiB, with no row cap.
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

namespace kcnet::server {

// The rows of an export for `caller` (bad input: INVALID_ARGUMENT naming the field;
// an org unit out of scope: NOT_FOUND). Exposed for the tests and the benchmark.
absl::StatusOr<reports::ReportTable> RecordExportTable(RecordAccess& access,
                                                       const Principal& caller,
                                                       const kcnet::v1::ExportRecordsRequest& req);

std::unique_ptr<grpc::Service> MakeRecordExportService(const RecordServiceDeps& deps);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_RECORD_EXPORT_H_
