#include "server/pgstore/pg_server_store.h"

#include <algorithm>
#include <limits>
#include <random>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/pgstore/pg_schema.h"
#include "sync/schema.h"

namespace kcnet::pgstore {
namespace {

using kcnet::v1::BucketCheckpoint;
using kcnet::v1::BucketCursor;
using kcnet::v1::ChangeBatch;
using kcnet::v1::Conflict;
using kcnet::v1::MutationBatch;
using kcnet::v1::MutationResult;
using kcnet::v1::RecordChange;
using sync::RecordTypeSpec;
using sync::RowState;

PgParam U64(uint64_t value) { return PgParam::Int(static_cast<int64_t>(value)); }

// How long a download page read ahead stays usable (ChangesSince): a device asks for its
// next page within milliseconds; one that does not finds a fresh read.
constexpr absl::Duration kReadAheadMaxAge = absl::Milliseconds(500);

// A row is stored as the change that carries all of it (RowToChange from op 0, without
// its id) and the op of each field, 8 bytes little-endian each, in spec order.
void EncodeRow(const RecordTypeSpec& type, const RowState& row, std::string* change_bytes,
               std::string* field_ops) {
  RecordChange change;
  sync::RowToChange(type, "", row, 0, &change);
  *change_bytes = change.SerializeAsString();
  field_ops->clear();
  for (const sync::FieldState& f : row.fields) {
    for (int i = 0; i < 8; ++i) field_ops->push_back(static_cast<char>(f.op >> (8 * i)));
  }
}

absl::StatusOr<RowState> DecodeRow(const RecordTypeSpec& type, int64_t bucket, uint64_t op,
                                   absl::string_view change_bytes, absl::string_view field_ops) {
  RecordChange change;
  if (!change.ParseFromArray(change_bytes.data(), static_cast<int>(change_bytes.size()))) {
    return absl::DataLossError("kcnet_records.row: does not parse");
  }
  RowState row;
  row.bucket = bucket;
  row.op = op;
  row.deleted = change.deleted();
  row.stamp = sync::Stamp{change.hlc(), change.node()};
  if (row.deleted) return row;
  if (field_ops.size() != 8 * type.fields.size()) {
    // A field the schema added since the row was written: it starts null, at the row's op
    // of 0 (never sent as changed), stamped like the row's baseline.
    if (field_ops.size() > 8 * type.fields.size() || field_ops.size() % 8 != 0) {
      return absl::DataLossError("kcnet_records.field_ops: wrong length");
    }
  }
  row.fields.resize(type.fields.size());
  for (sync::FieldState& f : row.fields) f.stamp = row.stamp;
  for (size_t i = 0; i < type.fields.size() && 8 * i < field_ops.size(); ++i) {
    uint64_t v = 0;
    for (int b = 0; b < 8; ++b) {
      v |= uint64_t{static_cast<unsigned char>(field_ops[8 * i + b])} << (8 * b);
    }
    row.fields[i].op = v;
  }
  for (const kcnet::v1::FieldChange& fc : change.fields()) {
    const int index = type.IndexOf(fc.field());
    if (index < 0) continue;
    sync::FieldState& f = row.fields[index];
    if (fc.has_value()) f.value = fc.value();
    f.stamp = sync::Stamp{fc.hlc() != 0 ? fc.hlc() : change.hlc(),
                          fc.node() != 0 ? fc.node() : change.node()};
  }
  return row;
}

// A download from op 0 (a new device's) sends each record whole: RowToChange(row, 0).
// The stored `row` bytes are exactly that change, without its id (EncodeRow), when the
// row was written under today's schema: every field of the type has an op (none is 0,
// so none was left out) and the change names no field the type does not know. Then the
// download is the stored change plus its id, op and bucket, and the row need not be
// decoded and rebuilt. Parses `change_bytes` into `out`; false when the slow path must
// be taken (`out` then holds whatever was parsed).
bool StoredChangeIsTheDownload(const RecordTypeSpec& type, absl::string_view change_bytes,
                               absl::string_view field_ops, RecordChange* out) {
  if (!out->ParseFromArray(change_bytes.data(), static_cast<int>(change_bytes.size()))) {
    return false;
  }
  if (!out->GetReflection()->GetUnknownFields(*out).empty()) return false;
  if (out->deleted()) return out->fields_size() == 0;
  if (field_ops.size() != 8 * type.fields.size()) return false;
  for (size_t i = 0; i < field_ops.size(); i += 8) {
    uint64_t v = 0;
    for (int b = 0; b < 8; ++b)
      v |= uint64_t{static_cast<unsigned char>(field_ops[i + b])} << (8 * b);
    if (v == 0) return false;
  }
  if (static_cast<size_t>(out->fields_size()) != type.fields.size()) return false;
  for (int i = 0; i < out->fields_size(); ++i) {
    if (out->fields(i).field() != type.fields[static_cast<size_t>(i)].number) return false;
  }
  return true;
}

// Reads a base-128 varint at `*at` in `bytes`; false past the end or past 10 bytes.
bool ReadVarint(absl::string_view bytes, size_t* at, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *at < bytes.size(); shift += 7) {
    const auto b = static_cast<unsigned char>(bytes[(*at)++]);
    *value |= uint64_t{b & 0x7fu} << shift;
    if (b < 0x80) return true;
  }
  return false;
}

// A download from op 0 without parsing (pgsync18b): when the stored `row` bytes are the
// download (the conditions of StoredChangeIsTheDownload), they are appended to `page` as
// they are, followed by the record's id and, when the stored ones differ, its op and
// bucket (a parser keeps the last value of a field). Checked by walking the bytes' fields
// without building a message: only RecordChange's type (equal to `type`), hlc, node,
// deleted, fields (each FieldChange's number, in the type's order, every field present),
// op and bucket; anything else (an unknown field, an id, a base_op, a FieldChange field
// this build does not know) makes it false and the caller takes the slow path. Appends
// nothing when false.
bool SpliceStoredChange(const RecordTypeSpec& type, const char* id16, uint64_t op, int64_t bucket,
                        absl::string_view change_bytes, absl::string_view field_ops,
                        sync::SerializedPage* page) {
  uint64_t stored_type = 0, stored_op = 0, stored_bucket = 0, deleted = 0;
  size_t fields = 0;
  size_t at = 0;
  while (at < change_bytes.size()) {
    uint64_t tag = 0;
    if (!ReadVarint(change_bytes, &at, &tag)) return false;
    const uint64_t number = tag >> 3, wire = tag & 7;
    uint64_t value = 0;
    if (wire == 0) {
      if (!ReadVarint(change_bytes, &at, &value)) return false;
    } else if (wire == 1) {
      if (change_bytes.size() - at < 8) return false;
      at += 8;
    } else if (wire == 2) {
      if (!ReadVarint(change_bytes, &at, &value) || value > change_bytes.size() - at) return false;
    } else {
      return false;
    }
    switch (number) {
      case 1:  // type
        if (wire != 0) return false;
        stored_type = value;
        break;
      case 3:  // hlc
        if (wire != 1) return false;
        break;
      case 4:  // node
        if (wire != 0) return false;
        break;
      case 6:  // deleted
        if (wire != 0) return false;
        deleted = value;
        break;
      case 7: {  // fields: a FieldChange, its number first (as protobuf writes it)
        if (wire != 2) return false;
        const absl::string_view fc = change_bytes.substr(at, value);
        at += value;
        if (fields >= type.fields.size()) return false;
        size_t in = 0;
        uint64_t fc_tag = 0, number_of_field = 0;
        if (!ReadVarint(fc, &in, &fc_tag) || fc_tag != (1 << 3) ||
            !ReadVarint(fc, &in, &number_of_field) ||
            number_of_field != type.fields[fields].number) {
          return false;
        }
        // The rest: value (2, length-delimited), hlc (3, fixed64), node (4, varint).
        while (in < fc.size()) {
          uint64_t t = 0, v = 0;
          if (!ReadVarint(fc, &in, &t)) return false;
          if (t == ((2 << 3) | 2)) {
            if (!ReadVarint(fc, &in, &v) || v > fc.size() - in) return false;
            in += v;
          } else if (t == ((3 << 3) | 1)) {
            if (fc.size() - in < 8) return false;
            in += 8;
          } else if (t == (4 << 3)) {
            if (!ReadVarint(fc, &in, &v)) return false;
          } else {
            return false;
          }
        }
        ++fields;
        break;
      }
      case 8:  // op
        if (wire != 0) return false;
        stored_op = value;
        break;
      case 9:  // bucket
        if (wire != 0) return false;
        stored_bucket = value;
        break;
      default:
        return false;
    }
  }
  if (stored_type != type.type) return false;
  if (deleted != 0) {
    if (fields != 0) return false;
  } else {
    if (fields != type.fields.size() || field_ops.size() != 8 * type.fields.size()) return false;
    for (size_t i = 0; i < field_ops.size(); i += 8) {
      uint64_t v = 0;
      for (int b = 0; b < 8; ++b)
        v |= uint64_t{static_cast<unsigned char>(field_ops[i + b])} << (8 * b);
      if (v == 0) return false;
    }
  }
  char extra[2 + 16 + 2 * 11];
  size_t n = 0;
  extra[n++] = (2 << 3) | 2;  // id, 16 bytes
  extra[n++] = 16;
  std::copy(id16, id16 + 16, extra + n);
  n += 16;
  auto varint_field = [&](int number, uint64_t v) {
    extra[n++] = static_cast<char>(number << 3);
    while (v >= 0x80) {
      extra[n++] = static_cast<char>(v | 0x80);
      v >>= 7;
    }
    extra[n++] = static_cast<char>(v);
  };
  if (stored_op != op) varint_field(8, op);
  if (stored_bucket != static_cast<uint64_t>(bucket))
    varint_field(9, static_cast<uint64_t>(bucket));
  sync::AppendSplicedChange(change_bytes, absl::string_view(extra, n), page);
  return true;
}

uint64_t NewIncarnationId() {
  std::random_device random;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{random()} << 32) ^ random();
  return id;
}

}  // namespace

