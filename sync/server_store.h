// The server's replica store: the authority every device syncs with.
//
// Apply() merges a device's batch of mutations: exactly once per (device, sequence),
// each mutation all or nothing, field-level last-writer-wins with tombstones that win,
// clocks beyond the skew bound refused, concurrent overwrites recorded as conflicts, and a
// new strictly increasing op id for every record change it makes. ChangesSince() serves
// downloads per bucket from a cursor, at a cost that depends on the bucket's changes only.
//
// ServerStore is the interface (the storage seam); SqliteServerStore the SQLite
// implementation, PostgreSQL's is in server/pgstore.
//
// Thread-safety: thread-safe (every implementation).
#ifndef KCNET_SYNC_SERVER_STORE_H_
#define KCNET_SYNC_SERVER_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/hlc.h"
#include "sync/page_codec.h"
#include "sync/record_store.h"
#include "sync/schema.h"
#include "sync/sqlite.h"
#include "sync/validator.h"

namespace kcnet::sync {

struct ServerStoreOptions {
  Clock* clock = SystemClock();
  absl::Duration max_skew = absl::Minutes(5);
  bool durable = true;  // synchronous=FULL
  // Batch limits; a batch over them is refused whole with INVALID_ARGUMENT.
  size_t max_batch_mutations = 1000;
  size_t max_changes_per_mutation = 200;
  size_t max_batch_bytes = 8 << 20;
  // The most bytes of server values all refusals of one batch hand back (each record at
  // most once per refusal): a push naming large records many times cannot build a huge
  // acknowledgement. Records past it are left out; the device gets them by download.
  size_t max_refusal_values_bytes = 64 << 10;
  // Connections for ChangesSince() and List(), beside the writer's. 0 (and always for
  // ":memory:", which a second connection cannot see) reads on the writer's connection.
  int reader_connections = 2;
  // Told after every group commit (for metrics): the batches it committed and how long
  // applying and committing them took. Runs on the committing thread; must be quick.
  std::function<void(size_t batches, absl::Duration elapsed)> on_group_commit;
};

// Who a batch comes from. `device_id` empty: a server-side write (a unary API call) with
// no exactly-once tracking; `node` is then the caller's node, e.g. NodeIdFor("user:7").
struct Writer {
  std::string device_id;
  uint64_t node = 0;
  // The buckets the writer may read. A refusal hands back the server's values only of
  // records in those buckets (null: every bucket, for server tools and tests).
  std::function<bool(int64_t bucket)> may_read;
};

// A device id's registration: the user (`owner`) it belongs to, and the identity its
// writes carry. A device id is bound to the first user who syncs with it until that
// registration is released (the owner signs out after uploading everything, or an
// administrator releases it); the next user then gets a new generation, with its own
// exactly-once sequence space (`key`) and its own node id, so that nothing of the previous
// owner's writes can be taken for the new one's.
struct DeviceRegistration {
  std::string device_id;
  int64_t owner = 0;
  uint64_t generation = 0;
  std::string key;    // the Writer::device_id of its pushes: device_id, then "#<generation>"
  uint64_t node = 0;  // NodeIdFor(key): derived by the server, never chosen by the device
  uint64_t last_applied_seq = 0;  // the last sequence applied for `key`
};

struct DownloadLimits {
  size_t max_changes = 1000;
  size_t max_bytes = 1 << 20;
};

// A query over one record type's live records in a set of buckets.
struct ListQuery {
  uint32_t type = 0;
  std::vector<int64_t> buckets;                               // required: the caller's scope
  std::vector<std::pair<uint32_t, kcnet::v1::Value>> equals;  // field number = value
  bool newest_first = true;
  uint64_t after = 0;  // the position of the previous page's last record (0: start)
  size_t limit = 50;
};

// The server's record store, as the sync stream and the record services see it: the
// seam between them and the database. Two implementations: SqliteServerStore (below, one
// file, the default) and PostgreSQL's (server/pgstore). Every implementation keeps the
// contracts written here; tests run the same cases on both.
//
// Thread-safety: implementations are thread-safe.
class ServerStore {
 public:
  virtual ~ServerStore() = default;

