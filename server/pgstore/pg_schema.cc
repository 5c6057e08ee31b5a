#include "server/pgstore/pg_schema.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace kcnet::pgstore {
namespace {

// pg_advisory_xact_lock key of migrations: any constant shared by every kcnet instance.
constexpr int64_t kMigrationLock = 0x6b636e6574;  // "kcnet"

}  // namespace

// Creates `table`'s partition of `province` when missing.
static absl::Status EnsurePartition(PgConn& conn, absl::string_view table, int32_t province);

absl::StatusOr<int> SchemaVersion(PgConn& conn) {
  absl::StatusOr<PgResult> exists = conn.Query("SELECT to_regclass('kcnet_schema') IS NOT NULL");
  if (!exists.ok()) return exists.status();
  if (exists->Get(0, 0) != "t") return 0;
  absl::StatusOr<PgResult> version = conn.Query("SELECT max(version) FROM kcnet_schema");
  if (!version.ok()) return version.status();
  return static_cast<int>(version->GetInt(0, 0));
}

absl::Status Migrate(PgConn& conn) {
  absl::Status status = conn.Exec(
      "BEGIN; CREATE TABLE IF NOT EXISTS kcnet_schema(version integer PRIMARY KEY); COMMIT");
  if (!status.ok()) {
    conn.Exec("ROLLBACK").IgnoreError();
    // Two instances creating the table at once: one loses on the catalog; it exists now.
    status = conn.Exec("SELECT 1 FROM kcnet_schema LIMIT 0");
    if (!status.ok()) return status;
  }
  status = conn.Exec(absl::StrCat("BEGIN; SELECT pg_advisory_xact_lock(", kMigrationLock, ")"));
  if (!status.ok()) return status;
  auto fail = [&conn](absl::Status error) {
    conn.Exec("ROLLBACK").IgnoreError();
    return error;
  };
  absl::StatusOr<int> version = SchemaVersion(conn);
  if (!version.ok()) return fail(version.status());
  if (*version > kPgSchemaVersion) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("store: the PostgreSQL database has schema version ", *version,
                     ", written by a newer kcnet (this one knows up to ", kPgSchemaVersion, ")")));
  }
  for (int v = *version; v < kPgSchemaVersion; ++v) {
    status = conn.Exec(kPgMigrations[v]);
    if (status.ok()) {
      status = conn.Exec(absl::StrCat("INSERT INTO kcnet_schema(version) VALUES (", v + 1, ")"));
    }
    if (!status.ok()) return fail(status);
  }
  return conn.Exec("COMMIT");
}

absl::Status EnsureProvincePartition(PgConn& conn, int32_t province) {
  return EnsurePartition(conn, "kcnet_ops", province);
}

absl::Status EnsureRecordsPartition(PgConn& conn, int32_t province) {
  return EnsurePartition(conn, "kcnet_records", province);
}

static absl::Status EnsurePartition(PgConn& conn, absl::string_view table, int32_t province) {
  // The partition's name cannot be a parameter; `province` is an integer, so the text is
  // ours. A negative province gets "m" for the minus sign.
  const std::string name = absl::StrCat(table, "_p", province < 0 ? "m" : "",
                                        province < 0 ? -int64_t{province} : int64_t{province});
  absl::Status status =
      conn.Exec(absl::StrCat("CREATE TABLE IF NOT EXISTS ", name, " PARTITION OF ", table,
                             " FOR VALUES IN (", province, ")"));
  if (status.ok()) return status;
  // Another instance created it at the same moment (IF NOT EXISTS does not cover the race).
  absl::StatusOr<PgResult> exists =
      conn.Query("SELECT to_regclass($1) IS NOT NULL", {PgParam::Text(name)});
  if (exists.ok() && exists->Get(0, 0) == "t") return absl::OkStatus();
  return status;
}

}  // namespace kcnet::pgstore