absl::StatusOr<RowState> DecodeRecordRow(const RecordTypeSpec& type, int64_t bucket, uint64_t op,
                                         absl::string_view change_bytes,
                                         absl::string_view field_ops) {
  return DecodeRow(type, bucket, op, change_bytes, field_ops);
}

PgServerStore::PgServerStore(const sync::Schema* schema, sync::ServerStoreOptions options,
                             PgServerStoreOptions pg_options)
    : MergingServerStore(schema, std::move(options)), pg_options_(std::move(pg_options)) {}

absl::Status PgServerStore::BeginIncarnation(const std::string& conninfo, bool restored,
                                             sync::Clock* clock) {
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  PgConn& db = **conn;
  absl::StatusOr<PgResult> tables = db.Query(
      "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND "
      "tablename IN ('kcnet_meta', 'kcnet_bucket_head', 'kcnet_handback_closed')");
  if (!tables.ok()) return tables.status();
  if (tables->GetInt(0, 0) != 3) {
    return absl::FailedPreconditionError("the database holds no kcnet server store");
  }
  // A running instance keeps the incarnation it read at start: refuse while any is
  // connected (as `kcnet-admin restore` refuses while the SQLite server runs).
  absl::StatusOr<PgResult> others = db.Query(
      "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
      "pid <> pg_backend_pid() AND backend_type = 'client backend'");
  if (!others.ok()) return others.status();
  if (others->GetInt(0, 0) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "hãy dừng mọi kcnet-server trước / stop every kcnet-server first: ", others->GetInt(0, 0),
        " other connection(s) to the database"));
  }
  absl::Status status = db.Exec("BEGIN");
  if (!status.ok()) return status;
  auto set = [&db](const std::string& key, int64_t value) {
    return db
        .Query(
            "INSERT INTO kcnet_meta(key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            {PgParam::Text(key), PgParam::Int(value)})
        .status();
  };
  absl::StatusOr<PgResult> last =
      db.Query("SELECT coalesce(max(last_op), 0) FROM kcnet_bucket_head");
  status = last.status();
  if (status.ok()) status = set("incarnation", static_cast<int64_t>(NewIncarnationId()));
  if (status.ok()) status = set("incarnation_op", last->GetInt(0, 0));
  if (status.ok()) status = set("restored_ms", restored ? clock->NowMs() : 0);
  // A backup may carry the closed hand-backs of an earlier restore: this one starts afresh.
  if (status.ok()) status = db.Exec("DELETE FROM kcnet_handback_closed");
  if (status.ok()) status = db.Exec("COMMIT");
  if (!status.ok()) {
    db.Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return absl::OkStatus();
}

PgServerStore::~PgServerStore() {
  watch_.reset();  // the watcher tells our listeners: stop it first
}

int32_t PgServerStore::ProvinceOf(int64_t bucket) const {
  return pg_options_.province_of ? pg_options_.province_of(bucket) : 0;
}

int32_t PgServerStore::PartitionOf(int64_t bucket) const {
  auto it = heads_.find(bucket);
  return it != heads_.end() ? it->second.province : ProvinceOf(bucket);
}

absl::StatusOr<std::unique_ptr<PgServerStore>> PgServerStore::Open(
    const std::string& conninfo, const sync::Schema* schema, sync::ServerStoreOptions options,
    PgServerStoreOptions pg_options) {
  const int reader_count = std::max(1, options.reader_connections);
  std::unique_ptr<PgServerStore> store(
      new PgServerStore(schema, std::move(options), std::move(pg_options)));
  store->conninfo_ = conninfo;
  // The op log migrates the schema and watches the bucket heads for other instances.
  PgOpLogOptions log_options;
  log_options.province_of = store->pg_options_.province_of;
  log_options.reader_connections = 1;
  log_options.poll_interval = store->pg_options_.poll_interval;
  absl::StatusOr<std::unique_ptr<PgOpLog>> log = PgOpLog::Open(conninfo, log_options);
  if (!log.ok()) return log.status();
  store->watch_ = std::move(*log);
  {
    absl::MutexLock lock(&store->mu_);
    absl::StatusOr<PgConn*> conn = store->Writer();
    if (!conn.ok()) return conn.status();
    PgConn& db = **conn;
    // A database without an incarnation is new: it begins one (the first instance wins).
    absl::Status status =
        db.Query(
              "INSERT INTO kcnet_meta(key, value) VALUES ('incarnation', $1), "
              "('incarnation_op', (SELECT coalesce(max(last_op), 0) FROM kcnet_bucket_head)) "
              "ON CONFLICT (key) DO NOTHING",
              {U64(NewIncarnationId())})
            .status();
    if (!status.ok()) return status;
    absl::StatusOr<PgResult> meta = db.Query("SELECT key, value FROM kcnet_meta");
    if (!meta.ok()) return meta.status();
    for (int r = 0; r < meta->rows(); ++r) {
      const absl::string_view key = meta->Get(r, 0);
      const int64_t value = meta->GetInt(r, 1);
      if (key == "incarnation") store->incarnation_.id = static_cast<uint64_t>(value);
      if (key == "incarnation_op") store->incarnation_.base_op = static_cast<uint64_t>(value);
      if (key == "restored_ms") store->incarnation_.restored_ms = value;
      if (key == "max_hlc") store->hlc_.Raise(static_cast<uint64_t>(value));
    }
    absl::StatusOr<PgResult> last =
        db.Query("SELECT coalesce(max(last_op), 0) FROM kcnet_bucket_head");
    if (!last.ok()) return last.status();
    store->last_op_ = static_cast<uint64_t>(last->GetInt(0, 0));
  }
  for (int i = 0; i < reader_count; ++i) {
    auto reader = std::make_unique<Reader>();
    absl::MutexLock lock(&reader->mu);
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
    if (!conn.ok()) return conn.status();
    reader->conn = std::move(*conn);
    store->readers_.push_back(std::move(reader));
  }
  // Commits of every instance (ours too) reach the listeners through the watcher.
  PgServerStore* raw = store.get();
  store->watch_->SetCommitListener([raw](const std::vector<int64_t>& buckets, uint64_t op) {
    raw->BumpEpochs(buckets);  // another instance's commit: pages read ahead are stale
    raw->TellListeners(buckets, op);
  });
  return store;
}

absl::StatusOr<PgConn*> PgServerStore::Writer() {
  if (writer_ == nullptr || !writer_->ok()) {
    writer_.reset();
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo_);
    if (!conn.ok()) return conn.status();
    writer_ = std::move(*conn);
    if (!options_.durable) {
      absl::Status status = writer_->Exec("SET synchronous_commit = off");
      if (!status.ok()) return status;
    }
  }
  return writer_.get();
}

// --- The group's transaction -----------------------------------------------------------