  // Opens or creates the SQLite store at `path`. `schema` must outlive the store.
  static absl::StatusOr<std::unique_ptr<ServerStore>> Open(const std::string& path,
                                                           const Schema* schema,
                                                           ServerStoreOptions options = {});

  // Makes the closed SQLite store at `path` a new incarnation (see Incarnation): a new random
  // id whose base is the store's last op; with `restored` (kcnet-admin restore) also the
  // restore's time, which lets devices hand back what the restore lost (Mutation.handback)
  // until each has pushed an ordinary mutation. No ServerStore may have `path` open.
  // Fails with the storage error, FAILED_PRECONDITION when `path` is not a server store.
  static absl::Status BeginIncarnation(const std::string& path, bool restored,
                                       Clock* clock = SystemClock());

  // Which life of the data this store is: a random id (never 0), new for every new store
  // and every restore from a backup, kept in the store's meta; `base_op`: the last op when
  // it began (ops up to it are the same in every incarnation since); `restored_ms`: wall
  // time of the restore that began it (0: not a restore). Sent to devices in Welcome.
  struct Incarnation {
    uint64_t id = 0;
    uint64_t base_op = 0;
    int64_t restored_ms = 0;
  };
  virtual Incarnation incarnation() const = 0;

  // Applies a batch in one transaction and answers every mutation (see MutationOutcome in
  // sync.proto). A clock beyond the skew bound ahead of the server's is re-stamped with
  // the server's clock (MutationResult.restamped_hlc), never refused. Fails as a whole (nothing
  // applied) only when the batch breaks a size limit (INVALID_ARGUMENT) or storage fails; then
  // nothing was acknowledged.
  //
  // Group commit: batches that arrive while another is being applied wait, and are then
  // applied together in one transaction (one commit, one fsync), each in arrival order and
  // answered exactly as if alone; an answer is returned only once its batch is durable.
  // If storage fails for the group, each of its batches is applied again alone.
  virtual absl::StatusOr<kcnet::v1::PushAck> Apply(
      const Writer& writer, const kcnet::v1::MutationBatch& batch,
      const MutationValidator& validator = nullptr) = 0;
  // Apply() of a conflict's restore (one mutation) that also marks conflict `conflict_id`
  // resolved, in the same transaction: both happen or neither. Fails with
  // FAILED_PRECONDITION ("id: conflict N is already resolved") when another resolution
  // won, NOT_FOUND when the conflict does not exist; nothing is then stored. When the
  // mutation is refused the acknowledgement says so and the conflict stays open.
  virtual absl::StatusOr<kcnet::v1::PushAck> ApplyAndResolve(const Writer& writer,
                                                             const kcnet::v1::MutationBatch& batch,
                                                             const MutationValidator& validator,
                                                             uint64_t conflict_id) = 0;

  // Changes of each bucket after its cursor, oldest first, within `limits`, with the
  // cursors they reach and a checkpoint for each bucket they complete.
  absl::StatusOr<kcnet::v1::ChangeBatch> ChangesSince(
      const std::vector<kcnet::v1::BucketCursor>& cursors, const DownloadLimits& limits = {});
  // The same into `*page` (empty). A page on an arena has its changes built there: a page
  // of a thousand changes is tens of thousands of small objects, allocated and freed at once.
  virtual absl::Status ChangesSince(const std::vector<kcnet::v1::BucketCursor>& cursors,
                                    const DownloadLimits& limits, kcnet::v1::ChangeBatch* page) = 0;
  // The same page as the stream sends it (SerializedPage: `page->head` empty): its bytes
  // parse as the ChangeBatch ChangesSince() gives. A store that keeps a record's download
  // as serialized bytes splices them in (PostgreSQL, from op 0) instead of parsing and
  // serializing them again; the default reads ChangesSince() into `page->head`.
  virtual absl::Status SerializedChangesSince(const std::vector<kcnet::v1::BucketCursor>& cursors,
                                              const DownloadLimits& limits, SerializedPage* page) {
    return ChangesSince(cursors, limits, page->head);
  }

  // A record's full current state (nullopt when absent).
  virtual absl::StatusOr<std::optional<kcnet::v1::RecordChange>> ReadRecord(
      uint32_t type, absl::string_view id) = 0;

