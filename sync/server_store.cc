#include "sync/server_store.h"

#include <algorithm>
#include <random>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/arena.h"
#include "sync/merge.h"

namespace kcnet::sync {
namespace {

using kcnet::v1::BucketCursor;
using kcnet::v1::ChangeBatch;
using kcnet::v1::Conflict;
using kcnet::v1::Mutation;
using kcnet::v1::MutationBatch;
using kcnet::v1::MutationOutcome;
using kcnet::v1::MutationResult;
using kcnet::v1::PushAck;
using kcnet::v1::RecordChange;

// Storage failures abort the whole batch; everything else a validator says is a refusal.
bool IsStorageFailure(const absl::Status& status) {
  return absl::IsInternal(status) || absl::IsDataLoss(status) || absl::IsUnavailable(status) ||
         absl::IsResourceExhausted(status);
}

// A new incarnation id: random, never 0 (0 is "no incarnation" on the wire).
uint64_t NewIncarnationId() {
  std::random_device random;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{random()} << 32) ^ random();
  return id;
}

// The meta keys of the incarnation (ServerStore::Incarnation).
constexpr char kIncarnationKey[] = "incarnation";
constexpr char kIncarnationOpKey[] = "incarnation_op";
constexpr char kRestoredMsKey[] = "restored_ms";

}  // namespace

// A digest of what a mutation asks for: every change's type, id, deletion and fields
// (number, value), in order. Clocks and the base op are left out: they say when and on
// what the user wrote, not what, and a device may re-stamp a pending write whose clock
// was wrong (docs/SYNC.md) without it reading as another write.
uint64_t PayloadDigest(const Mutation& m) {
  std::string buf;
  auto put64 = [&buf](uint64_t v) {
    for (int i = 0; i < 8; ++i) buf.push_back(static_cast<char>(v >> (8 * i)));
  };
  for (const RecordChange& c : m.changes()) {
    put64(c.type());
    put64(c.id().size());
    buf.append(c.id());
    put64(c.deleted() ? 1 : 0);
    for (const kcnet::v1::FieldChange& f : c.fields()) {
      put64(f.field());
      const std::string value = f.value().SerializeAsString();
      put64(value.size());
      buf.append(value);
    }
    put64(~uint64_t{0});
  }
  return StableHash64(buf);
}

MergingServerStore::MergingServerStore(const Schema* schema, ServerStoreOptions options)
    : schema_(schema), options_(options), hlc_(options.clock, options.max_skew) {}

absl::StatusOr<std::unique_ptr<ServerStore>> ServerStore::Open(const std::string& path,
                                                               const Schema* schema,
                                                               ServerStoreOptions options) {
  absl::StatusOr<std::unique_ptr<SqliteServerStore>> store =
      SqliteServerStore::Open(path, schema, options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<ServerStore>(std::move(*store));
}

absl::Status ServerStore::BeginIncarnation(const std::string& path, bool restored, Clock* clock) {
  return SqliteServerStore::BeginIncarnation(path, restored, clock);
}

absl::StatusOr<ChangeBatch> ServerStore::ChangesSince(const std::vector<BucketCursor>& cursors,
                                                      const DownloadLimits& limits) {
  ChangeBatch batch;
  absl::Status status = ChangesSince(cursors, limits, &batch);
  if (!status.ok()) return status;
  return batch;
}

absl::StatusOr<std::unique_ptr<SqliteServerStore>> SqliteServerStore::Open(
    const std::string& path, const Schema* schema, ServerStoreOptions options) {
  std::unique_ptr<SqliteServerStore> store(new SqliteServerStore(schema, options));
  absl::MutexLock lock(&store->mu_);
  DbOptions db_options;
  db_options.durable = options.durable;
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(path, db_options);
  if (!db.ok()) return db.status();
  store->db_ = std::move(*db);
  absl::StatusOr<std::unique_ptr<RecordStore>> records =
      RecordStore::Open(store->db_.get(), schema, "server");
  if (!records.ok()) return records.status();
  store->records_ = std::move(*records);
  absl::Status status = store->db_->Exec(
      // Checkpoint every 32 MB of WAL rather than 4: pages rewritten by many commits (the
      // random-id indexes) are copied to the database once per checkpoint, not per 4 MB.
      "PRAGMA wal_autocheckpoint = 8192;"
      // 64 MiB of page cache for the writer (the default is 2): the pages of the indexes
      // that every batch touches stay in memory instead of being read again from the OS.
      "PRAGMA cache_size = -65536;"
      "CREATE TABLE IF NOT EXISTS _devices(device_id TEXT PRIMARY KEY, node INTEGER NOT NULL, "
      "last_seq INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS _conflicts(id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, "
      "resolved INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL);"
      "CREATE INDEX IF NOT EXISTS _conflicts_bucket ON _conflicts(bucket, id);"
      // Refusals are remembered until the device pushes past them, so that a retry after a
      // lost acknowledgement gets the refusal again instead of DUPLICATE.
      "CREATE TABLE IF NOT EXISTS _refusals(device_id TEXT NOT NULL, seq INTEGER NOT NULL, "
      "result BLOB NOT NULL, PRIMARY KEY(device_id, seq)) WITHOUT ROWID;"
      // Who each device id belongs to (DeviceRegistration), and the log of every change.
      "CREATE TABLE IF NOT EXISTS _device_owners(device_id TEXT PRIMARY KEY, "
      "owner INTEGER NOT NULL, generation INTEGER NOT NULL, released INTEGER NOT NULL, "
      "since_ms INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS _device_log(id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, "
      "owner INTEGER NOT NULL, generation INTEGER NOT NULL, event TEXT NOT NULL, "
      "by_user INTEGER NOT NULL, at_ms INTEGER NOT NULL);"
      "CREATE INDEX IF NOT EXISTS _device_log_device ON _device_log(device_id, id);"
      // A digest of every pushed mutation's payload, so that a sequence sent again with
      // other content (a cloned tablet, a borrowed device id) is an error, not DUPLICATE.
      "CREATE TABLE IF NOT EXISTS _pushes(device_id TEXT NOT NULL, seq INTEGER NOT NULL, "
      "digest INTEGER NOT NULL, PRIMARY KEY(device_id, seq)) WITHOUT ROWID;"
      // Devices whose hand-backs after a restore are over (Mutation.handback).
      "CREATE TABLE IF NOT EXISTS _handback_closed(device_id TEXT PRIMARY KEY) WITHOUT ROWID;");
  if (!status.ok()) return status;
  absl::StatusOr<std::optional<int64_t>> last_op = store->records_->GetMeta("last_op");
  if (!last_op.ok()) return last_op.status();
  store->last_op_ = static_cast<uint64_t>(last_op->value_or(0));
  // A store without an incarnation is new (or predates incarnations): it begins one here.
  absl::StatusOr<std::optional<int64_t>> incarnation = store->records_->GetMeta(kIncarnationKey);
  if (!incarnation.ok()) return incarnation.status();
  if (!incarnation->has_value()) {
    const uint64_t id = NewIncarnationId();
    status = store->records_->SetMeta(kIncarnationKey, static_cast<int64_t>(id));
    if (status.ok()) {
      status = store->records_->SetMeta(kIncarnationOpKey, static_cast<int64_t>(store->last_op_));
    }
    if (!status.ok()) return status;
    *incarnation = static_cast<int64_t>(id);
  }
  store->incarnation_.id = static_cast<uint64_t>(**incarnation);
  absl::StatusOr<std::optional<int64_t>> base = store->records_->GetMeta(kIncarnationOpKey);
  if (!base.ok()) return base.status();
  store->incarnation_.base_op = static_cast<uint64_t>(base->value_or(0));
  absl::StatusOr<std::optional<int64_t>> restored = store->records_->GetMeta(kRestoredMsKey);
  if (!restored.ok()) return restored.status();
  store->incarnation_.restored_ms = restored->value_or(0);
  absl::StatusOr<std::optional<int64_t>> max_hlc = store->records_->GetMeta("max_hlc");
  if (!max_hlc.ok()) return max_hlc.status();
  store->hlc_.Raise(static_cast<uint64_t>(max_hlc->value_or(0)));
  const bool in_memory =
      path.empty() || path == ":memory:" || absl::StartsWith(path, "file::memory:");
  for (int i = 0; !in_memory && i < options.reader_connections; ++i) {
    auto reader = std::make_unique<Reader>();
    absl::MutexLock reader_lock(&reader->mu);
    db = Db::Open(path, db_options);
    if (!db.ok()) return db.status();
    reader->db = std::move(*db);
    records = RecordStore::Open(reader->db.get(), schema, "server");
    if (!records.ok()) return records.status();
    reader->records = std::move(*records);
    status = reader->db->Exec("PRAGMA query_only = ON");
    if (!status.ok()) return status;
    store->readers_.push_back(std::move(reader));
  }
  return store;
}

absl::Status SqliteServerStore::BeginIncarnation(const std::string& path, bool restored,
                                                 Clock* clock) {
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(path);
  if (!db.ok()) return db.status();
  absl::StatusOr<int64_t> is_store = (*db)->QueryInt(
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('_meta', '_devices')");
  if (!is_store.ok()) return is_store.status();
  if (*is_store != 2) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a kcnet server store"));
  }
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db->get());
  if (!txn.ok()) return txn.status();
  absl::StatusOr<int64_t> last_op =
      (*db)->QueryInt("SELECT value FROM _meta WHERE key = 'last_op'", 0);
  if (!last_op.ok()) return last_op.status();
  auto set = [&](absl::string_view key, int64_t value) {
    absl::StatusOr<Statement*> stmt =
        (*db)->Prepare("INSERT OR REPLACE INTO _meta(key, value) VALUES (?1, ?2)");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindText(1, key);
    (*stmt)->BindInt(2, value);
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    return status;
  };
  absl::Status status = set(kIncarnationKey, static_cast<int64_t>(NewIncarnationId()));
  if (status.ok()) status = set(kIncarnationOpKey, *last_op);
  if (status.ok()) status = set(kRestoredMsKey, restored ? clock->NowMs() : 0);
  // A backup may carry the closed hand-backs of an earlier restore: this one starts afresh.
  if (status.ok()) {
    status = (*db)->Exec(
        "CREATE TABLE IF NOT EXISTS _handback_closed(device_id TEXT PRIMARY KEY) WITHOUT ROWID;"
        "DELETE FROM _handback_closed;");
  }
  if (status.ok()) status = (*txn)->Commit();
  if (!status.ok()) return status;
  absl::StatusOr<int64_t> busy = (*db)->QueryInt("PRAGMA wal_checkpoint(TRUNCATE)");
  if (!busy.ok()) return busy.status();
  if (*busy != 0) return absl::UnavailableError(absl::StrCat(path, ": checkpoint was blocked"));
  return absl::OkStatus();
}

