// PgServerStore: the server's record store (sync::ServerStore) on PostgreSQL 15.
//
// The merge is the one every store shares (sync::MergingServerStore: exactly once,
// validation, re-stamping, hand-backs, field-level last-writer-wins and conflicts); this
// class supplies its tables (pg_schema.h, version 2) and its reads. Each record is one
// row of kcnet_records at its latest op, partitioned by province (LIST): the bucket's
// compacted op log is the index (province, bucket, op), as the SQLite store's (bucket, _op).
//
// Ordering (docs/POSTGRES.md): a group of batches is one transaction that, before drawing
// any op id, finds the buckets it may write (the stored records' buckets and the new
// records' bucket fields), locks their kcnet_bucket_head rows sorted by bucket (FOR
// UPDATE: no deadlock), and only then draws its ids from kcnet_op_seq; so within a bucket
// op ids become visible in increasing order and a reader polling `op > cursor` misses
// nothing. The bucket's checkpoint (last op, checksum, records) is moved in the same
// transaction, as are the devices' last sequences, remembered refusals and push digests.
// A write to a bucket the group did not lock up front (a record another instance created
// meanwhile) fails the group with ABORTED; the engine then applies each batch alone, and
// the device pushes again if its own fails.
//
// Many instances: after a commit the store asks its PgOpLog's watcher to NOTIFY the
// others (coalesced, payload the op only, never inside the transaction); the watcher
// LISTENs and polls the heads every poll_interval, and tells this store's commit listener
// of buckets moved by any instance (a bucket may be told twice).
//
// Not here (docs/POSTGRES.md): the directory (PgDirectoryStore) and the plans (PgPlanDb)
// have their own schemas; what is derived from the records (reports, attachment
// references) reads a local mirror (PgRecordMirror).
//
// Thread-safety: thread-safe. Writes (and device registrations) go through one writer
// connection under mu_; downloads, lists and conflicts read on a pool of reader
// connections in REPEATABLE READ snapshots.
#ifndef KCNET_SERVER_PGSTORE_PG_SERVER_STORE_H_
#define KCNET_SERVER_PGSTORE_PG_SERVER_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_op_log.h"
#include "sync/server_store.h"

namespace kcnet::pgstore {

struct PgServerStoreOptions {
  // The province of a bucket (the partition key). Null: every bucket in province 0.
  std::function<int32_t(int64_t bucket)> province_of;
  // Other instances' commits: how often the heads are polled without a notification.
  absl::Duration poll_interval = absl::Seconds(1);
};

// A kcnet_records row (its `row` and `field_ops` columns, at `bucket` and `op`) as the
// RowState the SQLite record layer stores (for PgRecordMirror).
absl::StatusOr<sync::RowState> DecodeRecordRow(const sync::RecordTypeSpec& type, int64_t bucket,
                                               uint64_t op, absl::string_view change_bytes,
                                               absl::string_view field_ops);

class PgServerStore final : public sync::MergingServerStore {
 public:
  // Connects to `conninfo`, migrates the schema and starts watching other instances.
  // `schema` must outlive the store. options.reader_connections sets the reader pool (at
  // least 1); options.durable is PostgreSQL's own (synchronous_commit).
  static absl::StatusOr<std::unique_ptr<PgServerStore>> Open(const std::string& conninfo,
                                                             const sync::Schema* schema,
                                                             sync::ServerStoreOptions options = {},
                                                             PgServerStoreOptions pg_options = {});
  ~PgServerStore() override;

  // Makes the database at `conninfo` a new incarnation, as ServerStore::BeginIncarnation
  // does for a SQLite file: a new random id whose base is the last op; with `restored`
  // (after a restore from pg_basebackup or to a point in time) also the restore's time, so
  // that devices hand back what the restore lost. Run with every kcnet-server instance
  // stopped (they read the incarnation when they start). FAILED_PRECONDITION when the
  // database holds no kcnet store or another session is connected to it.
  static absl::Status BeginIncarnation(const std::string& conninfo, bool restored,
                                       sync::Clock* clock = sync::SystemClock());

