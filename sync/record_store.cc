#include "sync/record_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include "absl/base/internal/endian.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kcnet::sync {
namespace {

using kcnet::v1::Value;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(absl::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

void PutFixed64(std::string* out, uint64_t v) {
  char bytes[8];
  absl::little_endian::Store64(bytes, v);
  out->append(bytes, 8);
}

// The canonical bytes of a value for hashing: a kind tag, then a fixed encoding.
void AppendCanonical(std::string* out, const Value& v) {
  switch (v.kind_case()) {
    case Value::kIntValue:
      out->push_back(1);
      PutFixed64(out, static_cast<uint64_t>(v.int_value()));
      break;
    case Value::kDoubleValue: {
      out->push_back(2);
      double d = v.double_value();
      if (d == 0) d = 0;  // -0.0 and 0.0 hash alike
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      PutFixed64(out, bits);
      break;
    }
    case Value::kStringValue:
      out->push_back(3);
      PutFixed64(out, v.string_value().size());
      out->append(v.string_value());
      break;
    case Value::kBytesValue:
      out->push_back(4);
      PutFixed64(out, v.bytes_value().size());
      out->append(v.bytes_value());
      break;
    case Value::kBoolValue:
      out->push_back(5);
      out->push_back(v.bool_value() ? 1 : 0);
      break;
    case Value::KIND_NOT_SET:
      out->push_back(0);
      break;
  }
}

std::string SqlType(FieldType type) {
  switch (type) {
    case FieldType::kInt:
    case FieldType::kBool:
      return "INTEGER";
    case FieldType::kDouble:
      return "REAL";
    case FieldType::kString:
      return "TEXT";
    case FieldType::kBytes:
      return "BLOB";
  }
  return "BLOB";
}

// Binds without copying: `v` must outlive the statement's run (every caller resets the
// statement before returning).
void BindValue(Statement* stmt, int index, const Value& v) {
  switch (v.kind_case()) {
    case Value::kIntValue:
      stmt->BindInt(index, v.int_value());
      break;
    case Value::kDoubleValue:
      stmt->BindDouble(index, v.double_value());
      break;
    case Value::kStringValue:
      stmt->BindTextRef(index, v.string_value());
      break;
    case Value::kBytesValue:
      stmt->BindBlobRef(index, v.bytes_value());
      break;
    case Value::kBoolValue:
      stmt->BindInt(index, v.bool_value() ? 1 : 0);
      break;
    case Value::KIND_NOT_SET:
      stmt->BindNull(index);
      break;
  }
}

void ReadValue(const Statement& stmt, int col, FieldType type, Value* out) {
  out->Clear();
  if (stmt.IsNull(col)) return;
  switch (type) {
    case FieldType::kInt:
      out->set_int_value(stmt.ColumnInt(col));
      break;
    case FieldType::kBool:
      out->set_bool_value(stmt.ColumnInt(col) != 0);
      break;
    case FieldType::kDouble:
      out->set_double_value(stmt.ColumnDouble(col));
      break;
    case FieldType::kString:
      out->set_string_value(std::string(stmt.ColumnText(col)));
      break;
    case FieldType::kBytes:
      out->set_bytes_value(std::string(stmt.ColumnBlob(col)));
      break;
  }
}

struct Baseline {
  Stamp stamp;
  uint64_t op = 0;
};

// The most common (stamp, op) among the fields; ties go to the highest. Rows have a
// few dozen fields at most, so a quadratic scan beats any allocation.
Baseline ChooseBaseline(const RowState& row) {
  Baseline best;
  int best_count = 0;
  for (size_t i = 0; i < row.fields.size(); ++i) {
    const Baseline candidate{row.fields[i].stamp, row.fields[i].op};
    int count = 0;
    for (const FieldState& f : row.fields) {
      if (f.stamp == candidate.stamp && f.op == candidate.op) ++count;
    }
    if (count > best_count || (count == best_count && std::tie(candidate.stamp, candidate.op) >
                                                          std::tie(best.stamp, best.op))) {
      best = candidate;
      best_count = count;
    }
  }
  return best;
}

}  // namespace

uint64_t StableHash64(absl::string_view bytes, uint64_t seed) {
  // Eight bytes at a time (little-endian, the last word zero-padded), each multiplied in
  // and folded; the length goes in first and a splitmix64 finaliser goes last.
  uint64_t h = seed ^ (bytes.size() * 0x9e3779b97f4a7c15ull);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const uint64_t w = absl::little_endian::Load64(bytes.data() + i);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  if (i < bytes.size()) {
    uint64_t w = 0;
    for (int k = 0; i + k < bytes.size(); ++k) {
      w |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i + k])) << (8 * k);
    }
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

absl::StatusOr<std::unique_ptr<RecordStore>> RecordStore::Open(
    Db* db, const Schema* schema, absl::string_view role,
    absl::Span<const char* const> migrations) {
  std::unique_ptr<RecordStore> store(new RecordStore(db, schema));
  absl::Status status = store->Migrate(migrations);
  if (!status.ok()) return status;
  {
    absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db);
    if (!txn.ok()) return txn.status();
    status = store->CreateTables();
    // The role is recorded once; a device store opened as a server (or the reverse) is a
    // foreign file.
    const int64_t role_code = role == "server" ? 1 : 2;
    absl::StatusOr<std::optional<int64_t>> stored = store->GetMeta("role");
    if (!stored.ok()) return stored.status();
    if (stored->has_value() && **stored != role_code) {
      return absl::FailedPreconditionError(absl::StrCat(db->path(), ": this is a kcnet ",
                                                        **stored == 1 ? "server" : "device",
                                                        " store, not a ", role, " store"));
    }
    if (status.ok() && !stored->has_value()) status = store->SetMeta("role", role_code);
    if (status.ok()) status = store->LoadNodes();
    if (status.ok()) status = store->FoldKept();
    if (status.ok()) status = (*txn)->Commit();
    if (!status.ok()) return status;
  }
  return store;
}