SqliteServerStore::Reader* SqliteServerStore::AcquireReader() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const size_t n = readers_.size();
  const size_t start = next_reader_.fetch_add(1, std::memory_order_relaxed) % n;
  for (size_t i = 0; i < n; ++i) {
    Reader* reader = readers_[(start + i) % n].get();
    if (reader->mu.TryLock()) return reader;
  }
  Reader* reader = readers_[start].get();
  reader->mu.Lock();
  return reader;
}

absl::Status SqliteServerStore::WithReader(
    const std::function<absl::Status(RecordStore& records)>& fn) {
  if (readers_.empty()) {
    absl::MutexLock lock(&mu_);
    return fn(*records_);
  }
  Reader* reader = AcquireReader();
  readers_busy_.fetch_add(1, std::memory_order_relaxed);
  absl::Status status = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return fn(*reader->records); }();
  readers_busy_.fetch_sub(1, std::memory_order_relaxed);
  reader->mu.Unlock();
  return status;
}

uint64_t MergingServerStore::last_op() {
  absl::MutexLock lock(&mu_);
  return last_op_;
}

MergingServerStore::WriteStats MergingServerStore::write_stats() {
  absl::MutexLock lock(&mu_);
  return write_stats_;
}

size_t MergingServerStore::waiting_batches() {
  absl::MutexLock lock(&queue_mu_);
  return queue_.size();
}

absl::StatusOr<PushAck> MergingServerStore::Apply(const Writer& writer, const MutationBatch& batch,
                                                  const MutationValidator& validator) {
  return ApplyQueued(writer, batch, validator, /*resolve_conflict=*/0);
}

absl::StatusOr<PushAck> MergingServerStore::ApplyAndResolve(const Writer& writer,
                                                            const MutationBatch& batch,
                                                            const MutationValidator& validator,
                                                            uint64_t conflict_id) {
  if (conflict_id == 0) return absl::InvalidArgumentError("id: required");
  if (batch.mutations_size() != 1) {
    return absl::InvalidArgumentError("batch.mutations: a restore is one mutation");
  }
  return ApplyQueued(writer, batch, validator, conflict_id);
}

absl::StatusOr<PushAck> MergingServerStore::ApplyQueued(const Writer& writer,
                                                        const MutationBatch& batch,
                                                        const MutationValidator& validator,
                                                        uint64_t resolve_conflict) {
  if (static_cast<size_t>(batch.mutations_size()) > options_.max_batch_mutations) {
    return absl::InvalidArgumentError(absl::StrCat("batch.mutations: ", batch.mutations_size(),
                                                   " mutations, at most ",
                                                   options_.max_batch_mutations));
  }
  if (batch.ByteSizeLong() > options_.max_batch_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("batch: ", batch.ByteSizeLong(),
                                                   " bytes, at most ", options_.max_batch_bytes));
  }
  for (int i = 0; i < batch.mutations_size(); ++i) {
    if (static_cast<size_t>(batch.mutations(i).changes_size()) >
        options_.max_changes_per_mutation) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch.mutations[", i, "].changes: ", batch.mutations(i).changes_size(),
                       " changes, at most ", options_.max_changes_per_mutation));
    }
  }
  if (writer.node == 0) return absl::InvalidArgumentError("writer.node: must not be 0");

  // Group commit: the batch waits in a queue; one caller at a time (the leader) applies
  // every batch waiting, in arrival order, in one transaction, and each caller gets its
  // answer once that transaction has committed.
  PendingBatch pending{&writer, &batch, &validator, absl::UnknownError("batch: not applied")};
  pending.resolve_conflict = resolve_conflict;
  queue_mu_.Lock();
  queue_.push_back(&pending);
  while (!pending.done && leader_) queue_cv_.Wait(&queue_mu_);
  if (!pending.done) {
    leader_ = true;
    while (!pending.done) {
      std::vector<PendingBatch*> group;
      size_t mutations = 0;
      while (!queue_.empty() && (group.empty() || (group.size() < kMaxGroupBatches &&
                                                   mutations < options_.max_batch_mutations))) {
        group.push_back(queue_.front());
        mutations += static_cast<size_t>(queue_.front()->batch->mutations_size());
        queue_.pop_front();
      }
      queue_mu_.Unlock();
      ApplyGroup(group);
      queue_mu_.Lock();
      for (PendingBatch* p : group) p->done = true;
      queue_cv_.SignalAll();
    }
    leader_ = false;
    queue_cv_.SignalAll();  // a waiting caller takes the lead
  }
  queue_mu_.Unlock();
  return std::move(pending.result);
}

void MergingServerStore::ApplyGroup(const std::vector<PendingBatch*>& group) {
  std::vector<int64_t> touched;
  uint64_t committed_op = 0;
  const absl::Time start = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    absl::Status status = ApplyGroupLocked(group, &touched, &committed_op);
    if (!status.ok() && group.size() > 1) {
      // Nothing of the group was stored: apply each batch alone, so that only the batch
      // that fails gets the error.
      for (PendingBatch* p : group) {
        std::vector<int64_t> one;
        status = ApplyGroupLocked({p}, &one, &committed_op);
        if (!status.ok()) p->result = status;
        touched.insert(touched.end(), one.begin(), one.end());
      }
    } else if (!status.ok()) {
      group[0]->result = status;
    }
  }
  if (options_.on_group_commit) options_.on_group_commit(group.size(), absl::Now() - start);
  if (!touched.empty()) {
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    TellListeners(touched, committed_op);
  }
}

void MergingServerStore::TellListeners(const std::vector<int64_t>& buckets, uint64_t op) {
  absl::MutexLock listener_lock(&listener_mu_);
  if (listener_) listener_(buckets, op);
  for (const CommitListener& observer : observers_) observer(buckets, op);
}

