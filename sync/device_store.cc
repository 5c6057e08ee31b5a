#include "sync/device_store.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "sync/cursor.h"
#include "sync/text_fold.h"

namespace kcnet::sync {
namespace {

using kcnet::v1::BucketCursor;
using kcnet::v1::ChangeBatch;
using kcnet::v1::Mutation;
using kcnet::v1::MutationBatch;
using kcnet::v1::MutationResult;
using kcnet::v1::PushAck;
using kcnet::v1::RecordChange;

}  // namespace

std::optional<RecordChange> LayOver(const std::optional<RecordChange>& base,
                                    const RecordChange& change, uint64_t device_node) {
  const uint64_t node = change.node() != 0 ? change.node() : device_node;
  if (change.deleted() || (base.has_value() && base->deleted())) {
    RecordChange tomb;
    tomb.set_type(change.type());
    tomb.set_id(change.id());
    tomb.set_deleted(true);
    const bool base_deleted = base.has_value() && base->deleted();
    tomb.set_hlc(base_deleted ? base->hlc() : change.hlc());
    tomb.set_node(base_deleted ? base->node() : node);
    tomb.set_bucket(base.has_value() ? base->bucket() : change.bucket());
    return tomb;
  }
  RecordChange out = base.has_value() ? *base : RecordChange();
  if (!base.has_value()) {
    out.set_type(change.type());
    out.set_id(change.id());
    out.set_hlc(change.hlc());
    out.set_node(node);
  }
  for (const auto& f : change.fields()) {
    kcnet::v1::FieldChange* target = nullptr;
    for (auto& existing : *out.mutable_fields()) {
      if (existing.field() == f.field()) target = &existing;
    }
    if (target == nullptr) target = out.add_fields();
    *target = f;
    target->set_hlc(f.hlc() != 0 ? f.hlc() : change.hlc());
    target->set_node(f.node() != 0 ? f.node() : node);
  }
  return out;
}

DeviceStore::DeviceStore(const Schema* schema, std::string device_id, DeviceStoreOptions options)
    : schema_(schema),
      device_id_(std::move(device_id)),
      node_(NodeIdFor(device_id_)),
      hlc_(options.clock),
      options_(options) {}

absl::StatusOr<std::unique_ptr<DeviceStore>> DeviceStore::Open(const std::string& path,
                                                               const Schema* schema,
                                                               const std::string& device_id,
                                                               DeviceStoreOptions options) {
  if (device_id.empty() || device_id.size() > 128 || !IsValidUtf8(device_id)) {
    return absl::InvalidArgumentError("device_id: must be 1-128 bytes of UTF-8");
  }
  std::unique_ptr<DeviceStore> store(new DeviceStore(schema, device_id, options));
  absl::MutexLock lock(&store->mu_);
  DbOptions db_options;
  db_options.durable = options.durable;
  // A file SQLite cannot read (damaged, or not a database at all) is named with the reason.
  const auto unreadable = [&path](const absl::Status& status) {
    if (status.code() == absl::StatusCode::kFailedPrecondition) return status;
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": not a readable kcnet device store (", status.message(),
                     "); move it aside to start a new store, or restore a backup"));
  };
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(path, db_options);
  if (!db.ok()) return unreadable(db.status());
  store->db_ = std::move(*db);
  absl::StatusOr<std::unique_ptr<RecordStore>> records =
      RecordStore::Open(store->db_.get(), schema, "device", kDeviceStoreMigrations);
  if (!records.ok()) return unreadable(records.status());
  store->records_ = std::move(*records);
  // (The tables were created by the migrations. _pending rows are removed by their full
  // key, read from the outbox row: an index on seq that early stores had is dropped, one
  // b-tree less to write per local write.)
  absl::Status status = store->db_->Exec(
      "DROP INDEX IF EXISTS _pending_seq;"
      // 8 MiB of page cache (SQLite's default is 2 MiB): the search index and the
      // overlay reads stay in memory on a tablet-sized store.
      "PRAGMA cache_size = -8192;");
  if (status.ok()) status = store->CreateSearchTables();
  // Records an upgrade folded in (RecordStore::folded) join the search index.
  for (const auto& [type, id_text] : store->records_->folded()) {
    if (!status.ok() || store->FindSearch(type) == nullptr) continue;
    absl::StatusOr<std::string> id = UuidFromText(id_text);
    status = id.ok() ? store->RefreshSearchLocked(type, *id) : id.status();
  }
  if (!status.ok()) return status;
  // A store written before the pending index existed: build it from the outbox.
  absl::StatusOr<int64_t> indexed = store->db_->QueryInt("SELECT count(*) FROM _pending");
  absl::StatusOr<int64_t> outbox = store->db_->QueryInt("SELECT count(*) FROM _outbox");
  if (!indexed.ok()) return indexed.status();
  if (!outbox.ok()) return outbox.status();
  if (*indexed == 0 && *outbox > 0) {
    absl::StatusOr<Statement*> rows = store->db_->Prepare("SELECT seq, body FROM _outbox");
    if (!rows.ok()) return rows.status();
    std::vector<Mutation> mutations;
    while (true) {
      absl::StatusOr<bool> has = (*rows)->Step();
      if (!has.ok()) return has.status();
      if (!*has) break;
      Mutation& m = mutations.emplace_back();
      m.ParseFromString(std::string((*rows)->ColumnBlob(1)));
      m.set_seq(static_cast<uint64_t>((*rows)->ColumnInt(0)));
    }
    (*rows)->Reset();
    for (const Mutation& m : mutations) {
      for (const RecordChange& change : m.changes()) {
        absl::StatusOr<Statement*> ins = store->db_->Prepare(
            "INSERT OR IGNORE INTO _pending(type, id, seq) VALUES (?1, ?2, ?3)");
        if (!ins.ok()) return ins.status();
        (*ins)->BindInt(1, change.type());
        (*ins)->BindBlob(2, change.id());
        (*ins)->BindInt(3, static_cast<int64_t>(m.seq()));
        status = (*ins)->Run();
        (*ins)->Reset();
        if (!status.ok()) return status;
      }
    }
  }
  absl::StatusOr<std::optional<int64_t>> node = store->records_->GetMeta("node");
  if (!node.ok()) return node.status();
  if (node->has_value() && static_cast<uint64_t>(**node) != store->node_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": this store belongs to another device than '", device_id, "'"));
  }
  if (!node->has_value()) {
    status = store->records_->SetMeta("node", static_cast<int64_t>(store->node_));
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::optional<int64_t>> last_seq = store->records_->GetMeta("last_seq");
  if (!last_seq.ok()) return last_seq.status();
  store->last_seq_ = static_cast<uint64_t>(last_seq->value_or(0));
  absl::StatusOr<std::optional<int64_t>> max_hlc = store->records_->GetMeta("max_hlc");
  if (!max_hlc.ok()) return max_hlc.status();
  store->hlc_.Raise(static_cast<uint64_t>(max_hlc->value_or(0)));
  absl::StatusOr<std::optional<int64_t>> max_download =
      store->records_->GetMeta("max_download_hlc");
  if (!max_download.ok()) return max_download.status();
  store->max_download_hlc_ = static_cast<uint64_t>(max_download->value_or(0));
  return store;
}

absl::StatusOr<std::optional<uint64_t>> DeviceStore::CursorColumnLocked(int64_t bucket,
                                                                        const char* expression) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare(absl::StrCat("SELECT ", expression, " FROM _cursors WHERE bucket = ?1"));
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  std::optional<uint64_t> out;
  if (*has) out = static_cast<uint64_t>((*stmt)->ColumnInt(0));
  (*stmt)->Reset();
  return out;
}

namespace {

// The validator's view inside Write: records as they read now, overlay included.
class LockedReader : public RecordReader {
 public:
  explicit LockedReader(
      std::function<absl::StatusOr<std::optional<RecordChange>>(uint32_t, absl::string_view)> read)
      : read_(std::move(read)) {}
  absl::StatusOr<std::optional<RecordChange>> Read(uint32_t type, absl::string_view id) override {
    return read_(type, id);
  }