absl::Status PgServerStore::BeginGroup(const std::vector<const MutationBatch*>& batches,
                                       const std::vector<std::string>& devices) {
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  PgConn& db = **conn;
  // What the group may write: the buckets new records name, and the stored records'.
  std::vector<int64_t> buckets;
  std::vector<int64_t> types;
  std::vector<std::string> ids;
  size_t changes = 0;
  for (const MutationBatch* batch : batches) {
    for (const kcnet::v1::Mutation& m : batch->mutations()) {
      for (const RecordChange& c : m.changes()) {
        ++changes;
        if (c.bucket() != 0) buckets.push_back(c.bucket());
        const RecordTypeSpec* spec = schema_->Find(c.type());
        if (spec == nullptr) continue;
        for (const kcnet::v1::FieldChange& f : c.fields()) {
          if (f.field() == spec->bucket_field &&
              f.value().kind_case() == kcnet::v1::Value::kIntValue) {
            buckets.push_back(f.value().int_value());
          }
        }
        absl::StatusOr<std::string> id = sync::UuidToText(c.id());
        if (!id.ok()) continue;
        types.push_back(c.type());
        ids.push_back(*id);
      }
    }
  }
  // Partitions are created outside the transaction (DDL that other instances may race).
  for (int64_t bucket : buckets) {
    const int32_t province = ProvinceOf(bucket);
    if (partitions_.contains(province)) continue;
    absl::Status status = EnsureRecordsPartition(db, province);
    if (!status.ok()) return status;
    partitions_.insert(province);
  }
  // New buckets' head rows are made outside the transaction too, committed before any op
  // id is drawn for them: a download waits on the head rows of its buckets for writers in
  // flight (ChangesSince), and an uncommitted row could not be waited on. Head rows are
  // never deleted, so a bucket whose row this instance made (or found) once is skipped.
  using Kind = PgBinaryArray::Type;
  {
    std::vector<int64_t> unseen;
    for (int64_t bucket : buckets) {
      if (!heads_seen_.contains(bucket)) unseen.push_back(bucket);
    }
    std::sort(unseen.begin(), unseen.end());
    unseen.erase(std::unique(unseen.begin(), unseen.end()), unseen.end());
    if (!unseen.empty()) {
      std::vector<int64_t> provinces;
      for (int64_t bucket : unseen) provinces.push_back(ProvinceOf(bucket));
      absl::Status made = db.Prepared(
                                "INSERT INTO kcnet_bucket_head(bucket, province) "
                                "SELECT b, p FROM unnest($1::bigint[], $2::int[]) AS t(b, p) "
                                "ORDER BY b ON CONFLICT (bucket) DO NOTHING",
                                {PgBinaryArray::Ints(Kind::kInt8, unseen),
                                 PgBinaryArray::Ints(Kind::kInt4, provinces)})
                              .status();
      if (!made.ok()) return made;
      heads_seen_.insert(unseen.begin(), unseen.end());
    }
  }
  const PgParam type_array = PgBinaryArray::Ints(Kind::kInt4, types);
  const PgParam id_array = PgBinaryArray::Texts(ids);
  // Round trip 1: BEGIN, and the buckets of the group's stored records (one statement).
  in_group_ = true;  // from here a failure rolls back (AbandonGroup)
  {
    PgConn::Pipeline first;
    first.Add("BEGIN", {});
    if (!ids.empty()) {
      first.AddPrepared(
          "SELECT DISTINCT r.bucket FROM kcnet_records r "
          "JOIN unnest($1::int[], $2::text[]) AS k(type, id) ON r.type = k.type AND r.id = k.id",
          {type_array, id_array}, /*binary_results=*/true);
    }
    absl::StatusOr<std::vector<PgResult>> results = db.Run(first);
    if (!results.ok()) return results.status();
    if (results->size() > 1) {
      const PgResult& rows = (*results)[1];
      for (int r = 0; r < rows.rows(); ++r) buckets.push_back(rows.GetBinaryInt(r, 0));
    }
  }
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  heads_.clear();
  std::vector<std::string> tracked;
  for (const std::string& device : devices) {
    if (!device.empty()) tracked.push_back(device);
  }
  std::sort(tracked.begin(), tracked.end());
  tracked.erase(std::unique(tracked.begin(), tracked.end()), tracked.end());
  // Round trip 2, in this order (a pipeline runs its statements one after the other):
  //  - the head rows: created when new, then locked sorted by bucket (no deadlock between
  //    two groups), before any op id is drawn: see the header;
  //  - the pushing devices' rows: created when new and locked, sorted (two instances
  //    serving one device apply its pushes in turn; the insert makes the second wait for
  //    the first even for a device never seen);
  //  - the group's records, read once now that their buckets are locked: a record another
  //    instance wrote in a locked bucket is visible (it committed before we got the lock);
  //  - the op ids: at most one per change, one more for safety.
  PgConn::Pipeline second;
  int heads_at = -1, devices_at = -1, records_at = -1;
  int items = 0;
  if (!buckets.empty()) {
    std::vector<int64_t> provinces;
    for (int64_t bucket : buckets) provinces.push_back(ProvinceOf(bucket));
    const PgParam bucket_array = PgBinaryArray::Ints(Kind::kInt8, buckets);
    second.AddPrepared(
        "INSERT INTO kcnet_bucket_head(bucket, province) "
        "SELECT b, p FROM unnest($1::bigint[], $2::int[]) AS t(b, p) ORDER BY b "
        "ON CONFLICT (bucket) DO NOTHING",
        {bucket_array, PgBinaryArray::Ints(Kind::kInt4, provinces)});
    second.AddPrepared(
        "SELECT bucket, last_op, checksum, records, province FROM kcnet_bucket_head "
        "WHERE bucket = ANY($1::bigint[]) ORDER BY bucket FOR UPDATE",
        {bucket_array}, /*binary_results=*/true);
    heads_at = items + 1;
    items += 2;
  }
  if (!tracked.empty()) {
    const PgParam device_array = PgBinaryArray::Texts(tracked);
    second.AddPrepared(
        "INSERT INTO kcnet_devices(device_id, last_seq) SELECT d, 0 FROM "
        "unnest($1::text[]) AS t(d) ORDER BY d ON CONFLICT (device_id) DO NOTHING",
        {device_array});
    second.AddPrepared(
        "SELECT device_id, last_seq FROM kcnet_devices WHERE device_id = ANY($1::text[]) "
        "ORDER BY device_id FOR UPDATE",
        {device_array}, /*binary_results=*/true);
    devices_at = items + 1;
    items += 2;
  }
  if (!ids.empty()) {
    second.AddPrepared(
        "SELECT r.type, r.id, r.bucket, r.op, r.row, r.field_ops FROM kcnet_records r "
        "JOIN unnest($1::int[], $2::text[]) AS k(type, id) ON r.type = k.type AND r.id = k.id",
        {type_array, id_array}, /*binary_results=*/true);
    records_at = items++;
  }
  second.AddPrepared("SELECT nextval('kcnet_op_seq') FROM generate_series(1, $1::int)",
                     {PgParam::Int(static_cast<int64_t>(changes + 1))},
                     /*binary_results=*/true);
  const int ids_at = items++;
  absl::StatusOr<std::vector<PgResult>> results = db.Run(second);
  if (!results.ok()) return results.status();
  if (heads_at >= 0) {
    const PgResult& rows = (*results)[static_cast<size_t>(heads_at)];
    for (int r = 0; r < rows.rows(); ++r) {
      Head& head = heads_[rows.GetBinaryInt(r, 0)];
      head.last_op = static_cast<uint64_t>(rows.GetBinaryInt(r, 1));
      head.checksum = static_cast<uint64_t>(rows.GetBinaryInt(r, 2));
      head.records = rows.GetBinaryInt(r, 3);
      head.province = static_cast<int32_t>(rows.GetBinaryInt(r, 4));
    }
  }
  if (devices_at >= 0) {
    const PgResult& rows = (*results)[static_cast<size_t>(devices_at)];
    for (int r = 0; r < rows.rows(); ++r) {
      last_seqs_[std::string(rows.Get(r, 0))] = static_cast<uint64_t>(rows.GetBinaryInt(r, 1));
    }
  }
  if (records_at >= 0) {
    for (size_t i = 0; i < ids.size(); ++i) {
      rows_[RowKey(static_cast<uint32_t>(types[i]), ids[i])] = std::nullopt;  // absent
    }
    const PgResult& rows = (*results)[static_cast<size_t>(records_at)];
    for (int r = 0; r < rows.rows(); ++r) {
      const RecordTypeSpec* type = schema_->Find(static_cast<uint32_t>(rows.GetBinaryInt(r, 0)));
      if (type == nullptr) continue;
      absl::StatusOr<RowState> row =
          DecodeRow(*type, rows.GetBinaryInt(r, 2), static_cast<uint64_t>(rows.GetBinaryInt(r, 3)),
                    rows.Get(r, 4), rows.Get(r, 5));
      if (!row.ok()) return row.status();
      rows_[RowKey(type->type, std::string(rows.Get(r, 1)))] = std::move(*row);
    }
  }
  ids_.clear();
  next_id_ = 0;
  const PgResult& drawn = (*results)[static_cast<size_t>(ids_at)];
  for (int r = 0; r < drawn.rows(); ++r) {
    ids_.push_back(static_cast<uint64_t>(drawn.GetBinaryInt(r, 0)));
  }
  std::sort(ids_.begin(), ids_.end());
  unit_heads_.clear();
  return absl::OkStatus();
}

uint64_t PgServerStore::NextOp() {
  if (next_id_ < ids_.size()) {
    last_op_ = std::max(last_op_, ids_[next_id_]);
    return ids_[next_id_++];
  }
  // Never expected (one op per change at most): draw one more, and fail the group if even
  // that fails, so that no id is ever made up.
  absl::StatusOr<PgResult> more = writer_->Query("SELECT nextval('kcnet_op_seq')");
  if (!more.ok()) {
    group_failed_ = more.status();
    return ++last_op_;
  }
  const uint64_t id = static_cast<uint64_t>(more->GetInt(0, 0));
  last_op_ = std::max(last_op_, id);
  return id;
}

