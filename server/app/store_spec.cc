#include "server/app/store_spec.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kcnet::server {

absl::StatusOr<StoreSpec> ParseStoreSpec(absl::string_view spec, const std::string& data_dir) {
  StoreSpec out;
  if (spec.empty()) {
    out.location = data_dir;
    return out;
  }
  const size_t colon = spec.find(':');
  const absl::string_view kind = spec.substr(0, colon);
  const absl::string_view rest =
      colon == absl::string_view::npos ? absl::string_view() : spec.substr(colon + 1);
  if (kind == "sqlite") {
    if (rest.empty()) {
      return absl::InvalidArgumentError("store: sqlite:DIR needs a directory");
    }
    out.location = std::string(rest);
    return out;
  }
  if (kind == "postgres" || kind == "postgresql") {
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          "store: postgres:CONNINFO needs a connection string, e.g. "
          "postgres:host=db1 dbname=kcnet or postgres:postgresql://db1/kcnet");
    }
    out.kind = StoreSpec::Kind::kPostgres;
    out.location = std::string(rest);
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("store: unknown kind '", kind, "': use sqlite:DIR or postgres:CONNINFO"));
}

}  // namespace kcnet::server
