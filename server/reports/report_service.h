// The reports for a set of org-unit roots (Reporter) and the gRPC ReportService over it.
//
// Reporter turns a ReportFilter into a ReportScope (the communes under the filter's org unit,
// which must lie in the given roots, else NOT_FOUND as for a unit that does not exist; the
// days, Vietnam's local dates) and asks the ReportsStore. ReportService authenticates the
// caller (RpcRunner for the unary reports; the bearer token for the export stream) and uses
// the caller's org units as roots. kcnet-admin uses every root of the tree.
//
// Thread-safety: thread-safe; the dependencies must outlive them.
#ifndef KCNET_SERVER_REPORTS_REPORT_SERVICE_H_
#define KCNET_SERVER_REPORTS_REPORT_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/reports.pb.h"
#include "server/directory/directory.h"
#include "server/plans/plan_store.h"
#include "server/reports/export_file.h"
#include "server/reports/reports_store.h"
#include "server/rpc/rpc_runner.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server::reports {

// The paged lists (activity, quality): rows per page by default, and at most.
inline constexpr int kDefaultReportPage = 500;
inline constexpr int kMaxReportPage = 5000;

class Reporter {
 public:
  // `plans` and `records` serve the budget (BudgetFor); without them it is UNAVAILABLE.
  Reporter(Directory* directory, ReportsStore* store, sync::Clock* clock,
           PlanStore* plans = nullptr, sync::ServerStore* records = nullptr)
      : directory_(directory), store_(store), clock_(clock), plans_(plans), records_(records) {}

  // Every root org unit of the directory (for server tools).
  absl::StatusOr<std::vector<int64_t>> AllRoots();

  absl::StatusOr<kcnet::v1::CoverageReport> Coverage(const std::vector<int64_t>& roots,
                                                     const kcnet::v1::CoverageRequest& request);
  absl::StatusOr<kcnet::v1::PipelineReport> Pipeline(const std::vector<int64_t>& roots,
                                                     const kcnet::v1::PipelineRequest& request);
  // Paged (page_size, page_token; docs/REPORTS.md, "Paged lists"): INVALID_ARGUMENT
  // naming page_size or page_token when they are not valid.
  absl::StatusOr<kcnet::v1::ActivityReport> Activity(const std::vector<int64_t>& roots,
                                                     const kcnet::v1::ActivityRequest& request);
  absl::StatusOr<kcnet::v1::QualityReport> Quality(const std::vector<int64_t>& roots,
                                                   const kcnet::v1::QualityRequest& request);
  absl::StatusOr<kcnet::v1::OutcomesReport> Outcomes(const std::vector<int64_t>& roots,
                                                     const kcnet::v1::OutcomesRequest& request);
  // The budget of one province and year (BudgetFor, server/plans/budget.h) for a caller
  // working in `roots`: `filter.org_unit_id` 0 means the caller's one root.
  absl::StatusOr<kcnet::v1::BudgetReport> Budget(const std::vector<int64_t>& roots,
                                                 const kcnet::v1::BudgetRequest& request);
  // The report `request.report()` (coverage, pipeline, activity, quality, budget, outcomes)
  // as a file: INVALID_ARGUMENT naming "report" or "format" otherwise. Sets `*file_name`.
  absl::StatusOr<std::string> Export(const std::vector<int64_t>& roots,
                                     const kcnet::v1::ExportRequest& request,
                                     std::string* file_name);
  // The same written to a temporary file (ExportFile), for sending in chunks.
  absl::StatusOr<ExportBytes> ExportToFile(const std::vector<int64_t>& roots,
                                           const kcnet::v1::ExportRequest& request,
                                           std::string* file_name);
  // The page an export reads a paged report in (every page is read: an export is never
  // capped); tests make it small.
  void set_export_page_size(int rows) { export_page_size_ = rows; }

 private:
  absl::StatusOr<ReportScope> Scope(const std::vector<int64_t>& roots,
                                    const kcnet::v1::ReportFilter& filter);
  Directory* directory_;
  ReportsStore* store_;
  sync::Clock* clock_;
  PlanStore* plans_;
  sync::ServerStore* records_;
  int export_page_size_ = kMaxReportPage;
};

// ReportService, to register on a builder. The budget report needs a Reporter made with
// the plans and the record store (BudgetFor, server/plans/budget.h). All must outlive the
// service.
std::unique_ptr<grpc::Service> MakeReportService(Directory* directory, Reporter* reporter,
                                                 RpcRunner* runner);

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_REPORT_SERVICE_H_