absl::Status RecordStore::Migrate(absl::Span<const char* const> migrations) {
  // A non-empty database without our meta table is somebody else's file.
  absl::StatusOr<int64_t> tables = db_->QueryInt(
      "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'");
  if (!tables.ok()) return tables.status();
  absl::StatusOr<int64_t> ours =
      db_->QueryInt("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='_meta'");
  if (!ours.ok()) return ours.status();
  if (*tables > 0 && *ours == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(db_->path(), ": not a kcnet store (it has tables but no _meta)"));
  }
  const auto target = static_cast<int64_t>(migrations.size());
  absl::StatusOr<int64_t> version = db_->QueryInt("PRAGMA user_version");
  if (!version.ok()) return version.status();
  if (*version > target) {
    return absl::FailedPreconditionError(absl::StrCat(
        db_->path(), ": kho dữ liệu này do phiên bản kcnet mới hơn tạo (định dạng ", *version,
        ", phiên bản này đọc đến ", target, "); hãy cập nhật ứng dụng hoặc máy chủ / store format ",
        *version, " was written by a newer kcnet (this one reads up to ", target,
        "); upgrade the app or server"));
  }
  if (*version < target || *tables == 0) {
    absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(db_);
    if (!txn.ok()) return txn.status();
    absl::Status status = db_->Exec(
        "CREATE TABLE IF NOT EXISTS _meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS _nodes(id INTEGER PRIMARY KEY, node INTEGER NOT NULL "
        "UNIQUE);"
        "CREATE TABLE IF NOT EXISTS _buckets(bucket INTEGER PRIMARY KEY, checksum INTEGER NOT "
        "NULL, records INTEGER NOT NULL, last_op INTEGER NOT NULL);");
    for (int64_t v = *version; status.ok() && v < target; ++v) status = db_->Exec(migrations[v]);
    if (status.ok()) status = db_->Exec(absl::StrCat("PRAGMA user_version = ", target));
    if (status.ok()) status = (*txn)->Commit();
    if (!status.ok()) return status;
  }
  absl::StatusOr<int64_t> kept =
      db_->QueryInt("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='_unknown'");
  if (!kept.ok()) return kept.status();
  has_kept_table_ = *kept > 0;
  if (has_kept_table_) {
    absl::StatusOr<int64_t> any = db_->QueryInt("SELECT EXISTS(SELECT 1 FROM _unknown)");
    if (!any.ok()) return any.status();
    any_kept_ = *any != 0;
  }
  return absl::OkStatus();
}

absl::Status RecordStore::CreateTables() {
  std::string sql;
  for (const RecordTypeSpec& t : schema_->types()) {
    std::vector<std::string> cols = {"id TEXT PRIMARY KEY NOT NULL"};
    std::vector<std::string> names = {"id"};
    for (const FieldSpec& f : t.fields) {
      cols.push_back(absl::StrCat(f.name, " ", SqlType(f.type)));
      names.push_back(f.name);
    }
    for (const char* meta : {"_hlc", "_node", "_op", "_del"}) {
      cols.push_back(absl::StrCat(meta, " INTEGER NOT NULL"));
      names.push_back(meta);
    }
    cols.push_back("_fc BLOB");
    names.push_back("_fc");
    // An existing table gains the schema's new fields as columns at its end. The per-field
    // clocks (_fc) name fields by position, so the columns it has must be the schema's
    // first fields, in order.
    std::vector<std::string> existing;
    {
      absl::StatusOr<Statement*> info =
          db_->Prepare(absl::StrCat("SELECT name FROM pragma_table_info('", t.name, "')"));
      if (!info.ok()) return info.status();
      while (true) {
        absl::StatusOr<bool> has = (*info)->Step();
        if (!has.ok()) return has.status();
        if (!*has) break;
        std::string name((*info)->ColumnText(0));
        if (name != "id" && name[0] != '_') existing.push_back(std::move(name));
      }
      (*info)->Reset();
    }
    if (existing.empty()) {
      absl::StrAppend(&sql, "CREATE TABLE IF NOT EXISTS ", t.name, "(", absl::StrJoin(cols, ", "),
                      ");");
    } else {
      for (size_t i = 0; i < t.fields.size(); ++i) {
        if (i < existing.size()) {
          if (existing[i] == t.fields[i].name) continue;
          return absl::FailedPreconditionError(
              absl::StrCat(db_->path(), ": table ", t.name, " has column '", existing[i],
                           "' where the schema has '", t.fields[i].name,
                           "' (a schema may only add fields, at the end)"));
        }
        absl::StrAppend(&sql, "ALTER TABLE ", t.name, " ADD COLUMN ", t.fields[i].name, " ",
                        SqlType(t.fields[i].type), ";");
        columns_added_ = true;
      }
      if (existing.size() > t.fields.size()) {
        return absl::FailedPreconditionError(absl::StrCat(
            db_->path(), ": table ", t.name, " has a column '", existing[t.fields.size()],
            "' the schema does not have (written by a newer kcnet?)"));
      }
    }
    const std::string bucket_col = t.fields[t.bucket_index()].name;
    absl::StrAppend(&sql, "CREATE INDEX IF NOT EXISTS ", t.name, "_bucket_op ON ", t.name, "(",
                    bucket_col, ", _op);");
    for (const auto& index : t.indexes) {
      std::vector<std::string> icols;
      for (uint32_t n : index) icols.push_back(t.Field(n)->name);
      const std::string name = absl::StrCat(t.name, "_", absl::StrJoin(icols, "_"));
      const std::string create = absl::StrCat("CREATE INDEX IF NOT EXISTS ", name, " ON ", t.name,
                                              "(", absl::StrJoin(icols, ", "), ");");
      absl::StrAppend(&sql, create);
      secondary_indexes_.emplace_back(name, create);
    }
    const std::string all = absl::StrJoin(names, ", ");
    select_sql_[t.type] = absl::StrCat("SELECT ", all, " FROM ", t.name, " WHERE id = ?1");
    const std::string values = absl::StrJoin(std::vector<std::string>(names.size(), "?"), ",");
    write_sql_[t.type] =
        absl::StrCat("INSERT OR REPLACE INTO ", t.name, "(", all, ") VALUES (", values, ")");
    insert_sql_[t.type] = absl::StrCat("INSERT INTO ", t.name, "(", all, ") VALUES (", values,
                                       ") ON CONFLICT(id) DO NOTHING");
    scan_sql_[t.type] = absl::StrCat("SELECT ", all, " FROM ", t.name, " WHERE ", bucket_col,
                                     " = ?1 AND _op > ?2 ORDER BY _op LIMIT ?3");
  }
  return sql.empty() ? absl::OkStatus() : db_->Exec(sql);
}

