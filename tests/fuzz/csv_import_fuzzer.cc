// libFuzzer target: the importer of the official administrative code list. The input is
// the CSV text, imported into a fresh in-memory Directory as a dry run and then for real.
//
// Invariants (abort on violation): the dry run predicts the real import (same status code,
// same additions); an applied import makes every added code findable; importing the same
// list again changes nothing (every row unchanged).
//
// Thread-safety: single-threaded (libFuzzer calls it from one thread).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "server/directory/csv_import.h"
#include "server/directory/directory.h"
#include "sync/hlc.h"
#include "tests/fuzz/fuzz_util.h"

namespace kcnet::fuzz {
namespace {

void Run(absl::string_view text) {
  sync::FakeClock clock(kNowMs);
  auto directory = server::Directory::Open(":memory:", {.clock = &clock});
  KCNET_FUZZ_CHECK(directory.ok(), "%s", directory.status().ToString().c_str());
  server::Directory& dir = **directory;

  const server::ImportReport dry = server::ImportOrgUnits(dir, text, server::ImportMode::kDryRun);
  dry.Summary();
  KCNET_FUZZ_CHECK(!dry.applied, "a dry run applied");
  const server::ImportReport real = server::ImportOrgUnits(dir, text, server::ImportMode::kApply);
  real.Summary();
  KCNET_FUZZ_CHECK(dry.status.code() == real.status.code(), "dry run %s, import %s",
                   dry.status.ToString().c_str(), real.status.ToString().c_str());
  KCNET_FUZZ_CHECK(dry.added == real.added && dry.errors == real.errors,
                   "the dry run did not predict the import");
  if (!real.status.ok()) {
    KCNET_FUZZ_CHECK(!real.applied, "a refused import applied");
    return;
  }
  for (const std::string& code : real.added) {
    auto unit = dir.FindByCode(code);
    KCNET_FUZZ_CHECK(unit.ok(), "added code '%s' not found: %s", code.c_str(),
                     unit.status().ToString().c_str());
  }
  const server::ImportReport again = server::ImportOrgUnits(dir, text, server::ImportMode::kApply);
  KCNET_FUZZ_CHECK(again.status.ok(), "re-import refused: %s", again.status.ToString().c_str());
  KCNET_FUZZ_CHECK(again.added.empty(), "re-import added %zu units", again.added.size());
  KCNET_FUZZ_CHECK(again.rows == real.rows, "re-import read %d rows, first import %d", again.rows,
                   real.rows);
}

}  // namespace
}  // namespace kcnet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kcnet::fuzz::Run(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