absl::Status MergingServerStore::ApplyGroupLocked(const std::vector<PendingBatch*>& group,
                                                  std::vector<int64_t>* touched,
                                                  uint64_t* committed_op) {
  const uint64_t op_before_group = last_op_;
  // Rows read or written by the group are kept until it ends: the rules and the merge
  // read the same records (a new visit, its facility) many times per batch.
  row_cache_.clear();
  caching_ = true;
  absl::Cleanup stop_caching = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    caching_ = false;
    row_cache_.clear();
  };
  std::vector<const MutationBatch*> batches;
  std::vector<std::string> devices;
  for (const PendingBatch* p : group) {
    batches.push_back(p->batch);
    devices.push_back(p->writer->device_id);
  }
  absl::Status begun = BeginGroup(batches, devices);
  if (!begun.ok()) {
    AbandonGroup();
    last_op_ = op_before_group;
    return begun;
  }
  auto fail = [&](absl::Status status) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    AbandonGroup();  // ROLLBACK first, so that the caches reload what is really stored
    last_op_ = op_before_group;
    return status;
  };
  std::vector<PushAck> acks(group.size());
  uint64_t max_hlc = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    absl::Status status = ApplyBatchLocked(*group[i]->writer, *group[i]->batch,
                                           *group[i]->validator, &acks[i], &max_hlc);
    // A restore and the mark of its conflict commit together; a mark that fails (another
    // coordinator resolved it first) fails the group, and ApplyGroup() then applies each
    // batch alone, so that only the restore is dropped.
    if (status.ok() && group[i]->resolve_conflict != 0 && acks[i].results_size() > 0 &&
        acks[i].results(0).outcome() != kcnet::v1::MUTATION_OUTCOME_REFUSED) {
      status = MarkConflictResolvedLocked(group[i]->resolve_conflict);
    }
    if (!status.ok()) return fail(status);
  }
  hlc_.Raise(max_hlc);
  absl::Status status = CommitGroup(hlc_.Now(), touched);
  if (!status.ok()) {
    touched->clear();
    return fail(status);
  }
  write_stats_.batches += group.size();
  ++write_stats_.transactions;
  for (size_t i = 0; i < group.size(); ++i) {
    acks[i].set_server_op(last_op_);
    group[i]->result = std::move(acks[i]);
  }
  *committed_op = last_op_;
  return absl::OkStatus();
}