  // Live records matching `query`, as full changes (their `op` is the paging position),
  // ordered by op, reading about `limit` rows plus a few per bucket.
  virtual absl::StatusOr<std::vector<kcnet::v1::RecordChange>> List(const ListQuery& query) = 0;

  virtual absl::StatusOr<kcnet::v1::BucketCheckpoint> Checkpoint(int64_t bucket) = 0;
  // Conflicts of `buckets` (all buckets when empty: callers that scope by user must not
  // pass an empty scope) with id > after_id, oldest first.
  virtual absl::StatusOr<std::vector<kcnet::v1::Conflict>> ListConflicts(
      const std::vector<int64_t>& buckets, bool include_resolved, uint64_t after_id,
      size_t limit) = 0;
  // Marks a conflict resolved, once: FAILED_PRECONDITION when it already is, NOT_FOUND
  // when it does not exist.
  virtual absl::Status MarkConflictResolved(uint64_t id) = 0;
  // The last sequence applied for a device (0 when unknown).
  virtual absl::StatusOr<uint64_t> LastAppliedSeq(const std::string& device_id) = 0;

  // Binds `device_id` to `owner` (a user id), or confirms the binding. A device id never
  // seen, or released, is registered to `owner` (a released one with the next generation
  // when `owner` is another user); one registered to another user and not released is
  // PERMISSION_DENIED, and nothing changes. Every change is logged (DeviceLog).
  virtual absl::StatusOr<DeviceRegistration> RegisterDevice(const std::string& device_id,
                                                            int64_t owner) = 0;
  // Releases the registration so that another user may register the device. `by` is the
  // user releasing it; `administrator` may release any device, others only their own
  // (PERMISSION_DENIED; NOT_FOUND when the device id is not registered).
  virtual absl::Status ReleaseDevice(const std::string& device_id, int64_t by,
                                     bool administrator) = 0;
  // The registration log of a device id, oldest first: "registered", "released",
  // "re-registered" with who and when.
  struct DeviceEvent {
    std::string device_id;
    int64_t owner = 0;
    uint64_t generation = 0;
    std::string event;
    int64_t by = 0;
    int64_t at_ms = 0;
  };
  virtual absl::StatusOr<std::vector<DeviceEvent>> DeviceLog(const std::string& device_id) = 0;
  // The highest op id committed.
  virtual uint64_t last_op() = 0;

  // Group commit at work, for monitoring and tests: batches applied and the transactions
  // that committed them, since open; and batches waiting for the current group to end.
  struct WriteStats {
    uint64_t batches = 0;
    uint64_t transactions = 0;
  };
  virtual WriteStats write_stats() = 0;
  virtual size_t waiting_batches() = 0;
  // Reader connections busy now, and in all (for metrics).
  virtual int readers_in_use() const = 0;
  virtual int reader_count() const = 0;

  // Called after every commit that changed records, with the buckets it touched and the
  // new last op, on the committing thread and outside the store's lock. For live sync: the
  // listener should only hand the news on (post work), never block. Not removable: the
  // listener must outlive the store's use.
  using CommitListener = std::function<void(const std::vector<int64_t>& buckets, uint64_t op)>;
  virtual void SetCommitListener(CommitListener listener) = 0;
  // A further listener, called after the one above, under the same rules (the console's
  // live watch, server/live). Not removable either.
  virtual void AddCommitObserver(CommitListener observer) = 0;