absl::Status RecordStore::LoadNodes() {
  node_to_local_.clear();
  local_to_node_.assign(1, 0);
  absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT id, node FROM _nodes ORDER BY id");
  if (!stmt.ok()) return stmt.status();
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    const int64_t local = (*stmt)->ColumnInt(0);
    const auto node = static_cast<uint64_t>((*stmt)->ColumnInt(1));
    if (local >= static_cast<int64_t>(local_to_node_.size())) local_to_node_.resize(local + 1, 0);
    local_to_node_[local] = node;
    node_to_local_[node] = static_cast<uint32_t>(local);
  }
  (*stmt)->Reset();
  return absl::OkStatus();
}

absl::Status RecordStore::DropSecondaryIndexes() {
  for (const auto& [name, create] : secondary_indexes_) {
    absl::Status status = db_->Exec(absl::StrCat("DROP INDEX IF EXISTS ", name));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status RecordStore::CreateSecondaryIndexes() {
  absl::StatusOr<int64_t> cache = db_->QueryInt("PRAGMA cache_size");
  if (!cache.ok()) return cache.status();
  // SQLite sorts an index's entries in up to a page cache's worth of memory before it
  // spills to a temporary file: cap that at 2 MiB, so that building the indexes does not
  // raise a tablet's peak memory by the whole cache.
  absl::Status status = db_->Exec("PRAGMA cache_size = -2048");
  for (auto it = secondary_indexes_.begin(); status.ok() && it != secondary_indexes_.end(); ++it) {
    status = db_->Exec(it->second);
  }
  absl::Status restored = db_->Exec(absl::StrCat("PRAGMA cache_size = ", *cache));
  return status.ok() ? restored : status;
}

absl::Status RecordStore::RefreshNodes() {
  absl::StatusOr<int64_t> max_local = db_->QueryInt("SELECT max(id) FROM _nodes", 0);
  if (!max_local.ok()) return max_local.status();
  if (*max_local < static_cast<int64_t>(local_to_node_.size())) return absl::OkStatus();
  return LoadNodes();
}

absl::StatusOr<uint32_t> RecordStore::LocalNode(uint64_t node) {
  auto it = node_to_local_.find(node);
  if (it != node_to_local_.end()) return it->second;
  absl::StatusOr<Statement*> stmt = db_->Prepare("INSERT INTO _nodes(id, node) VALUES (?1, ?2)");
  if (!stmt.ok()) return stmt.status();
  const auto local = static_cast<uint32_t>(local_to_node_.size());
  (*stmt)->BindInt(1, local);
  (*stmt)->BindInt(2, static_cast<int64_t>(node));
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  if (!status.ok()) return status;
  local_to_node_.push_back(node);
  node_to_local_[node] = local;
  return local;
}

absl::StatusOr<uint64_t> RecordStore::GlobalNode(int64_t local) const {
  if (local < 0 || local >= static_cast<int64_t>(local_to_node_.size())) {
    return absl::DataLossError(absl::StrCat("row names unknown node ", local));
  }
  return local_to_node_[local];
}

absl::StatusOr<RowState> RecordStore::DecodeRow(const RecordTypeSpec& type, Statement& stmt,
                                                int first) {
  RowState row;
  const int n = static_cast<int>(type.fields.size());
  const int meta = first + n;
  const auto base_hlc = static_cast<uint64_t>(stmt.ColumnInt(meta));
  absl::StatusOr<uint64_t> base_node = GlobalNode(stmt.ColumnInt(meta + 1));
  if (!base_node.ok()) return base_node.status();
  row.op = static_cast<uint64_t>(stmt.ColumnInt(meta + 2));
  row.deleted = stmt.ColumnInt(meta + 3) != 0;
  const int bucket_index = type.bucket_index();
  row.bucket = stmt.ColumnInt(first + bucket_index);
  if (row.deleted) {
    row.stamp = Stamp{base_hlc, *base_node};
    return row;
  }
  row.fields.resize(n);
  uint64_t base_op = row.op;
  absl::string_view fc = stmt.ColumnBlob(meta + 4);
  const bool has_fc = !stmt.IsNull(meta + 4);
  if (has_fc) {
    uint64_t delta;
    if (!GetVarint(&fc, &delta)) return absl::DataLossError("bad _fc header");
    base_op = row.op - delta;
  }
  for (int i = 0; i < n; ++i) {
    ReadValue(stmt, first + i, type.fields[i].type, &row.fields[i].value);
    row.fields[i].stamp = Stamp{base_hlc, *base_node};
    row.fields[i].op = base_op;
  }
  while (has_fc && !fc.empty()) {
    uint64_t index, hlc_delta, local, op_delta;
    if (!GetVarint(&fc, &index) || !GetVarint(&fc, &hlc_delta) || !GetVarint(&fc, &local) ||
        !GetVarint(&fc, &op_delta) || index >= static_cast<uint64_t>(n)) {
      return absl::DataLossError(absl::StrCat(type.name, ": corrupt _fc entry"));
    }
    absl::StatusOr<uint64_t> node = GlobalNode(static_cast<int64_t>(local));
    if (!node.ok()) return node.status();
    FieldState& f = row.fields[index];
    f.stamp = Stamp{base_hlc + static_cast<uint64_t>(UnZigZag(hlc_delta)), *node};
    f.op = row.op - op_delta;
  }
  return row;
}

absl::StatusOr<std::optional<RowState>> RecordStore::Read(const RecordTypeSpec& type,
                                                          absl::string_view id_text) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(select_sql_[type.type]);
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindTextRef(1, id_text);  // reset below, before id_text can go
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  if (!*has) {
    (*stmt)->Reset();
    return std::optional<RowState>();
  }
  absl::StatusOr<RowState> row = DecodeRow(type, **stmt, 1);
  (*stmt)->Reset();
  if (!row.ok()) return row.status();
  if (any_kept_ && !row->deleted) {
    absl::Status status = LoadKept(type.type, id_text, &row->kept, nullptr);
    if (!status.ok()) return status;
  }
  return std::optional<RowState>(std::move(*row));
}

absl::Status RecordStore::BindRow(Statement* stmt, const RecordTypeSpec& type,
                                  absl::string_view id_text, const RowState& row, std::string* fc) {
  const int n = static_cast<int>(type.fields.size());
  // The bytes stay alive until the caller's Reset(): bound without a copy.
  stmt->BindTextRef(1, id_text);
  Stamp base_stamp = row.stamp;
  fc->clear();
  bool has_fc = false;
  if (row.deleted) {
    for (int i = 0; i < n; ++i) stmt->BindNull(2 + i);
    stmt->BindInt(2 + type.bucket_index(), row.bucket);
  } else {
    const Baseline base = ChooseBaseline(row);
    base_stamp = base.stamp;
    for (int i = 0; i < n; ++i) {
      const FieldState& f = row.fields[i];
      BindValue(stmt, 2 + i, f.value);
      if (f.stamp == base.stamp && f.op == base.op) continue;
      if (!has_fc) {
        PutVarint(fc, row.op - base.op);
        has_fc = true;
      }
      absl::StatusOr<uint32_t> local = LocalNode(f.stamp.node);
      if (!local.ok()) return local.status();
      PutVarint(fc, static_cast<uint64_t>(i));
      PutVarint(fc, ZigZag(static_cast<int64_t>(f.stamp.hlc - base.stamp.hlc)));
      PutVarint(fc, *local);
      PutVarint(fc, row.op - f.op);
    }
    if (!has_fc && base.op != row.op) {
      PutVarint(fc, row.op - base.op);
      has_fc = true;
    }
  }
  absl::StatusOr<uint32_t> base_local = LocalNode(base_stamp.node);
  if (!base_local.ok()) return base_local.status();
  stmt->BindInt(2 + n, static_cast<int64_t>(base_stamp.hlc));
  stmt->BindInt(3 + n, *base_local);
  stmt->BindInt(4 + n, static_cast<int64_t>(row.op));
  stmt->BindInt(5 + n, row.deleted ? 1 : 0);
  if (has_fc) {
    stmt->BindBlobRef(6 + n, *fc);
  } else {
    stmt->BindNull(6 + n);
  }
  return absl::OkStatus();
}

void RecordStore::AddDelta(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                           const std::optional<RowState>& old, const RowState& row) {
  BucketDelta& delta = unit_[row.bucket];
  delta.checksum += HashRow(type, spec, id_text, row);
  if (old.has_value()) delta.checksum -= HashRow(type, spec, id_text, *old);
  delta.records += (row.deleted ? 0 : 1) - ((old.has_value() && !old->deleted) ? 1 : 0);
  delta.last_op = std::max(delta.last_op, row.op);
}

absl::Status RecordStore::RunRow(const std::string& sql, const RecordTypeSpec& type,
                                 absl::string_view id_text, const RowState& row) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  std::string fc;
  absl::Status status = BindRow(*stmt, type, id_text, row, &fc);
  if (status.ok()) status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::Status RecordStore::Write(const RecordTypeSpec& type, absl::string_view id_text,
                                const std::optional<RowState>& old, const RowState& row) {
  absl::Status status = RunRow(write_sql_[type.type], type, id_text, row);
  if (status.ok() && (!row.kept.empty() || (old.has_value() && !old->kept.empty()))) {
    status = ReplaceKept(type.type, id_text, row.bucket, row.kept);
  }
  if (!status.ok()) return status;
  AddDelta(type.type, &type, id_text, old, row);
  return absl::OkStatus();
}

absl::StatusOr<bool> RecordStore::InsertIfAbsent(const RecordTypeSpec& type,
                                                 absl::string_view id_text, const RowState& row) {
  absl::Status status = RunRow(insert_sql_[type.type], type, id_text, row);
  if (!status.ok()) return status;
  if (db_->Changes() == 0) return false;  // the id exists: nothing written
  if (!row.kept.empty()) {
    status = ReplaceKept(type.type, id_text, row.bucket, row.kept);
    if (!status.ok()) return status;
  }
  AddDelta(type.type, &type, id_text, std::nullopt, row);
  return true;
}

void RecordStore::CommitUnit() {
  for (const auto& [bucket, d] : unit_) {
    BucketDelta& t = txn_[bucket];
    t.checksum += d.checksum;
    t.records += d.records;
    t.last_op = std::max(t.last_op, d.last_op);
  }
  unit_.clear();
}

absl::Status RecordStore::AbandonUnit() {
  unit_.clear();
  return LoadNodes();
}

std::vector<int64_t> RecordStore::TouchedBuckets() const {
  std::vector<int64_t> out;
  for (const auto& [bucket, d] : txn_) out.push_back(bucket);
  for (const auto& [bucket, d] : unit_) {
    if (!txn_.contains(bucket)) out.push_back(bucket);
  }
  return out;
}

absl::Status RecordStore::FlushBuckets() {
  CommitUnit();
  // The sum wraps mod 2^64, so it is computed here rather than in SQL (whose integer
  // overflow turns into a float).
  for (const auto& [bucket, d] : txn_) {
    absl::StatusOr<kcnet::v1::BucketCheckpoint> cp = Checkpoint(bucket);
    if (!cp.ok()) return cp.status();
    absl::StatusOr<Statement*> stmt = db_->Prepare(
        "INSERT OR REPLACE INTO _buckets(bucket, checksum, records, last_op) "
        "VALUES (?1, ?2, ?3, ?4)");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, bucket);
    (*stmt)->BindInt(2, static_cast<int64_t>(cp->checksum() + d.checksum));
    (*stmt)->BindInt(3, static_cast<int64_t>(cp->records()) + d.records);
    (*stmt)->BindInt(4, static_cast<int64_t>(std::max<uint64_t>(cp->op(), d.last_op)));
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    if (!status.ok()) return status;
  }
  txn_.clear();
  return absl::OkStatus();
}