  using ServerStore::ChangesSince;
  absl::Status ChangesSince(const std::vector<kcnet::v1::BucketCursor>& cursors,
                            const sync::DownloadLimits& limits,
                            kcnet::v1::ChangeBatch* page) override;
  // From op 0 each record's stored bytes are spliced into the page as they are (no parse);
  // other changes are built as ChangesSince() builds them and serialized in their place.
  absl::Status SerializedChangesSince(const std::vector<kcnet::v1::BucketCursor>& cursors,
                                      const sync::DownloadLimits& limits,
                                      sync::SerializedPage* page) override;
  absl::StatusOr<std::vector<kcnet::v1::RecordChange>> List(const sync::ListQuery& query) override;
  absl::StatusOr<kcnet::v1::BucketCheckpoint> Checkpoint(int64_t bucket) override;
  absl::StatusOr<std::vector<kcnet::v1::Conflict>> ListConflicts(
      const std::vector<int64_t>& buckets, bool include_resolved, uint64_t after_id,
      size_t limit) override;
  absl::Status MarkConflictResolved(uint64_t id) override;
  absl::StatusOr<uint64_t> LastAppliedSeq(const std::string& device_id) override;
  absl::StatusOr<sync::DeviceRegistration> RegisterDevice(const std::string& device_id,
                                                          int64_t owner) override;
  absl::Status ReleaseDevice(const std::string& device_id, int64_t by, bool administrator) override;
  absl::StatusOr<std::vector<DeviceEvent>> DeviceLog(const std::string& device_id) override;
  // The highest op any instance has committed (the bucket heads), not only this
  // instance's: a device that synced through another instance must never be told a
  // server_op below its cursors (it would take the server for restored and hand back).
  uint64_t last_op() override;
  int readers_in_use() const override { return readers_busy_.load(std::memory_order_relaxed); }
  int reader_count() const override { return static_cast<int>(readers_.size()); }

 private:
  PgServerStore(const sync::Schema* schema, sync::ServerStoreOptions options,
                PgServerStoreOptions pg_options);
  int32_t ProvinceOf(int64_t bucket) const;
  // ChangesSince() into `page`, or with `wire` (whose head is `page`) SerializedChangesSince().
  absl::Status ReadPage(const std::vector<kcnet::v1::BucketCursor>& cursors,
                        const sync::DownloadLimits& limits, kcnet::v1::ChangeBatch* page,
                        sync::SerializedPage* wire);