absl::Status MergingServerStore::ApplyBatchLocked(const Writer& writer, const MutationBatch& batch,
                                                  const MutationValidator& validator, PushAck* ack,
                                                  uint64_t* max_hlc) {
  const bool tracked = !writer.device_id.empty();
  uint64_t last_seq = 0;
  if (tracked) {
    absl::StatusOr<uint64_t> loaded = LoadLastSeq(writer.device_id);
    if (!loaded.ok()) return loaded.status();
    last_seq = *loaded;
  }

  if (tracked && batch.settled_through() > 0) {
    // The device has taken these answers: their refusals need no repeating.
    absl::Status status = ForgetRefusals(writer.device_id, batch.settled_through());
    if (!status.ok()) return status;
  }

  bool gap = false;
  size_t refusal_budget = options_.max_refusal_values_bytes;
  uint64_t restamp_floor = 0;  // the last clock Restamp() gave in this batch
  for (const Mutation& m : batch.mutations()) {
    MutationResult* result = ack->add_results();
    result->set_seq(m.seq());
    const uint64_t digest = tracked ? PayloadDigest(m) : 0;
    if (tracked) {
      if (m.seq() <= last_seq) {
        // The same sequence again: a retry when it carries the same payload. Other content
        // under a sequence already taken means two installations share this device id (a
        // cloned tablet): answering DUPLICATE would drop the write silently.
        absl::StatusOr<std::optional<uint64_t>> known = PushDigest(writer.device_id, m.seq());
        if (!known.ok()) return known.status();
        if (known->has_value() && **known != digest) {
          result->set_outcome(kcnet::v1::MUTATION_OUTCOME_REFUSED);
          result->set_code(static_cast<int32_t>(absl::StatusCode::kFailedPrecondition));
          result->set_field("seq");
          result->set_reason(absl::StrCat(
              "seq: sequence ", m.seq(),
              " of this device was used before for another write; two installations share "
              "this device id (a copied tablet?): give this installation a new device id"));
          continue;
        }
        absl::StatusOr<std::optional<MutationResult>> refused =
            RememberedRefusal(writer.device_id, m.seq());
        if (!refused.ok()) return refused.status();
        if (refused->has_value()) {
          *result = **refused;
        } else {
          result->set_outcome(kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
        }
        continue;
      }
      if (gap || m.seq() != last_seq + 1) {
        gap = true;
        result->set_outcome(kcnet::v1::MUTATION_OUTCOME_OUT_OF_ORDER);
        result->set_reason(absl::StrCat("sequence ", m.seq(), " arrived before ", last_seq + 1,
                                        "; push again from ", last_seq + 1));
        continue;
      }
    }
    if (!m.handback() && tracked && incarnation_.restored_ms != 0) {
      // Outside the mutation's savepoint: a refused ordinary mutation ends them too.
      absl::Status closed = CloseHandbacks(writer.device_id);
      if (!closed.ok()) return closed;
    }
    // A clock too far ahead of the server's (a tablet set to the wrong day, local time
    // typed into a tablet on UTC) is re-stamped with the server's clock instead of being
    // refused: the write is kept and its result says so (`restamped_hlc`).
    Mutation restamped;
    const uint64_t restamped_hlc = m.handback() ? 0 : Restamp(m, &restamp_floor, &restamped);
    const Mutation& apply = restamped_hlc != 0 ? restamped : m;
    absl::Status status = BeginUnit();
    if (!status.ok()) return status;
    const uint64_t op_before = last_op_;
    Refusal refusal;
    status = m.handback() ? ApplyHandback(writer, m, result, &refusal)
                          : ApplyMutation(writer, apply, validator, result, &refusal);
    if (!status.ok()) return status;
    if (!refusal.status.ok()) {
      status = RollBackUnit();
      if (!status.ok()) return status;
      row_cache_.clear();  // it may hold rows the rolled-back mutation wrote
      last_op_ = op_before;
      result->Clear();
      result->set_seq(m.seq());
      result->set_outcome(kcnet::v1::MUTATION_OUTCOME_REFUSED);
      result->set_reason(std::string(refusal.status.message()));
      result->set_code(static_cast<int32_t>(refusal.status.code()));
      result->set_field(refusal.field);
      // The server's values of the records it touched, so that the device rolls back: each
      // record once, only those the writer may read (a refusal must not hand out another
      // commune's records), within the batch's byte budget.
      absl::flat_hash_set<std::pair<uint32_t, std::string>> listed;
      for (const RecordChange& change : m.changes()) {
        if (!listed.insert({change.type(), change.id()}).second) continue;
        absl::StatusOr<std::optional<RecordChange>> current = Read(change.type(), change.id());
        if (!current.ok() && IsStorageFailure(current.status())) return current.status();
        if (!current.ok() || !current->has_value()) continue;
        if (writer.may_read && !writer.may_read((*current)->bucket())) continue;
        const size_t size = (*current)->ByteSizeLong();
        if (size > refusal_budget) continue;
        refusal_budget -= size;
        *result->add_server_values() = std::move(**current);
      }
      if (tracked) {
        status = RememberRefusal(writer.device_id, m.seq(), *result);
        if (!status.ok()) return status;
      }
    } else {
      status = KeepUnit();
      if (!status.ok()) return status;
      result->set_outcome(result->conflicts_size() > 0
                              ? kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT
                              : kcnet::v1::MUTATION_OUTCOME_APPLIED);
      result->set_restamped_hlc(restamped_hlc);
      for (const RecordChange& change : apply.changes()) {
        *max_hlc = std::max<uint64_t>(*max_hlc, change.hlc());
        for (const auto& f : change.fields()) *max_hlc = std::max<uint64_t>(*max_hlc, f.hlc());
      }
    }
    if (tracked) {
      last_seq = m.seq();
      status = RememberPush(writer.device_id, m.seq(), digest);
      if (!status.ok()) return status;
    }
  }

  if (tracked) {
    absl::Status status = SaveLastSeq(writer.device_id, writer.node, last_seq);
    if (!status.ok()) return status;
  }
  ack->set_last_applied_seq(last_seq);
  return absl::OkStatus();
}

void MergingServerStore::SetCommitListener(CommitListener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

void MergingServerStore::AddCommitObserver(CommitListener observer) {
  absl::MutexLock lock(&listener_mu_);
  observers_.push_back(std::move(observer));
}

absl::StatusOr<std::optional<MutationResult>> SqliteServerStore::RememberedRefusal(
    const std::string& device_id, uint64_t seq) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT result FROM _refusals WHERE device_id = ?1 AND seq = ?2");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(seq));
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  std::optional<MutationResult> out;
  if (*has) {
    out.emplace();
    if (!out->ParseFromString(std::string((*stmt)->ColumnBlob(0)))) {
      (*stmt)->Reset();
      return absl::DataLossError("a remembered refusal does not parse");
    }
  }
  (*stmt)->Reset();
  return out;
}

absl::Status MergingServerStore::ApplyMutation(const Writer& writer, const Mutation& m,
                                               const MutationValidator& validator,
                                               MutationResult* result, Refusal* refusal) {
  if (m.changes_size() == 0) {
    refusal->status = absl::InvalidArgumentError("changes: a mutation needs at least one change");
    refusal->field = "changes";
    return absl::OkStatus();
  }
  for (int i = 0; i < m.changes_size(); ++i) {
    const RecordChange& change = m.changes(i);
    const std::string path = absl::StrCat("changes[", i, "]");
    absl::Status status = schema_->ValidateChange(change, path, &refusal->field);
    if (!status.ok()) {
      refusal->status = status;
      return absl::OkStatus();
    }
    auto refuse = [&](std::string field, absl::string_view why) {
      refusal->field = field;
      refusal->status = absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
      return absl::OkStatus();
    };
    if (change.hlc() == 0) return refuse(absl::StrCat(path, ".hlc"), "missing clock");
    if (change.node() != 0 && change.node() != writer.node) {
      return refuse(absl::StrCat(path, ".node"), "a writer may only stamp its own node id");
    }
    status = hlc_.CheckSkew(change.hlc());
    if (!status.ok()) return refuse(absl::StrCat(path, ".hlc"), status.message());
    for (int j = 0; j < change.fields_size(); ++j) {
      const auto& f = change.fields(j);
      auto fpath = [&]() { return absl::StrCat(path, ".fields[", j, "]"); };
      if (f.node() != 0 && f.node() != writer.node) {
        return refuse(fpath() + ".node", "a writer may only stamp its own node id");
      }
      if (f.hlc() != 0) {
        status = hlc_.CheckSkew(f.hlc());
        if (!status.ok()) return refuse(fpath() + ".hlc", status.message());
      }
    }
  }
  if (validator) {
    absl::Status status = validator(m, *this);
    if (!status.ok()) {
      if (IsStorageFailure(status)) return status;
      refusal->status = status;
      // Validators open their message with the offending path ("changes[0].name: ...").
      refusal->field = std::string(status.message().substr(0, status.message().find(": ")));
      return absl::OkStatus();
    }
  }
  for (int i = 0; i < m.changes_size(); ++i) {
    absl::Status status = MergeChange(writer, m.seq(), m.changes(i),
                                      absl::StrCat("changes[", i, "]"), result, refusal);
    if (!status.ok() || !refusal->status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SqliteServerStore::CloseHandbacks(const std::string& device_id) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR IGNORE INTO _handback_closed(device_id) VALUES (?1)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status MergingServerStore::ApplyHandback(const Writer& writer, const Mutation& m,
                                               MutationResult* result, Refusal* refusal) {
  auto refuse = [&](absl::Status status, std::string field) {
    refusal->field = std::move(field);
    refusal->status = std::move(status);
    return absl::OkStatus();
  };
  // The gate. A hand-back sets other writers' stamps, which no ordinary push may do: it is
  // only taken where a restore lost writes, from a device still recovering from it, and
  // with clocks from before the restore, so it can never beat a write made since.
  if (incarnation_.restored_ms == 0 || writer.device_id.empty()) {
    return refuse(absl::FailedPreconditionError(
                      "handback: this server was not restored from a backup; nothing to hand back"),
                  "handback");
  }
  {
    absl::StatusOr<bool> closed = HandbacksClosed(writer.device_id);
    if (!closed.ok()) return closed.status();
    if (*closed) {
      return refuse(absl::PermissionDeniedError(
                        "handback: this device has pushed ordinary mutations since the restore; "
                        "its hand-backs are over"),
                    "handback");
    }
  }
  if (m.changes_size() == 0) {
    return refuse(absl::InvalidArgumentError("changes: a mutation needs at least one change"),
                  "changes");
  }
  const uint64_t latest = HlcPack(
      incarnation_.restored_ms + absl::ToInt64Milliseconds(options_.max_skew), kHlcCounterMask);
  for (int i = 0; i < m.changes_size(); ++i) {
    const RecordChange& change = m.changes(i);
    const std::string path = absl::StrCat("changes[", i, "]");
    std::string field;
    absl::Status status = schema_->ValidateChange(change, path, &field);
    if (!status.ok()) return refuse(status, field);
    auto check = [&](uint64_t hlc, uint64_t node, const std::string& at) {
      if (hlc == 0 || node == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": a hand-back names its writer's clock and node"));
      }
      if (hlc > latest) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ".hlc: a hand-back carries writes from before the restore"));
      }
      return absl::OkStatus();
    };
    status = check(change.hlc(), change.node(), path);
    if (!status.ok()) return refuse(status, path);
    for (int j = 0; j < change.fields_size(); ++j) {
      const auto& f = change.fields(j);
      const std::string fpath = absl::StrCat(path, ".fields[", j, "]");
      status = check(f.hlc() != 0 ? f.hlc() : change.hlc(),
                     f.node() != 0 ? f.node() : change.node(), fpath);
      if (!status.ok()) return refuse(status, fpath);
    }
  }
  for (int i = 0; i < m.changes_size(); ++i) {
    const RecordChange& change = m.changes(i);
    const std::string path = absl::StrCat("changes[", i, "]");
    const RecordTypeSpec& type = *schema_->Find(change.type());
    absl::StatusOr<std::string> id = UuidToText(change.id());
    if (!id.ok()) return id.status();
    absl::StatusOr<std::optional<RowState>> row = ReadRow(type, *id);
    if (!row.ok()) return row.status();
    // A device hands back only records of the buckets its user may read: anything else
    // reads like a record that does not exist.
    const int64_t bucket = row->has_value() ? (*row)->bucket : change.bucket();
    if (writer.may_read && !writer.may_read(bucket)) {
      return refuse(
          absl::NotFoundError(absl::StrCat(path, ".id: ", type.name, " ", *id, " does not exist")),
          absl::StrCat(path, ".id"));
    }
    const Stamp stamp{change.hlc(), change.node()};
    if (row->has_value() && (*row)->deleted) continue;  // a tombstone is final
    if (!row->has_value() && change.bucket() == 0) {
      return refuse(absl::InvalidArgumentError(
                        absl::StrCat(path, ".bucket: a handed-back record names its bucket")),
                    absl::StrCat(path, ".bucket"));
    }
    if (change.deleted()) {
      // A deletion the restore lost (of a record it may not have at all).
      RowState tomb;
      tomb.bucket = row->has_value() ? (*row)->bucket : change.bucket();
      tomb.deleted = true;
      tomb.stamp = stamp;
      tomb.op = NextOp();
      absl::Status status = WriteRow(type, *id, *row, tomb);
      if (!status.ok()) return status;
      result->set_op(std::max(result->op(), tomb.op));
      continue;
    }
    RowState next;
    if (row->has_value()) {
      next = **row;
    } else {
      next.bucket = change.bucket();
      next.stamp = stamp;
      next.fields.resize(type.fields.size());
      for (FieldState& f : next.fields) f.stamp = stamp;
    }
    bool changed = !row->has_value();
    constexpr uint64_t kPending = ~uint64_t{0};
    for (int j = 0; j < change.fields_size(); ++j) {
      const auto& f = change.fields(j);
      if (f.field() == type.bucket_field &&
          !(f.value().kind_case() == kcnet::v1::Value::kIntValue &&
            f.value().int_value() == next.bucket)) {
        return refuse(absl::InvalidArgumentError(absl::StrCat(
                          path, ".fields[", j, "]: the bucket field disagrees with the bucket")),
                      absl::StrCat(path, ".fields[", j, "]"));
      }
      FieldState& state = next.fields[type.IndexOf(f.field())];
      const Stamp field_stamp{f.hlc() != 0 ? f.hlc() : change.hlc(),
                              f.node() != 0 ? f.node() : change.node()};
      if (row->has_value() && !(state.stamp < field_stamp)) continue;  // the server's is newer
      state.value = f.value();
      state.stamp = field_stamp;
      state.op = kPending;
      changed = true;
    }
    if (!changed) continue;
    if (!row->has_value() &&
        next.fields[type.bucket_index()].value.kind_case() != kcnet::v1::Value::kIntValue) {
      return refuse(absl::InvalidArgumentError(absl::StrCat(path, ".fields: a handed-back new ",
                                                            type.name, " needs its ",
                                                            type.fields[type.bucket_index()].name)),
                    absl::StrCat(path, ".fields"));
    }
    next.op = NextOp();
    for (FieldState& f : next.fields) {
      if (f.op == kPending || !row->has_value()) f.op = next.op;
    }
    absl::Status status = WriteRow(type, *id, *row, next);
    if (!status.ok()) return status;
    result->set_op(std::max(result->op(), next.op));
  }
  return absl::OkStatus();
}