 private:
  std::function<absl::StatusOr<std::optional<RecordChange>>(uint32_t, absl::string_view)> read_;
};

}  // namespace

absl::StatusOr<uint64_t> DeviceStore::Write(std::vector<RecordChange> changes,
                                            const MutationValidator& validator,
                                            const std::function<absl::Status(Db&, uint64_t)>& also) {
  if (changes.empty()) {
    return absl::InvalidArgumentError("changes: a write needs at least one change");
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  const uint64_t hlc = hlc_.Now();
  Mutation m;
  std::vector<std::string> buckets;
  // How each touched record reads before this mutation (the validator reads them again).
  absl::flat_hash_map<std::pair<uint32_t, std::string>, std::optional<RecordChange>> before;
  for (size_t i = 0; i < changes.size(); ++i) {
    RecordChange& change = changes[i];
    const std::string path = absl::StrCat("changes[", i, "]");
    change.set_hlc(hlc);
    change.set_node(0);
    change.clear_op();
    change.clear_bucket();
    for (auto& f : *change.mutable_fields()) {
      f.clear_hlc();
      f.clear_node();
    }
    absl::Status status = schema_->ValidateChange(change, path);
    if (!status.ok()) return status;
    const RecordTypeSpec& type = *schema_->Find(change.type());
    absl::StatusOr<std::optional<RecordChange>> confirmed =
        ReadLocked(change.type(), change.id(), /*confirmed_only=*/true);
    if (!confirmed.ok()) return confirmed.status();
    absl::StatusOr<std::optional<RecordChange>> current =
        OverlayLocked(change.type(), change.id(), *confirmed);
    if (!current.ok()) return current.status();
    if (!before.contains({change.type(), change.id()})) {
      before[{change.type(), change.id()}] = *current;  // for the validator
    }
    // Changes earlier in this same mutation count too.
    for (const RecordChange& earlier : m.changes()) {
      if (earlier.type() == change.type() && earlier.id() == change.id()) {
        *current = LayOver(*current, earlier, node_);
      }
    }
    const kcnet::v1::FieldChange* bucket_field = nullptr;
    for (const auto& f : change.fields()) {
      if (f.field() == type.bucket_field) bucket_field = &f;
    }
    int64_t bucket = 0;
    if (!current->has_value()) {
      if (change.deleted()) {
        return absl::NotFoundError(absl::StrCat(path, ".id: ", type.name, " ",
                                                *UuidToText(change.id()), " does not exist"));
      }
      if (bucket_field == nullptr || !bucket_field->value().has_int_value()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ".fields: a new ", type.name,
                                                       " needs its ",
                                                       type.fields[type.bucket_index()].name));
      }
      bucket = bucket_field->value().int_value();
    } else {
      if ((*current)->deleted()) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, ".id: ", type.name, " ", *UuidToText(change.id()), " was deleted"));
      }
      for (const auto& f : (*current)->fields()) {
        if (f.field() == type.bucket_field) bucket = f.value().int_value();
      }
      if (bucket_field != nullptr &&
          !(bucket_field->value().has_int_value() && bucket_field->value().int_value() == bucket)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ".fields (", type.name, ".",
                                                       type.fields[type.bucket_index()].name,
                                                       "): a record's bucket cannot change"));
      }
    }
    change.set_base_op(confirmed->has_value() ? (*confirmed)->op() : 0);
    buckets.push_back(absl::StrCat(bucket));
    *m.add_changes() = change;
  }
  if (validator) {
    LockedReader reader([this, &before](uint32_t type, absl::string_view id)
                            ABSL_NO_THREAD_SAFETY_ANALYSIS  // mu_ is held by Write
                        -> absl::StatusOr<std::optional<RecordChange>> {
                              auto it = before.find({type, std::string(id)});
                              if (it != before.end()) return it->second;
                              return ReadLocked(type, id, /*confirmed_only=*/false);
                            });
    absl::Status status = validator(m, reader);
    if (!status.ok()) return status;
  }
  const uint64_t seq = last_seq_ + 1;
  m.set_seq(seq);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT INTO _outbox(seq, body, buckets) VALUES (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, static_cast<int64_t>(seq));
  (*stmt)->BindBlob(2, m.SerializeAsString());
  (*stmt)->BindText(3, absl::StrJoin(buckets, ","));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  for (const RecordChange& change : m.changes()) {
    if (!status.ok()) break;
    absl::StatusOr<Statement*> pending =
        db_->Prepare("INSERT OR IGNORE INTO _pending(type, id, seq) VALUES (?1, ?2, ?3)");
    if (!pending.ok()) return pending.status();
    (*pending)->BindInt(1, change.type());
    (*pending)->BindBlob(2, change.id());
    (*pending)->BindInt(3, static_cast<int64_t>(seq));
    status = (*pending)->Run();
    (*pending)->Reset();
    if (status.ok()) status = RefreshSearchLocked(change.type(), change.id());
  }
  if (status.ok()) status = records_->SetMeta("last_seq", static_cast<int64_t>(seq));
  if (status.ok()) status = records_->SetMeta("max_hlc", static_cast<int64_t>(hlc));
  if (status.ok() && also) status = also(*db_, seq);
  if (status.ok()) status = (*txn)->Commit();
  if (!status.ok()) return status;
  last_seq_ = seq;
  return seq;
}

absl::StatusOr<MutationBatch> DeviceStore::PendingBatch(size_t max_mutations, size_t max_bytes) {
  absl::MutexLock lock(&mu_);
  MutationBatch batch;
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT body FROM _outbox WHERE acked_op IS NULL ORDER BY seq LIMIT ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, static_cast<int64_t>(max_mutations));
  size_t bytes = 0;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    const absl::string_view body = (*stmt)->ColumnBlob(0);
    if (batch.mutations_size() > 0 && bytes + body.size() > max_bytes) break;
    bytes += body.size();
    if (!batch.add_mutations()->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      (*stmt)->Reset();
      return absl::DataLossError("outbox: a mutation does not parse");
    }
  }
  (*stmt)->Reset();
  // Every sequence below the oldest unanswered one has its final answer stored here.
  absl::StatusOr<int64_t> oldest =
      db_->QueryInt("SELECT min(seq) FROM _outbox WHERE acked_op IS NULL", 0);
  if (!oldest.ok()) return oldest.status();
  absl::StatusOr<std::optional<int64_t>> last = records_->GetMeta("last_seq");
  if (!last.ok()) return last.status();
  batch.set_settled_through(*oldest > 0 ? static_cast<uint64_t>(*oldest - 1)
                                        : static_cast<uint64_t>(last->value_or(0)));
  return batch;
}

absl::StatusOr<int64_t> DeviceStore::UnconfirmedCount() {
  absl::MutexLock lock(&mu_);
  return db_->QueryInt("SELECT count(*) FROM _outbox");
}

absl::StatusOr<int64_t> DeviceStore::PendingCount() {
  absl::MutexLock lock(&mu_);
  return db_->QueryInt("SELECT count(*) FROM _outbox WHERE acked_op IS NULL");
}

