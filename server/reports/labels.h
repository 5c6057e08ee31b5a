// Labels of the enum values written in exports (CSV, XLSX): status, step (request action),
// support category, funding source, facility kind, sector, visit purpose and role, in
// Vietnamese (the default) or English, the same words as the console's (console/src/i18n.ts,
// console/src/pages/reportsText.ts, console/src/i18n-review.ts).
//
// Thread-safety: free functions over constant tables.
#ifndef KCNET_SERVER_REPORTS_LABELS_H_
#define KCNET_SERVER_REPORTS_LABELS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace kcnet::server::reports {

enum class Language { kVietnamese, kEnglish };

// "" or "vi": Vietnamese; "en": English; anything else INVALID_ARGUMENT naming `field`.
absl::StatusOr<Language> ParseLanguage(absl::string_view field, absl::string_view text);

// The label of `value` of `type` ("Đã gửi" / "Submitted" for REQUEST_STATUS_SUBMITTED);
// "" for 0 (unspecified); the number as text for a value without a label.
std::string EnumLabel(const google::protobuf::EnumDescriptor* type, int value, Language language);

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_LABELS_H_