absl::Status MergingServerStore::MergeChange(const Writer& writer, uint64_t seq,
                                             const RecordChange& change, absl::string_view path,
                                             MutationResult* result, Refusal* refusal) {
  const RecordTypeSpec& type = *schema_->Find(change.type());
  absl::StatusOr<std::string> id = UuidToText(change.id());
  if (!id.ok()) return id.status();
  absl::StatusOr<std::optional<RowState>> row = ReadRow(type, *id);
  if (!row.ok()) return row.status();
  const Stamp incoming{change.hlc(), writer.node};
  auto field_stamp = [&](const kcnet::v1::FieldChange& f) {
    return Stamp{f.hlc() != 0 ? f.hlc() : change.hlc(), writer.node};
  };
  auto conflict_base = [&]() {
    Conflict c;
    c.set_type(type.type);
    c.set_record_id(change.id());
    if (!writer.device_id.empty()) {
      c.mutable_loser_mutation()->set_device_id(writer.device_id);
      c.mutable_loser_mutation()->set_seq(seq);
    }
    return c;
  };
  std::vector<Conflict> conflicts;

  if (!row->has_value()) {
    if (change.deleted()) {
      refusal->field = absl::StrCat(path, ".id");
      refusal->status = absl::NotFoundError(
          absl::StrCat(refusal->field, ": ", type.name, " ", *id, " does not exist"));
      return absl::OkStatus();
    }
    const int bucket_index = type.bucket_index();
    const kcnet::v1::FieldChange* bucket = nullptr;
    for (const auto& f : change.fields()) {
      if (f.field() == type.bucket_field) bucket = &f;
    }
    if (bucket == nullptr || bucket->value().kind_case() != kcnet::v1::Value::kIntValue) {
      refusal->field = absl::StrCat(path, ".fields");
      refusal->status = absl::InvalidArgumentError(absl::StrCat(
          refusal->field, ": a new ", type.name, " needs its ", type.fields[bucket_index].name));
      return absl::OkStatus();
    }
    RowState fresh;
    fresh.bucket = bucket->value().int_value();
    fresh.op = NextOp();
    fresh.fields.resize(type.fields.size());
    for (FieldState& f : fresh.fields) {
      f.stamp = incoming;
      f.op = fresh.op;
    }
    for (const auto& f : change.fields()) {
      FieldState& state = fresh.fields[type.IndexOf(f.field())];
      state.value = f.value();
      state.stamp = field_stamp(f);
    }
    for (size_t i = 0; i < type.fields.size(); ++i) {
      if (type.fields[i].server_time) fresh.fields[i].value.set_int_value(options_.clock->NowMs());
    }
    result->set_op(std::max(result->op(), fresh.op));
    return WriteRow(type, *id, std::nullopt, fresh);
  }

  const RowState& current = **row;
  if (current.deleted) {
    // The tombstone wins; an update by someone else is a conflict it overwrote.
    if (change.deleted() || current.stamp.node == writer.node) return absl::OkStatus();
    for (const auto& f : change.fields()) {
      Conflict c = conflict_base();
      c.set_field(f.field());
      c.set_winner_hlc(current.stamp.hlc);
      c.set_winner_node(current.stamp.node);
      *c.mutable_loser_value() = f.value();
      c.set_loser_hlc(field_stamp(f).hlc);
      c.set_loser_node(writer.node);
      c.set_op(current.op);
      c.set_bucket(current.bucket);
      absl::Status status = RecordConflict(&c);
      if (!status.ok()) return status;
      *result->add_conflicts() = c;
    }
    return absl::OkStatus();
  }

  if (change.deleted()) {
    RowState tomb;
    tomb.bucket = current.bucket;
    tomb.deleted = true;
    tomb.stamp = incoming;
    tomb.op = NextOp();
    for (size_t i = 0; i < current.fields.size(); ++i) {
      const FieldState& f = current.fields[i];
      if (f.op <= change.base_op() || f.stamp.node == writer.node) continue;
      Conflict c = conflict_base();
      c.set_field(type.fields[i].number);
      c.set_winner_hlc(incoming.hlc);
      c.set_winner_node(incoming.node);
      *c.mutable_loser_value() = f.value;
      c.set_loser_hlc(f.stamp.hlc);
      c.set_loser_node(f.stamp.node);
      c.clear_loser_mutation();  // the loser is the stored value, not this mutation
      c.set_op(tomb.op);
      c.set_bucket(current.bucket);
      conflicts.push_back(std::move(c));
    }
    absl::Status status = WriteRow(type, *id, current, tomb);
    if (!status.ok()) return status;
    for (Conflict& c : conflicts) {
      status = RecordConflict(&c);
      if (!status.ok()) return status;
      *result->add_conflicts() = c;
    }
    result->set_op(std::max(result->op(), tomb.op));
    return absl::OkStatus();
  }

  // A change that moves a guarded field (a life-cycle state) is a compare-and-set on the
  // state its writer saw: refused when another writer moved the field since the change's
  // base, otherwise applied whole (see FieldSpec::guarded).
  bool whole = false;
  for (int j = 0; j < change.fields_size(); ++j) {
    const auto& f = change.fields(j);
    const int index = type.IndexOf(f.field());
    const FieldState& state = current.fields[index];
    if (!type.fields[index].guarded ||
        state.value.SerializeAsString() == f.value().SerializeAsString()) {
      continue;
    }
    if (state.op > change.base_op() && state.stamp.node != writer.node) {
      refusal->field = absl::StrCat(path, ".fields[", j, "]");
      refusal->status = absl::FailedPreconditionError(absl::StrCat(
          refusal->field, " (", type.name, ".", type.fields[index].name,
          "): changed by someone else after this device last saw it (op ", state.op, " > base ",
          change.base_op(), "); nothing was applied: sync, look again, act again"));
      return absl::OkStatus();
    }
    whole = true;
  }

  RowState next = current;
  bool changed = false;
  constexpr uint64_t kPending = ~uint64_t{0};
  for (int j = 0; j < change.fields_size(); ++j) {
    const auto& f = change.fields(j);
    const int index = type.IndexOf(f.field());
    if (f.field() == type.bucket_field && !(f.value().kind_case() == kcnet::v1::Value::kIntValue &&
                                            f.value().int_value() == current.bucket)) {
      refusal->field = absl::StrCat(path, ".fields[", j, "]");
      refusal->status = absl::InvalidArgumentError(
          absl::StrCat(refusal->field, " (", type.name, ".", type.fields[index].name,
                       "): a record's bucket cannot change (it stays in the unit it was made in)"));
      return absl::OkStatus();
    }
    FieldState& state = next.fields[index];
    Stamp stamp = field_stamp(f);
    FieldMerge merge = MergeField(state.stamp, state.op, stamp, change.base_op());
    if (merge.decision == MergeDecision::kSame) continue;
    if (whole && merge.decision == MergeDecision::kKeepCurrent) {
      // Causally after what it replaces: it wins whatever the clocks say, with the
      // server's clock, so that a field's stamp still only grows with its op (devices
      // take a downloaded field only when its stamp is higher). Overwriting a concurrent
      // edit by another writer is still a conflict to record.
      merge.decision = MergeDecision::kTakeIncoming;
      merge.conflict = state.op > change.base_op() && state.stamp.node != writer.node;
      stamp = Stamp{hlc_.Now(), writer.node};
    }
    if (merge.conflict) {
      Conflict c = conflict_base();
      c.set_field(f.field());
      c.set_bucket(current.bucket);
      if (merge.decision == MergeDecision::kTakeIncoming) {
        *c.mutable_winner_value() = f.value();
        c.set_winner_hlc(stamp.hlc);
        c.set_winner_node(stamp.node);
        *c.mutable_loser_value() = state.value;
        c.set_loser_hlc(state.stamp.hlc);
        c.set_loser_node(state.stamp.node);
        c.clear_loser_mutation();
      } else {
        *c.mutable_winner_value() = state.value;
        c.set_winner_hlc(state.stamp.hlc);
        c.set_winner_node(state.stamp.node);
        *c.mutable_loser_value() = f.value();
        c.set_loser_hlc(stamp.hlc);
        c.set_loser_node(stamp.node);
      }
      conflicts.push_back(std::move(c));
    }
    if (merge.decision == MergeDecision::kTakeIncoming) {
      state.value = f.value();
      state.stamp = stamp;
      state.op = kPending;
      changed = true;
    }
  }
  uint64_t op = current.op;
  if (changed) {
    op = NextOp();
    for (FieldState& state : next.fields) {
      if (state.op == kPending) state.op = op;
    }
    next.op = op;
    absl::Status status = WriteRow(type, *id, current, next);
    if (!status.ok()) return status;
    result->set_op(std::max(result->op(), op));
  }
  for (Conflict& c : conflicts) {
    c.set_op(op);
    absl::Status status = RecordConflict(&c);
    if (!status.ok()) return status;
    *result->add_conflicts() = c;
  }
  return absl::OkStatus();
}