absl::Status DeviceStore::AddReport(const Mutation& m, const MutationResult& r) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR REPLACE INTO _reports(seq, mutation, result) VALUES (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, static_cast<int64_t>(m.seq()));
  (*stmt)->BindBlob(2, m.SerializeAsString());
  (*stmt)->BindBlob(3, r.SerializeAsString());
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<std::vector<Report>> DeviceStore::Acknowledge(const PushAck& ack) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  std::vector<Report> reports;
  for (const MutationResult& r : ack.results()) {
    absl::StatusOr<Statement*> read =
        db_->Prepare("SELECT body FROM _outbox WHERE seq = ?1 AND acked_op IS NULL");
    if (!read.ok()) return read.status();
    (*read)->BindInt(1, static_cast<int64_t>(r.seq()));
    absl::StatusOr<bool> has = (*read)->Step();
    if (!has.ok()) return has.status();
    Mutation m;
    const bool pending = *has;
    if (pending) m.ParseFromString(std::string((*read)->ColumnBlob(0)));
    (*read)->Reset();
    if (!pending) continue;  // already settled: a duplicated acknowledgement
    absl::Status status;
    switch (r.outcome()) {
      case kcnet::v1::MUTATION_OUTCOME_APPLIED:
      case kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT:
      case kcnet::v1::MUTATION_OUTCOME_DUPLICATE: {
        absl::StatusOr<Statement*> stmt =
            db_->Prepare("UPDATE _outbox SET acked_op = ?2 WHERE seq = ?1");
        if (!stmt.ok()) return stmt.status();
        (*stmt)->BindInt(1, static_cast<int64_t>(r.seq()));
        (*stmt)->BindInt(2, static_cast<int64_t>(r.op()));
        status = (*stmt)->Run();
        (*stmt)->Reset();
        break;
      }
      case kcnet::v1::MUTATION_OUTCOME_REFUSED:
        // The overlay loses the mutation: its records read as confirmed state again.
        status = DeleteOutboxRow(static_cast<int64_t>(r.seq()));
        for (const RecordChange& change : m.changes()) {
          if (status.ok()) status = RefreshSearchLocked(change.type(), change.id());
        }
        break;
      default:
        continue;  // out of order: push again
    }
    if (!status.ok()) return status;
    if (r.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED || r.conflicts_size() > 0) {
      status = AddReport(m, r);
      if (!status.ok()) return status;
      reports.push_back(Report{m, r});
    }
  }
  // Only mutations answered here are settled. One below last_applied_seq without an
  // answer (its acknowledgement was lost) is pushed again: the server answers it again,
  // DUPLICATE or the remembered refusal, never silently.
  absl::Status status = PruneAcked();
  if (status.ok()) status = (*txn)->Commit();
  if (!status.ok()) return status;
  return reports;
}

