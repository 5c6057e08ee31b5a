// The PostgreSQL store's schema and its versioned migrations.
//
// Migrations are an ordered list of SQL steps (step i takes version i to i+1), recorded
// in kcnet_schema(version). Migrate() runs the missing steps in one transaction under an
// advisory lock, so that instances starting together on one database migrate it once; a
// database whose version is above the list's length was written by a newer kcnet and is
// refused (FAILED_PRECONDITION), as the SQLite store refuses a newer file.
//
// Tables (version 1):
//   kcnet_meta(key, value)                 store-wide values (incarnation, ...)
//   kcnet_bucket_head(bucket, province, last_op)
//                                          one row per bucket: the lock every writer of
//                                          the bucket takes, sorted, before drawing op ids,
//                                          and the bucket's checkpoint
//   kcnet_ops(province, bucket, op, type, id, body)
//                                          the op log, PARTITION BY LIST (province): one
//                                          partition per province (kcnet_ops_p<N>), created
//                                          on the province's first write
//   kcnet_devices(device_id, last_seq)     exactly-once: the last sequence applied
//   kcnet_refusals(device_id, seq, result) refusals remembered for a replayed push
// The op ids come from the sequence kcnet_op_seq.
//
// Version 2 adds the record store (PgServerStore):
//   kcnet_records(province, bucket, type, id, op, deleted, row, field_ops)
//                                          each record's current state, one row per
//                                          record at its latest op (the bucket's compacted
//                                          log, index (province, bucket, op)), PARTITION BY
//                                          LIST (province): kcnet_records_p<N>
//   kcnet_bucket_head + checksum, records  the bucket's checkpoint
//   kcnet_devices + node; kcnet_pushes(device_id, seq, digest); kcnet_handback_closed;
//   kcnet_conflicts; kcnet_device_owners; kcnet_device_log: as the SQLite store's tables
//
// Version 3 adds the directory (PgDirectoryStore) in the schema kcnet_directory: org_units,
// users, user_org_units, tokens, audit, sign_in_failures, device_credentials (as the
// SQLite directory file's tables, integers as bigint, hashes as bytea) and generation(id,
// value), one row that every account change and revocation bumps (the other instances'
// caches reload when it moves).
//
// Version 4 adds the plans (PgPlanDb) in the schema kcnet_plans: plans, plan_lines,
// plan_revisions, draws, disbursements and changes, as the SQLite plans file's tables
// (integers as bigint, the revisions' before/after as bytea).
//
// Version 5 adds the attachments (server/pgstore/pg_attachments.h) in the schema
// kcnet_attachments: uploads, province_blobs and gc_marks as the SQLite attachments.db's
// tables (uploads + writer: the stream that may commit), blobs(sha256, size, created_ms) and
// chunks(key, n, data): the bytes of blobs and of uploads in progress, 256 KiB a row.
//
// Version 6 makes kcnet_records' primary key (type, id, province) and drops
// the index (type, id) that key now serves: each record written updates two B-trees (the
// key and the bucket's log (province, bucket, op)) instead of three.
//
// Thread-safety: functions only; the caller owns the connection.
#ifndef KCNET_SERVER_PGSTORE_PG_SCHEMA_H_
#define KCNET_SERVER_PGSTORE_PG_SCHEMA_H_

#include <cstdint>
#include <iterator>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/pgstore/pg_conn.h"