absl::Status PgServerStore::CommitGroup(uint64_t max_hlc, std::vector<int64_t>* touched) {
  if (!group_failed_.ok()) return std::exchange(group_failed_, absl::OkStatus());
  PgConn& db = *writer_;
  using Kind = PgBinaryArray::Type;
  // The group's writes and its COMMIT in one pipeline (one round trip), of prepared
  // statements: records and push digests as arrays bound in binary, one statement per
  // kRowsPerStatement rows, so the server neither parses nor plans per group. A pipeline
  // longer than kPipelineItems is sent in parts (bounded so that neither side's socket
  // buffer fills while the other waits).
  constexpr size_t kPipelineItems = 1000;
  constexpr size_t kRowsPerStatement = 2000;
  PgConn::Pipeline pipeline;
  auto send = [&db, &pipeline]() -> absl::Status {
    if (pipeline.size() == 0) return absl::OkStatus();
    absl::Status sent = db.Run(pipeline).status();
    pipeline = PgConn::Pipeline();
    return sent;
  };
  auto add = [&](std::string sql, std::vector<PgParam> params) -> absl::Status {
    pipeline.AddPrepared(std::move(sql), std::move(params));
    if (pipeline.size() >= kPipelineItems) return send();
    return absl::OkStatus();
  };
  for (Statement& statement : statements_) {
    if (absl::Status sent = add(std::move(statement.sql), std::move(statement.params));
        !sent.ok()) {
      return sent;
    }
  }
  // A record now in another province than where it is stored (moved to a commune of
  // another province, or its commune moved by a reorganisation) leaves its old partition:
  // the upsert below only replaces a row of the same province.
  // (With every row in partition 0 and no province map, nothing can have moved.)
  bool any_partition = false;
  for (const RowKey& key : dirty_)
    any_partition = any_partition || PartitionOf(rows_[key]->bucket) != 0;
  const bool may_move = pg_options_.province_of || any_partition;
  // In op order: a bucket's rows then lie in the heap in the order a download reads them
  // (its index on (province, bucket, op)), a few heap pages per page of 1,000 instead of
  // one page per row.
  std::vector<std::pair<uint64_t, RowKey>> by_op;
  by_op.reserve(dirty_.size());
  for (const RowKey& key : dirty_) by_op.emplace_back(rows_[key]->op, key);
  std::sort(by_op.begin(), by_op.end());
  std::vector<RowKey> keys;
  keys.reserve(by_op.size());
  for (auto& entry : by_op) keys.push_back(std::move(entry.second));
  for (size_t from = 0; from < keys.size(); from += kRowsPerStatement) {
    const size_t to = std::min(keys.size(), from + kRowsPerStatement);
    PgBinaryArray provinces(Kind::kInt4), buckets(Kind::kInt8), types(Kind::kInt4),
        ids(Kind::kText), ops(Kind::kInt8), deleted(Kind::kBool), changes(Kind::kBytea),
        field_ops(Kind::kBytea);
    std::string change_bytes, field_op_bytes;
    for (size_t i = from; i < to; ++i) {
      const RowKey& key = keys[i];
      const RowState& row = *rows_[key];
      const RecordTypeSpec& type = *schema_->Find(key.first);
      EncodeRow(type, row, &change_bytes, &field_op_bytes);
      provinces.AddInt(PartitionOf(row.bucket));
      buckets.AddInt(row.bucket);
      types.AddInt(type.type);
      ids.AddBytes(key.second);
      ops.AddInt(static_cast<int64_t>(row.op));
      deleted.AddBool(row.deleted);
      changes.AddBytes(change_bytes);
      field_ops.AddBytes(field_op_bytes);
    }
    const PgParam type_array = types.Finish();
    const PgParam id_array = ids.Finish();
    const PgParam province_array = provinces.Finish();
    if (may_move) {
      absl::Status sent =
          add("DELETE FROM kcnet_records r USING unnest($1::int[], $2::text[], $3::int[]) "
              "AS k(type, id, province) WHERE r.type = k.type AND r.id = k.id "
              "AND r.province <> k.province",
              {type_array, id_array, province_array});
      if (!sent.ok()) return sent;
    }
    absl::Status sent =
        add("INSERT INTO kcnet_records(province, bucket, type, id, op, deleted, row, field_ops) "
            "SELECT * FROM unnest($1::int[], $2::bigint[], $3::int[], $4::text[], $5::bigint[], "
            "$6::boolean[], $7::bytea[], $8::bytea[]) "
            "ON CONFLICT (province, type, id) DO UPDATE SET bucket = EXCLUDED.bucket, "
            "op = EXCLUDED.op, deleted = EXCLUDED.deleted, row = EXCLUDED.row, "
            "field_ops = EXCLUDED.field_ops",
            {province_array, buckets.Finish(), type_array, id_array, ops.Finish(), deleted.Finish(),
             changes.Finish(), field_ops.Finish()});
    if (!sent.ok()) return sent;
  }
  // Push digests: the last one of each (device, seq), so no statement names a key twice.
  {
    absl::flat_hash_map<std::pair<std::string, uint64_t>, size_t> last;
    for (size_t i = 0; i < pushes_.size(); ++i) last[{pushes_[i].device_id, pushes_[i].seq}] = i;
    std::vector<size_t> order;
    for (size_t i = 0; i < pushes_.size(); ++i) {
      if (last[{pushes_[i].device_id, pushes_[i].seq}] == i) order.push_back(i);
    }
    for (size_t from = 0; from < order.size(); from += kRowsPerStatement) {
      const size_t to = std::min(order.size(), from + kRowsPerStatement);
      PgBinaryArray devices(Kind::kText), seqs(Kind::kInt8), digests(Kind::kInt8);
      for (size_t i = from; i < to; ++i) {
        const Push& push = pushes_[order[i]];
        devices.AddBytes(push.device_id);
        seqs.AddInt(static_cast<int64_t>(push.seq));
        digests.AddInt(static_cast<int64_t>(push.digest));
      }
      absl::Status sent =
          add("INSERT INTO kcnet_pushes(device_id, seq, digest) "
              "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) "
              "ON CONFLICT (device_id, seq) DO UPDATE SET digest = EXCLUDED.digest",
              {devices.Finish(), seqs.Finish(), digests.Finish()});
      if (!sent.ok()) return sent;
    }
  }
  std::vector<int64_t> buckets, ops, checksums, records;
  for (const auto& [bucket, head] : heads_) {
    if (!head.touched) continue;
    buckets.push_back(bucket);
    ops.push_back(static_cast<int64_t>(head.last_op));
    checksums.push_back(static_cast<int64_t>(head.checksum));
    records.push_back(head.records);
  }
  if (!buckets.empty()) {
    absl::Status sent = add(
        "UPDATE kcnet_bucket_head h SET last_op = t.o, checksum = t.c, records = t.r "
        "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) "
        "AS t(b, o, c, r) WHERE h.bucket = t.b",
        {PgBinaryArray::Ints(Kind::kInt8, buckets), PgBinaryArray::Ints(Kind::kInt8, ops),
         PgBinaryArray::Ints(Kind::kInt8, checksums), PgBinaryArray::Ints(Kind::kInt8, records)});
    if (!sent.ok()) return sent;
    sent =
        add("INSERT INTO kcnet_meta(key, value) VALUES ('max_hlc', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = greatest(kcnet_meta.value, EXCLUDED.value)",
            {U64(max_hlc)});
    if (!sent.ok()) return sent;
  }
  pipeline.Add("COMMIT", {});
  if (absl::Status sent = send(); !sent.ok()) return sent;
  in_group_ = false;
  std::sort(buckets.begin(), buckets.end());
  // Before Apply answers: a device's next page after its write is never one read ahead
  // from before it.
  BumpEpochs(buckets);
  *touched = buckets;
  ClearGroup();
  // The other instances hear of it (after the commit, never inside it).
  if (!buckets.empty()) watch_->Announce(last_op_);
  return absl::OkStatus();
}

void PgServerStore::AbandonGroup() {
  if (in_group_ && writer_ != nullptr && writer_->ok()) writer_->Exec("ROLLBACK").IgnoreError();
  in_group_ = false;
  ClearGroup();
}

void PgServerStore::ClearGroup() {
  heads_.clear();
  unit_heads_.clear();
  ids_.clear();
  next_id_ = 0;
  group_failed_ = absl::OkStatus();
  rows_.clear();
  dirty_.clear();
  statements_.clear();
  undo_.clear();
  unit_statements_ = 0;
  last_seqs_.clear();
  digests_.clear();
  refusals_.clear();
  forgotten_.clear();
  closed_.clear();
  pushes_.clear();
}

absl::Status PgServerStore::BeginUnit() {
  unit_heads_.clear();
  undo_.clear();
  unit_statements_ = statements_.size();
  return absl::OkStatus();
}

absl::Status PgServerStore::KeepUnit() {
  unit_heads_.clear();
  undo_.clear();
  return absl::OkStatus();
}

absl::Status PgServerStore::RollBackUnit() {
  for (const auto& [bucket, before] : unit_heads_) heads_[bucket] = before;
  unit_heads_.clear();
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    if (it->known) {
      rows_[it->key] = it->before;
    } else {
      rows_.erase(it->key);
    }
    if (!it->was_dirty) dirty_.erase(it->key);
  }
  undo_.clear();
  statements_.resize(unit_statements_);
  return absl::OkStatus();
}

// --- Rows ------------------------------------------------------------------------------

