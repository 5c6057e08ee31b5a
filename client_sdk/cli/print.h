// How the `kcnet` field tool and `kcnet demo` print records, reports and times: one line
// per record in lists, "key: value" lines for one record, enum values by their readable
// names (args.h), amounts in VND with thousands separators, org units and users by name
// ("Xã An Bình (90101)", "Nguyễn Văn An") from the directory on the device.
//
// Thread-safety: the functions are thread-safe (ReportLine reads the Client, which is).
#ifndef KCNET_CLIENT_SDK_CLI_PRINT_H_
#define KCNET_CLIENT_SDK_CLI_PRINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kcnet/client.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::cli {

std::string OneLine(absl::string_view text);  // newlines and tabs become spaces
std::string TimeText(absl::Time time);        // local time, "2026-11-25 14:03:07"
std::string TimeMsText(int64_t unix_ms);      // the same; "-" for 0
std::string Vnd(int64_t amount);              // "80.000.000 VND"
// A 16-byte record id in UUID text (other lengths in hex).
std::string UuidText(absl::string_view bytes);

// How org units and users are named: from the directory on the device (the names and
// codes the SDK fetched, Client::GetOrgUnit / GetDirectoryUser), falling back to the id
// only when the directory does not know it.
class Names {
 public:
  Names() = default;  // no directory: ids only
  explicit Names(kcnet::sdk::Client* client) : client_(client) {}
  // "Xã An Bình (90101)"; unknown: "<kind> 4", or "4" when `kind` is empty.
  std::string Unit(int64_t id, absl::string_view kind = "org unit") const;
  // "Nguyễn Văn An"; unknown: "user 4", or "4" when `kind` is empty.
  std::string Person(int64_t id, absl::string_view kind = "user") const;

 private:
  kcnet::sdk::Client* client_ = nullptr;
};

std::string UserLine(const kcnet::v1::User& user, const Names& names);
std::string FacilityLine(const kcnet::v1::Facility& f, const Names& names);
// "  key: value\n" lines.
std::string FacilityDetails(const kcnet::v1::Facility& f, const Names& names);
std::string VisitLine(const kcnet::v1::Visit& v, const Names& names);
std::string StatusName(kcnet::v1::RequestStatus status);
std::string RequestLine(const kcnet::v1::SupportRequest& r);
std::string RequestDetails(const kcnet::v1::SupportRequest& r, const Names& names);
std::string EventLine(const kcnet::v1::RequestEvent& e, const Names& names);
std::string RecordsText(const std::vector<kcnet::sdk::RecordRef>& records);
// "refused #12 facility 4f1c... : reason" or "conflict #12 ...: summary".
std::string ReportLine(kcnet::sdk::Client& client, const kcnet::sdk::Report& report);
// "facility.workers: kept 18 (another device, later), yours was 15".
std::string ConflictLine(const kcnet::v1::Conflict& c);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_PRINT_H_