absl::Status DeviceStore::PruneAcked() {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT seq, buckets, acked_op FROM _outbox WHERE acked_op IS NOT NULL");
  if (!stmt.ok()) return stmt.status();
  std::vector<std::pair<int64_t, std::pair<std::string, uint64_t>>> acked;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    acked.push_back(
        {(*stmt)->ColumnInt(0),
         {std::string((*stmt)->ColumnText(1)), static_cast<uint64_t>((*stmt)->ColumnInt(2))}});
  }
  (*stmt)->Reset();
  for (const auto& [seq, info] : acked) {
    bool covered = true;
    for (absl::string_view part : absl::StrSplit(info.first, ',', absl::SkipEmpty())) {
      int64_t bucket;
      if (!absl::SimpleAtoi(part, &bucket)) continue;
      absl::StatusOr<std::optional<uint64_t>> synced = SyncedThroughLocked(bucket);
      if (!synced.ok()) return synced.status();
      if (synced->has_value() && **synced < info.second) covered = false;
    }
    if (!covered) continue;
    absl::Status status = DeleteOutboxRow(seq);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status DeviceStore::DeleteOutboxRow(int64_t seq) {
  absl::StatusOr<Statement*> read = db_->Prepare("SELECT body FROM _outbox WHERE seq = ?1");
  if (!read.ok()) return read.status();
  (*read)->BindInt(1, seq);
  absl::StatusOr<bool> has = (*read)->Step();
  Mutation m;
  if (has.ok() && *has) m.ParseFromString(std::string((*read)->ColumnBlob(0)));
  (*read)->Reset();
  if (!has.ok()) return has.status();
  for (const RecordChange& change : m.changes()) {
    absl::StatusOr<Statement*> del =
        db_->Prepare("DELETE FROM _pending WHERE type = ?1 AND id = ?2 AND seq = ?3");
    if (!del.ok()) return del.status();
    (*del)->BindInt(1, change.type());
    (*del)->BindBlob(2, change.id());
    (*del)->BindInt(3, seq);
    absl::Status status = (*del)->Run();
    (*del)->Reset();
    if (!status.ok()) return status;
  }
  absl::StatusOr<Statement*> del = db_->Prepare("DELETE FROM _outbox WHERE seq = ?1");
  if (!del.ok()) return del.status();
  (*del)->BindInt(1, seq);
  absl::Status status = (*del)->Run();
  (*del)->Reset();
  return status;
}

namespace {

// Download transactions with at least this many changes are bulk (see ApplyDownload).
constexpr size_t kBulkDownloadChanges = 2000;

// `next` := the stored row `row` (nullopt: none) with a downloaded change merged in, field
// by field (last writer wins, each field's op tells older news). False when nothing
// changes (older news, or a tombstone, which is final). DATA_LOSS when the row's bucket
// field disagrees with its bucket.
// The state of field `number` in `row`: its column, or (a field the schema does not know)
// its kept entry, added in number order when new.
FieldState* KeptOrField(const RecordTypeSpec& type, uint32_t number, RowState* row) {
  const int index = type.IndexOf(number);
  if (index >= 0) return &row->fields[index];
  auto it = std::lower_bound(row->kept.begin(), row->kept.end(), number,
                             [](const KeptField& k, uint32_t n) { return k.number < n; });
  if (it == row->kept.end() || it->number != number)
    it = row->kept.insert(it, KeptField{number, {}});
  return &it->state;
}

// Merges a downloaded change into a record's confirmed state (`type` is an empty spec for
// a type the schema does not know: every field is kept).
absl::StatusOr<bool> MergeDownloaded(const RecordTypeSpec& type, const RecordChange& change,
                                     const std::optional<RowState>& row, RowState* next,
                                     uint64_t* max_hlc) {
  const Stamp stamp{change.hlc(), change.node()};
  if (row.has_value()) {
    if (row->deleted) return false;  // a tombstone is final
    *next = *row;
  } else {
    next->bucket = change.bucket();
    // Fields the change does not carry stay unknown (empty stamp, op 0): any delivery of
    // them wins, and until then the checksum tells the bucket is incomplete.
    next->fields.resize(type.fields.size());
  }
  bool changed = false;
  if (!row.has_value()) next->stamp = stamp;
  if (change.deleted()) {
    next->deleted = true;
    next->fields.clear();
    next->kept.clear();
    next->stamp = stamp;
    next->op = std::max(next->op, change.op());
    changed = true;
  } else {
    for (const auto& f : change.fields()) {
      const Stamp field_stamp{f.hlc() != 0 ? f.hlc() : change.hlc(),
                              f.node() != 0 ? f.node() : change.node()};
      FieldState* found = KeptOrField(type, f.field(), next);
      FieldState& state = *found;
      // Older news, or the same write again. On the server a field's stamp only grows
      // with its op, so within one incarnation this is the op order; across a restore ops
      // are reused and only the stamps still order the writes (docs/SYNC.md).
      if (!(state.stamp < field_stamp)) continue;
      state.value = f.value();
      state.stamp = field_stamp;
      state.op = change.op();
      *max_hlc = std::max<uint64_t>(*max_hlc, state.stamp.hlc);
      changed = true;
    }
    if (changed) next->op = std::max(next->op, change.op());
  }
  if (changed && !next->deleted && type.bucket_index() >= 0 &&
      next->fields[type.bucket_index()].value.int_value() != next->bucket) {
    return absl::DataLossError(absl::StrCat("bucket field disagrees with bucket ", next->bucket));
  }
  return changed;
}

// `status` with `path` in front of its message.
absl::Status Annotate(const absl::Status& status, absl::string_view path) {
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}

}  // namespace

absl::Status DeviceStore::KeepUnknownLocked(const RecordChange& change, absl::string_view id_text,
                                            uint64_t* max_hlc, DownloadResult* result) {
  RecordTypeSpec unknown;  // no fields: every field of the change is kept
  unknown.type = change.type();
  absl::StatusOr<std::optional<RowState>> row = records_->ReadUnknown(change.type(), id_text);
  if (!row.ok()) return row.status();
  RowState next;
  absl::StatusOr<bool> changed = MergeDownloaded(unknown, change, *row, &next, max_hlc);
  if (!changed.ok()) return changed.status();
  if (!*changed) return absl::OkStatus();
  absl::Status status = records_->WriteUnknown(change.type(), id_text, *row, next);
  if (status.ok()) ++result->applied;
  return status;
}

absl::StatusOr<DownloadResult> DeviceStore::ApplyDownload(const ChangeBatch& batch) {
  const ChangeBatch* one[] = {&batch};
  return ApplyDownload(absl::MakeConstSpan(one));
}

absl::StatusOr<DownloadResult> DeviceStore::ApplyDownload(
    absl::Span<const ChangeBatch* const> pages) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  auto fail = [&](absl::Status status) {
    txn->reset();  // ROLLBACK first, so that the caches reload what is really stored
    records_->AbandonTransaction().IgnoreError();
    return status;
  };
  // The subscribed buckets' cursors, moved page by page and written once at the end.
  absl::flat_hash_map<int64_t, BucketCursor> cursors;
  {
    absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT bucket, op, floor FROM _cursors");
    if (!stmt.ok()) return fail(stmt.status());
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) {
        (*stmt)->Reset();
        return fail(has.status());
      }
      if (!*has) break;
      BucketCursor& c = cursors[(*stmt)->ColumnInt(0)];
      c.set_bucket((*stmt)->ColumnInt(0));
      c.set_op(static_cast<uint64_t>((*stmt)->ColumnInt(1)));
      c.set_floor(static_cast<uint64_t>((*stmt)->ColumnInt(2)));
    }
    (*stmt)->Reset();
  }
  // A new device's first download of a district arrives in op order, unrelated to the
  // secondary indexes (visits by facility): while a store that held nothing when it began
  // gets only first-pass changes with more pages to follow, those indexes are dropped; the
  // group that ends it builds them once (RecordStore::DropSecondaryIndexes; Open() builds
  // them if a crash came first). On a store that already holds records, rebuilding them
  // would cost more than it saves.
  size_t changes = 0;
  bool first_pass = true;
  for (const ChangeBatch* page : pages) {
    changes += static_cast<size_t>(page->changes_size());
    for (const RecordChange& change : page->changes()) {
      auto it = cursors.find(change.bucket());
      first_pass = first_pass && (it == cursors.end() || it->second.floor() == 0);
    }
  }
  const bool bulk = changes >= kBulkDownloadChanges;
  bool defer_indexes = first_pass && !pages.empty() && pages.back()->more();
  if (defer_indexes && !indexes_deferred_) {
    absl::StatusOr<int64_t> held =
        db_->QueryInt("SELECT count(*) FROM _buckets WHERE records > 0", 0);
    if (!held.ok()) return fail(held.status());
    defer_indexes = *held == 0;
  }
  if (defer_indexes != indexes_deferred_) {
    absl::Status status =
        defer_indexes ? records_->DropSecondaryIndexes() : records_->CreateSecondaryIndexes();
    if (!status.ok()) return fail(status);
  }
  absl::flat_hash_set<int64_t> moved;
  absl::flat_hash_set<int64_t> completed;
  DownloadResult result;
  uint64_t max_hlc = 0;
  std::string path;
  for (size_t p = 0; p < pages.size(); ++p) {
    const ChangeBatch& batch = *pages[p];
    // Which buckets of this page apply: subscribed ones and, when the page says where it
    // was read from, only those where that is where the device is now.
    absl::flat_hash_map<int64_t, const BucketCursor*> from;
    for (const BucketCursor& c : batch.from()) from[c.bucket()] = &c;
    absl::flat_hash_map<int64_t, bool> usable;
    auto applies = [&](int64_t bucket) {
      auto [it, inserted] = usable.try_emplace(bucket, false);
      if (inserted) {
        auto mine = cursors.find(bucket);
        if (mine != cursors.end()) {
          auto f = from.find(bucket);
          it->second =
              batch.from().empty() || (f != from.end() && SamePosition(*f->second, mine->second));
        }
      }
      return it->second;
    };
    for (int i = 0; i < batch.changes_size(); ++i) {
      const RecordChange& change = batch.changes(i);
      path.clear();
      if (pages.size() > 1) absl::StrAppend(&path, "pages[", p, "].");
      absl::StrAppend(&path, "download.changes[", i, "]");
      // A type or field this schema does not know comes from a newer server schema: kept.
      absl::Status status = schema_->ValidateDownloaded(change, path);
      if (!status.ok()) return fail(status);
      if (change.op() == 0 || change.node() == 0 || change.hlc() == 0) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat(path, ": a download change needs its op, node and hlc")));
      }
      if (!applies(change.bucket())) {
        ++result.skipped;  // not (or no longer) subscribed, or a stale page
        continue;
      }
      absl::StatusOr<std::string> id = UuidToText(change.id());
      if (!id.ok()) return fail(id.status());
      max_hlc = std::max<uint64_t>(max_hlc, change.hlc());
      const RecordTypeSpec* known = schema_->Find(change.type());
      if (known == nullptr) {
        status = KeepUnknownLocked(change, *id, &max_hlc, &result);
        if (!status.ok()) return fail(Annotate(status, path));
        continue;
      }
      const RecordTypeSpec& type = *known;
      // In a bucket's first pass (floor 0: whole records) rows are nearly always new: try
      // to insert before reading, and merge with the stored row only if there is one.
      const bool likely_new = !change.deleted() && cursors[change.bucket()].floor() == 0;
      std::optional<RowState> row;
      if (!likely_new) {
        absl::StatusOr<std::optional<RowState>> read = records_->Read(type, *id);
        if (!read.ok()) return fail(read.status());
        row = *std::move(read);
      }
      RowState next;
      absl::StatusOr<bool> changed = MergeDownloaded(type, change, row, &next, &max_hlc);
      if (!changed.ok()) return fail(Annotate(changed.status(), path));
      if (!*changed) continue;
      if (likely_new) {
        absl::StatusOr<bool> inserted = records_->InsertIfAbsent(type, *id, next);
        if (!inserted.ok()) return fail(inserted.status());
        if (!*inserted) {
          absl::StatusOr<std::optional<RowState>> read = records_->Read(type, *id);
          if (!read.ok()) return fail(read.status());
          row = *std::move(read);
          next = RowState();
          changed = MergeDownloaded(type, change, row, &next, &max_hlc);
          if (!changed.ok()) return fail(Annotate(changed.status(), path));
          if (!*changed) continue;
          status = records_->Write(type, *id, row, next);
        }
      } else {
        status = records_->Write(type, *id, row, next);
      }
      if (status.ok() && FindSearch(change.type()) != nullptr) {
        status = RefreshSearchLocked(change.type(), change.id());
      }
      if (!status.ok()) return fail(status);
      ++result.applied;
    }
    for (const BucketCursor& c : batch.cursors()) {
      if (!applies(c.bucket())) continue;
      AdvanceCursor(c, &cursors[c.bucket()]);
      moved.insert(c.bucket());
      completed.erase(c.bucket());
    }
    absl::Status status = records_->FlushBuckets();
    if (!status.ok()) return fail(status);
    for (const kcnet::v1::BucketCheckpoint& cp : batch.checkpoints()) {
      if (!applies(cp.bucket())) continue;
      // A checkpoint older than our cursor comes from a delayed batch: nothing to compare.
      // (A server restored behind our cursor is detected by the stream, which sees the
      // server's checkpoint answer the device's own cursor.)
      completed.insert(cp.bucket());
      if (cursors[cp.bucket()].op() != cp.op()) continue;
      absl::StatusOr<kcnet::v1::BucketCheckpoint> mine = records_->Checkpoint(cp.bucket());
      if (!mine.ok()) return fail(mine.status());
      if (mine->checksum() != cp.checksum()) {
        completed.erase(cp.bucket());
        if (std::find(result.mismatched.begin(), result.mismatched.end(), cp.bucket()) ==
            result.mismatched.end()) {
          result.mismatched.push_back(cp.bucket());
        }
        continue;
      }
      // Complete as of the batch's snapshot: every op of this bucket up to server_op is here.
      absl::StatusOr<Statement*> synced =
          db_->Prepare("UPDATE _cursors SET synced = max(synced, ?2) WHERE bucket = ?1");
      if (!synced.ok()) return fail(synced.status());
      (*synced)->BindInt(1, cp.bucket());
      (*synced)->BindInt(2, static_cast<int64_t>(batch.server_op()));
      status = (*synced)->Run();
      (*synced)->Reset();
      if (!status.ok()) return fail(status);
    }
  }
  for (int64_t bucket : moved) {
    const BucketCursor& c = cursors[bucket];
    absl::StatusOr<Statement*> stmt =
        db_->Prepare("UPDATE _cursors SET op = ?2, floor = ?3 WHERE bucket = ?1");
    if (!stmt.ok()) return fail(stmt.status());
    (*stmt)->BindInt(1, bucket);
    (*stmt)->BindInt(2, static_cast<int64_t>(c.op()));
    (*stmt)->BindInt(3, static_cast<int64_t>(c.floor()));
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    if (!status.ok()) return fail(status);
  }
  hlc_.Raise(max_hlc);
  absl::Status status = records_->SetMeta("max_hlc", static_cast<int64_t>(hlc_.Now()));
  // The highest clock received: a clock brought back (RecoverClock) stays above it, so a
  // new write never repeats a stamp the server gave this device's earlier writes.
  if (status.ok() && max_hlc > max_download_hlc_) {
    status = records_->SetMeta("max_download_hlc", static_cast<int64_t>(max_hlc));
    if (status.ok()) max_download_hlc_ = max_hlc;
  }
  if (status.ok()) status = PruneAcked();
  // A bulk download (a bucket's first pages) rewrites the same random-id index pages in
  // every transaction: its commits checkpoint per 32 MB of log instead of SQLite's 4 MB,
  // so that each page is copied to the database once rather than once per commit. Other
  // commits keep the default: a small write that grows the log pays for the file's growth
  // in its fsync.
  if (status.ok() && bulk) status = db_->Exec("PRAGMA wal_autocheckpoint = 8192");
  if (status.ok()) status = (*txn)->Commit();
  if (bulk) db_->Exec("PRAGMA wal_autocheckpoint = 1000").IgnoreError();
  if (!status.ok()) return fail(status);
  indexes_deferred_ = defer_indexes;
  result.moved.assign(moved.begin(), moved.end());
  result.completed.assign(completed.begin(), completed.end());
  std::sort(result.moved.begin(), result.moved.end());
  std::sort(result.completed.begin(), result.completed.end());
  return result;
}