absl::Status RecordStore::AbandonTransaction() {
  unit_.clear();
  txn_.clear();
  return LoadNodes();
}

absl::Status RecordStore::EachRow(
    const RecordTypeSpec& type, Statement& stmt,
    const std::function<absl::Status(absl::string_view, const RowState&)>& fn) {
  absl::Status status;
  while (status.ok()) {
    absl::StatusOr<bool> has = stmt.Step();
    if (!has.ok()) {
      status = has.status();
      break;
    }
    if (!*has) break;
    absl::StatusOr<RowState> row = DecodeRow(type, stmt, 1);
    if (!row.ok()) {
      status = row.status();
      break;
    }
    const std::string id(stmt.ColumnText(0));
    if (any_kept_ && !row->deleted) status = LoadKept(type.type, id, &row->kept, nullptr);
    if (status.ok()) status = fn(id, *row);
  }
  stmt.Reset();
  return status;
}

absl::Status RecordStore::ScanSince(
    const RecordTypeSpec& type, int64_t bucket, uint64_t after_op, size_t limit,
    const std::function<absl::Status(absl::string_view, const RowState&)>& fn) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(scan_sql_[type.type]);
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  (*stmt)->BindInt(2, static_cast<int64_t>(after_op));
  (*stmt)->BindInt(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  return EachRow(type, **stmt, fn);
}