absl::Status SqliteServerStore::RecordConflict(Conflict* conflict) {
  // The body is stored without its id; the row's key is the id.
  conflict->clear_id();
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT INTO _conflicts(bucket, body) VALUES (?1, ?2)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, conflict->bucket());
  (*stmt)->BindBlob(2, conflict->SerializeAsString());
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  if (!status.ok()) return status;
  conflict->set_id(static_cast<uint64_t>(db_->LastInsertRowId()));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<RowState>> MergingServerStore::ReadRow(const RecordTypeSpec& type,
                                                                    const std::string& id_text) {
  if (caching_) {
    auto it = row_cache_.find(std::make_pair(type.type, id_text));
    if (it != row_cache_.end()) return it->second;
  }
  absl::StatusOr<std::optional<RowState>> row = LoadRow(type, id_text);
  if (row.ok() && caching_) row_cache_[std::make_pair(type.type, id_text)] = *row;
  return row;
}

absl::Status MergingServerStore::WriteRow(const RecordTypeSpec& type, const std::string& id_text,
                                          const std::optional<RowState>& old, const RowState& row) {
  absl::Status status = StoreRow(type, id_text, old, row);
  if (status.ok() && caching_) row_cache_[std::make_pair(type.type, id_text)] = row;
  return status;
}

absl::StatusOr<std::optional<RecordChange>> MergingServerStore::Read(uint32_t type,
                                                                     absl::string_view id) {
  const RecordTypeSpec* spec = schema_->Find(type);
  if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown type ", type));
  absl::StatusOr<std::string> text = UuidToText(id);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::optional<RowState>> row = ReadRow(*spec, *text);
  if (!row.ok()) return row.status();
  if (!row->has_value()) return std::optional<RecordChange>();
  RecordChange change;
  RowToChange(*spec, id, **row, 0, &change);
  return std::optional<RecordChange>(std::move(change));
}

absl::StatusOr<std::optional<RecordChange>> MergingServerStore::ReadRecord(uint32_t type,
                                                                           absl::string_view id) {
  absl::MutexLock lock(&mu_);
  return Read(type, id);
}

absl::Status SqliteServerStore::ChangesSince(const std::vector<BucketCursor>& cursors,
                                             const DownloadLimits& limits, ChangeBatch* page) {
  return WithReader([&](RecordStore& records) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Transaction>> txn =
        Transaction::Begin(records.db(), Transaction::Kind::kRead);
    if (!txn.ok()) return txn.status();
    absl::Status status = ReadChanges(records, cursors, limits, page);
    if (!status.ok()) return status;
    return (*txn)->Commit();
  });
}