namespace {

// The device's meta key of the server incarnation it last synced with.
constexpr char kServerIncarnationKey[] = "server_incarnation";
// Changes per hand-back mutation (the server takes at most 200 per mutation).
constexpr int kHandbackChanges = 100;
// Reports of renumbered sequences move this far down (below every sequence).
constexpr int64_t kReportShift = int64_t{1} << 40;

}  // namespace

absl::StatusOr<Recovery> DeviceStore::ObserveServer(const kcnet::v1::Welcome& welcome) {
  Recovery recovery;
  if (welcome.incarnation() == 0) return recovery;  // a server that predates incarnations
  absl::MutexLock lock(&mu_);
  // Declared before the transaction, so it runs after the rollback of a failed recovery:
  // the in-memory sequence goes back to the stored one.
  bool committed = false;
  absl::Cleanup restore_seq = [this, &committed]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (committed) return;
    records_->AbandonTransaction().IgnoreError();
    absl::StatusOr<std::optional<int64_t>> seq = records_->GetMeta("last_seq");
    if (seq.ok()) last_seq_ = static_cast<uint64_t>(seq->value_or(0));
  };
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  absl::StatusOr<std::optional<int64_t>> known = records_->GetMeta(kServerIncarnationKey);
  if (!known.ok()) return known.status();
  const uint64_t known_id = known->has_value() ? static_cast<uint64_t>(**known) : 0;
  // The signs that the server lost part of what it told this device. Each is impossible
  // otherwise: cursors and settled sequences only come from the server, which only grows.
  if (known_id != 0 && known_id != welcome.incarnation()) {
    recovery.why = "the server is a new incarnation (restored from a backup, or a new data dir)";
  } else {
    absl::StatusOr<int64_t> cursor = db_->QueryInt("SELECT max(op) FROM _cursors", 0);
    if (!cursor.ok()) return cursor.status();
    absl::StatusOr<int64_t> oldest =
        db_->QueryInt("SELECT min(seq) FROM _outbox WHERE acked_op IS NULL", 0);
    if (!oldest.ok()) return oldest.status();
    const uint64_t settled = *oldest > 0 ? static_cast<uint64_t>(*oldest - 1) : last_seq_;
    if (static_cast<uint64_t>(*cursor) > welcome.server_op()) {
      recovery.why = absl::StrCat("cursor ", *cursor, " is ahead of the server's last op ",
                                  welcome.server_op());
    } else if (settled > welcome.last_applied_seq()) {
      recovery.why = absl::StrCat("sequence ", settled, " was answered, the server's last is ",
                                  welcome.last_applied_seq());
    }
  }
  if (!recovery.why.empty()) {
    recovery.recovered = true;
    absl::Status status = RecoverLocked(welcome, &recovery);
    if (!status.ok()) return status;
  }
  if (known_id != welcome.incarnation()) {
    absl::Status status =
        records_->SetMeta(kServerIncarnationKey, static_cast<int64_t>(welcome.incarnation()));
    if (!status.ok()) return status;
  }
  absl::Status status = (*txn)->Commit();
  if (!status.ok()) return status;
  committed = true;
  return recovery;
}

