// The command line of the `kcnet` field tool (args.h).
#include "client_sdk/cli/args.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace kcnet::cli {

const std::set<std::string>& GlobalFlags() {
  static const auto* flags =
      new std::set<std::string>{"store", "device", "server", "ca_file", "tls", "insecure"};
  return *flags;
}

const std::set<std::string>& BooleanFlags() {
  static const auto* flags = new std::set<std::string>{"tls", "insecure"};
  return *flags;
}

const std::set<std::string>& RepeatableFlags() {
  static const auto* flags = new std::set<std::string>{"photo"};
  return *flags;
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
