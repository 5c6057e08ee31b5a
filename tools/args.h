// The command line of kcnet's tools (`kcnet`, `kcnet-admin`): words and --flags split once,
// then read with errors a person can act on ("--workers: '2.5' is not a whole number").
//
// Every flag takes a value (--name=VALUE or --name VALUE) except --help (-h) and the
// boolean flags a tool names, which may stand alone (--insecure is --insecure=true). A '-'
// in a flag's name reads as '_' (--password-file is --password_file).
//
// Whole numbers take '.' or ',' only as thousands separators, between groups of three
// digits: 45.000.000, 45,000,000 and 45000000 are the same; 45,5 and 2.5 are errors,
// never 455 and 25.
//
// Thread-safety: Args is thread-compatible; the functions are pure and thread-safe.
#ifndef KCNET_TOOLS_ARGS_H_
#define KCNET_TOOLS_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kcnet::tools {

// The words and flags of one command line.
class Args {
 public:
  // Splits argv (without the program name). `boolean_flags` may be given without a value.
  // A usage error (UsageError()) for a flag without its value or a flag given twice.
  // Flags in `repeatable_flags` may be given several times (GetAll has every value; Get
  // the first).
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& boolean_flags = {},
                                    const std::set<std::string>& repeatable_flags = {});

  const std::vector<std::string>& words() const { return words_; }
  bool help() const { return help_; }
  bool Has(absl::string_view flag) const { return flags_.count(std::string(flag)) > 0; }
  // Every flag given, by name (without "--", '-' read as '_').
  const std::map<std::string, std::string>& flags() const { return flags_; }

  // A usage error naming the first flag that is in neither `allowed` nor `also_allowed`
  // (a tool's global flags); the message lists `allowed`.
  absl::Status CheckFlags(const std::set<std::string>& allowed,
                          const std::set<std::string>& also_allowed = {}) const;

  // The flag's value, or nullopt when it was not given.
  std::optional<std::string> Get(absl::string_view flag) const;
  std::string GetOr(absl::string_view flag, absl::string_view fallback) const;
  // Every value of a repeatable flag, in the order given (empty when not given).
  std::vector<std::string> GetAll(absl::string_view flag) const;
  // "--name is required" when missing or empty.
  absl::StatusOr<std::string> Required(absl::string_view flag) const;
  // A whole number (ParseWholeNumber()); nullopt when not given; a usage error naming the
  // flag otherwise.
  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view flag) const;
  // A finite number with '.' for decimals; nullopt when not given.
  absl::StatusOr<std::optional<double>> Double(absl::string_view flag) const;
  // true, false, yes, no, 1, 0, on, off (any case); nullopt when not given.
  absl::StatusOr<std::optional<bool>> Bool(absl::string_view flag) const;

 private:
  std::vector<std::string> words_;
  std::map<std::string, std::string> flags_;
  std::map<std::string, std::vector<std::string>> all_;  // repeatable flags' values
  bool help_ = false;
};

// `text` as a whole number: an optional sign, then digits, with '.' or ',' (one kind)
// only between groups of three digits. nullopt for anything else, or out of int64 range.
std::optional<int64_t> ParseWholeNumber(absl::string_view text);

// A wrong command line (the tools exit 2 rather than 1): INVALID_ARGUMENT marked as such.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

}  // namespace kcnet::tools

#endif  // KCNET_TOOLS_ARGS_H_