absl::Status DeviceStore::RecoverLocked(const kcnet::v1::Welcome& welcome, Recovery* recovery) {
  const uint64_t server_seq = welcome.last_applied_seq();
  const uint64_t base_op = welcome.incarnation_op();
  // 1. The mutations the server no longer has: every one above its last applied sequence,
  // pending or not (an applied one may be waiting for its download, which will not come).
  struct Tail {
    Mutation mutation;
    std::string buckets;
  };
  std::vector<Tail> tail;
  {
    absl::StatusOr<Statement*> stmt =
        db_->Prepare("SELECT seq, body, buckets FROM _outbox WHERE seq > ?1 ORDER BY seq");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, static_cast<int64_t>(server_seq));
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) {
        (*stmt)->Reset();
        return has.status();
      }
      if (!*has) break;
      Tail& t = tail.emplace_back();
      if (!t.mutation.ParseFromString(std::string((*stmt)->ColumnBlob(1)))) {
        (*stmt)->Reset();
        return absl::DataLossError("outbox: a mutation does not parse");
      }
      t.mutation.set_seq(static_cast<uint64_t>((*stmt)->ColumnInt(0)));
      t.buckets = std::string((*stmt)->ColumnText(2));
    }
    (*stmt)->Reset();
  }
  for (const Tail& t : tail) {
    absl::Status status = DeleteOutboxRow(static_cast<int64_t>(t.mutation.seq()));
    if (!status.ok()) return status;
  }
  // Reports keep their order below every new sequence (a report is keyed by sequence).
  absl::Status status = db_->Exec(
      absl::StrCat("UPDATE _reports SET seq = seq - ", kReportShift, " WHERE seq > ", server_seq));
  if (!status.ok()) return status;

  // 2. What the server may have lost of confirmed state: every field above the op where
  // its incarnation began, with the stamp of whoever wrote it.
  std::vector<RecordChange> handbacks;
  {
    absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT bucket FROM _cursors ORDER BY bucket");
    if (!stmt.ok()) return stmt.status();
    std::vector<int64_t> buckets;
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) {
        (*stmt)->Reset();
        return has.status();
      }
      if (!*has) break;
      buckets.push_back((*stmt)->ColumnInt(0));
    }
    (*stmt)->Reset();
    for (int64_t bucket : buckets) {
      for (const RecordTypeSpec& type : schema_->types()) {
        status = records_->ScanSince(
            type, bucket, base_op, std::numeric_limits<size_t>::max(),
            [&](absl::string_view id_text, const RowState& row) -> absl::Status {
              absl::StatusOr<std::string> id = UuidFromText(id_text);
              if (!id.ok()) return absl::DataLossError(id.status().message());
              RecordChange change = records_->ToChange(type, *id, row, base_op);
              change.clear_op();
              if (change.deleted() || change.fields_size() > 0) {
                handbacks.push_back(std::move(change));
              }
              return absl::OkStatus();
            });
        if (!status.ok()) return status;
      }
    }
  }

  // 3. The new numbering: hand-backs first (the server takes them only before the
  // device's first ordinary mutation), then the renumbered tail in its order.
  uint64_t seq = server_seq;
  recovery->first_seq = server_seq + 1;
  auto append = [&](Mutation& m, const std::string& buckets) -> absl::Status {
    m.set_seq(++seq);
    absl::StatusOr<Statement*> ins =
        db_->Prepare("INSERT INTO _outbox(seq, body, buckets) VALUES (?1, ?2, ?3)");
    if (!ins.ok()) return ins.status();
    (*ins)->BindInt(1, static_cast<int64_t>(seq));
    (*ins)->BindBlob(2, m.SerializeAsString());
    (*ins)->BindText(3, buckets);
    absl::Status status = (*ins)->Run();
    (*ins)->Reset();
    for (const RecordChange& change : m.changes()) {
      if (!status.ok()) break;
      absl::StatusOr<Statement*> pending =
          db_->Prepare("INSERT OR IGNORE INTO _pending(type, id, seq) VALUES (?1, ?2, ?3)");
      if (!pending.ok()) return pending.status();
      (*pending)->BindInt(1, change.type());
      (*pending)->BindBlob(2, change.id());
      (*pending)->BindInt(3, static_cast<int64_t>(seq));
      status = (*pending)->Run();
      (*pending)->Reset();
    }
    return status;
  };
  for (size_t i = 0; i < handbacks.size(); i += kHandbackChanges) {
    Mutation m;
    m.set_handback(true);
    std::vector<int64_t> buckets;
    for (size_t j = i; j < handbacks.size() && j < i + kHandbackChanges; ++j) {
      buckets.push_back(handbacks[j].bucket());
      *m.add_changes() = std::move(handbacks[j]);
    }
    std::sort(buckets.begin(), buckets.end());
    buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
    status = append(m, absl::StrJoin(buckets, ","));
    if (!status.ok()) return status;
  }
  recovery->handbacks = handbacks.size();
  for (Tail& t : tail) {
    // The device knows the new incarnation only up to its base: a base op above it names
    // a version the server may not have (or a reused op), so conflicts are judged from
    // the base (never missed; one with a hand-back of the same field may be reported).
    for (RecordChange& change : *t.mutation.mutable_changes()) {
      change.set_base_op(std::min<uint64_t>(change.base_op(), base_op));
    }
    status = append(t.mutation, t.buckets);
    if (!status.ok()) return status;
  }
  recovery->renumbered = tail.size();
  status = records_->SetMeta("last_seq", static_cast<int64_t>(seq));
  if (!status.ok()) return status;
  last_seq_ = seq;

  // 4. Every bucket is verified again from the start against the server's checkpoints.
  return db_->Exec("UPDATE _cursors SET op = 0, floor = 0, synced = 0");
}

absl::Status DeviceStore::Subscribe(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR IGNORE INTO _cursors(bucket, op) VALUES (?1, 0)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status DeviceStore::Unsubscribe(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  absl::Status status = records_->DeleteBucket(bucket);
  if (status.ok()) status = DropSearchBucketLocked(bucket);
  if (status.ok()) status = db_->Exec(absl::StrCat("DELETE FROM _cursors WHERE bucket = ", bucket));
  // Acknowledged mutations waiting for this bucket's download wait for nothing now.
  if (status.ok()) status = PruneAcked();
  if (status.ok()) status = (*txn)->Commit();
  return status;
}

absl::Status DeviceStore::ResetBucket(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_.get());
  if (!txn.ok()) return txn.status();
  absl::Status status = records_->DeleteBucket(bucket);
  if (status.ok()) status = DropSearchBucketLocked(bucket);
  if (status.ok()) {
    status = db_->Exec(
        absl::StrCat("INSERT OR REPLACE INTO _cursors(bucket, op) VALUES (", bucket, ", 0)"));
  }
  if (status.ok()) status = (*txn)->Commit();
  return status;
}

absl::StatusOr<std::vector<BucketCursor>> DeviceStore::Cursors() {
  absl::MutexLock lock(&mu_);
  std::vector<BucketCursor> out;
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT bucket, op, floor FROM _cursors ORDER BY bucket");
  if (!stmt.ok()) return stmt.status();
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    BucketCursor& c = out.emplace_back();
    c.set_bucket((*stmt)->ColumnInt(0));
    c.set_op(static_cast<uint64_t>((*stmt)->ColumnInt(1)));
    c.set_floor(static_cast<uint64_t>((*stmt)->ColumnInt(2)));
  }
  (*stmt)->Reset();
  return out;
}

absl::StatusOr<std::optional<RecordChange>> DeviceStore::Read(uint32_t type, absl::string_view id,
                                                              bool confirmed_only) {
  absl::MutexLock lock(&mu_);
  return ReadLocked(type, id, confirmed_only);
}

absl::StatusOr<std::optional<RecordChange>> DeviceStore::ReadLocked(uint32_t type,
                                                                    absl::string_view id,
                                                                    bool confirmed_only) {
  const RecordTypeSpec* spec = schema_->Find(type);
  if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("type: unknown ", type));
  absl::StatusOr<std::string> text = UuidToText(id);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::optional<RowState>> row = records_->Read(*spec, *text);
  if (!row.ok()) return row.status();
  std::optional<RecordChange> out;
  if (row->has_value()) out = records_->ToChange(*spec, id, **row, 0);
  if (confirmed_only) return out;
  return OverlayLocked(type, id, std::move(out));
}

absl::StatusOr<std::optional<RecordChange>> DeviceStore::OverlayLocked(
    uint32_t type, absl::string_view id, std::optional<RecordChange> confirmed) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "SELECT o.body FROM _pending p JOIN _outbox o ON o.seq = p.seq "
      "WHERE p.type = ?1 AND p.id = ?2 ORDER BY p.seq");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, type);
  (*stmt)->BindBlob(2, id);
  std::optional<RecordChange> out = std::move(confirmed);
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    Mutation m;
    m.ParseFromString(std::string((*stmt)->ColumnBlob(0)));
    for (const RecordChange& change : m.changes()) {
      if (change.type() == type && change.id() == id) out = LayOver(out, change, node_);
    }
  }
  (*stmt)->Reset();
  return out;
}

absl::StatusOr<kcnet::v1::BucketCheckpoint> DeviceStore::Checkpoint(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  return records_->Checkpoint(bucket);
}

absl::StatusOr<kcnet::v1::BucketCheckpoint> DeviceStore::RecomputeCheckpoint(int64_t bucket) {
  absl::MutexLock lock(&mu_);
  return records_->RecomputeCheckpoint(bucket);
}