namespace kcnet::pgstore {

inline constexpr const char* kPgMigrations[] = {
    // 0 -> 1
    "CREATE TABLE kcnet_meta(key text PRIMARY KEY, value bigint NOT NULL);"
    "CREATE SEQUENCE kcnet_op_seq;"
    "CREATE TABLE kcnet_bucket_head(bucket bigint PRIMARY KEY, province integer NOT NULL,"
    "  last_op bigint NOT NULL DEFAULT 0);"
    "CREATE TABLE kcnet_ops(province integer NOT NULL, bucket bigint NOT NULL,"
    "  op bigint NOT NULL, type integer NOT NULL, id bytea NOT NULL, body bytea NOT NULL,"
    "  PRIMARY KEY (province, bucket, op)) PARTITION BY LIST (province);"
    "CREATE TABLE kcnet_devices(device_id text PRIMARY KEY, last_seq bigint NOT NULL);"
    "CREATE TABLE kcnet_refusals(device_id text NOT NULL, seq bigint NOT NULL,"
    "  result bytea NOT NULL, PRIMARY KEY (device_id, seq));",
    // 1 -> 2: the record store (PgServerStore, docs/POSTGRES.md).
    "CREATE TABLE kcnet_records(province integer NOT NULL, bucket bigint NOT NULL,"
    "  type integer NOT NULL, id text NOT NULL, op bigint NOT NULL, deleted boolean NOT NULL,"
    "  row bytea NOT NULL, field_ops bytea NOT NULL, PRIMARY KEY (province, type, id))"
    "  PARTITION BY LIST (province);"
    "CREATE INDEX kcnet_records_log ON kcnet_records(province, bucket, op);"
    "CREATE INDEX kcnet_records_id ON kcnet_records(type, id);"
    "ALTER TABLE kcnet_bucket_head ADD COLUMN checksum bigint NOT NULL DEFAULT 0,"
    "  ADD COLUMN records bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE kcnet_devices ADD COLUMN node bigint NOT NULL DEFAULT 0;"
    "CREATE TABLE kcnet_pushes(device_id text NOT NULL, seq bigint NOT NULL,"
    "  digest bigint NOT NULL, PRIMARY KEY (device_id, seq));"
    "CREATE TABLE kcnet_handback_closed(device_id text PRIMARY KEY);"
    "CREATE TABLE kcnet_conflicts(id bigserial PRIMARY KEY, bucket bigint NOT NULL,"
    "  resolved boolean NOT NULL DEFAULT false, body bytea NOT NULL);"
    "CREATE INDEX kcnet_conflicts_bucket ON kcnet_conflicts(bucket, id);"
    "CREATE TABLE kcnet_device_owners(device_id text PRIMARY KEY, owner bigint NOT NULL,"
    "  generation bigint NOT NULL, released boolean NOT NULL, since_ms bigint NOT NULL);"
    "CREATE TABLE kcnet_device_log(id bigserial PRIMARY KEY, device_id text NOT NULL,"
    "  owner bigint NOT NULL, generation bigint NOT NULL, event text NOT NULL,"
    "  by_user bigint NOT NULL, at_ms bigint NOT NULL);"
    "CREATE INDEX kcnet_device_log_device ON kcnet_device_log(device_id, id);",
    // 2 -> 3: the directory (PgDirectoryStore, server/pgstore/pg_directory_store.h), the
    // tables of the SQLite directory file in a schema of their own, and its generation.
    "CREATE SCHEMA kcnet_directory;"
    "CREATE TABLE kcnet_directory.org_units(id bigserial PRIMARY KEY,"
    "  code text NOT NULL UNIQUE, name text NOT NULL, level bigint NOT NULL,"
    "  parent_id bigint REFERENCES kcnet_directory.org_units(id),"
    "  effective_from_ms bigint NOT NULL);"
    "CREATE INDEX org_units_parent ON kcnet_directory.org_units(parent_id);"
    "CREATE TABLE kcnet_directory.users(id bigserial PRIMARY KEY,"
    "  username text NOT NULL UNIQUE, display_name text NOT NULL, role bigint NOT NULL,"
    "  password_hash text NOT NULL, active bigint NOT NULL, phone text NOT NULL DEFAULT '',"
    "  created_ms bigint NOT NULL, updated_ms bigint NOT NULL);"
    "CREATE TABLE kcnet_directory.user_org_units("
    "  user_id bigint NOT NULL REFERENCES kcnet_directory.users(id),"
    "  org_unit_id bigint NOT NULL REFERENCES kcnet_directory.org_units(id),"
    "  PRIMARY KEY (user_id, org_unit_id));"
    "CREATE TABLE kcnet_directory.tokens(hash bytea PRIMARY KEY,"
    "  user_id bigint NOT NULL REFERENCES kcnet_directory.users(id),"
    "  created_ms bigint NOT NULL, expires_ms bigint NOT NULL);"
    "CREATE INDEX tokens_user ON kcnet_directory.tokens(user_id);"
    "CREATE INDEX tokens_expiry ON kcnet_directory.tokens(expires_ms);"
    "CREATE TABLE kcnet_directory.audit(id bigserial PRIMARY KEY, at_ms bigint NOT NULL,"
    "  actor_id bigint NOT NULL, actor text NOT NULL, action text NOT NULL,"
    "  target_user_id bigint NOT NULL, details text NOT NULL);"
    "CREATE INDEX audit_target ON kcnet_directory.audit(target_user_id, id);"
    "CREATE TABLE kcnet_directory.sign_in_failures(username text PRIMARY KEY,"
    "  failures bigint NOT NULL, last_failure_ms bigint NOT NULL,"
    "  locked_until_ms bigint NOT NULL);"
    "CREATE TABLE kcnet_directory.device_credentials(id bigserial PRIMARY KEY,"
    "  device_id text NOT NULL, user_id bigint NOT NULL REFERENCES kcnet_directory.users(id),"
    "  hash bytea NOT NULL, created_ms bigint NOT NULL, last_used_ms bigint NOT NULL,"
    "  revoked_ms bigint NOT NULL DEFAULT 0, revoked_by bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX device_credentials_device ON kcnet_directory.device_credentials(device_id);"
    "CREATE INDEX device_credentials_user ON kcnet_directory.device_credentials(user_id);"
    "CREATE TABLE kcnet_directory.generation(id integer PRIMARY KEY CHECK (id = 1),"
    "  value bigint NOT NULL);"
    "INSERT INTO kcnet_directory.generation(id, value) VALUES (1, 1);",
    // 3 -> 4: the plans (PgPlanDb, server/pgstore/pg_plan_db.h), the tables of the SQLite
    // plans file in a schema of their own.
    "CREATE SCHEMA kcnet_plans;"
    "CREATE TABLE kcnet_plans.plans(province_id bigint NOT NULL, year bigint NOT NULL,"
    "  revision bigint NOT NULL, created_ms bigint NOT NULL, created_by bigint NOT NULL,"
    "  updated_ms bigint NOT NULL, updated_by bigint NOT NULL,"
    "  PRIMARY KEY (province_id, year));"
    "CREATE TABLE kcnet_plans.plan_lines(province_id bigint NOT NULL, year bigint NOT NULL,"
    "  category bigint NOT NULL, funding bigint NOT NULL, planned_vnd bigint NOT NULL,"
    "  planned_facilities bigint NOT NULL, PRIMARY KEY (province_id, year, funding, category));"
    "CREATE TABLE kcnet_plans.plan_revisions(province_id bigint NOT NULL,"
    "  year bigint NOT NULL, revision bigint NOT NULL, actor_id bigint NOT NULL,"
    "  actor text NOT NULL, at_ms bigint NOT NULL, note text NOT NULL, before bytea NOT NULL,"
    "  after bytea NOT NULL, PRIMARY KEY (province_id, year, revision));"
    "CREATE TABLE kcnet_plans.draws(request_id text PRIMARY KEY,"
    "  province_id bigint NOT NULL, commune_id bigint NOT NULL, year bigint NOT NULL,"
    "  category bigint NOT NULL, funding bigint NOT NULL, amount_vnd bigint NOT NULL,"
    "  own_contribution_vnd bigint NOT NULL, remaining_before_vnd bigint NOT NULL,"
    "  has_plan bigint NOT NULL, over_plan_reason text NOT NULL, actor_id bigint NOT NULL,"
    "  at_ms bigint NOT NULL, confirmed bigint NOT NULL);"
    "CREATE INDEX draws_line ON kcnet_plans.draws(province_id, year, funding, category);"
    "CREATE INDEX draws_unconfirmed ON kcnet_plans.draws(confirmed) WHERE confirmed = 0;"
    "CREATE TABLE kcnet_plans.disbursements(id bigserial PRIMARY KEY,"
    "  request_id text NOT NULL, amount_vnd bigint NOT NULL, paid_date text NOT NULL,"
    "  reference text NOT NULL, note text NOT NULL, actor_id bigint NOT NULL,"
    "  at_ms bigint NOT NULL);"
    "CREATE INDEX disbursements_request ON kcnet_plans.disbursements(request_id);"
    "CREATE TABLE kcnet_plans.changes(id integer PRIMARY KEY CHECK (id = 1),"
    "  seq bigint NOT NULL);"
    "INSERT INTO kcnet_plans.changes(id, seq) VALUES (1, 0);",
    // 4 -> 5: the attachments (server/pgstore/pg_attachments.h): the bookkeeping of the
    // SQLite attachments file, and the bytes, shared by every instance.
    "CREATE SCHEMA kcnet_attachments;"
    "CREATE TABLE kcnet_attachments.uploads(id text PRIMARY KEY, user_id bigint NOT NULL,"
    "  province_id bigint NOT NULL, attachment_id text NOT NULL, sha256 text NOT NULL,"
    "  size bigint NOT NULL, media_type text NOT NULL, committed bigint NOT NULL,"
    "  created_ms bigint NOT NULL, expires_ms bigint NOT NULL,"
    "  writer text NOT NULL DEFAULT '');"
    "CREATE INDEX uploads_owner ON kcnet_attachments.uploads(user_id, province_id, sha256);"
    "CREATE INDEX uploads_province ON kcnet_attachments.uploads(province_id);"
    "CREATE TABLE kcnet_attachments.province_blobs(province_id bigint NOT NULL,"
    "  sha256 text NOT NULL, size bigint NOT NULL, user_id bigint NOT NULL,"
    "  created_ms bigint NOT NULL, PRIMARY KEY (province_id, sha256));"
    "CREATE INDEX province_blobs_sha ON kcnet_attachments.province_blobs(sha256);"
    "CREATE INDEX province_blobs_user ON kcnet_attachments.province_blobs(user_id);"
    "CREATE TABLE kcnet_attachments.gc_marks(sha256 text PRIMARY KEY,"
    "  since_ms bigint NOT NULL);"
    "CREATE TABLE kcnet_attachments.blobs(sha256 text PRIMARY KEY, size bigint NOT NULL,"
    "  created_ms bigint NOT NULL);"
    "CREATE TABLE kcnet_attachments.chunks(key text NOT NULL, n integer NOT NULL,"
    "  data bytea NOT NULL, PRIMARY KEY (key, n));"
    "ALTER TABLE kcnet_attachments.chunks ALTER COLUMN data SET STORAGE EXTERNAL;",
    // 5 -> 6: one B-tree fewer per record written. The primary key
    // becomes (type, id, province): it still arbitrates the upsert's ON CONFLICT
    // (province, type, id) (inference ignores column order) and now also serves every read
    // by (type, id), so the separate index kcnet_records_id on (type, id) is dropped.
    // Rebuilds each partition's key index once (docs/POSTGRES.md, "Indexes").
    "ALTER TABLE kcnet_records DROP CONSTRAINT kcnet_records_pkey;"
    "ALTER TABLE kcnet_records ADD PRIMARY KEY (type, id, province);"
    "DROP INDEX kcnet_records_id;",
};
inline constexpr int kPgSchemaVersion = static_cast<int>(std::size(kPgMigrations));

// Brings the database to kPgSchemaVersion (see above).
absl::Status Migrate(PgConn& conn);
// The database's schema version (0: none yet).
absl::StatusOr<int> SchemaVersion(PgConn& conn);
// Creates the op log's partition of `province` when missing (its own transaction).
absl::Status EnsureProvincePartition(PgConn& conn, int32_t province);
// The same for the record table (kcnet_records_p<N>).
absl::Status EnsureRecordsPartition(PgConn& conn, int32_t province);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_SCHEMA_H_
