// The replica store's record layer, shared by the server's and the device's stores: one
// SQLite table per record type with a column per field, per-field clocks stored compactly,
// and a 64-bit additive checksum per bucket kept up to date on every write.
//
// Row layout (table named after the type, e.g. "visit"):
//   id TEXT PRIMARY KEY, <one column per field>, _hlc, _node, _op, _del, _fc
// Every field has a state (value, stamp, op). The most common (stamp, op) of a row is its
// baseline, kept in _hlc/_node and implied by _op and _fc's header; only fields that differ
// from it are listed in the _fc blob. A row written once (the common case) has _fc NULL,
// so its per-field clocks cost nothing. `_op` is the highest op id of the row, and the
// index (bucket, _op) is the bucket's op log: compacted by construction, since a row
// appears once, at its latest op, and each field carries the op that last wrote it.
//
// Checksum: sum (mod 2^64) over the bucket's rows of RowHash(), which hashes the type, the
// id and each field's value and stamp (tombstones: the deletion stamp). It depends only on
// the logical state, never on the layout, so server and devices compare it directly.
//
// Kept fields (device stores, docs/SYNC.md "Upgrades"): a device whose schema is older than
// the server's keeps what it does not know, with its stamps, in the side table
//   _unknown(type, id, field, value, hlc, node, op, bucket, deleted)
// one row per field (value: the serialised kcnet.v1.Value). A field of a known type the
// schema lacks is listed in RowState::kept; a record of a type the schema lacks is a
// header row (field 0: its op, deletion and stamp) plus its fields, read and written with
// ReadUnknown/WriteUnknown. Both count in the bucket's checksum exactly as the server's
// schema counts them (fields hash in number order). When the schema learns the type or the
// field (the app upgraded), Open() folds the kept values into the real columns.
//
// Migrations: a store's own tables change through an ordered list of SQL steps keyed on
// PRAGMA user_version (step i takes format i to i+1), run in one transaction at Open(); a
// store whose format is above the list's length was written by a newer kcnet and is refused.
// The record tables follow the schema instead: a missing table is created, a missing
// column added (new fields go last), at every Open().
//
// Thread-safety: not thread-safe; the owning store serialises access.
#ifndef KCNET_SYNC_RECORD_STORE_H_
#define KCNET_SYNC_RECORD_STORE_H_

#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/hlc.h"
#include "sync/schema.h"
#include "sync/sqlite.h"

namespace kcnet::sync {

// The server store's migrations (see above): format 1 is the record layer alone.
inline constexpr const char* kServerStoreMigrations[] = {
    "",  // 0 -> 1: the record layer's tables, which RecordStore creates itself
};
// The version of the server store's on-disk layout (PRAGMA user_version).
inline constexpr int kStoreFormatVersion = std::size(kServerStoreMigrations);

struct FieldState {
  kcnet::v1::Value value;  // no kind set: null
  Stamp stamp;
  uint64_t op = 0;
};

// A field the store's schema does not know, kept as downloaded.
struct KeptField {
  uint32_t number = 0;
  FieldState state;
};

struct RowState {
  int64_t bucket = 0;
  bool deleted = false;
  Stamp stamp;                     // for a tombstone: the deletion's stamp
  uint64_t op = 0;                 // the highest op id of the row
  std::vector<FieldState> fields;  // live rows: one per spec field, in spec order
  std::vector<KeptField> kept;     // live rows: fields the schema does not know, by number
};

class RecordStore {
 public:
  // Creates the tables (if missing) in `db`, runs the role's `migrations` (see above; the
  // server's are kServerStoreMigrations) and brings the record tables up to the schema,
  // folding kept values the schema now knows; both must outlive the store. Fails with
  // FAILED_PRECONDITION when the file was written by a newer kcnet, is not a kcnet store
  // of this role (`role` is "server" or "device"), or its columns are not a prefix of the
  // schema's fields (a field removed or moved).
  static absl::StatusOr<std::unique_ptr<RecordStore>> Open(
      Db* db, const Schema* schema, absl::string_view role,
      absl::Span<const char* const> migrations = kServerStoreMigrations);

  // Records whose kept values Open() folded into the real columns (type, id text).
  const std::vector<std::pair<uint32_t, std::string>>& folded() const { return folded_; }

  // A record of a type the schema does not know (row.fields empty, every field in
  // row.kept); nullopt when absent. Only on a store with the _unknown table.
  absl::StatusOr<std::optional<RowState>> ReadUnknown(uint32_t type, absl::string_view id_text);
  // Writes it over `old` and records the checksum change, as Write().
  absl::Status WriteUnknown(uint32_t type, absl::string_view id_text,
                            const std::optional<RowState>& old, const RowState& row);

