// The command line of the `kcnet` field tool (args.h).
#include "client_sdk/cli/args.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace kcnet::cli {

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv) {
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
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat("--", name, " needs a value (--", name, "=VALUE)"));
    }
    if (!args.flags_.emplace(name, value).second) {
      return UsageError(absl::StrCat("--", name, " is given twice"));
    }
  }
  return args;
}

namespace {
constexpr absl::string_view kUsagePayload = "kcnet.cli/usage";
}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

const std::set<std::string>& GlobalFlags() {
  static const auto* flags = new std::set<std::string>{"store", "device", "server"};
  return *flags;
}

absl::Status Args::CheckFlags(const std::set<std::string>& allowed) const {
  for (const auto& [name, value] : flags_) {
    if (allowed.count(name) == 0 && GlobalFlags().count(name) == 0) {
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
  std::string digits;
  for (char c : *value) {
    if (c != '.' && c != ',' && c != '_') digits.push_back(c);
  }
  int64_t number = 0;
  if (!absl::SimpleAtoi(digits, &number)) {
    return UsageError(absl::StrCat("--", flag, ": '", *value, "' is not a whole number"));
  }
  return std::optional<int64_t>(number);
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

std::string EnumName(const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
                     int value) {
  const google::protobuf::EnumValueDescriptor* v = descriptor->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat("#", value);
  absl::string_view name = v->name();
  absl::ConsumePrefix(&name, prefix);
  return absl::AsciiStrToLower(name);
}

absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              absl::string_view prefix, absl::string_view flag,
                              absl::string_view text) {
  std::string wanted = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  for (char& c : wanted) {
    if (c == '-' || c == ' ') c = '_';
  }
  std::vector<std::string> names;
  std::vector<int> prefix_matches;
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const int number = descriptor->value(i)->number();
    if (absl::EndsWith(descriptor->value(i)->name(), "_UNSPECIFIED")) continue;
    const std::string name = EnumName(descriptor, prefix, number);
    names.push_back(name);
    if (name == wanted) return number;
    if (!wanted.empty() && absl::StartsWith(name, wanted)) prefix_matches.push_back(number);
  }
  if (prefix_matches.size() == 1) return prefix_matches[0];
  return UsageError(
      absl::StrCat("--", flag, ": '", text, "' is not one of ", absl::StrJoin(names, ", ")));
}

}  // namespace kcnet::cli
