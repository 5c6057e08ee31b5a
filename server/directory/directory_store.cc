#include "server/directory/directory_store.h"

#include <iterator>
#include <utility>

#include <sqlite3.h>

#include "absl/strings/numbers.h"
#include "server/directory/directory.h"
#include "sync/sqlite.h"

namespace kcnet::server {

int64_t DirRows::Int(size_t row, int col) const {
  const Cell& c = cell(row, col);
  int64_t value = 0;
  if (c.null || !absl::SimpleAtoi(c.value, &value)) return 0;
  return value;
}

std::string DirRows::Blob(size_t row, int col) const {
  const Cell& c = cell(row, col);
  if (!bytea_hex_ || c.null) return c.value;
  // PostgreSQL's bytea_output = hex: "\x" then two hex digits per byte.
  absl::string_view hex = c.value;
  if (hex.substr(0, 2) == "\\x") hex.remove_prefix(2);
  auto digit = [](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return 0;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(digit(hex[i]) * 16 + digit(hex[i + 1])));
  }
  return out;
}

absl::StatusOr<int64_t> DirectoryStore::Exec(absl::string_view sql,
                                             const std::vector<DirValue>& params) {
  absl::StatusOr<DirRows> rows = Query(sql, params);
  if (!rows.ok()) return rows.status();
  return LastChanges();
}

absl::StatusOr<std::unique_ptr<DirTransaction>> DirTransaction::Begin(DirectoryStore* store,
                                                                      bool read_only) {
  absl::Status status = store->Begin(read_only);
  if (!status.ok()) return status;
  return std::unique_ptr<DirTransaction>(new DirTransaction(store));
}

DirTransaction::~DirTransaction() {
  if (open_) store_->Rollback();
}

absl::Status DirTransaction::Commit() {
  open_ = false;
  return store_->Commit();
}

absl::StatusOr<DirRows> QuerySqlite(sync::Db& db, absl::string_view sql,
                                    const std::vector<DirValue>& params) {
  absl::StatusOr<sync::Statement*> stmt = db.Prepare(std::string(sql));
  if (!stmt.ok()) return stmt.status();
  sync::Statement* s = *stmt;
  struct Reset {
    sync::Statement* s;
    ~Reset() { s->Reset(); }
  } reset{s};
  for (size_t i = 0; i < params.size(); ++i) {
    const int index = static_cast<int>(i) + 1;
    const DirValue& p = params[i];
    switch (p.kind) {
      case DirValue::Kind::kNull:
        s->BindNull(index);
        break;
      case DirValue::Kind::kInt:
        s->BindInt(index, p.int_value);
        break;
      case DirValue::Kind::kText:
        s->BindText(index, p.bytes);
        break;
      case DirValue::Kind::kBlob:
        s->BindBlob(index, p.bytes);
        break;
    }
  }
  DirRows rows;
  bool first = true;
  while (true) {
    absl::StatusOr<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    // Integers come back as their decimal text (SQLite's INTEGER -> BLOB conversion).
    const int columns = sqlite3_column_count(s->raw());
    if (first) {
      rows = DirRows(columns);
      first = false;
    }
    for (int c = 0; c < columns; ++c) {
      rows.Add(s->IsNull(c) ? std::string() : std::string(s->ColumnBlob(c)), s->IsNull(c));
    }
  }
  return rows;
}