absl::StatusOr<std::vector<int64_t>> DeviceStore::VerifyBuckets() {
  absl::StatusOr<std::vector<BucketCursor>> cursors = Cursors();
  if (!cursors.ok()) return cursors.status();
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> bad;
  for (const BucketCursor& c : *cursors) {
    absl::StatusOr<kcnet::v1::BucketCheckpoint> stored = records_->Checkpoint(c.bucket());
    if (!stored.ok()) return stored.status();
    absl::StatusOr<kcnet::v1::BucketCheckpoint> actual = records_->RecomputeCheckpoint(c.bucket());
    if (!actual.ok()) return actual.status();
    if (stored->checksum() != actual->checksum() || stored->records() != actual->records()) {
      bad.push_back(c.bucket());
    }
  }
  return bad;
}

absl::StatusOr<std::vector<Report>> DeviceStore::ListReportsLocked(int64_t* max_key) {
  std::vector<Report> out;
  // Keyed by sequence; a recovery moves older reports below every sequence (negative
  // keys), so the key order is the order they were made in.
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT mutation, result, seq FROM _reports ORDER BY seq");
  if (!stmt.ok()) return stmt.status();
  *max_key = 0;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    Report& r = out.emplace_back();
    r.mutation.ParseFromString(std::string((*stmt)->ColumnBlob(0)));
    r.result.ParseFromString(std::string((*stmt)->ColumnBlob(1)));
    *max_key = (*stmt)->ColumnInt(2);
  }
  (*stmt)->Reset();
  return out;
}

absl::StatusOr<std::vector<Report>> DeviceStore::ListReports() {
  absl::MutexLock lock(&mu_);
  int64_t max_key = 0;
  return ListReportsLocked(&max_key);
}

absl::StatusOr<std::vector<Report>> DeviceStore::TakeReports() {
  absl::MutexLock lock(&mu_);
  int64_t max_key = 0;
  absl::StatusOr<std::vector<Report>> reports = ListReportsLocked(&max_key);
  if (!reports.ok() || reports->empty()) return reports;
  absl::Status status = db_->Exec(absl::StrCat("DELETE FROM _reports WHERE seq <= ", max_key));
  if (!status.ok()) return status;
  return reports;
}

// ---------------------------------------------------------------------------------------
// Queries, search and app state

namespace {

// The search table of a type, e.g. "_search_facility".
std::string SearchTable(const RecordTypeSpec& type) { return absl::StrCat("_search_", type.name); }

// How many candidates a search ranks per tier (see Search()).
constexpr int kSearchCandidates = 300;

// The FTS5 rowid of a record: a stable hash of its id (collisions among a device's records
// are vanishingly unlikely: ~1e-10 for 50,000 records).
int64_t SearchRowid(absl::string_view id) {
  return static_cast<int64_t>(StableHash64(id, 0x5eac4) >> 1);
}

bool Matches(const RecordTypeSpec& type, const RecordChange& record, const ListFilter& filter,
             const std::vector<int64_t>& buckets) {
  if (record.deleted()) return false;
  for (const auto& [field, value] : filter.equals) {
    bool equal = false;
    for (const auto& f : record.fields()) {
      if (f.field() == field) equal = f.value().SerializeAsString() == value.SerializeAsString();
    }
    if (!equal) return false;
  }
  int64_t bucket = 0;
  for (const auto& f : record.fields()) {
    if (f.field() == type.bucket_field) bucket = f.value().int_value();
  }
  return std::find(buckets.begin(), buckets.end(), bucket) != buckets.end();
}

}  // namespace

const SearchSpec* DeviceStore::FindSearch(uint32_t type) const {
  for (const SearchSpec& spec : options_.search) {
    if (spec.type == type) return &spec;
  }
  return nullptr;
}

absl::Status DeviceStore::CreateSearchTables() {
  for (const SearchSpec& spec : options_.search) {
    const RecordTypeSpec* type = schema_->Find(spec.type);
    if (type == nullptr || spec.fields.empty() || spec.weights.size() != spec.fields.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("search: type ", spec.type, " is unknown or its fields/weights disagree"));
    }
    std::vector<std::string> columns = {"id UNINDEXED", "bucket UNINDEXED"};
    for (uint32_t field : spec.fields) {
      if (type->IndexOf(field) < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("search: ", type->name, " has no field ", field));
      }
      columns.push_back(absl::StrCat("f", field));
    }
    absl::Status status =
        db_->Exec(absl::StrCat("CREATE VIRTUAL TABLE IF NOT EXISTS ", SearchTable(*type),
                               " USING fts5(", absl::StrJoin(columns, ", "),
                               ", tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3')"));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status DeviceStore::RefreshSearchLocked(uint32_t type, absl::string_view id) {
  const SearchSpec* spec = FindSearch(type);
  if (spec == nullptr) return absl::OkStatus();
  const RecordTypeSpec& t = *schema_->Find(type);
  const std::string table = SearchTable(t);
  absl::StatusOr<Statement*> del =
      db_->Prepare(absl::StrCat("DELETE FROM ", table, " WHERE rowid = ?1"));
  if (!del.ok()) return del.status();
  (*del)->BindInt(1, SearchRowid(id));
  absl::Status status = (*del)->Run();
  (*del)->Reset();
  if (!status.ok()) return status;
  absl::StatusOr<std::optional<RecordChange>> record = ReadLocked(type, id, false);
  if (!record.ok()) return record.status();
  if (!record->has_value() || (*record)->deleted()) return absl::OkStatus();
  std::vector<std::string> params(spec->fields.size());
  int64_t bucket = 0;
  for (const auto& f : (*record)->fields()) {
    if (f.field() == t.bucket_field) bucket = f.value().int_value();
    for (size_t i = 0; i < spec->fields.size(); ++i) {
      if (spec->fields[i] == f.field()) params[i] = FoldForSearch(f.value().string_value());
    }
  }
  std::string sql = absl::StrCat("INSERT INTO ", table, "(rowid, id, bucket");
  for (uint32_t field : spec->fields) absl::StrAppend(&sql, ", f", field);
  absl::StrAppend(&sql, ") VALUES (?1, ?2, ?3");
  for (size_t i = 0; i < spec->fields.size(); ++i) absl::StrAppend(&sql, ", ?", i + 4);
  absl::StrAppend(&sql, ")");
  absl::StatusOr<Statement*> ins = db_->Prepare(sql);
  if (!ins.ok()) return ins.status();
  (*ins)->BindInt(1, SearchRowid(id));
  (*ins)->BindBlob(2, id);
  (*ins)->BindInt(3, bucket);
  for (size_t i = 0; i < params.size(); ++i) (*ins)->BindText(static_cast<int>(i + 4), params[i]);
  status = (*ins)->Run();
  (*ins)->Reset();
  return status;
}