absl::StatusOr<std::optional<RowState>> PgServerStore::LoadRow(const RecordTypeSpec& type,
                                                               const std::string& id_text) {
  if (in_group_) {
    auto it = rows_.find(RowKey(type.type, id_text));
    if (it != rows_.end()) return it->second;
  }
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  absl::StatusOr<PgResult> rows = (*conn)->QueryBinary(
      "SELECT bucket, op, row, field_ops FROM kcnet_records WHERE type = $1 AND id = $2",
      {PgParam::Int(type.type), PgParam::Text(id_text)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() == 0) return std::optional<RowState>();
  absl::StatusOr<RowState> row =
      DecodeRow(type, rows->GetBinaryInt(0, 0), static_cast<uint64_t>(rows->GetBinaryInt(0, 1)),
                rows->Get(0, 2), rows->Get(0, 3));
  if (!row.ok()) return row.status();
  if (in_group_) rows_[RowKey(type.type, id_text)] = *row;
  return std::optional<RowState>(std::move(*row));
}

absl::StatusOr<std::vector<int64_t>> PgServerStore::BucketsWrittenElsewhere(
    const std::vector<int64_t>& buckets) {
  std::vector<int64_t> busy;
  std::vector<int64_t> others;
  for (int64_t bucket : buckets) {
    if (!heads_.contains(bucket)) others.push_back(bucket);
  }
  if (!in_group_ || others.empty()) return busy;
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  // A row another transaction holds FOR UPDATE is skipped (that writer is in flight); the
  // others are locked FOR KEY SHARE until this group ends, so no writer starts on them.
  absl::StatusOr<PgResult> rows = (*conn)->Query(
      "WITH free AS (SELECT bucket FROM kcnet_bucket_head WHERE bucket = ANY($1::bigint[]) "
      "  FOR KEY SHARE SKIP LOCKED) "
      "SELECT bucket FROM kcnet_bucket_head WHERE bucket = ANY($1::bigint[]) "
      "AND bucket NOT IN (SELECT bucket FROM free)",
      {PgParam::Text(IntArray(others))});
  if (!rows.ok()) return rows.status();
  for (int r = 0; r < rows->rows(); ++r) busy.push_back(rows->GetInt(r, 0));
  return busy;
}

absl::Status PgServerStore::StoreRow(const RecordTypeSpec& type, const std::string& id_text,
                                     const std::optional<RowState>& old, const RowState& row) {
  auto head = heads_.find(row.bucket);
  if (head == heads_.end()) {
    // Not locked before the ids were drawn (a record another instance created meanwhile):
    // writing would break the bucket's order. The group fails; each batch is then applied
    // alone, and finds the bucket up front.
    return absl::AbortedError(
        absl::StrCat("bucket ", row.bucket, " was not locked by this transaction; try again"));
  }
  if (!unit_heads_.contains(row.bucket)) unit_heads_[row.bucket] = head->second;
  Head& h = head->second;
  h.checksum += sync::HashRecordRow(type.type, &type, id_text, row, &hash_buffer_);
  if (old.has_value())
    h.checksum -= sync::HashRecordRow(type.type, &type, id_text, *old, &hash_buffer_);
  h.records += (row.deleted ? 0 : 1) - ((old.has_value() && !old->deleted) ? 1 : 0);
  h.last_op = std::max(h.last_op, row.op);
  h.touched = true;
  RowKey key(type.type, id_text);
  auto known = rows_.find(key);
  Undo undo{key, known != rows_.end(), std::nullopt, dirty_.contains(key)};
  if (undo.known) undo.before = known->second;
  undo_.push_back(std::move(undo));
  rows_[key] = row;
  dirty_.insert(std::move(key));
  return absl::OkStatus();
}

// --- Devices, refusals, digests, hand-backs, conflicts (inside the group) -----------------

absl::StatusOr<uint64_t> PgServerStore::LoadLastSeq(const std::string& device_id) {
  auto known = last_seqs_.find(device_id);
  if (known != last_seqs_.end()) return known->second;
  // Locked: two instances serving the same device (a reconnect) apply its pushes in turn.
  absl::StatusOr<PgResult> rows =
      writer_->Query("SELECT last_seq FROM kcnet_devices WHERE device_id = $1 FOR UPDATE",
                     {PgParam::Text(device_id)});
  if (!rows.ok()) return rows.status();
  return rows->rows() > 0 ? static_cast<uint64_t>(rows->GetInt(0, 0)) : 0;
}

absl::Status PgServerStore::SaveLastSeq(const std::string& device_id, uint64_t node, uint64_t seq) {
  last_seqs_[device_id] = seq;
  statements_.push_back(
      {"INSERT INTO kcnet_devices(device_id, node, last_seq) VALUES ($1, $2, $3) "
       "ON CONFLICT (device_id) DO UPDATE SET node = EXCLUDED.node, last_seq = "
       "EXCLUDED.last_seq",
       {PgParam::Text(device_id), U64(node), U64(seq)}});
  return absl::OkStatus();
}

absl::Status PgServerStore::ForgetRefusals(const std::string& device_id, uint64_t through) {
  for (auto it = refusals_.begin(); it != refusals_.end();) {
    auto here = it++;
    if (here->first.first == device_id && here->first.second <= through) refusals_.erase(here);
  }
  uint64_t& forgotten = forgotten_[device_id];
  forgotten = std::max(forgotten, through);
  statements_.push_back({"DELETE FROM kcnet_refusals WHERE device_id = $1 AND seq <= $2",
                         {PgParam::Text(device_id), U64(through)}});
  return absl::OkStatus();
}

absl::StatusOr<std::optional<MutationResult>> PgServerStore::RememberedRefusal(
    const std::string& device_id, uint64_t seq) {
  auto known = refusals_.find({device_id, seq});
  if (known != refusals_.end()) return std::optional<MutationResult>(known->second);
  auto forgotten = forgotten_.find(device_id);
  if (forgotten != forgotten_.end() && seq <= forgotten->second) {
    return std::optional<MutationResult>();
  }
  absl::StatusOr<PgResult> rows =
      writer_->QueryBinary("SELECT result FROM kcnet_refusals WHERE device_id = $1 AND seq = $2",
                           {PgParam::Text(device_id), U64(seq)});
  if (!rows.ok()) return rows.status();
  std::optional<MutationResult> out;
  if (rows->rows() > 0) {
    out.emplace();
    const absl::string_view bytes = rows->Get(0, 0);
    if (!out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError("a remembered refusal does not parse");
    }
  }
  return out;
}

absl::Status PgServerStore::RememberRefusal(const std::string& device_id, uint64_t seq,
                                            const MutationResult& result) {
  refusals_[{device_id, seq}] = result;
  statements_.push_back(
      {"INSERT INTO kcnet_refusals(device_id, seq, result) VALUES ($1, $2, $3) "
       "ON CONFLICT (device_id, seq) DO UPDATE SET result = EXCLUDED.result",
       {PgParam::Text(device_id), U64(seq), PgParam::Bytes(result.SerializeAsString())}});
  return absl::OkStatus();
}

absl::StatusOr<std::optional<uint64_t>> PgServerStore::PushDigest(const std::string& device_id,
                                                                  uint64_t seq) {
  auto known = digests_.find({device_id, seq});
  if (known != digests_.end()) return std::optional<uint64_t>(known->second);
  absl::StatusOr<PgResult> rows =
      writer_->Query("SELECT digest FROM kcnet_pushes WHERE device_id = $1 AND seq = $2",
                     {PgParam::Text(device_id), U64(seq)});
  if (!rows.ok()) return rows.status();
  std::optional<uint64_t> out;
  if (rows->rows() > 0) out = static_cast<uint64_t>(rows->GetInt(0, 0));
  return out;
}

absl::Status PgServerStore::RememberPush(const std::string& device_id, uint64_t seq,
                                         uint64_t digest) {
  digests_[{device_id, seq}] = digest;
  pushes_.push_back({device_id, seq, digest});
  return absl::OkStatus();
}

absl::StatusOr<bool> PgServerStore::HandbacksClosed(const std::string& device_id) {
  if (closed_.contains(device_id)) return true;
  absl::StatusOr<PgResult> rows = writer_->Query(
      "SELECT 1 FROM kcnet_handback_closed WHERE device_id = $1", {PgParam::Text(device_id)});
  if (!rows.ok()) return rows.status();
  return rows->rows() > 0;
}

absl::Status PgServerStore::CloseHandbacks(const std::string& device_id) {
  closed_.insert(device_id);
  statements_.push_back(
      {"INSERT INTO kcnet_handback_closed(device_id) VALUES ($1) ON CONFLICT DO NOTHING",
       {PgParam::Text(device_id)}});
  return absl::OkStatus();
}

absl::Status PgServerStore::RecordConflict(Conflict* conflict) {
  conflict->clear_id();  // the body is stored without its id; the row's key is the id
  absl::StatusOr<PgResult> id =
      writer_->Query("SELECT nextval(pg_get_serial_sequence('kcnet_conflicts', 'id'))");
  if (!id.ok()) return id.status();
  statements_.push_back({"INSERT INTO kcnet_conflicts(id, bucket, body) VALUES ($1, $2, $3)",
                         {PgParam::Int(id->GetInt(0, 0)), PgParam::Int(conflict->bucket()),
                          PgParam::Bytes(conflict->SerializeAsString())}});
  conflict->set_id(static_cast<uint64_t>(id->GetInt(0, 0)));
  return absl::OkStatus();
}

absl::Status PgServerStore::MarkConflictResolvedLocked(uint64_t id) {
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  // Conditional: of two coordinators resolving the same conflict, one wins.
  absl::StatusOr<PgResult> rows = (*conn)->Query(
      "UPDATE kcnet_conflicts SET resolved = true WHERE id = $1 AND NOT resolved RETURNING id",
      {U64(id)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() > 0) return absl::OkStatus();
  rows = (*conn)->Query("SELECT 1 FROM kcnet_conflicts WHERE id = $1", {U64(id)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() == 0)
    return absl::NotFoundError(absl::StrCat("id: conflict ", id, " not found"));
  return absl::FailedPreconditionError(absl::StrCat("id: conflict ", id, " is already resolved"));
}

absl::Status PgServerStore::MarkConflictResolved(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return MarkConflictResolvedLocked(id);
}

// --- Reads -----------------------------------------------------------------------------

absl::Status PgServerStore::WithReader(const std::function<absl::Status(PgConn& conn)>& fn) {
  return WithReader(nullptr, fn);
}

absl::Status PgServerStore::WithReader(
    const std::function<absl::Status(PgConn& conn)>& before_snapshot,
    const std::function<absl::Status(PgConn& conn)>& fn) {
  return WithReaderConnection([&](PgConn& conn) -> absl::Status {
    absl::Status status = before_snapshot ? before_snapshot(conn) : absl::OkStatus();
    if (status.ok()) status = conn.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (status.ok()) status = fn(conn);
    if (status.ok()) status = conn.Exec("COMMIT");
    return status;
  });
}

absl::Status PgServerStore::WithReaderConnection(
    const std::function<absl::Status(PgConn& conn)>& fn) {
  return WithReaderFor(nullptr, [&fn](Reader& reader) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    reader.ahead.reset();  // the connection drops its pending results when next used
    return fn(*reader.conn);
  });
}

absl::Status PgServerStore::WithReaderFor(const ReadAhead* wanted,
                                          const std::function<absl::Status(Reader&)>& fn) {
  const size_t n = readers_.size();
  const size_t start = next_reader_.fetch_add(1, std::memory_order_relaxed) % n;
  Reader* reader = nullptr;
  // The reader holding the page read ahead for this call; else a free one holding none
  // (not to drop another download's); else any free one; else wait for one.
  auto pick = [&](auto&& fits) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (size_t i = 0; i < n && reader == nullptr; ++i) {
      Reader* candidate = readers_[(start + i) % n].get();
      if (!candidate->mu.TryLock()) continue;
      if (fits(*candidate)) {
        reader = candidate;
      } else {
        candidate->mu.Unlock();
      }
    }
  };
  if (wanted != nullptr) {
    pick([wanted](const Reader& r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return r.ahead.has_value() && r.ahead->bucket == wanted->bucket &&
             r.ahead->op == wanted->op && r.ahead->budget == wanted->budget;
    });
  }
  pick([](const Reader& r) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !r.ahead.has_value(); });
  pick([](const Reader&) { return true; });
  if (reader == nullptr) {
    reader = readers_[start].get();
    reader->mu.Lock();
  }
  readers_busy_.fetch_add(1, std::memory_order_relaxed);
  absl::Status status = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (reader->conn == nullptr || !reader->conn->ok()) {
        reader->conn.reset();
        reader->ahead.reset();
        absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo_);
        if (!conn.ok()) return conn.status();
        reader->conn = std::move(*conn);
      }
      PgConn& conn = *reader->conn;
      absl::Status status = fn(*reader);
      if (!status.ok() && conn.ok()) {
        reader->ahead.reset();
        conn.Exec("ROLLBACK").IgnoreError();
      }
      // A connection lost (a restart, a failover) is tried once more on a new one.
      if (!absl::IsUnavailable(status) || conn.ok()) return status;
    }
    return absl::UnavailableError("store: PostgreSQL connection lost twice");
  }();
  readers_busy_.fetch_sub(1, std::memory_order_relaxed);
  reader->mu.Unlock();
  return status;
}