namespace {

// PRAGMA application_id of a directory file: "KCND".
constexpr int64_t kApplicationId = 0x4b434e44;

// kMigrations[v] takes the layout from version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: org units, users, assignments, tokens.
    "CREATE TABLE org_units("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  code TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  level INTEGER NOT NULL,"
    "  parent_id INTEGER REFERENCES org_units(id),"
    "  effective_from_ms INTEGER NOT NULL);"
    "CREATE INDEX org_units_parent ON org_units(parent_id);"
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  username TEXT NOT NULL UNIQUE,"
    "  display_name TEXT NOT NULL,"
    "  role INTEGER NOT NULL,"
    "  password_hash TEXT NOT NULL,"
    "  active INTEGER NOT NULL,"
    "  phone TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE user_org_units("
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  org_unit_id INTEGER NOT NULL REFERENCES org_units(id),"
    "  PRIMARY KEY(user_id, org_unit_id)) WITHOUT ROWID;"
    "CREATE TABLE tokens("
    "  hash BLOB PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX tokens_user ON tokens(user_id);"
    "CREATE INDEX tokens_expiry ON tokens(expires_ms);",
    // 1 -> 2: the audit trail of account changes, and lock-outs that survive a restart.
    "CREATE TABLE audit("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at_ms INTEGER NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  target_user_id INTEGER NOT NULL,"
    "  details TEXT NOT NULL);"
    "CREATE INDEX audit_target ON audit(target_user_id, id);"
    "CREATE TABLE sign_in_failures("
    "  username TEXT PRIMARY KEY,"
    "  failures INTEGER NOT NULL,"
    "  last_failure_ms INTEGER NOT NULL,"
    "  locked_until_ms INTEGER NOT NULL) WITHOUT ROWID;",
};
static_assert(std::size(kMigrations) == kDirectorySchemaVersion);

// The directory file: statements prepared once and cached by sync::Db.
class SqliteDirectoryStore : public DirectoryStore {
 public:
  explicit SqliteDirectoryStore(std::unique_ptr<sync::Db> db) : db_(std::move(db)) {}

  absl::Status Migrate() override {
    return sync::MigrateAppFile(*db_, {.application_id = kApplicationId,
                                       .name = "kcnet directory",
                                       .schema = "directory",
                                       .migrations = kMigrations,
                                       .version = kDirectorySchemaVersion});
  }

  absl::Status EnsureDeviceCredentials() override {
    if (device_credentials_ready_) return absl::OkStatus();
    // Created on first use, so that files of older servers need no migration. Revoked
    // rows stay (who revoked, when) for the audit; only live ones are looked up.
    absl::Status status = db_->Exec(
        "CREATE TABLE IF NOT EXISTS device_credentials("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  device_id TEXT NOT NULL,"
        "  user_id INTEGER NOT NULL REFERENCES users(id),"
        "  hash BLOB NOT NULL,"
        "  created_ms INTEGER NOT NULL,"
        "  last_used_ms INTEGER NOT NULL,"
        "  revoked_ms INTEGER NOT NULL DEFAULT 0,"
        "  revoked_by INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX IF NOT EXISTS device_credentials_device ON device_credentials(device_id);"
        "CREATE INDEX IF NOT EXISTS device_credentials_user ON device_credentials(user_id);");
    if (!status.ok()) return status;
    device_credentials_ready_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<DirRows> Query(absl::string_view sql,
                                const std::vector<DirValue>& params) override {
    return QuerySqlite(*db_, sql, params);
  }

  absl::Status Begin(bool read_only) override {
    absl::StatusOr<std::unique_ptr<sync::Transaction>> tx = sync::Transaction::Begin(
        db_.get(), read_only ? sync::Transaction::Kind::kRead : sync::Transaction::Kind::kWrite);
    if (!tx.ok()) return tx.status();
    tx_ = *std::move(tx);
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    std::unique_ptr<sync::Transaction> tx = std::move(tx_);
    if (tx == nullptr) return absl::FailedPreconditionError("directory: no open transaction");
    return tx->Commit();
  }
  void Rollback() override { tx_.reset(); }

  absl::StatusOr<int64_t> Version() override { return db_->QueryInt("PRAGMA data_version"); }
  absl::StatusOr<int64_t> BumpVersion() override { return -1; }
  bool shared() const override { return false; }

 protected:
  int64_t LastChanges() override { return db_->Changes(); }

 private:
  std::unique_ptr<sync::Db> db_;
  std::unique_ptr<sync::Transaction> tx_;
  bool device_credentials_ready_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DirectoryStore>> OpenSqliteDirectoryStore(const std::string& path) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path);
  if (!db.ok()) return db.status();
  return std::unique_ptr<DirectoryStore>(new SqliteDirectoryStore(*std::move(db)));
}

}  // namespace kcnet::server
