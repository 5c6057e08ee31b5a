// Where kcnet-server keeps the synced records (--store): "sqlite:DIR" (the file DIR/kcnet.db,
// the default with DIR = --data_dir) or "postgres:CONNINFO" (a libpq connection string or
// URI, docs/POSTGRES.md), where the directory (accounts, tokens, lock-outs) then lives
// too. Plans, report summaries and attachments stay in --data_dir.
//
// Thread-safety: pure functions.
#ifndef KCNET_SERVER_APP_STORE_SPEC_H_
#define KCNET_SERVER_APP_STORE_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kcnet::server {

struct StoreSpec {
  enum class Kind { kSqlite, kPostgres };
  Kind kind = Kind::kSqlite;
  // kSqlite: the directory of kcnet.db; kPostgres: the connection string.
  std::string location;
};

// Parses `spec`; empty means sqlite in `data_dir`. INVALID_ARGUMENT naming "store" and
// the reason for anything else.
absl::StatusOr<StoreSpec> ParseStoreSpec(absl::string_view spec, const std::string& data_dir);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_APP_STORE_SPEC_H_