  const Schema& schema() const { return *schema_; }
  Db* db() { return db_; }

  // Reads one row by its id text; nullopt when absent.
  absl::StatusOr<std::optional<RowState>> Read(const RecordTypeSpec& type,
                                               absl::string_view id_text);

  // Writes `row` over `old` (nullopt for a new row) and records the checksum change in
  // the current unit of work.
  absl::Status Write(const RecordTypeSpec& type, absl::string_view id_text,
                     const std::optional<RowState>& old, const RowState& row);

  // Inserts `row` as a new row and records its checksum change; false, with nothing
  // written, when a row (or tombstone) with this id exists. Saves Read() where rows are
  // expected to be new (a bucket's first download).
  absl::StatusOr<bool> InsertIfAbsent(const RecordTypeSpec& type, absl::string_view id_text,
                                      const RowState& row);

  // Units of work mirror SAVEPOINTs: checksum deltas of a unit join the transaction's on
  // CommitUnit() and vanish on AbandonUnit().
  void CommitUnit();
  // Call after ROLLBACK TO the unit's savepoint: drops its deltas and reloads the caches
  // the unit may have filled.
  absl::Status AbandonUnit();
  // The buckets the current transaction has written so far.
  std::vector<int64_t> TouchedBuckets() const;
  // Writes the transaction's checksum deltas; call just before COMMIT.
  absl::Status FlushBuckets();
  // Forgets the transaction's deltas and reloads caches after a ROLLBACK.
  absl::Status AbandonTransaction();

  // Calls `fn` for each row of `bucket` with op > `after_op`, in op order, at most `limit`.
  absl::Status ScanSince(
      const RecordTypeSpec& type, int64_t bucket, uint64_t after_op, size_t limit,
      const std::function<absl::Status(absl::string_view id_text, const RowState& row)>& fn);

  // Calls `fn` for live rows of `bucket` whose fields equal `equals` (field number,
  // value), ordered by op (descending: op < `position`, 0 meaning from the newest;
  // ascending: op > `position`), at most `limit`.
  absl::Status ScanOrdered(
      const RecordTypeSpec& type, int64_t bucket,
      const std::vector<std::pair<uint32_t, kcnet::v1::Value>>& equals, bool descending,
      uint64_t position, size_t limit,
      const std::function<absl::Status(absl::string_view id_text, const RowState& row)>& fn);
  // The SQL ScanOrdered runs for a query of this shape (?1 bucket, ?2 position, ?3 limit,
  // then one parameter per field of `equal_fields`); INVALID_ARGUMENT for an unknown field.
  absl::StatusOr<std::string> OrderedScanSql(const RecordTypeSpec& type,
                                             const std::vector<uint32_t>& equal_fields,
                                             bool descending) const;

  // The bucket's stored checkpoint (op 0, checksum 0 when it has no rows).
  absl::StatusOr<kcnet::v1::BucketCheckpoint> Checkpoint(int64_t bucket);
  // Recomputes the bucket's checksum from its rows (for verification and repair).
  absl::StatusOr<kcnet::v1::BucketCheckpoint> RecomputeCheckpoint(int64_t bucket);
  // Deletes every row of the bucket and its checkpoint.
  absl::Status DeleteBucket(int64_t bucket);
  // Every bucket with a checkpoint.
  absl::StatusOr<std::vector<int64_t>> Buckets();

  uint64_t RowHash(const RecordTypeSpec& type, absl::string_view id_text,
                   const RowState& row) const {
    return HashRow(type.type, &type, id_text, row);
  }
  // The same for a record of any type: `spec` is nullptr for a type the schema does not
  // know (every field in row.kept).
  uint64_t HashRow(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                   const RowState& row) const;

  // A change carrying the row's fields whose op is above `after_op` (every field when
  // after_op is 0), with record-level hlc/node set to the most common stamp.
  kcnet::v1::RecordChange ToChange(const RecordTypeSpec& type, absl::string_view id_bytes,
                                   const RowState& row, uint64_t after_op) const;
  // The same into `*out` (empty; it may live on an arena, where its parts go too).
  void ToChange(const RecordTypeSpec& type, absl::string_view id_bytes, const RowState& row,
                uint64_t after_op, kcnet::v1::RecordChange* out) const;

  // The schema's secondary indexes (RecordTypeSpec::indexes; not the id key or the bucket
  // log). A bulk load whose rows arrive in an order unrelated to an index (a district's
  // visits in op order, indexed by facility) is cheaper with the index dropped and built
  // once at the end than with one random index insert per row. Open() creates any that
  // are missing, so a load interrupted by a crash ends with its indexes back.
  absl::Status DropSecondaryIndexes();
  absl::Status CreateSecondaryIndexes();