absl::Status DeviceStore::DropSearchBucketLocked(int64_t bucket) {
  for (const SearchSpec& spec : options_.search) {
    absl::Status status = db_->Exec(absl::StrCat(
        "DELETE FROM ", SearchTable(*schema_->Find(spec.type)), " WHERE bucket = ", bucket));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SearchHit>> DeviceStore::Search(uint32_t type, absl::string_view query,
                                                           size_t limit) {
  const SearchSpec* spec = FindSearch(type);
  if (spec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("type: ", type, " has no search index"));
  }
  const std::vector<std::string> words = SearchWords(query);
  if (words.empty()) return absl::InvalidArgumentError("query: needs at least one word");
  std::string match;
  for (size_t i = 0; i < words.size(); ++i) {
    // Quoted (no FTS5 operators from user input); the last word as a prefix (search as
    // you type), the others whole.
    absl::StrAppend(&match, i == 0 ? "" : " ", "\"",
                    absl::StrReplaceAll(words[i], {{"\"", "\"\""}}),
                    i + 1 == words.size() ? "\"*" : "\"");
  }
  // Candidates: records whose first (heaviest) field matches, then any field; at most
  // kSearchCandidates of each, read in index order, so a query costs the same however
  // many records match. When fewer match, every match is a candidate and the ranking is
  // complete; for very broad queries (thousands of matches) it ranks a deterministic
  // subset, name matches first, and the user narrows the query.
  const std::string table = SearchTable(*schema_->Find(type));
  std::string columns = "rowid, id";
  for (uint32_t field : spec->fields) absl::StrAppend(&columns, ", f", field);
  struct Candidate {
    std::string id;
    double score = 0;
    int64_t rowid = 0;
  };
  absl::flat_hash_map<int64_t, Candidate> candidates;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      absl::StrCat("SELECT ", columns, " FROM ", table, " WHERE ", table, " MATCH ?1 LIMIT ?2"));
  if (!stmt.ok()) return stmt.status();
  for (const std::string& expression :
       {absl::StrCat("{f", spec->fields[0], "} : (", match, ")"), match}) {
    (*stmt)->BindText(1, expression);
    (*stmt)->BindInt(2, kSearchCandidates);
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) {
        (*stmt)->Reset();
        return has.status();
      }
      if (!*has) break;
      const int64_t rowid = (*stmt)->ColumnInt(0);
      if (candidates.contains(rowid)) continue;
      Candidate c{std::string((*stmt)->ColumnBlob(1)), 0, rowid};
      // Score: per field, its weight times the share of the query's words it holds,
      // damped by the field's length (a short name that is all the query beats a long one
      // that mentions it), with a bonus when the last word is whole rather than a prefix.
      for (size_t f = 0; f < spec->fields.size(); ++f) {
        const std::vector<std::string> tokens =
            SearchWords((*stmt)->ColumnText(static_cast<int>(f + 2)));
        if (tokens.empty()) continue;
        double found = 0;
        for (size_t w = 0; w < words.size(); ++w) {
          const bool last = w + 1 == words.size();
          double best = 0;
          for (const std::string& t : tokens) {
            if (t == words[w])
              best = 1;
            else if (last && absl::StartsWith(t, words[w]))
              best = std::max(best, 0.75);
          }
          found += best;
        }
        c.score += spec->weights[f] * found / static_cast<double>(words.size()) /
                   std::sqrt(static_cast<double>(tokens.size()));
      }
      candidates.emplace(rowid, std::move(c));
    }
    (*stmt)->Reset();
  }
  std::vector<Candidate> ranked;
  ranked.reserve(candidates.size());
  for (auto& [rowid, c] : candidates) ranked.push_back(std::move(c));
  std::sort(ranked.begin(), ranked.end(), [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score > b.score : a.rowid < b.rowid;
  });
  std::vector<SearchHit> out;
  for (size_t i = 0; i < ranked.size() && i < limit; ++i) {
    out.push_back({std::move(ranked[i].id), -ranked[i].score});
  }
  return out;
}

absl::StatusOr<std::vector<RecordChange>> DeviceStore::List(const ListFilter& filter) {
  const RecordTypeSpec* type = schema_->Find(filter.type);
  if (type == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("type: unknown ", filter.type));
  for (const auto& [field, value] : filter.equals) {
    const int index = type->IndexOf(field);
    if (index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("equals: ", type->name, " has no field ", field));
    }
    absl::Status status = Schema::ValidateValue(*type, type->fields[index], value);
    if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat("equals: ", status.message()));
  }
  std::vector<int64_t> buckets = filter.buckets;
  if (buckets.empty()) {
    absl::StatusOr<std::vector<BucketCursor>> cursors = Cursors();
    if (!cursors.ok()) return cursors.status();
    for (const BucketCursor& c : *cursors) buckets.push_back(c.bucket());
  }
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<std::string, RecordChange> found;  // by id bytes
  for (int64_t bucket : buckets) {
    absl::Status status = records_->ScanOrdered(
        *type, bucket, filter.equals, /*descending=*/true, 0, std::numeric_limits<size_t>::max(),
        [&](absl::string_view id_text, const RowState& row) -> absl::Status {
          absl::StatusOr<std::string> id = UuidFromText(id_text);
          if (!id.ok()) return id.status();
          found[*id] = records_->ToChange(*type, *id, row, 0);
          return absl::OkStatus();
        });
    if (!status.ok()) return status;
  }
  // Records with pending mutations read differently: lay the overlay over them.
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT DISTINCT id FROM _pending WHERE type = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, filter.type);
  std::vector<std::string> pending;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) {
      (*stmt)->Reset();
      return has.status();
    }
    if (!*has) break;
    pending.emplace_back((*stmt)->ColumnBlob(0));
  }
  (*stmt)->Reset();
  for (const std::string& id : pending) {
    absl::StatusOr<std::optional<RecordChange>> record = ReadLocked(filter.type, id, false);
    if (!record.ok()) return record.status();
    if (record->has_value() && Matches(*type, **record, filter, buckets)) {
      found[id] = **std::move(record);
    } else {
      found.erase(id);
    }
  }
  std::vector<RecordChange> out;
  out.reserve(found.size());
  for (auto& [id, record] : found) out.push_back(std::move(record));
  return out;
}

absl::StatusOr<std::optional<std::string>> DeviceStore::GetValue(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT value FROM _kv WHERE key = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, key);
  absl::StatusOr<bool> has = (*stmt)->Step();
  std::optional<std::string> out;
  if (has.ok() && *has) out = std::string((*stmt)->ColumnBlob(0));
  (*stmt)->Reset();
  if (!has.ok()) return has.status();
  return out;
}

absl::Status DeviceStore::SetValue(absl::string_view key, const std::optional<std::string>& value) {
  if (key.empty()) return absl::InvalidArgumentError("key: must not be empty");
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare(value.has_value() ? "INSERT OR REPLACE INTO _kv(key, value) VALUES (?1, ?2)"
                                     : "DELETE FROM _kv WHERE key = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, key);
  if (value.has_value()) (*stmt)->BindBlob(2, *value);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<std::vector<DeviceStore::OutboxEntry>> DeviceStore::Outbox() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT body, acked_op IS NOT NULL FROM _outbox ORDER BY seq");
  if (!stmt.ok()) return stmt.status();
  std::vector<OutboxEntry> out;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    const absl::string_view body = (*stmt)->ColumnBlob(0);
    OutboxEntry entry;
    if (!entry.mutation.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      (*stmt)->Reset();
      return absl::DataLossError("outbox: a mutation does not parse");
    }
    entry.acknowledged = (*stmt)->ColumnInt(1) != 0;
    out.push_back(std::move(entry));
  }
  (*stmt)->Reset();
  return out;
}

absl::StatusOr<bool> DeviceStore::RecoverClock(int64_t server_time_ms) {
  absl::MutexLock lock(&mu_);
  const int64_t bound_ms = server_time_ms + absl::ToInt64Milliseconds(hlc_.max_skew());
  const int64_t wall_ms = std::max<int64_t>(options_.clock->NowMs(), 0);
  // Nothing to do unless the clock is ahead and the date has been fixed since.
  if (server_time_ms <= 0 || HlcWallMs(hlc_.Peek()) <= bound_ms || wall_ms > bound_ms) {
    return false;
  }
  absl::StatusOr<int64_t> outbox = db_->QueryInt("SELECT count(*) FROM _outbox");
  if (!outbox.ok()) return outbox.status();
  if (*outbox > 0) return false;
  const uint64_t before = hlc_.Peek();
  hlc_.Lower(std::max(HlcPack(wall_ms, 0), max_download_hlc_));
  absl::Status status = records_->SetMeta("max_hlc", static_cast<int64_t>(hlc_.Peek()));
  if (!status.ok()) {
    hlc_.Raise(before);
    return status;
  }
  return hlc_.Peek() < before;
}

}  // namespace kcnet::sync