absl::StatusOr<std::string> RecordStore::OrderedScanSql(const RecordTypeSpec& type,
                                                        const std::vector<uint32_t>& equal_fields,
                                                        bool descending) const {
  std::string sql = select_sql_.at(type.type);
  sql.resize(sql.size() - std::string(" WHERE id = ?1").size());
  // An equality on a field that leads a secondary index (a facility's visits) selects a
  // few rows through that index; without statistics SQLite would take the bucket's
  // (bucket, op) index for the ORDER BY and read the whole bucket. The unary + keeps the
  // bucket's term out of index selection, so the few rows are read and then sorted.
  const bool by_field_index = std::any_of(
      type.indexes.begin(), type.indexes.end(), [&](const std::vector<uint32_t>& index) {
        return !index.empty() && std::find(equal_fields.begin(), equal_fields.end(),
                                           index.front()) != equal_fields.end();
      });
  absl::StrAppend(&sql, " WHERE ", by_field_index ? "+" : "", type.fields[type.bucket_index()].name,
                  " = ?1 AND _del = 0 AND _op ", descending ? "< ?2" : "> ?2");
  for (size_t i = 0; i < equal_fields.size(); ++i) {
    const FieldSpec* field = type.Field(equal_fields[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(type.name, ": unknown filter field ", equal_fields[i]));
    }
    absl::StrAppend(&sql, " AND ", field->name, " = ?", i + 4);
  }
  absl::StrAppend(&sql, " ORDER BY _op ", descending ? "DESC" : "ASC", " LIMIT ?3");
  return sql;
}