uint64_t PgServerStore::BucketEpoch(int64_t bucket) {
  absl::MutexLock lock(&epochs_mu_);
  auto it = epochs_.find(bucket);
  return it == epochs_.end() ? 0 : it->second;
}

void PgServerStore::BumpEpochs(const std::vector<int64_t>& buckets) {
  absl::MutexLock lock(&epochs_mu_);
  for (int64_t bucket : buckets) ++epochs_[bucket];
}

absl::Status PgServerStore::ChangesSince(const std::vector<BucketCursor>& cursors,
                                         const sync::DownloadLimits& limits, ChangeBatch* page) {
  return ReadPage(cursors, limits, page, nullptr);
}

absl::Status PgServerStore::SerializedChangesSince(const std::vector<BucketCursor>& cursors,
                                                   const sync::DownloadLimits& limits,
                                                   sync::SerializedPage* page) {
  return ReadPage(cursors, limits, page->head, page);
}

absl::Status PgServerStore::ReadPage(const std::vector<BucketCursor>& cursors,
                                     const sync::DownloadLimits& limits, ChangeBatch* page,
                                     sync::SerializedPage* wire) {
  // The page's server_op promises the device that every op up to it in a bucket the page
  // completes is in the page (the device then forgets its acknowledged writes up to it).
  // Op ids come from a sequence and commit out of order, so the sequence's value alone is
  // no such promise: a writer may have drawn an id below it and not committed yet. So:
  // read the sequence, then wait for the writers in flight on these buckets (they hold
  // their head rows FOR UPDATE from before they draw ids until they commit), and only
  // then take the snapshot: every id drawn for these buckets up to the value read is
  // committed (or rolled back) by then, so visible.
  std::vector<int64_t> buckets;
  absl::flat_hash_set<int64_t> seen;
  for (const BucketCursor& cursor : cursors) {
    if (!seen.insert(cursor.bucket()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("cursors: bucket ", cursor.bucket(), " appears twice"));
    }
    buckets.push_back(cursor.bucket());
  }
  std::sort(buckets.begin(), buckets.end());
  // A bucket's checkpoint (no row when the bucket has no head), then its rows after the
  // cursor up to the checkpoint, in the same snapshot. The head says which partition
  // holds the rows (its province as first written; run-time partition pruning), so a
  // reader never depends on its own idea of the province. Two statements rather than a
  // join, so that the head's columns are not sent again with every row (pgsync18).
  const std::string kHeadSql =
      "SELECT last_op, checksum, records FROM kcnet_bucket_head WHERE bucket = $1";
  const std::string kRowsSql =
      "SELECT type, id, op, row, field_ops FROM kcnet_records "
      "WHERE province = (SELECT province FROM kcnet_bucket_head WHERE bucket = $1) "
      "AND bucket = $1 AND op > $2 "
      "AND op <= (SELECT last_op FROM kcnet_bucket_head WHERE bucket = $1) "
      "ORDER BY op LIMIT $3";
  auto add_page = [&](PgConn::Pipeline& pipeline, int64_t bucket, uint64_t after_op, size_t limit) {
    pipeline.AddPrepared(kHeadSql, {PgParam::Int(bucket)}, /*binary_results=*/true);
    pipeline.AddPrepared(
        kRowsSql, {PgParam::Int(bucket), U64(after_op), PgParam::Int(static_cast<int64_t>(limit))},
        /*binary_results=*/true);
  };
  const size_t page_budget = std::max<size_t>(limits.max_changes, 1);
  // One round trip for the first bucket: the sequence's value, the wait on the heads
  // (one transaction, ended by the sync), then the snapshot and the first bucket's page.
  // With one bucket (a new device's download, a stream's usual page) nothing is read
  // after this pipeline, so it carries the COMMIT too and the page is one round trip.
  auto first_pipeline = [&](int64_t first_bucket, uint64_t after_op, bool single) {
    PgConn::Pipeline first;
    // The wait's transaction locks rows (FOR KEY SHARE), so it has a transaction id and
    // its COMMIT would wait for a WAL flush (an fdatasync per page: 12% of the backend's
    // samples, pgsync18b). It writes nothing anyone reads back, so its commit need not be
    // durable: synchronous_commit is off for this transaction only (set_config's local
    // setting ends with it, at the sync). The snapshot's transaction is read-only.
    first.AddPrepared(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END, "
        "set_config('synchronous_commit', 'off', true) FROM kcnet_op_seq",
        {}, /*binary_results=*/true);
    if (!buckets.empty()) {
      first.AddPrepared(
          "SELECT 1 FROM kcnet_bucket_head WHERE bucket = ANY($1::bigint[]) "
          "ORDER BY bucket FOR KEY SHARE",
          {single ? PgBinaryArray::Ints(PgBinaryArray::Type::kInt8, {first_bucket})
                  : PgBinaryArray::Ints(PgBinaryArray::Type::kInt8, buckets)});
    }
    first.Sync();
    first.Add("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {});
    // The page statement's generic plan (run-time partition pruning from the head's
    // province) instead of a custom plan per execution: planning a custom one over 34
    // partitions cost ~0.8 ms a page, three times the execution (docs/BENCHMARKS.md,
    // pgsync18). For this transaction only.
    first.Add("SET LOCAL plan_cache_mode = force_generic_plan", {});
    if (!cursors.empty()) add_page(first, first_bucket, after_op, page_budget);
    if (single) first.Add("COMMIT", {});
    return first;
  };
  const bool single = cursors.size() == 1;
  ReadAhead wanted;
  if (single) {
    wanted.bucket = cursors[0].bucket();
    wanted.op = cursors[0].op();
    wanted.budget = page_budget;
  }
  return WithReaderFor(
      single ? &wanted : nullptr,
      [&](Reader& reader) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        PgConn& conn = *reader.conn;
        ChangeBatch& batch = *page;
        size_t budget = page_budget;
        size_t bytes = 0;
        // The page read ahead for this cursor when there is one still good (nothing written
        // to the bucket since it was sent, and young), else the statements now.
        absl::StatusOr<std::vector<PgResult>> started;
        const std::optional<ReadAhead> ahead = std::exchange(reader.ahead, std::nullopt);
        if (single && ahead.has_value() && ahead->bucket == wanted.bucket &&
            ahead->op == wanted.op && ahead->budget == wanted.budget &&
            ahead->epoch == BucketEpoch(wanted.bucket) &&
            absl::Now() - ahead->sent < kReadAheadMaxAge && conn.pending()) {
          started = conn.Receive();
          if (!started.ok() && conn.ok())
            started = conn.Run(first_pipeline(wanted.bucket, wanted.op, true));
        } else if (!cursors.empty()) {
          started = conn.Run(first_pipeline(cursors[0].bucket(), cursors[0].op(), single));
        } else {
          started = conn.Run(first_pipeline(0, 0, false));
        }
        if (!started.ok()) return started.status();
        // The results end with the first bucket's head and rows (and the COMMIT's).
        const PgResult& first_head = started->at(started->size() - (single ? 3 : 2));
        const PgResult& first_page = started->at(started->size() - (single ? 2 : 1));
        batch.set_server_op(static_cast<uint64_t>((*started)[0].GetBinaryInt(0, 0)));
        // A full page of one bucket with more after it: the next page is most likely asked
        // for next (a new device's download), so its statements go out now and PostgreSQL
        // reads it while this one is decoded and sent. Dropped below if this page ends
        // elsewhere than its last row (the byte limit).
        uint64_t ahead_from = 0;
        if (single && first_page.rows() == static_cast<int>(page_budget) && first_head.rows() > 0) {
          const uint64_t last =
              static_cast<uint64_t>(first_page.GetBinaryInt(first_page.rows() - 1, 2));
          const uint64_t head = static_cast<uint64_t>(first_head.GetBinaryInt(0, 0));
          if (last < head) {
            ReadAhead next{wanted.bucket, last, page_budget, BucketEpoch(wanted.bucket),
                           absl::Now()};
            if (conn.Send(first_pipeline(wanted.bucket, last, true)).ok()) {
              reader.ahead = next;
              ahead_from = last;
            }
          }
        }
        for (size_t i = 0; i < cursors.size(); ++i) {
          const BucketCursor& cursor = cursors[i];
          const bool room = budget > 0 && bytes < limits.max_bytes;
          std::vector<PgResult> later;
          if (i > 0) {
            // Without room, only the checkpoint is read (LIMIT 0).
            PgConn::Pipeline next;
            add_page(next, cursor.bucket(), cursor.op(), room ? budget : 0);
            absl::StatusOr<std::vector<PgResult>> read = conn.Run(next);
            if (!read.ok()) return read.status();
            later = std::move(*read);
          }
          const PgResult& head = i == 0 ? first_head : later[0];
          const PgResult& rows = i == 0 ? first_page : later[1];
          BucketCheckpoint cp;
          cp.set_bucket(cursor.bucket());
          if (head.rows() > 0) {
            cp.set_op(static_cast<uint64_t>(head.GetBinaryInt(0, 0)));
            cp.set_checksum(static_cast<uint64_t>(head.GetBinaryInt(0, 1)));
            cp.set_records(static_cast<uint64_t>(head.GetBinaryInt(0, 2)));
          }
          if (cursor.op() >= cp.op()) {
            // Up to date (or ahead of a restored server: the checkpoint tells the device).
            *batch.add_checkpoints() = cp;
            BucketCursor* out = batch.add_cursors();
            out->set_bucket(cursor.bucket());
            out->set_op(cp.op());
            out->set_floor(cp.op());
            continue;
          }
          if (!room) {
            batch.set_more(true);
            continue;
          }
          google::protobuf::Arena* const arena = batch.GetArena();
          const uint64_t after = std::min(cursor.floor(), cursor.op());
          uint64_t reached = cursor.op();
          size_t taken = 0;
          for (int r = 0; r < rows.rows(); ++r) {
            if (taken > 0 && bytes >= limits.max_bytes) break;
            const uint64_t op = static_cast<uint64_t>(rows.GetBinaryInt(r, 2));
            const RecordTypeSpec* type =
                schema_->Find(static_cast<uint32_t>(rows.GetBinaryInt(r, 0)));
            if (type != nullptr) {
              char id16[16];
              if (!sync::UuidTextToBytes(rows.Get(r, 1), id16)) {
                return absl::DataLossError(sync::UuidFromText(rows.Get(r, 1)).status().message());
              }
              const absl::string_view id(id16, sizeof id16);
              // A serialized page from op 0: the stored bytes as they are (no parse).
              const size_t spliced_before = wire != nullptr ? wire->spliced.size() : 0;
              if (wire != nullptr && after == 0 &&
                  SpliceStoredChange(*type, id16, op, cursor.bucket(), rows.Get(r, 3),
                                     rows.Get(r, 4), wire)) {
                bytes += wire->spliced.size() - spliced_before;
              } else {
                RecordChange* change = google::protobuf::Arena::CreateMessage<RecordChange>(arena);
                if (after != 0 ||
                    !StoredChangeIsTheDownload(*type, rows.Get(r, 3), rows.Get(r, 4), change)) {
                  change->Clear();
                  absl::StatusOr<RowState> row =
                      DecodeRow(*type, cursor.bucket(), op, rows.Get(r, 3), rows.Get(r, 4));
                  if (!row.ok()) {
                    if (arena == nullptr) delete change;
                    return row.status();
                  }
                  sync::RowToChange(*type, id, *row, after, change);
                } else {
                  change->set_id(std::string(id));
                  change->set_op(op);
                  change->set_bucket(cursor.bucket());
                }
                bytes += change->ByteSizeLong();
                if (wire != nullptr) {
                  // In order with the spliced ones (a page's changes keep op order).
                  sync::AppendSplicedChange(change->SerializeAsString(), {}, wire);
                  if (arena == nullptr) delete change;
                } else {
                  batch.mutable_changes()->AddAllocated(change);
                }
              }
            }
            reached = op;
            ++taken;
          }
          budget -= std::min(budget, taken);
          // The next call will not start where the page read ahead does.
          if (i == 0 && reached != ahead_from) reader.ahead.reset();
          BucketCursor* out = batch.add_cursors();
          out->set_bucket(cursor.bucket());
          out->set_op(reached);
          out->set_floor(reached == cp.op() ? reached : after);
          if (reached == cp.op()) {
            *batch.add_checkpoints() = cp;
          } else {
            batch.set_more(true);
          }
        }
        return single ? absl::OkStatus() : conn.Exec("COMMIT");
      });
}

