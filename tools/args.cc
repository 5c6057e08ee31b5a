// The command line of kcnet's tools (args.h).
#include "tools/args.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace kcnet::tools {
namespace {
constexpr absl::string_view kUsagePayload = "kcnet.tools/usage";
}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

std::optional<int64_t> ParseWholeNumber(absl::string_view text) {
  absl::string_view rest = text;
  std::string digits;
  if (absl::ConsumePrefix(&rest, "-")) {
    digits = "-";
  } else {
    absl::ConsumePrefix(&rest, "+");
  }
  char separator = 0;
  size_t group = 0;  // digits since the last separator
  bool first_group = true;
  for (char c : rest) {
    if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      digits.push_back(c);
      ++group;
      continue;
    }
    if (c != '.' && c != ',') return std::nullopt;
    if (separator != 0 && c != separator) return std::nullopt;  // 45.000,000
    // A group before a separator: 1 to 3 digits first, exactly 3 after.
    if (group == 0 || group > 3 || (!first_group && group != 3)) return std::nullopt;
    separator = c;
    first_group = false;
    group = 0;
  }
  if (group == 0 || (separator != 0 && group != 3)) return std::nullopt;
  int64_t number = 0;
  if (!absl::SimpleAtoi(digits, &number)) return std::nullopt;
  return number;
}

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& boolean_flags,
                                 const std::set<std::string>& repeatable_flags) {
  Args args;
  bool only_words = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    absl::string_view arg = argv[i];
    if (only_words || !absl::StartsWith(arg, "-") || arg == "-") {
      args.words_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      only_words = true;
      continue;
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t equals = arg.find('=');
    std::string name(arg.substr(0, equals));
    absl::StrReplaceAll({{"-", "_"}}, &name);  // --server-bin reads as --server_bin
    if (name == "help" || name == "h") {
      args.help_ = true;
      continue;
    }
    if (name.empty()) return UsageError(absl::StrCat("bad flag '", argv[i], "'"));
    std::string value;
    if (equals != absl::string_view::npos) {
      value = std::string(arg.substr(equals + 1));
    } else if (boolean_flags.count(name) > 0) {
      value = "true";
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat("--", name, " needs a value (--", name, "=VALUE)"));
    }
    if (repeatable_flags.count(name) > 0) {
      args.all_[name].push_back(value);
      args.flags_.emplace(name, value);  // the first
      continue;
    }
    if (!args.flags_.emplace(name, value).second) {
      return UsageError(absl::StrCat("--", name, " is given twice"));
    }
  }
  return args;
}

absl::Status Args::CheckFlags(const std::set<std::string>& allowed,
                              const std::set<std::string>& also_allowed) const {
  for (const auto& [name, value] : flags_) {
    if (allowed.count(name) == 0 && also_allowed.count(name) == 0) {
      std::vector<std::string> known;
      for (const std::string& flag : allowed) known.push_back(absl::StrCat("--", flag));
      return UsageError(absl::StrCat(
          "unknown flag --", name,
          known.empty() ? " (this command takes no flags)"
                        : absl::StrCat(" (it takes ", absl::StrJoin(known, " "), ")")));
    }
  }
  return absl::OkStatus();
}

std::optional<std::string> Args::Get(absl::string_view flag) const {
  auto it = flags_.find(std::string(flag));
  if (it == flags_.end()) return std::nullopt;
  return it->second;
}

std::string Args::GetOr(absl::string_view flag, absl::string_view fallback) const {
  std::optional<std::string> value = Get(flag);
  return value.has_value() ? *value : std::string(fallback);
}

std::vector<std::string> Args::GetAll(absl::string_view flag) const {
  auto it = all_.find(std::string(flag));
  if (it != all_.end()) return it->second;
  std::optional<std::string> value = Get(flag);
  if (value.has_value()) return {*value};
  return {};
}

absl::StatusOr<std::string> Args::Required(absl::string_view flag) const {
  std::optional<std::string> value = Get(flag);
  if (!value.has_value() || absl::StripAsciiWhitespace(*value).empty()) {
    return UsageError(absl::StrCat("--", flag, " is required"));
  }
  return *value;
}

absl::StatusOr<std::optional<int64_t>> Args::Int(absl::string_view flag) const {
  std::optional<std::string> value = Get(flag);
  if (!value.has_value()) return std::optional<int64_t>();
  std::optional<int64_t> number = ParseWholeNumber(*value);
  if (!number.has_value()) {
    return UsageError(absl::StrCat("--", flag, ": '", *value,
                                   "' is not a whole number (separators only between groups "
                                   "of three digits: 45.000.000)"));
  }
  return number;
}

absl::StatusOr<std::optional<double>> Args::Double(absl::string_view flag) const {
  std::optional<std::string> value = Get(flag);
  if (!value.has_value()) return std::optional<double>();
  double number = 0;
  if (!absl::SimpleAtod(*value, &number) || !std::isfinite(number)) {
    return UsageError(
        absl::StrCat("--", flag, ": '", *value, "' is not a number (use a '.' for decimals)"));
  }
  return std::optional<double>(number);
}

absl::StatusOr<std::optional<bool>> Args::Bool(absl::string_view flag) const {
  std::optional<std::string> value = Get(flag);
  if (!value.has_value()) return std::optional<bool>();
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*value));
  if (lower == "true" || lower == "yes" || lower == "1" || lower == "on")
    return std::optional<bool>(true);
  if (lower == "false" || lower == "no" || lower == "0" || lower == "off")
    return std::optional<bool>(false);
  return UsageError(absl::StrCat("--", flag, ": '", *value, "' is not true or false"));
}

}  // namespace kcnet::tools