absl::Status RecordStore::ScanOrdered(
    const RecordTypeSpec& type, int64_t bucket,
    const std::vector<std::pair<uint32_t, kcnet::v1::Value>>& equals, bool descending,
    uint64_t position, size_t limit,
    const std::function<absl::Status(absl::string_view, const RowState&)>& fn) {
  // The SQL depends only on the query's shape, so the statement cache serves repeats.
  std::vector<uint32_t> fields;
  for (const auto& e : equals) fields.push_back(e.first);
  absl::StatusOr<std::string> sql = OrderedScanSql(type, fields, descending);
  if (!sql.ok()) return sql.status();
  absl::StatusOr<Statement*> stmt = db_->Prepare(*sql);
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  (*stmt)->BindInt(2, descending && position == 0 ? INT64_MAX : static_cast<int64_t>(position));
  (*stmt)->BindInt(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  for (size_t i = 0; i < equals.size(); ++i)
    BindValue(*stmt, static_cast<int>(i + 4), equals[i].second);
  return EachRow(type, **stmt, fn);
}

absl::StatusOr<kcnet::v1::BucketCheckpoint> RecordStore::Checkpoint(int64_t bucket) {
  kcnet::v1::BucketCheckpoint cp;
  cp.set_bucket(bucket);
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("SELECT checksum, records, last_op FROM _buckets WHERE bucket = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  if (*has) {
    cp.set_checksum(static_cast<uint64_t>((*stmt)->ColumnInt(0)));
    cp.set_records(static_cast<uint64_t>((*stmt)->ColumnInt(1)));
    cp.set_op(static_cast<uint64_t>((*stmt)->ColumnInt(2)));
  }
  (*stmt)->Reset();
  return cp;
}

absl::StatusOr<kcnet::v1::BucketCheckpoint> RecordStore::RecomputeCheckpoint(int64_t bucket) {
  kcnet::v1::BucketCheckpoint cp;
  cp.set_bucket(bucket);
  uint64_t sum = 0, records = 0, last_op = 0;
  for (const RecordTypeSpec& t : schema_->types()) {
    absl::Status status =
        ScanSince(t, bucket, 0, SIZE_MAX, [&](absl::string_view id, const RowState& row) {
          sum += RowHash(t, id, row);
          records += row.deleted ? 0 : 1;
          last_op = std::max(last_op, row.op);
          return absl::OkStatus();
        });
    if (!status.ok()) return status;
  }
  cp.set_checksum(sum);
  cp.set_records(records);
  cp.set_op(last_op);
  absl::Status status = AddUnknownTypes(bucket, &cp);
  if (!status.ok()) return status;
  return cp;
}

absl::Status RecordStore::AddUnknownTypes(int64_t bucket, kcnet::v1::BucketCheckpoint* cp) {
  if (!any_kept_) return absl::OkStatus();
  std::vector<std::pair<uint32_t, std::string>> records;
  {
    absl::StatusOr<Statement*> stmt =
        db_->Prepare("SELECT type, id FROM _unknown WHERE bucket = ?1 AND field = 0");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, bucket);
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) return has.status();
      if (!*has) break;
      records.emplace_back(static_cast<uint32_t>((*stmt)->ColumnInt(0)),
                           std::string((*stmt)->ColumnText(1)));
    }
    (*stmt)->Reset();
  }
  for (const auto& [type, id] : records) {
    absl::StatusOr<std::optional<RowState>> row = ReadUnknown(type, id);
    if (!row.ok()) return row.status();
    if (!row->has_value()) continue;
    cp->set_checksum(cp->checksum() + HashRow(type, nullptr, id, **row));
    cp->set_records(cp->records() + ((*row)->deleted ? 0 : 1));
    cp->set_op(std::max<uint64_t>(cp->op(), (*row)->op));
  }
  return absl::OkStatus();
}

absl::Status RecordStore::DeleteBucket(int64_t bucket) {
  for (const RecordTypeSpec& t : schema_->types()) {
    absl::StatusOr<Statement*> stmt = db_->Prepare(
        absl::StrCat("DELETE FROM ", t.name, " WHERE ", t.fields[t.bucket_index()].name, " = ?1"));
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, bucket);
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    if (!status.ok()) return status;
  }
  if (has_kept_table_) {
    absl::StatusOr<Statement*> kept = db_->Prepare("DELETE FROM _unknown WHERE bucket = ?1");
    if (!kept.ok()) return kept.status();
    (*kept)->BindInt(1, bucket);
    absl::Status status = (*kept)->Run();
    (*kept)->Reset();
    if (!status.ok()) return status;
  }
  unit_.erase(bucket);
  txn_.erase(bucket);
  absl::StatusOr<Statement*> stmt = db_->Prepare("DELETE FROM _buckets WHERE bucket = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, bucket);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

absl::StatusOr<std::vector<int64_t>> RecordStore::Buckets() {
  std::vector<int64_t> out;
  absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT bucket FROM _buckets ORDER BY bucket");
  if (!stmt.ok()) return stmt.status();
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) return has.status();
    if (!*has) break;
    out.push_back((*stmt)->ColumnInt(0));
  }
  (*stmt)->Reset();
  return out;
}

uint64_t RecordStore::HashRow(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                              const RowState& row) const {
  return HashRecordRow(type, spec, id_text, row, &hash_buffer_);  // reused: twice per write
}

uint64_t HashRecordRow(uint32_t type, const RecordTypeSpec* spec, absl::string_view id_text,
                       const RowState& row, std::string* buffer) {
  std::string& buf = *buffer;
  buf.clear();
  PutFixed64(&buf, type);
  PutFixed64(&buf, id_text.size());
  buf.append(id_text.data(), id_text.size());
  if (row.deleted) {
    buf.push_back('D');
    PutFixed64(&buf, row.stamp.hlc);
    PutFixed64(&buf, row.stamp.node);
  } else {
    // Every field in number order: the schema's (Schema::Create keeps them ascending) and
    // the kept ones, merged.
    auto put = [&buf](uint32_t number, const FieldState& f) {
      PutFixed64(&buf, number);
      AppendCanonical(&buf, f.value);
      PutFixed64(&buf, f.stamp.hlc);
      PutFixed64(&buf, f.stamp.node);
    };
    size_t k = 0;
    for (size_t i = 0; i < row.fields.size(); ++i) {
      const uint32_t number = spec->fields[i].number;
      for (; k < row.kept.size() && row.kept[k].number < number; ++k) {
        put(row.kept[k].number, row.kept[k].state);
      }
      put(number, row.fields[i]);
    }
    for (; k < row.kept.size(); ++k) put(row.kept[k].number, row.kept[k].state);
  }
  return StableHash64(buf);
}

// --- Kept fields and records (device stores; see the header) ----------------------------