  // Reloads the node table when another connection added nodes since this one read it
  // (a reader connection beside the writer); call inside the read transaction.
  absl::Status RefreshNodes();

  // A small key/value table for each store's own state.
  absl::StatusOr<std::optional<int64_t>> GetMeta(absl::string_view key);
  absl::Status SetMeta(absl::string_view key, int64_t value);

 private:
  struct BucketDelta {
    uint64_t checksum = 0;
    int64_t records = 0;
    uint64_t last_op = 0;
  };
  RecordStore(Db* db, const Schema* schema) : db_(db), schema_(schema) {}
  absl::Status Migrate(absl::Span<const char* const> migrations);
  absl::Status CreateTables();
  // Open(): folds kept values the schema now knows into the real columns and recomputes
  // the checkpoints of the buckets that changed (all of them when `columns_added_`).
  absl::Status FoldKept();
  // Loads the kept rows of (type, id): fields into *kept (by number), the header of a
  // record of an unknown type into *header (when given).
  absl::Status LoadKept(uint32_t type, absl::string_view id_text, std::vector<KeptField>* kept,
                        std::optional<RowState>* header);
  // Replaces the kept fields of (type, id) (not its header) by `kept`.
  absl::Status ReplaceKept(uint32_t type, absl::string_view id_text, int64_t bucket,
                           const std::vector<KeptField>& kept);
  absl::Status InsertKept(uint32_t type, absl::string_view id_text, uint32_t field,
                          const FieldState& state, int64_t bucket, bool deleted);
  absl::Status AddUnknownTypes(int64_t bucket, kcnet::v1::BucketCheckpoint* cp);
  absl::Status LoadNodes();
  absl::StatusOr<uint32_t> LocalNode(uint64_t node);
  absl::StatusOr<uint64_t> GlobalNode(int64_t local) const;
  // Binds a row's columns (id first, as in write_sql_/insert_sql_); `fc` holds the
  // encoded field clocks, bound without a copy, so it must outlive the statement's run.
  absl::Status BindRow(Statement* stmt, const RecordTypeSpec& type, absl::string_view id_text,
                       const RowState& row, std::string* fc);
  // Prepares `sql` (write_sql_ or insert_sql_), binds the row and runs it.
  absl::Status RunRow(const std::string& sql, const RecordTypeSpec& type, absl::string_view id_text,
                      const RowState& row);
  // Adds a row's change from `old` (nullopt: none) to `row` to the unit's bucket delta.
  void AddDelta(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                const std::optional<RowState>& old, const RowState& row);
  absl::StatusOr<RowState> DecodeRow(const RecordTypeSpec& type, Statement& stmt, int first);
  // Steps a bound SELECT of full rows, calling `fn` for each; resets the statement.
  absl::Status EachRow(
      const RecordTypeSpec& type, Statement& stmt,
      const std::function<absl::Status(absl::string_view id_text, const RowState& row)>& fn);

  Db* db_;
  const Schema* schema_;
  absl::flat_hash_map<uint64_t, uint32_t> node_to_local_;
  std::vector<uint64_t> local_to_node_;  // index = local id
  absl::flat_hash_map<int64_t, BucketDelta> unit_;
  absl::flat_hash_map<int64_t, BucketDelta> txn_;
  // Per type: SELECT/INSERT OR REPLACE/INSERT if absent/SCAN statements' SQL.
  absl::flat_hash_map<uint32_t, std::string> select_sql_, write_sql_, insert_sql_, scan_sql_;
  std::vector<std::pair<std::string, std::string>> secondary_indexes_;  // name, CREATE
  mutable std::string hash_buffer_;
  bool has_kept_table_ = false;  // the store has _unknown (device stores)
  bool any_kept_ = false;        // _unknown may hold rows: reads look there
  bool columns_added_ = false;   // Open() added a column to an existing record table
  std::vector<std::pair<uint32_t, std::string>> folded_;
};

// RecordStore::ToChange and RecordStore::HashRow without a store (they need only the
// schema), for stores that keep rows elsewhere (PostgreSQL). `buffer` is scratch space.
void RowToChange(const RecordTypeSpec& type, absl::string_view id_bytes, const RowState& row,
                 uint64_t after_op, kcnet::v1::RecordChange* out);
uint64_t HashRecordRow(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                       const RowState& row, std::string* buffer);

// A stable 64-bit hash of bytes (word-at-a-time multiply-fold with a splitmix64
// finaliser); the checksum's building block, specified in docs/SYNC_CORE.md so that other
// clients can compute it.
uint64_t StableHash64(absl::string_view bytes, uint64_t seed = 0);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_RECORD_STORE_H_