absl::Status SqliteServerStore::ReadChanges(RecordStore& records,
                                            const std::vector<BucketCursor>& cursors,
                                            const DownloadLimits& limits, ChangeBatch* out) const {
  // Rows may name nodes the writer added after this connection last looked.
  absl::Status refreshed = records.RefreshNodes();
  if (!refreshed.ok()) return refreshed;
  absl::StatusOr<std::optional<int64_t>> server_op = records.GetMeta("last_op");
  if (!server_op.ok()) return server_op.status();
  ChangeBatch& batch = *out;
  batch.set_server_op(static_cast<uint64_t>(server_op->value_or(0)));
  size_t budget = std::max<size_t>(limits.max_changes, 1);
  size_t bytes = 0;
  absl::flat_hash_set<int64_t> seen;
  for (const BucketCursor& cursor : cursors) {
    if (!seen.insert(cursor.bucket()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("cursors: bucket ", cursor.bucket(), " appears twice"));
    }
    absl::StatusOr<kcnet::v1::BucketCheckpoint> cp = records.Checkpoint(cursor.bucket());
    if (!cp.ok()) return cp.status();
    if (cursor.op() >= cp->op()) {
      // Up to date (or ahead of a restored server: the checkpoint tells the device).
      *batch.add_checkpoints() = *cp;
      BucketCursor* out = batch.add_cursors();
      out->set_bucket(cursor.bucket());
      out->set_op(cp->op());
      out->set_floor(cp->op());
      continue;
    }
    if (budget == 0 || bytes >= limits.max_bytes) {
      batch.set_more(true);
      continue;
    }
    // Merge the types' op-ordered rows and take the oldest `budget`. The changes are built
    // where the page lives (its arena, or the heap: then the ones not taken are deleted).
    google::protobuf::Arena* const arena = batch.GetArena();
    std::vector<RecordChange*> changes;
    absl::Cleanup free_unused = [&] {
      if (arena != nullptr) return;
      for (RecordChange* change : changes) delete change;
    };
    for (const RecordTypeSpec& type : schema_->types()) {
      absl::Status status = records.ScanSince(
          type, cursor.bucket(), cursor.op(), budget,
          [&](absl::string_view id_text, const RowState& row) -> absl::Status {
            absl::StatusOr<std::string> id = UuidFromText(id_text);
            if (!id.ok()) return absl::DataLossError(id.status().message());
            changes.push_back(google::protobuf::Arena::CreateMessage<RecordChange>(arena));
            records.ToChange(type, *id, row, std::min(cursor.floor(), cursor.op()), changes.back());
            return absl::OkStatus();
          });
      if (!status.ok()) return status;
    }
    std::sort(changes.begin(), changes.end(),
              [](const RecordChange* a, const RecordChange* b) { return a->op() < b->op(); });
    uint64_t reached = cursor.op();
    size_t taken = 0;
    for (RecordChange*& change : changes) {
      if (taken == budget || (taken > 0 && bytes >= limits.max_bytes)) break;
      bytes += change->ByteSizeLong();
      reached = change->op();
      batch.mutable_changes()->AddAllocated(change);  // the same arena (or the heap): no copy
      change = nullptr;
      ++taken;
    }
    budget -= taken;
    BucketCursor* out = batch.add_cursors();
    out->set_bucket(cursor.bucket());
    out->set_op(reached);
    out->set_floor(reached == cp->op() ? reached : std::min(cursor.floor(), cursor.op()));
    if (reached == cp->op()) {
      *batch.add_checkpoints() = *cp;
    } else {
      batch.set_more(true);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RecordChange>> SqliteServerStore::List(const ListQuery& query) {
  const RecordTypeSpec* type = schema_->Find(query.type);
  if (type == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("type: unknown ", query.type));
  std::vector<RecordChange> out;
  if (query.limit == 0 || query.buckets.empty()) return out;
  // A k-way merge: each bucket is read in chunks through its (bucket, op) index, in the
  // query's order, and a heap picks the next record across buckets. The first chunk is
  // small (a national list over 10,000 communes reads one row from each), and a bucket
  // that keeps winning reads chunks twice as large each time, up to `limit`.
  struct Cursor {
    int64_t bucket = 0;
    uint64_t position = 0;  // ScanOrdered's position after the rows read so far
    size_t chunk = 1;
    bool exhausted = false;
    std::deque<RecordChange> rows;
  };
  std::vector<Cursor> cursors(query.buckets.size());
  const size_t first_chunk = std::min(query.limit, query.limit / query.buckets.size() + 1);
  for (size_t i = 0; i < cursors.size(); ++i) {
    cursors[i].bucket = query.buckets[i];
    cursors[i].position = query.after;
    cursors[i].chunk = first_chunk;
  }
  const bool newest_first = query.newest_first;
  // Heap order: the cursor whose next row comes first in the query's order on top.
  auto later = [&](size_t a, size_t b) {
    const uint64_t op_a = cursors[a].rows.front().op(), op_b = cursors[b].rows.front().op();
    return newest_first ? op_a < op_b : op_a > op_b;
  };
  absl::Status status = WithReader([&](RecordStore& records) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Transaction>> txn =
        Transaction::Begin(records.db(), Transaction::Kind::kRead);
    if (!txn.ok()) return txn.status();
    absl::Status status = records.RefreshNodes();
    if (!status.ok()) return status;
    auto fill = [&](Cursor& cursor) -> absl::Status {
      size_t read = 0;
      absl::Status status = records.ScanOrdered(
          *type, cursor.bucket, query.equals, newest_first, cursor.position, cursor.chunk,
          [&](absl::string_view id_text, const RowState& row) -> absl::Status {
            absl::StatusOr<std::string> id = UuidFromText(id_text);
            if (!id.ok()) return absl::DataLossError(id.status().message());
            cursor.rows.push_back(records.ToChange(*type, *id, row, 0));
            cursor.position = row.op;
            ++read;
            return absl::OkStatus();
          });
      if (!status.ok()) return status;
      cursor.exhausted = read < cursor.chunk;
      cursor.chunk = std::min(cursor.chunk * 2, query.limit);
      return absl::OkStatus();
    };
    std::vector<size_t> heap;
    for (size_t i = 0; i < cursors.size(); ++i) {
      status = fill(cursors[i]);
      if (!status.ok()) return status;
      if (!cursors[i].rows.empty()) heap.push_back(i);
    }
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty() && out.size() < query.limit) {
      std::pop_heap(heap.begin(), heap.end(), later);
      Cursor& cursor = cursors[heap.back()];
      out.push_back(std::move(cursor.rows.front()));
      cursor.rows.pop_front();
      if (cursor.rows.empty() && !cursor.exhausted && out.size() < query.limit) {
        status = fill(cursor);
        if (!status.ok()) return status;
      }
      if (cursor.rows.empty()) {
        heap.pop_back();
      } else {
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    return (*txn)->Commit();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<kcnet::v1::BucketCheckpoint> SqliteServerStore::Checkpoint(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  return records_->Checkpoint(bucket);
}

absl::StatusOr<std::vector<Conflict>> SqliteServerStore::ListConflicts(
    const std::vector<int64_t>& buckets, bool include_resolved, uint64_t after_id, size_t limit) {
  std::vector<Conflict> out;
  // On a reader connection: a coordinator's review never waits for the writer (nor makes
  // pushes wait for it).
  absl::Status status = WithReader([&](RecordStore& records) -> absl::Status {
    Db* db = records.db();
    absl::StatusOr<std::unique_ptr<Transaction>> txn =
        Transaction::Begin(db, Transaction::Kind::kRead);
    if (!txn.ok()) return txn.status();
    auto scan = [&](const std::string& sql, std::optional<int64_t> bucket) -> absl::Status {
      absl::StatusOr<Statement*> stmt = db->Prepare(sql);
      if (!stmt.ok()) return stmt.status();
      (*stmt)->BindInt(1, static_cast<int64_t>(after_id));
      (*stmt)->BindInt(2, include_resolved ? 1 : 0);
      (*stmt)->BindInt(3, static_cast<int64_t>(limit));
      if (bucket.has_value()) (*stmt)->BindInt(4, *bucket);
      while (true) {
        absl::StatusOr<bool> has = (*stmt)->Step();
        if (!has.ok()) {
          (*stmt)->Reset();
          return has.status();
        }
        if (!*has) break;
        Conflict c;
        if (!c.ParseFromString(std::string((*stmt)->ColumnBlob(0)))) {
          (*stmt)->Reset();
          return absl::DataLossError("conflict body does not parse");
        }
        c.set_resolved((*stmt)->ColumnInt(1) != 0);
        c.set_id(static_cast<uint64_t>((*stmt)->ColumnInt(2)));
        out.push_back(std::move(c));
      }
      (*stmt)->Reset();
      return absl::OkStatus();
    };
    const std::string base =
        "SELECT body, resolved, id FROM _conflicts WHERE id > ?1 AND (?2 OR resolved = 0)";
    if (buckets.empty()) {
      absl::Status status = scan(base + " ORDER BY id LIMIT ?3", std::nullopt);
      if (!status.ok()) return status;
    } else {
      for (int64_t bucket : buckets) {
        absl::Status status = scan(base + " AND bucket = ?4 ORDER BY id LIMIT ?3", bucket);
        if (!status.ok()) return status;
        // Keep only the first `limit` so far: memory stays bounded by the page.
        if (out.size() > 2 * limit) {
          std::sort(out.begin(), out.end(),
                    [](const Conflict& a, const Conflict& b) { return a.id() < b.id(); });
          out.resize(limit);
        }
      }
      std::sort(out.begin(), out.end(),
                [](const Conflict& a, const Conflict& b) { return a.id() < b.id(); });
      if (out.size() > limit) out.resize(limit);
    }
    return (*txn)->Commit();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqliteServerStore::MarkConflictResolved(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return MarkConflictResolvedLocked(id);
}

absl::Status SqliteServerStore::MarkConflictResolvedLocked(uint64_t id) {
  // Conditional: of two coordinators resolving the same conflict, one wins.
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("UPDATE _conflicts SET resolved = 1 WHERE id = ?1 AND resolved = 0");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, static_cast<int64_t>(id));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  if (!status.ok()) return status;
  if (db_->Changes() > 0) return absl::OkStatus();
  absl::StatusOr<Statement*> exists = db_->Prepare("SELECT 1 FROM _conflicts WHERE id = ?1");
  if (!exists.ok()) return exists.status();
  (*exists)->BindInt(1, static_cast<int64_t>(id));
  absl::StatusOr<bool> has = (*exists)->Step();
  (*exists)->Reset();
  if (!has.ok()) return has.status();
  if (!*has) return absl::NotFoundError(absl::StrCat("id: conflict ", id, " not found"));
  return absl::FailedPreconditionError(absl::StrCat("id: conflict ", id, " is already resolved"));
}

absl::StatusOr<uint64_t> SqliteServerStore::LastAppliedSeq(const std::string& device_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT last_seq FROM _devices WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  const uint64_t seq = *has ? static_cast<uint64_t>((*stmt)->ColumnInt(0)) : 0;
  (*stmt)->Reset();
  return seq;
}

uint64_t MergingServerStore::Restamp(const Mutation& m, uint64_t* floor, Mutation* out) {
  auto needs = [&](uint64_t hlc) {
    return hlc != 0 && (hlc <= *floor || !hlc_.CheckSkew(hlc).ok());
  };
  bool any = false;
  for (const RecordChange& c : m.changes()) {
    any = any || needs(c.hlc());
    for (const auto& f : c.fields()) any = any || needs(f.hlc());
  }
  if (!any) return 0;
  // One clock for the whole mutation, as the device gave it one.
  const uint64_t now = hlc_.Now();
  *out = m;
  for (RecordChange& c : *out->mutable_changes()) {
    if (needs(c.hlc())) c.set_hlc(now);
    for (auto& f : *c.mutable_fields()) {
      if (needs(f.hlc())) f.set_hlc(now);
    }
  }
  *floor = now;
  return now;
}

absl::StatusOr<std::optional<uint64_t>> SqliteServerStore::PushDigest(const std::string& device_id,
                                                                      uint64_t seq) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT digest FROM _pushes WHERE device_id = ?1 AND seq = ?2");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(seq));
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  std::optional<uint64_t> out;
  if (*has) out = static_cast<uint64_t>((*stmt)->ColumnInt(0));
  (*stmt)->Reset();
  return out;
}

absl::Status SqliteServerStore::LogDevice(const DeviceEvent& event) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "INSERT INTO _device_log(device_id, owner, generation, event, by_user, at_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, event.device_id);
  (*stmt)->BindInt(2, event.owner);
  (*stmt)->BindInt(3, static_cast<int64_t>(event.generation));
  (*stmt)->BindText(4, event.event);
  (*stmt)->BindInt(5, event.by);
  (*stmt)->BindInt(6, event.at_ms);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<DeviceRegistration> SqliteServerStore::RegisterDevice(const std::string& device_id,
                                                                     int64_t owner) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT owner, generation, released FROM _device_owners WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  const bool known = *has;
  const int64_t old_owner = known ? (*stmt)->ColumnInt(0) : 0;
  uint64_t generation = known ? static_cast<uint64_t>((*stmt)->ColumnInt(1)) : 0;
  const bool released = known && (*stmt)->ColumnInt(2) != 0;
  (*stmt)->Reset();

  const int64_t now = options_.clock->NowMs();
  std::string event;
  if (!known) {
    event = "registered";
  } else if (old_owner != owner) {
    if (!released) {
      return absl::PermissionDeniedError(
          "hello.device_id: this device is registered to another account; that account signs "
          "out on it (after uploading its work) or an administrator releases it");
    }
    ++generation;
    event = "re-registered";
  } else if (released) {
    event = "registered again";
  }
  if (!event.empty()) {
    stmt = db_->Prepare(
        "INSERT OR REPLACE INTO _device_owners(device_id, owner, generation, released, since_ms) "
        "VALUES (?1, ?2, ?3, 0, ?4)");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindText(1, device_id);
    (*stmt)->BindInt(2, owner);
    (*stmt)->BindInt(3, static_cast<int64_t>(generation));
    (*stmt)->BindInt(4, now);
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    if (!status.ok()) return status;
    status = LogDevice({device_id, owner, generation, event, owner, now});
    if (!status.ok()) return status;
  }
  DeviceRegistration reg;
  reg.device_id = device_id;
  reg.owner = owner;
  reg.generation = generation;
  // Generation 0 keeps the plain device id, so that devices registered before
  // registrations existed keep their sequences and node.
  reg.key = generation == 0 ? device_id : absl::StrCat(device_id, "#", generation);
  reg.node = NodeIdFor(reg.key);
  stmt = db_->Prepare("SELECT last_seq FROM _devices WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, reg.key);
  has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  if (*has) reg.last_applied_seq = static_cast<uint64_t>((*stmt)->ColumnInt(0));
  (*stmt)->Reset();
  absl::Status status = (*txn)->Commit();
  if (!status.ok()) return status;
  return reg;
}

absl::Status SqliteServerStore::ReleaseDevice(const std::string& device_id, int64_t by,
                                              bool administrator) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT owner, generation, released FROM _device_owners WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  const int64_t owner = *has ? (*stmt)->ColumnInt(0) : 0;
  const uint64_t generation = *has ? static_cast<uint64_t>((*stmt)->ColumnInt(1)) : 0;
  const bool released = *has && (*stmt)->ColumnInt(2) != 0;
  (*stmt)->Reset();
  // Someone else's device reads like an unknown one.
  if (!*has || (!administrator && owner != by)) {
    return absl::NotFoundError("device_id: no device with this id is registered to you");
  }
  if (released) return absl::OkStatus();
  stmt = db_->Prepare("UPDATE _device_owners SET released = 1 WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  if (!status.ok()) return status;
  status = LogDevice({device_id, owner, generation, "released", by, options_.clock->NowMs()});
  if (!status.ok()) return status;
  return (*txn)->Commit();
}

absl::StatusOr<std::vector<SqliteServerStore::DeviceEvent>> SqliteServerStore::DeviceLog(
    const std::string& device_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "SELECT owner, generation, event, by_user, at_ms FROM _device_log WHERE device_id = ?1 "
      "ORDER BY id");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  std::vector<DeviceEvent> out;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) {
      (*stmt)->Reset();
      return has.status();
    }
    if (!*has) break;
    out.push_back({device_id, (*stmt)->ColumnInt(0), static_cast<uint64_t>((*stmt)->ColumnInt(1)),
                   std::string((*stmt)->ColumnText(2)), (*stmt)->ColumnInt(3),
                   (*stmt)->ColumnInt(4)});
  }
  (*stmt)->Reset();
  return out;
}

// --- SqliteServerStore: the storage hooks ---------------------------------------------

absl::Status SqliteServerStore::BeginGroup(const std::vector<const MutationBatch*>& batches,
                                           const std::vector<std::string>& devices) {
  (void)batches;  // one writer connection: nothing to lock beyond the transaction
  (void)devices;
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  txn_ = std::move(*txn);
  return absl::OkStatus();
}

absl::Status SqliteServerStore::CommitGroup(uint64_t max_hlc, std::vector<int64_t>* touched) {
  absl::Status status = records_->SetMeta("last_op", static_cast<int64_t>(last_op_));
  if (status.ok()) status = records_->SetMeta("max_hlc", static_cast<int64_t>(max_hlc));
  *touched = records_->TouchedBuckets();
  if (status.ok()) status = records_->FlushBuckets();
  if (status.ok()) status = txn_->Commit();
  if (status.ok()) txn_.reset();
  return status;
}

void SqliteServerStore::AbandonGroup() {
  txn_.reset();  // ROLLBACK first, so that the caches reload what is really stored
  records_->AbandonTransaction().IgnoreError();
}

absl::Status SqliteServerStore::BeginUnit() { return db_->RunCached("SAVEPOINT mutation"); }

absl::Status SqliteServerStore::KeepUnit() {
  absl::Status status = db_->RunCached("RELEASE mutation");
  if (status.ok()) records_->CommitUnit();
  return status;
}

absl::Status SqliteServerStore::RollBackUnit() {
  absl::Status status = db_->RunCached("ROLLBACK TO mutation");
  if (status.ok()) status = db_->RunCached("RELEASE mutation");
  if (status.ok()) status = records_->AbandonUnit();
  return status;
}

absl::StatusOr<std::optional<RowState>> SqliteServerStore::LoadRow(const RecordTypeSpec& type,
                                                                   const std::string& id_text) {
  return records_->Read(type, id_text);
}

absl::Status SqliteServerStore::StoreRow(const RecordTypeSpec& type, const std::string& id_text,
                                         const std::optional<RowState>& old, const RowState& row) {
  return records_->Write(type, id_text, old, row);
}

absl::StatusOr<uint64_t> SqliteServerStore::LoadLastSeq(const std::string& device_id) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT last_seq FROM _devices WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  const uint64_t seq = *has ? static_cast<uint64_t>((*stmt)->ColumnInt(0)) : 0;
  (*stmt)->Reset();
  return seq;
}

absl::Status SqliteServerStore::SaveLastSeq(const std::string& device_id, uint64_t node,
                                            uint64_t seq) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "INSERT OR REPLACE INTO _devices(device_id, node, last_seq) VALUES (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(node));
  (*stmt)->BindInt(3, static_cast<int64_t>(seq));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status SqliteServerStore::ForgetRefusals(const std::string& device_id, uint64_t through) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("DELETE FROM _refusals WHERE device_id = ?1 AND seq <= ?2");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(through));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status SqliteServerStore::RememberRefusal(const std::string& device_id, uint64_t seq,
                                                const MutationResult& result) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR REPLACE INTO _refusals(device_id, seq, result) VALUES (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(seq));
  (*stmt)->BindBlob(3, result.SerializeAsString());
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status SqliteServerStore::RememberPush(const std::string& device_id, uint64_t seq,
                                             uint64_t digest) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR REPLACE INTO _pushes(device_id, seq, digest) VALUES (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  (*stmt)->BindInt(2, static_cast<int64_t>(seq));
  (*stmt)->BindInt(3, static_cast<int64_t>(digest));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<bool> SqliteServerStore::HandbacksClosed(const std::string& device_id) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT 1 FROM _handback_closed WHERE device_id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, device_id);
  absl::StatusOr<bool> closed = (*stmt)->Step();
  (*stmt)->Reset();
  return closed;
}

}  // namespace kcnet::sync