absl::Status RecordStore::LoadKept(uint32_t type, absl::string_view id_text,
                                   std::vector<KeptField>* kept, std::optional<RowState>* header) {
  kept->clear();
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "SELECT field, value, hlc, node, op, bucket, deleted FROM _unknown "
      "WHERE type = ?1 AND id = ?2 ORDER BY field");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, type);
  (*stmt)->BindTextRef(2, id_text);  // reset below, before id_text can go
  absl::Status status;
  while (true) {
    absl::StatusOr<bool> has = (*stmt)->Step();
    if (!has.ok()) {
      status = has.status();
      break;
    }
    if (!*has) break;
    Statement& r = **stmt;
    const auto field = static_cast<uint32_t>(r.ColumnInt(0));
    FieldState state;
    if (!state.value.ParseFromString(std::string(r.ColumnBlob(1)))) {
      status = absl::DataLossError(absl::StrCat("_unknown: corrupt value of ", type, "/", id_text));
      break;
    }
    state.stamp =
        Stamp{static_cast<uint64_t>(r.ColumnInt(2)), static_cast<uint64_t>(r.ColumnInt(3))};
    state.op = static_cast<uint64_t>(r.ColumnInt(4));
    if (field == 0) {
      if (header == nullptr) continue;
      RowState& h = header->emplace();
      h.bucket = r.ColumnInt(5);
      h.deleted = r.ColumnInt(6) != 0;
      h.stamp = state.stamp;
      h.op = state.op;
    } else {
      kept->push_back(KeptField{field, std::move(state)});
    }
  }
  (*stmt)->Reset();
  return status;
}