  virtual HybridClock& clock() = 0;
  virtual const Schema& schema() const = 0;
};

// The merge engine every implementation shares: group commit, exactly-once bookkeeping,
// validation, re-stamping, hand-backs and the field-level merge (MergeField) with its
// conflicts, written once against the storage hooks below. An implementation supplies its
// tables through the hooks (rows, devices, refusals, digests, conflicts, units of work and
// the group's transaction) and its own reads (downloads, lists, devices).
//
// Thread-safety: thread-safe. Groups are applied one at a time under mu_; every hook is
// called with mu_ held, inside the group's transaction (BeginGroup .. CommitGroup).
class MergingServerStore : public ServerStore, protected RecordReader {
 public:
  Incarnation incarnation() const override { return incarnation_; }
  absl::StatusOr<kcnet::v1::PushAck> Apply(const Writer& writer,
                                           const kcnet::v1::MutationBatch& batch,
                                           const MutationValidator& validator = nullptr) override;
  absl::StatusOr<kcnet::v1::PushAck> ApplyAndResolve(const Writer& writer,
                                                     const kcnet::v1::MutationBatch& batch,
                                                     const MutationValidator& validator,
                                                     uint64_t conflict_id) override;
  absl::StatusOr<std::optional<kcnet::v1::RecordChange>> ReadRecord(uint32_t type,
                                                                    absl::string_view id) override;
  uint64_t last_op() override;
  WriteStats write_stats() override;
  size_t waiting_batches() override;
  void SetCommitListener(CommitListener listener) override;
  void AddCommitObserver(CommitListener observer) override;
  HybridClock& clock() override { return hlc_; }
  const Schema& schema() const override { return *schema_; }

 protected:
  MergingServerStore(const Schema* schema, ServerStoreOptions options);