absl::StatusOr<std::vector<RecordChange>> PgServerStore::List(const sync::ListQuery& query) {
  const RecordTypeSpec* type = schema_->Find(query.type);
  if (type == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("type: unknown ", query.type));
  }
  std::vector<RecordChange> out;
  if (query.limit == 0 || query.buckets.empty()) return out;
  std::vector<std::pair<int, std::string>> equals;  // field index, serialised value
  for (const auto& [number, value] : query.equals) {
    const int index = type->IndexOf(number);
    if (index < 0)
      return absl::InvalidArgumentError(absl::StrCat("equals: unknown field ", number));
    equals.emplace_back(index, value.SerializeAsString());
  }
  const std::string sql = absl::StrCat(
      "SELECT id, op, row, field_ops, bucket FROM kcnet_records WHERE province = ANY($1::int[]) "
      "AND bucket = ANY($2::bigint[]) AND type = $3 AND NOT deleted AND op ",
      query.newest_first ? "< $4 ORDER BY op DESC" : "> $4 ORDER BY op", " LIMIT $5");
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    // The partitions that hold the buckets: their heads say (the province as first
    // written), so a reader never depends on its own idea of the province; a bucket with
    // no head has no rows.
    absl::StatusOr<PgResult> heads = conn.Query(
        "SELECT DISTINCT province FROM kcnet_bucket_head WHERE bucket = ANY($1::bigint[])",
        {PgParam::Text(IntArray(query.buckets))});
    if (!heads.ok()) return heads.status();
    if (heads->rows() == 0) return absl::OkStatus();
    std::vector<int64_t> provinces;
    for (int r = 0; r < heads->rows(); ++r) provinces.push_back(heads->GetInt(r, 0));
    uint64_t position = query.after;
    if (query.newest_first && position == 0) position = std::numeric_limits<int64_t>::max();
    // Rows are read in chunks in the query's order and filtered here; a chunk that comes
    // back short is the end.
    const size_t chunk = std::max<size_t>(query.limit, 64);
    while (out.size() < query.limit) {
      absl::StatusOr<PgResult> rows =
          conn.QueryBinary(sql, {PgParam::Text(IntArray(provinces)),
                                 PgParam::Text(IntArray(query.buckets)), PgParam::Int(type->type),
                                 U64(position), PgParam::Int(static_cast<int64_t>(chunk))});
      if (!rows.ok()) return rows.status();
      for (int r = 0; r < rows->rows() && out.size() < query.limit; ++r) {
        position = static_cast<uint64_t>(rows->GetBinaryInt(r, 1));
        absl::StatusOr<RowState> row =
            DecodeRow(*type, rows->GetBinaryInt(r, 4), position, rows->Get(r, 2), rows->Get(r, 3));
        if (!row.ok()) return row.status();
        bool match = true;
        for (const auto& [index, value] : equals) {
          match = match && row->fields[index].value.SerializeAsString() == value;
        }
        if (!match) continue;
        absl::StatusOr<std::string> id = sync::UuidFromText(rows->Get(r, 0));
        if (!id.ok()) return absl::DataLossError(id.status().message());
        RecordChange change;
        sync::RowToChange(*type, *id, *row, 0, &change);
        out.push_back(std::move(change));
      }
      if (static_cast<size_t>(rows->rows()) < chunk) break;
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

uint64_t PgServerStore::last_op() {
  uint64_t last = 0;
  absl::Status status = WithReader([&last](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> head =
        conn.Query("SELECT coalesce(max(last_op), 0) FROM kcnet_bucket_head");
    if (!head.ok()) return head.status();
    last = static_cast<uint64_t>(head->GetInt(0, 0));
    return absl::OkStatus();
  });
  // Unreachable database: this instance's own view (never below what it committed).
  const uint64_t own = MergingServerStore::last_op();
  return status.ok() ? std::max(last, own) : own;
}

absl::StatusOr<BucketCheckpoint> PgServerStore::Checkpoint(int64_t bucket) {
  BucketCheckpoint cp;
  cp.set_bucket(bucket);
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> head =
        conn.Query("SELECT last_op, checksum, records FROM kcnet_bucket_head WHERE bucket = $1",
                   {PgParam::Int(bucket)});
    if (!head.ok()) return head.status();
    if (head->rows() > 0) {
      cp.set_op(static_cast<uint64_t>(head->GetInt(0, 0)));
      cp.set_checksum(static_cast<uint64_t>(head->GetInt(0, 1)));
      cp.set_records(static_cast<uint64_t>(head->GetInt(0, 2)));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return cp;
}

absl::StatusOr<std::vector<Conflict>> PgServerStore::ListConflicts(
    const std::vector<int64_t>& buckets, bool include_resolved, uint64_t after_id, size_t limit) {
  std::vector<Conflict> out;
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    std::string sql =
        "SELECT body, resolved, id FROM kcnet_conflicts WHERE id > $1 AND ($2 OR NOT resolved)";
    std::vector<PgParam> params = {U64(after_id),
                                   PgParam::Text(include_resolved ? "true" : "false"),
                                   PgParam::Int(static_cast<int64_t>(limit))};
    if (!buckets.empty()) {
      sql += " AND bucket = ANY($4::bigint[])";
      params.push_back(PgParam::Text(IntArray(buckets)));
    }
    sql += " ORDER BY id LIMIT $3";
    absl::StatusOr<PgResult> rows = conn.Query(sql, params);
    if (!rows.ok()) return rows.status();
    for (int r = 0; r < rows->rows(); ++r) {
      Conflict c;
      if (!c.ParseFromString(rows->GetBytes(r, 0))) {
        return absl::DataLossError("conflict body does not parse");
      }
      c.set_resolved(rows->Get(r, 1) == "t");
      c.set_id(static_cast<uint64_t>(rows->GetInt(r, 2)));
      out.push_back(std::move(c));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

// --- Devices (outside groups, on the writer under mu_) ---------------------------------

absl::StatusOr<uint64_t> PgServerStore::LastAppliedSeq(const std::string& device_id) {
  uint64_t seq = 0;
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> rows = conn.Query(
        "SELECT last_seq FROM kcnet_devices WHERE device_id = $1", {PgParam::Text(device_id)});
    if (!rows.ok()) return rows.status();
    if (rows->rows() > 0) seq = static_cast<uint64_t>(rows->GetInt(0, 0));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return seq;
}

absl::Status PgServerStore::LogDevice(const DeviceEvent& event) {
  return writer_
      ->Query(
          "INSERT INTO kcnet_device_log(device_id, owner, generation, event, by_user, at_ms) "
          "VALUES ($1, $2, $3, $4, $5, $6)",
          {PgParam::Text(event.device_id), PgParam::Int(event.owner), U64(event.generation),
           PgParam::Text(event.event), PgParam::Int(event.by), PgParam::Int(event.at_ms)})
      .status();
}

absl::StatusOr<sync::DeviceRegistration> PgServerStore::RegisterDevice(const std::string& device_id,
                                                                       int64_t owner) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  PgConn& db = **conn;
  // One registration of a device id at a time, across instances.
  absl::Status status = db.Exec("BEGIN");
  if (!status.ok()) return status;
  absl::Cleanup rollback = [&db] { db.Exec("ROLLBACK").IgnoreError(); };
  status =
      db.Query("SELECT pg_advisory_xact_lock(hashtext($1))", {PgParam::Text(device_id)}).status();
  if (!status.ok()) return status;
  absl::StatusOr<PgResult> rows =
      db.Query("SELECT owner, generation, released FROM kcnet_device_owners WHERE device_id = $1",
               {PgParam::Text(device_id)});
  if (!rows.ok()) return rows.status();
  const bool known = rows->rows() > 0;
  const int64_t old_owner = known ? rows->GetInt(0, 0) : 0;
  uint64_t generation = known ? static_cast<uint64_t>(rows->GetInt(0, 1)) : 0;
  const bool released = known && rows->Get(0, 2) == "t";
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
    status =
        db.Query(
              "INSERT INTO kcnet_device_owners(device_id, owner, generation, released, "
              "since_ms) VALUES ($1, $2, $3, false, $4) ON CONFLICT (device_id) DO UPDATE "
              "SET owner = EXCLUDED.owner, generation = EXCLUDED.generation, "
              "released = false, since_ms = EXCLUDED.since_ms",
              {PgParam::Text(device_id), PgParam::Int(owner), U64(generation), PgParam::Int(now)})
            .status();
    if (!status.ok()) return status;
    status = LogDevice({device_id, owner, generation, event, owner, now});
    if (!status.ok()) return status;
  }
  sync::DeviceRegistration reg;
  reg.device_id = device_id;
  reg.owner = owner;
  reg.generation = generation;
  reg.key = generation == 0 ? device_id : absl::StrCat(device_id, "#", generation);
  reg.node = sync::NodeIdFor(reg.key);
  rows =
      db.Query("SELECT last_seq FROM kcnet_devices WHERE device_id = $1", {PgParam::Text(reg.key)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() > 0) reg.last_applied_seq = static_cast<uint64_t>(rows->GetInt(0, 0));
  status = db.Exec("COMMIT");
  if (!status.ok()) return status;
  std::move(rollback).Cancel();
  return reg;
}

absl::Status PgServerStore::ReleaseDevice(const std::string& device_id, int64_t by,
                                          bool administrator) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<PgConn*> conn = Writer();
  if (!conn.ok()) return conn.status();
  PgConn& db = **conn;
  absl::Status status = db.Exec("BEGIN");
  if (!status.ok()) return status;
  absl::Cleanup rollback = [&db] { db.Exec("ROLLBACK").IgnoreError(); };
  absl::StatusOr<PgResult> rows = db.Query(
      "SELECT owner, generation, released FROM kcnet_device_owners WHERE device_id = $1 "
      "FOR UPDATE",
      {PgParam::Text(device_id)});
  if (!rows.ok()) return rows.status();
  const bool has = rows->rows() > 0;
  const int64_t owner = has ? rows->GetInt(0, 0) : 0;
  const uint64_t generation = has ? static_cast<uint64_t>(rows->GetInt(0, 1)) : 0;
  const bool released = has && rows->Get(0, 2) == "t";
  // Someone else's device reads like an unknown one.
  if (!has || (!administrator && owner != by)) {
    return absl::NotFoundError("device_id: no device with this id is registered to you");
  }
  if (!released) {
    status = db.Query("UPDATE kcnet_device_owners SET released = true WHERE device_id = $1",
                      {PgParam::Text(device_id)})
                 .status();
    if (!status.ok()) return status;
    status = LogDevice({device_id, owner, generation, "released", by, options_.clock->NowMs()});
    if (!status.ok()) return status;
  }
  status = db.Exec("COMMIT");
  if (!status.ok()) return status;
  std::move(rollback).Cancel();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PgServerStore::DeviceEvent>> PgServerStore::DeviceLog(
    const std::string& device_id) {
  std::vector<DeviceEvent> out;
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> rows = conn.Query(
        "SELECT owner, generation, event, by_user, at_ms FROM kcnet_device_log "
        "WHERE device_id = $1 ORDER BY id",
        {PgParam::Text(device_id)});
    if (!rows.ok()) return rows.status();
    for (int r = 0; r < rows->rows(); ++r) {
      out.push_back({device_id, rows->GetInt(r, 0), static_cast<uint64_t>(rows->GetInt(r, 1)),
                     std::string(rows->Get(r, 2)), rows->GetInt(r, 3), rows->GetInt(r, 4)});
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

}  // namespace kcnet::pgstore