  absl::Status BeginGroup(const std::vector<const kcnet::v1::MutationBatch*>& batches,
                          const std::vector<std::string>& devices) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CommitGroup(uint64_t max_hlc, std::vector<int64_t>* touched) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbandonGroup() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t NextOp() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BeginUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status KeepUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RollBackUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<sync::RowState>> LoadRow(const sync::RecordTypeSpec& type,
                                                        const std::string& id_text) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The buckets another instance's group holds locked (FOR UPDATE, from before its ids):
  // probed with FOR KEY SHARE SKIP LOCKED, so the free ones stay free of writers until
  // this group ends. The group's own buckets are never reported.
  absl::StatusOr<std::vector<int64_t>> BucketsWrittenElsewhere(
      const std::vector<int64_t>& buckets) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreRow(const sync::RecordTypeSpec& type, const std::string& id_text,
                        const std::optional<sync::RowState>& old,
                        const sync::RowState& row) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> LoadLastSeq(const std::string& device_id) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveLastSeq(const std::string& device_id, uint64_t node, uint64_t seq) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ForgetRefusals(const std::string& device_id, uint64_t through) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<kcnet::v1::MutationResult>> RememberedRefusal(
      const std::string& device_id, uint64_t seq) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RememberRefusal(const std::string& device_id, uint64_t seq,
                               const kcnet::v1::MutationResult& result) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<uint64_t>> PushDigest(const std::string& device_id,
                                                     uint64_t seq) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RememberPush(const std::string& device_id, uint64_t seq, uint64_t digest) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> HandbacksClosed(const std::string& device_id) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CloseHandbacks(const std::string& device_id) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RecordConflict(kcnet::v1::Conflict* conflict) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MarkConflictResolvedLocked(uint64_t id) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LogDevice(const DeviceEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The writer connection, reconnected when it was lost (outside a transaction).
  absl::StatusOr<PgConn*> Writer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `fn` on a free reader connection inside a REPEATABLE READ READ ONLY transaction.
  absl::Status WithReader(const std::function<absl::Status(PgConn& conn)>& fn);
  // The same, running `before_snapshot` on the connection first, outside the transaction
  // (each of its statements commits by itself).
  absl::Status WithReader(const std::function<absl::Status(PgConn& conn)>& before_snapshot,
                          const std::function<absl::Status(PgConn& conn)>& fn);
  // Runs `fn` on a free reader connection, which begins and ends its transactions itself
  // (a failure is rolled back; a lost connection is tried once more on a new one).
  absl::Status WithReaderConnection(const std::function<absl::Status(PgConn& conn)>& fn);

  // A bucket's checkpoint as the group's transaction sees it (locked), and its moves.
  struct Head {
    uint64_t last_op = 0;
    uint64_t checksum = 0;
    int64_t records = 0;
    int32_t province = 0;  // the partition of the bucket's rows (as first written)
    bool touched = false;
  };
  // The partition a row of `bucket` goes to: its locked head's province (so every writer
  // agrees with the readers, whatever its own province map says), else ProvinceOf.
  int32_t PartitionOf(int64_t bucket) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PgServerStoreOptions pg_options_;
  std::string conninfo_;
  std::unique_ptr<PgOpLog> watch_;  // migrations, NOTIFY/LISTEN and the polling of heads
  std::unique_ptr<PgConn> writer_ ABSL_GUARDED_BY(mu_);
  bool in_group_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<int64_t, Head> heads_ ABSL_GUARDED_BY(mu_);  // locked by the group
  // The group's op ids, drawn after its locks, handed out in order by NextOp().
  std::vector<uint64_t> ids_ ABSL_GUARDED_BY(mu_);
  size_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Head moves of the current unit (a mutation), undone when it rolls back.
  absl::flat_hash_map<int64_t, Head> unit_heads_ ABSL_GUARDED_BY(mu_);

  // The group's writes are kept here and sent at CommitGroup() in pipelines (a few round
  // trips per group, not per mutation); a refused mutation is undone here, without a
  // savepoint. `rows_`: the records as the group sees them (read once, then written);
  // `dirty_`: those to write. `statements_`: the group's other writes, in order.
  using RowKey = std::pair<uint32_t, std::string>;
  absl::flat_hash_map<RowKey, std::optional<sync::RowState>> rows_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RowKey> dirty_ ABSL_GUARDED_BY(mu_);
  struct Statement {
    std::string sql;
    std::vector<PgParam> params;
  };
  std::vector<Statement> statements_ ABSL_GUARDED_BY(mu_);
  // The unit's undo: each row it wrote as it was before (and whether it was dirty), and
  // the length of statements_ when it began.
  struct Undo {
    RowKey key;
    bool known = false;
    std::optional<sync::RowState> before;
    bool was_dirty = false;
  };
  std::vector<Undo> undo_ ABSL_GUARDED_BY(mu_);
  size_t unit_statements_ ABSL_GUARDED_BY(mu_) = 0;
  // What the buffered statements will store, for reads later in the same group.
  absl::flat_hash_map<std::string, uint64_t> last_seqs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::pair<std::string, uint64_t>, uint64_t> digests_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::pair<std::string, uint64_t>, kcnet::v1::MutationResult> refusals_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> forgotten_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> closed_ ABSL_GUARDED_BY(mu_);
  // RememberPush() rows, sent as multi-row statements at CommitGroup().
  struct Push {
    std::string device_id;
    uint64_t seq = 0;
    uint64_t digest = 0;
  };
  std::vector<Push> pushes_ ABSL_GUARDED_BY(mu_);
  // Forgets all of the above (the group committed or was abandoned).
  void ClearGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string hash_buffer_ ABSL_GUARDED_BY(mu_);
  // NextOp() could not draw an id: the group fails at CommitGroup().
  absl::Status group_failed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<int32_t> partitions_ ABSL_GUARDED_BY(mu_);  // known to exist
  // Buckets whose head row is known to be committed (rows are never deleted).
  absl::flat_hash_set<int64_t> heads_seen_ ABSL_GUARDED_BY(mu_);

  // A one-bucket download page read ahead (docs/POSTGRES.md, "Downloads"): when a page
  // of one bucket is full, the next page's statements (the same pipeline a call would
  // send) go out on the reader's connection before this page is decoded, and the next
  // call with that cursor receives them instead of asking. Used only while the bucket's
  // write epoch is unchanged and for at most kReadAheadMaxAge; else dropped.
  struct ReadAhead {
    int64_t bucket = 0;
    uint64_t op = 0;     // the cursor it reads from
    size_t budget = 0;   // its LIMIT (the page's max_changes)
    uint64_t epoch = 0;  // the bucket's write epoch before it was sent
    absl::Time sent;
  };
  struct Reader {
    absl::Mutex mu;
    std::unique_ptr<PgConn> conn ABSL_GUARDED_BY(mu);
    std::optional<ReadAhead> ahead ABSL_GUARDED_BY(mu);  // pending on conn
  };
  // Runs `fn` on a reader: one whose read-ahead `wanted` matches if there is one free,
  // else as WithReaderConnection (which drops a read-ahead it finds).
  absl::Status WithReaderFor(const ReadAhead* wanted,
                             const std::function<absl::Status(Reader&)>& fn);
  // The buckets' write epochs: moved after every commit that moved the bucket (this
  // instance's before Apply returns; others' when the watcher hears of them).
  uint64_t BucketEpoch(int64_t bucket);
  void BumpEpochs(const std::vector<int64_t>& buckets);
  absl::Mutex epochs_mu_;
  absl::flat_hash_map<int64_t, uint64_t> epochs_ ABSL_GUARDED_BY(epochs_mu_);

  std::vector<std::unique_ptr<Reader>> readers_;  // fixed after Open
  std::atomic<size_t> next_reader_{0};
  std::atomic<int> readers_busy_{0};
};

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_SERVER_STORE_H_
