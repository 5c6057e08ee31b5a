// The command line of the `kcnet` field tool: words and --flags split once, then read by
// each command with errors a collaborator can act on ("--workers: 'abc' is not a whole
// number"), and readable names for the domain's enums ("survey" for
// VISIT_PURPOSE_SURVEY, "training" for SUPPORT_CATEGORY_TRAINING).
//
// Every flag takes a value (--name=VALUE or --name VALUE) except --help (-h). A flag the
// command does not know is an error naming it, never silently ignored.
//
// Thread-safety: Args is thread-compatible; the functions are pure.
#ifndef KCNET_CLIENT_SDK_CLI_ARGS_H_
#define KCNET_CLIENT_SDK_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace kcnet::cli {

// The words and flags of one command line.
class Args {
 public:
  // Splits argv (without the program name). INVALID_ARGUMENT for a flag without its value
  // or a flag given twice.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv);

  const std::vector<std::string>& words() const { return words_; }
  bool help() const { return help_; }
  bool Has(absl::string_view flag) const { return flags_.count(std::string(flag)) > 0; }

  // INVALID_ARGUMENT naming the first flag that is neither in `allowed` nor global.
  absl::Status CheckFlags(const std::set<std::string>& allowed) const;

  // The flag's value, or nullopt when it was not given.
  std::optional<std::string> Get(absl::string_view flag) const;
  std::string GetOr(absl::string_view flag, absl::string_view fallback) const;
  // "--name is required" when missing or empty.
  absl::StatusOr<std::string> Required(absl::string_view flag) const;
  // Whole numbers (digits, optional sign, '.' or ',' or '_' as thousands separators);
  // nullopt when not given.
  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view flag) const;
  absl::StatusOr<std::optional<double>> Double(absl::string_view flag) const;

 private:
  std::vector<std::string> words_;
  std::map<std::string, std::string> flags_;
  bool help_ = false;
};

// The flags every command accepts.
const std::set<std::string>& GlobalFlags();

// A wrong command line (the tool exits 2 rather than 1): INVALID_ARGUMENT marked as such.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// The readable name of an enum value: its proto name without `prefix`, lower case
// ("follow_up" for VISIT_PURPOSE_FOLLOW_UP with prefix "VISIT_PURPOSE_").
std::string EnumName(const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
                     int value);

// The enum value named `text` for flag `flag`: case-insensitive, '-' and ' ' read as '_',
// a unique prefix is enough ("machinery" for MACHINERY_TECHNOLOGY). The UNSPECIFIED value
// is never accepted. INVALID_ARGUMENT lists the valid names.
absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              absl::string_view prefix, absl::string_view flag,
                              absl::string_view text);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_ARGS_H_
