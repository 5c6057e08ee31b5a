// `kcnet-admin seed-demo`: fills a new, empty data directory with a small demo world made
// up for kcnet (not official data): one province "90" (Tỉnh Demo) with two districts and
// five communes, one account for every role, and a few facilities in the communes. The
// facilities are written into DATA_DIR/kcnet.db through the sync core's merge
// (ServerStore::Apply), as an administrator's server-side write, so that they sync like any
// other record.
//
// Demo accounts (fixed passwords, printed by the command; change them before real use):
//   collab1   commune collaborator at 90101    collab2   commune collaborator at 90201
//   coord1    district coordinator at 901      officer1  province officer at 90
//   admin1    administrator at 90
//
// Thread-safety: SeedDemo() is not meant to run concurrently on the same directory.
#ifndef KCNET_SERVER_ADMIN_SEED_DEMO_H_
#define KCNET_SERVER_ADMIN_SEED_DEMO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/directory/directory.h"

namespace kcnet::server {

struct DemoAccount {
  std::string username;
  std::string password;
  std::string role;  // RoleName()
  std::string org_unit_code;
};

struct DemoSeed {
  int org_units = 0;
  int facilities = 0;
  int visits = 0;     // survey visits recording the facilities' indicators (outcomes)
  int plan_year = 0;  // the year of the demo province's extension plan
  std::vector<DemoAccount> accounts;
};

// Seeds `data_dir` (created when missing). Fails with FAILED_PRECONDITION, changing
// nothing, when the directory exists and holds anything; otherwise with the storage error.
// With `postgres` (a libpq connection string) the accounts and the facilities go into that
// database, as kcnet-server --store=postgres:CONNINFO keeps them, and so does the plan
// (schema kcnet_plans).
absl::StatusOr<DemoSeed> SeedDemo(const std::string& data_dir,
                                  const DirectoryOptions& directory_options = {},
                                  const std::string& postgres = "");

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ADMIN_SEED_DEMO_H_
