// The command line of the `kcnet` field tool: the tools' Args (tools/args.h: words and
// --flags, whole numbers with thousands separators, usage errors) plus what is kcnet's
// own: its global flags, and readable names for the domain's enums ("survey" for
// VISIT_PURPOSE_SURVEY, "training" for SUPPORT_CATEGORY_TRAINING).
//
// Thread-safety: the functions are pure and thread-safe.
#ifndef KCNET_CLIENT_SDK_CLI_ARGS_H_
#define KCNET_CLIENT_SDK_CLI_ARGS_H_

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "tools/args.h"

namespace kcnet::cli {

using ::kcnet::tools::Args;
using ::kcnet::tools::IsUsageError;
using ::kcnet::tools::UsageError;

// The flags every command accepts: --store, --device, --server, --ca_file, --tls,
// --insecure.
const std::set<std::string>& GlobalFlags();
// The flags that may stand alone (--insecure is --insecure=true).
const std::set<std::string>& BooleanFlags();
// The flags that may be given several times (--photo=A.jpg --photo=B.jpg).
const std::set<std::string>& RepeatableFlags();

// The readable name of an enum value: its proto name without `prefix`, lower case
// ("follow_up" for VISIT_PURPOSE_FOLLOW_UP with prefix "VISIT_PURPOSE_").
std::string EnumName(const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
                     int value);

// The enum value named `text` for flag `flag`: case-insensitive, '-' and ' ' read as '_',
// a unique prefix is enough ("machinery" for MACHINERY_TECHNOLOGY). The UNSPECIFIED value
// is never accepted. A usage error lists the valid names.
absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              absl::string_view prefix, absl::string_view flag,
                              absl::string_view text);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_ARGS_H_