absl::Status RecordStore::InsertKept(uint32_t type, absl::string_view id_text, uint32_t field,
                                     const FieldState& state, int64_t bucket, bool deleted) {
  absl::StatusOr<Statement*> stmt = db_->Prepare(
      "INSERT OR REPLACE INTO _unknown(type, id, field, value, hlc, node, op, bucket, deleted) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  if (!stmt.ok()) return stmt.status();
  const std::string value = state.value.SerializeAsString();
  (*stmt)->BindInt(1, type);
  (*stmt)->BindTextRef(2, id_text);
  (*stmt)->BindInt(3, field);
  (*stmt)->BindBlobRef(4, value);
  (*stmt)->BindInt(5, static_cast<int64_t>(state.stamp.hlc));
  (*stmt)->BindInt(6, static_cast<int64_t>(state.stamp.node));
  (*stmt)->BindInt(7, static_cast<int64_t>(state.op));
  (*stmt)->BindInt(8, bucket);
  (*stmt)->BindInt(9, deleted ? 1 : 0);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  if (status.ok()) any_kept_ = true;
  return status;
}

absl::Status RecordStore::ReplaceKept(uint32_t type, absl::string_view id_text, int64_t bucket,
                                      const std::vector<KeptField>& kept) {
  if (!has_kept_table_) {
    return absl::FailedPreconditionError("this store keeps no fields its schema does not know");
  }
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("DELETE FROM _unknown WHERE type = ?1 AND id = ?2 AND field > 0");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt(1, type);
  (*stmt)->BindTextRef(2, id_text);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  for (size_t i = 0; status.ok() && i < kept.size(); ++i) {
    status = InsertKept(type, id_text, kept[i].number, kept[i].state, bucket, false);
  }
  return status;
}

absl::StatusOr<std::optional<RowState>> RecordStore::ReadUnknown(uint32_t type,
                                                                 absl::string_view id_text) {
  std::optional<RowState> header;
  if (!has_kept_table_) return header;
  std::vector<KeptField> kept;
  absl::Status status = LoadKept(type, id_text, &kept, &header);
  if (!status.ok()) return status;
  if (header.has_value() && !header->deleted) header->kept = std::move(kept);
  return header;
}

absl::Status RecordStore::WriteUnknown(uint32_t type, absl::string_view id_text,
                                       const std::optional<RowState>& old, const RowState& row) {
  FieldState head;
  head.stamp = row.stamp;
  head.op = row.op;
  absl::Status status = InsertKept(type, id_text, 0, head, row.bucket, row.deleted);
  if (status.ok()) status = ReplaceKept(type, id_text, row.bucket, row.kept);
  if (!status.ok()) return status;
  AddDelta(type, nullptr, id_text, old, row);
  return absl::OkStatus();
}

absl::Status RecordStore::FoldKept() {
  folded_.clear();
  std::vector<std::pair<uint32_t, std::string>> records;
  if (any_kept_) {
    absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT DISTINCT type, id, field FROM _unknown");
    if (!stmt.ok()) return stmt.status();
    absl::flat_hash_set<std::pair<uint32_t, std::string>> seen;
    while (true) {
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (!has.ok()) return has.status();
      if (!*has) break;
      const auto type = static_cast<uint32_t>((*stmt)->ColumnInt(0));
      const auto field = static_cast<uint32_t>((*stmt)->ColumnInt(2));
      const RecordTypeSpec* spec = schema_->Find(type);
      if (spec == nullptr || (field != 0 && spec->Field(field) == nullptr)) continue;
      std::pair<uint32_t, std::string> key(type, std::string((*stmt)->ColumnText(1)));
      if (seen.insert(key).second) records.push_back(std::move(key));
    }
    (*stmt)->Reset();
  }
  absl::flat_hash_set<int64_t> buckets;
  for (const auto& [type, id] : records) {
    const RecordTypeSpec& spec = *schema_->Find(type);
    std::vector<KeptField> kept;
    std::optional<RowState> header;
    absl::Status status = LoadKept(type, id, &kept, &header);
    if (!status.ok()) return status;
    // The record as stored: a row of a known type (its new columns read as null), or a
    // record of a type this schema now knows, built from its header.
    std::optional<RowState> row;
    if (header.has_value()) {
      row = std::move(header);
      if (!row->deleted) row->fields.resize(spec.fields.size());
    } else {
      absl::StatusOr<Statement*> stmt = db_->Prepare(select_sql_[type]);
      if (!stmt.ok()) return stmt.status();
      (*stmt)->BindTextRef(1, id);
      absl::StatusOr<bool> has = (*stmt)->Step();
      if (has.ok() && *has) {
        absl::StatusOr<RowState> decoded = DecodeRow(spec, **stmt, 1);
        if (!decoded.ok()) has = decoded.status();
        if (decoded.ok()) row = std::move(*decoded);
      }
      (*stmt)->Reset();
      if (!has.ok()) return has.status();
    }
    if (!row.has_value()) continue;
    std::vector<KeptField> still_unknown;
    for (KeptField& f : kept) {
      const int index = spec.IndexOf(f.number);
      if (index < 0) {
        still_unknown.push_back(std::move(f));
      } else if (!row->deleted) {
        row->fields[index] = std::move(f.state);
      }
    }
    row->kept = std::move(still_unknown);
    status = RunRow(write_sql_[type], spec, id, *row);
    if (status.ok()) status = ReplaceKept(type, id, row->bucket, row->kept);
    if (status.ok()) {
      absl::StatusOr<Statement*> stmt =
          db_->Prepare("DELETE FROM _unknown WHERE type = ?1 AND id = ?2 AND field = 0");
      if (!stmt.ok()) return stmt.status();
      (*stmt)->BindInt(1, type);
      (*stmt)->BindTextRef(2, id);
      status = (*stmt)->Run();
      (*stmt)->Reset();
    }
    if (!status.ok()) return status;
    buckets.insert(row->bucket);
    folded_.emplace_back(type, id);
  }
  // The folded records hash as before (every field in number order), but a column added
  // without a kept value reads as null with the row's baseline stamp: recompute the
  // running sums so that they agree with the rows (VerifyBuckets); a bucket whose rows
  // now disagree with the server's is then reset by the next download's checkpoint.
  if (columns_added_) {
    absl::StatusOr<std::vector<int64_t>> all = Buckets();
    if (!all.ok()) return all.status();
    buckets.insert(all->begin(), all->end());
  }
  for (int64_t bucket : buckets) {
    absl::StatusOr<kcnet::v1::BucketCheckpoint> cp = RecomputeCheckpoint(bucket);
    if (!cp.ok()) return cp.status();
    absl::StatusOr<Statement*> stmt =
        db_->Prepare("UPDATE _buckets SET checksum = ?2, records = ?3 WHERE bucket = ?1");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindInt(1, bucket);
    (*stmt)->BindInt(2, static_cast<int64_t>(cp->checksum()));
    (*stmt)->BindInt(3, static_cast<int64_t>(cp->records()));
    absl::Status status = (*stmt)->Run();
    (*stmt)->Reset();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

kcnet::v1::RecordChange RecordStore::ToChange(const RecordTypeSpec& type,
                                              absl::string_view id_bytes, const RowState& row,
                                              uint64_t after_op) const {
  kcnet::v1::RecordChange change;
  ToChange(type, id_bytes, row, after_op, &change);
  return change;
}

void RecordStore::ToChange(const RecordTypeSpec& type, absl::string_view id_bytes,
                           const RowState& row, uint64_t after_op,
                           kcnet::v1::RecordChange* out) const {
  RowToChange(type, id_bytes, row, after_op, out);
}

void RowToChange(const RecordTypeSpec& type, absl::string_view id_bytes, const RowState& row,
                 uint64_t after_op, kcnet::v1::RecordChange* out) {
  kcnet::v1::RecordChange& change = *out;
  change.set_type(type.type);
  change.set_id(std::string(id_bytes));
  change.set_op(row.op);
  change.set_bucket(row.bucket);
  if (row.deleted) {
    change.set_deleted(true);
    change.set_hlc(row.stamp.hlc);
    change.set_node(row.stamp.node);
    return;
  }
  const Baseline base = ChooseBaseline(row);
  change.set_hlc(base.stamp.hlc);
  change.set_node(base.stamp.node);
  change.mutable_fields()->Reserve(static_cast<int>(row.fields.size()));
  for (size_t i = 0; i < row.fields.size(); ++i) {
    const FieldState& f = row.fields[i];
    if (f.op <= after_op) continue;
    kcnet::v1::FieldChange* fc = change.add_fields();
    fc->set_field(type.fields[i].number);
    if (f.value.kind_case() != Value::KIND_NOT_SET) *fc->mutable_value() = f.value;
    if (f.stamp.hlc != base.stamp.hlc) fc->set_hlc(f.stamp.hlc);
    if (f.stamp.node != base.stamp.node) fc->set_node(f.stamp.node);
  }
}

absl::StatusOr<std::optional<int64_t>> RecordStore::GetMeta(absl::string_view key) {
  absl::StatusOr<Statement*> stmt = db_->Prepare("SELECT value FROM _meta WHERE key = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, key);
  absl::StatusOr<bool> has = (*stmt)->Step();
  if (!has.ok()) return has.status();
  std::optional<int64_t> out;
  if (*has) out = (*stmt)->ColumnInt(0);
  (*stmt)->Reset();
  return out;
}

absl::Status RecordStore::SetMeta(absl::string_view key, int64_t value) {
  absl::StatusOr<Statement*> stmt =
      db_->Prepare("INSERT OR REPLACE INTO _meta(key, value) VALUES (?1, ?2)");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, key);
  (*stmt)->BindInt(2, value);
  absl::Status status = (*stmt)->Run();
  (*stmt)->Reset();
  return status;
}

}  // namespace kcnet::sync
