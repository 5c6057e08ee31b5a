#include "server/pgstore/pg_directory_store.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_schema.h"

namespace kcnet::pgstore {

using server::DirRows;
using server::DirValue;

std::string PgPlaceholders(absl::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  bool quoted = false;
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'') quoted = !quoted;
    if (!quoted && c == '?' && i + 1 < sql.size() &&
        absl::ascii_isdigit(static_cast<unsigned char>(sql[i + 1]))) {
      out.push_back('$');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

PgSqlSession::PgSqlSession(std::string conninfo, std::unique_ptr<PgConn> conn, std::string schema,
                           std::string whose)
    : conninfo_(std::move(conninfo)),
      conn_(std::move(conn)),
      search_path_(absl::StrCat("SET search_path TO ", schema)),
      whose_(std::move(whose)) {}

PgSqlSession::~PgSqlSession() = default;

absl::Status PgSqlSession::Migrate() {
  absl::Status status = pgstore::Migrate(*conn_);
  if (!status.ok()) return status;
  migrated_ = true;
  return conn_->Exec(search_path_);
}

absl::StatusOr<DirRows> PgSqlSession::Query(absl::string_view sql,
                                            const std::vector<DirValue>& params) {
  absl::Status status = EnsureConnected();
  if (!status.ok()) return status;
  std::vector<PgParam> pg_params;
  pg_params.reserve(params.size());
  for (const DirValue& p : params) {
    switch (p.kind) {
      case DirValue::Kind::kNull:
        pg_params.push_back(PgParam::Null());
        break;
      case DirValue::Kind::kInt:
        pg_params.push_back(PgParam::Int(p.int_value));
        break;
      case DirValue::Kind::kText:
        pg_params.push_back(PgParam::Text(p.bytes));
        break;
      case DirValue::Kind::kBlob:
        pg_params.push_back(PgParam::Bytes(p.bytes));
        break;
    }
  }
  absl::StatusOr<PgResult> res = conn_->Query(PgPlaceholders(sql), pg_params);
  if (!res.ok()) return res.status();
  last_changes_ = res->affected();
  DirRows rows(res->columns(), /*bytea_hex=*/true);
  for (int r = 0; r < res->rows(); ++r) {
    for (int c = 0; c < res->columns(); ++c) {
      rows.Add(std::string(res->Get(r, c)), res->IsNull(r, c));
    }
  }
  return rows;
}

absl::Status PgSqlSession::Begin(const char* begin) {
  absl::Status status = EnsureConnected();
  if (!status.ok()) return status;
  status = conn_->Exec(begin);
  if (!status.ok()) return status;
  in_transaction_ = true;
  return absl::OkStatus();
}

absl::Status PgSqlSession::Commit() {
  in_transaction_ = false;
  return conn_->Exec("COMMIT");
}

void PgSqlSession::Rollback() {
  in_transaction_ = false;
  if (conn_->ok()) conn_->Exec("ROLLBACK").IgnoreError();
}

const std::string& PgSqlSession::last_error_state() const { return conn_->last_error_state(); }

absl::Status PgSqlSession::EnsureConnected() {
  if (conn_->ok()) return absl::OkStatus();
  if (in_transaction_) {
    return absl::UnavailableError(absl::StrCat("PostgreSQL: ", whose_, " connection was lost"));
  }
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo_);
  if (!conn.ok()) return conn.status();
  conn_ = *std::move(conn);
  if (!migrated_) return absl::OkStatus();
  return conn_->Exec(search_path_);
}

namespace {

class PgDirectoryStore : public server::DirectoryStore {
 public:
  PgDirectoryStore(std::string conninfo, std::unique_ptr<PgConn> conn)
      : session_(std::move(conninfo), std::move(conn), "kcnet_directory", "the directory's") {}

  absl::Status Migrate() override { return session_.Migrate(); }

  absl::Status EnsureDeviceCredentials() override { return absl::OkStatus(); }

  absl::StatusOr<DirRows> Query(absl::string_view sql,
                                const std::vector<DirValue>& params) override {
    absl::StatusOr<DirRows> rows = session_.Query(sql, params);
    if (!rows.ok() && session_.last_error_state() == "23505") {
      // A unique key (a username, an org unit's code) another instance committed first:
      // the Directory answers it as the name being taken.
      return absl::AlreadyExistsError(rows.status().message());
    }
    return rows;
  }

  // A read sees one snapshot (the cache load); a write sees each statement's commits.
  absl::Status Begin(bool read_only) override {
    return session_.Begin(read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN");
  }
  absl::Status Commit() override { return session_.Commit(); }
  void Rollback() override { session_.Rollback(); }

  absl::StatusOr<int64_t> Version() override {
    absl::StatusOr<DirRows> rows = Query("SELECT value FROM generation WHERE id = 1", {});
    if (!rows.ok()) return rows.status();
    if (rows->empty()) return absl::InternalError("kcnet_directory.generation: no row");
    return rows->Int(0, 0);
  }
  absl::StatusOr<int64_t> BumpVersion() override {
    absl::StatusOr<DirRows> rows =
        Query("UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value", {});
    if (!rows.ok()) return rows.status();
    if (rows->empty()) return absl::InternalError("kcnet_directory.generation: no row");
    return rows->Int(0, 0);
  }
  bool shared() const override { return true; }

 protected:
  int64_t LastChanges() override { return session_.last_changes(); }

 private:
  PgSqlSession session_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<server::DirectoryStore>> OpenPgDirectoryStore(
    const std::string& conninfo) {
  absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(conninfo);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<server::DirectoryStore>(new PgDirectoryStore(conninfo, *std::move(conn)));
}

}  // namespace kcnet::pgstore