  // --- Storage hooks (mu_ held; inside the group's transaction unless said otherwise) ---
  // Begins the transaction of a group of batches (all of them known up front, with the
  // devices that push them, "" for a server-side write; so that an implementation can lock
  // what they will write before drawing op ids).
  virtual absl::Status BeginGroup(const std::vector<const kcnet::v1::MutationBatch*>& batches,
                                  const std::vector<std::string>& devices)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Stores last_op_ and `max_hlc`, sets `*touched` to the buckets written, and commits.
  virtual absl::Status CommitGroup(uint64_t max_hlc, std::vector<int64_t>* touched)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Rolls the group's transaction back (after a failure; nothing of it is stored).
  virtual void AbandonGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // A new op id, above every op id this store has handed out (default: ++last_op_).
  virtual uint64_t NextOp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ++last_op_; }
  // A mutation's unit of work (a savepoint): kept, or rolled back.
  virtual absl::Status BeginUnit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status KeepUnit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status RollBackUnit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Records: one row by its id text (nullopt: absent), and writing it over `old`.
  virtual absl::StatusOr<std::optional<RowState>> LoadRow(const RecordTypeSpec& type,
                                                          const std::string& id_text)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status StoreRow(const RecordTypeSpec& type, const std::string& id_text,
                                const std::optional<RowState>& old, const RowState& row)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Exactly once: the device's last sequence (0: unknown) and its new value.
  virtual absl::StatusOr<uint64_t> LoadLastSeq(const std::string& device_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status SaveLastSeq(const std::string& device_id, uint64_t node, uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Refusals remembered for replays: forget those up to `through`, read one, keep one.
  virtual absl::Status ForgetRefusals(const std::string& device_id, uint64_t through)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::StatusOr<std::optional<kcnet::v1::MutationResult>> RememberedRefusal(
      const std::string& device_id, uint64_t seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status RememberRefusal(const std::string& device_id, uint64_t seq,
                                       const kcnet::v1::MutationResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The digest of the payload applied (or refused) at (device, seq); nullopt when none is
  // kept (a sequence applied before digests were kept). RememberPush keeps it.
  virtual absl::StatusOr<std::optional<uint64_t>> PushDigest(const std::string& device_id,
                                                             uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status RememberPush(const std::string& device_id, uint64_t seq, uint64_t digest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // In a restored store: whether the device's hand-backs are over, and ending them.
  virtual absl::StatusOr<bool> HandbacksClosed(const std::string& device_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual absl::Status CloseHandbacks(const std::string& device_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Stores a conflict (its id left unset) and sets its new id.
  virtual absl::Status RecordConflict(kcnet::v1::Conflict* conflict)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The conditional mark of MarkConflictResolved(), inside the caller's transaction.
  virtual absl::Status MarkConflictResolvedLocked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;

  // Tells the commit listener and observers (mu_ not held).
  void TellListeners(const std::vector<int64_t>& buckets, uint64_t op) ABSL_LOCKS_EXCLUDED(mu_);

  const Schema* schema_;
  const ServerStoreOptions options_;
  HybridClock hlc_;
  Incarnation incarnation_;  // set by Open, then constant
  absl::Mutex mu_;
  uint64_t last_op_ ABSL_GUARDED_BY(mu_) = 0;
  WriteStats write_stats_ ABSL_GUARDED_BY(mu_);

 private:
  absl::StatusOr<std::optional<kcnet::v1::RecordChange>> Read(uint32_t type,
                                                              absl::string_view id) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A batch waiting for group commit; `result` is set before `done`.
  struct PendingBatch {
    const Writer* writer;
    const kcnet::v1::MutationBatch* batch;
    const MutationValidator* validator;
    absl::StatusOr<kcnet::v1::PushAck> result;
    bool done = false;
    uint64_t resolve_conflict = 0;  // ApplyAndResolve(): marked in the same transaction
  };
  absl::StatusOr<kcnet::v1::PushAck> ApplyQueued(const Writer& writer,
                                                 const kcnet::v1::MutationBatch& batch,
                                                 const MutationValidator& validator,
                                                 uint64_t resolve_conflict);
  static constexpr size_t kMaxGroupBatches = 64;
  // Applies `group` (then each batch alone if that fails) and tells the listener.
  void ApplyGroup(const std::vector<PendingBatch*>& group) ABSL_LOCKS_EXCLUDED(mu_);
  // One transaction for the whole group; on failure nothing is stored and no result set.
  absl::Status ApplyGroupLocked(const std::vector<PendingBatch*>& group,
                                std::vector<int64_t>* touched, uint64_t* committed_op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One batch inside the group's transaction: exactly-once bookkeeping and its mutations.
  absl::Status ApplyBatchLocked(const Writer& writer, const kcnet::v1::MutationBatch& batch,
                                const MutationValidator& validator, kcnet::v1::PushAck* ack,
                                uint64_t* max_hlc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why a mutation was refused: the reason and the offending field path.
  struct Refusal {
    absl::Status status;
    std::string field;
  };
  // Validates and merges one mutation. A non-OK return is a storage failure (the batch
  // fails); a refusal is reported in `*refusal` with OK returned.
  absl::Status ApplyMutation(const Writer& writer, const kcnet::v1::Mutation& m,
                             const MutationValidator& validator, kcnet::v1::MutationResult* result,
                             Refusal* refusal) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A hand-back (Mutation.handback) after a restore: its gate (restored store, device not
  // closed, clocks before the restore) and a plain per-field last-writer-wins merge with the
  // stamps it carries. Same contract as ApplyMutation.
  absl::Status ApplyHandback(const Writer& writer, const kcnet::v1::Mutation& m,
                             kcnet::v1::MutationResult* result, Refusal* refusal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MergeChange(const Writer& writer, uint64_t seq,
                           const kcnet::v1::RecordChange& change, absl::string_view path,
                           kcnet::v1::MutationResult* result, Refusal* refusal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // LoadRow/StoreRow through the batch's row cache (while Apply runs).
  absl::StatusOr<std::optional<RowState>> ReadRow(const RecordTypeSpec& type,
                                                  const std::string& id_text)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteRow(const RecordTypeSpec& type, const std::string& id_text,
                        const std::optional<RowState>& old, const RowState& row)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When a clock of `m` is beyond the skew bound ahead of the server's, or not above
  // `*floor` (a clock given earlier in the batch: the device's order is kept), copies `m`
  // into `*out` with those clocks replaced by one new clock of the server's, raises
  // `*floor` to it and returns it; otherwise returns 0.
  uint64_t Restamp(const kcnet::v1::Mutation& m, uint64_t* floor, kcnet::v1::Mutation* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The group-commit queue; `leader_` is true while a caller applies groups.
  absl::Mutex queue_mu_;
  absl::CondVar queue_cv_;
  std::deque<PendingBatch*> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool leader_ ABSL_GUARDED_BY(queue_mu_) = false;
  // While Apply runs: the rows it has read or written, by (type, id text); cleared when a
  // mutation is rolled back and when the batch ends.
  bool caching_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::pair<uint32_t, std::string>, std::optional<RowState>> row_cache_
      ABSL_GUARDED_BY(mu_);
  absl::Mutex listener_mu_;
  CommitListener listener_ ABSL_GUARDED_BY(listener_mu_);
  std::vector<CommitListener> observers_ ABSL_GUARDED_BY(listener_mu_);
};

// The SQLite implementation: one database file (WAL).
//
// Thread-safety: thread-safe. Writers are serialised on one connection. Downloads and
// lists read on a small pool of reader connections (WAL lets each read the last committed
// state while the writer writes), so they never wait for a batch being applied.
class SqliteServerStore final : public MergingServerStore {
 public:
  // See ServerStore::Open.
  static absl::StatusOr<std::unique_ptr<SqliteServerStore>> Open(const std::string& path,
                                                                 const Schema* schema,
                                                                 ServerStoreOptions options = {});
  // See ServerStore::BeginIncarnation.
  static absl::Status BeginIncarnation(const std::string& path, bool restored,
                                       Clock* clock = SystemClock());

  using ServerStore::ChangesSince;
  absl::Status ChangesSince(const std::vector<kcnet::v1::BucketCursor>& cursors,
                            const DownloadLimits& limits, kcnet::v1::ChangeBatch* page) override;
  // A k-way merge of the buckets through the (bucket, op) index.
  absl::StatusOr<std::vector<kcnet::v1::RecordChange>> List(const ListQuery& query) override;
  absl::StatusOr<kcnet::v1::BucketCheckpoint> Checkpoint(int64_t bucket) override;
  // Runs on a reader connection.
  absl::StatusOr<std::vector<kcnet::v1::Conflict>> ListConflicts(
      const std::vector<int64_t>& buckets, bool include_resolved, uint64_t after_id,
      size_t limit) override;
  absl::Status MarkConflictResolved(uint64_t id) override;
  absl::StatusOr<uint64_t> LastAppliedSeq(const std::string& device_id) override;
  absl::StatusOr<DeviceRegistration> RegisterDevice(const std::string& device_id,
                                                    int64_t owner) override;
  absl::Status ReleaseDevice(const std::string& device_id, int64_t by, bool administrator) override;
  absl::StatusOr<std::vector<DeviceEvent>> DeviceLog(const std::string& device_id) override;
  int readers_in_use() const override { return readers_busy_.load(std::memory_order_relaxed); }
  int reader_count() const override { return static_cast<int>(readers_.size()); }

 private:
  SqliteServerStore(const Schema* schema, ServerStoreOptions options)
      : MergingServerStore(schema, std::move(options)) {}
  absl::Status BeginGroup(const std::vector<const kcnet::v1::MutationBatch*>& batches,
                          const std::vector<std::string>& devices) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CommitGroup(uint64_t max_hlc, std::vector<int64_t>* touched) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbandonGroup() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BeginUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status KeepUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RollBackUnit() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<RowState>> LoadRow(const RecordTypeSpec& type,
                                                  const std::string& id_text) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreRow(const RecordTypeSpec& type, const std::string& id_text,
                        const std::optional<RowState>& old, const RowState& row) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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

  // A connection for reads; its mutex is held while one read runs on it.
  struct Reader {
    absl::Mutex mu;
    std::unique_ptr<Db> db ABSL_GUARDED_BY(mu);
    std::unique_ptr<RecordStore> records ABSL_GUARDED_BY(mu);
  };
  // Runs `fn` in a read transaction on a free reader connection (waiting for one when all
  // are busy), or on the writer's connection under mu_ when there are none.
  absl::Status WithReader(const std::function<absl::Status(RecordStore& records)>& fn);
  Reader* AcquireReader();
  absl::Status ReadChanges(RecordStore& records,
                           const std::vector<kcnet::v1::BucketCursor>& cursors,
                           const DownloadLimits& limits, kcnet::v1::ChangeBatch* batch) const;

  std::vector<std::unique_ptr<Reader>> readers_;  // fixed after Open
  std::atomic<size_t> next_reader_{0};
  std::atomic<int> readers_busy_{0};
  std::unique_ptr<Db> db_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<RecordStore> records_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Transaction> txn_ ABSL_GUARDED_BY(mu_);  // the group's, between hooks
};

// A stable digest of what a mutation asks for (types, ids, deletions, field values; not
// clocks): the exactly-once check that a replayed sequence carries the same write.
uint64_t PayloadDigest(const kcnet::v1::Mutation& m);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_SERVER_STORE_H_
