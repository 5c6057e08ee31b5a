#include "server/pgstore/pg_conn.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kcnet::pgstore {
namespace {

// Pointers into `params` for PQexecParams/PQsendQueryParams; valid while it lives.
struct ParamArrays {
  explicit ParamArrays(const std::vector<PgParam>& params) {
    for (const PgParam& p : params) {
      values.push_back(p.null ? nullptr : p.value.data());
      lengths.push_back(static_cast<int>(p.value.size()));
      formats.push_back(p.binary ? 1 : 0);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
};

}  // namespace

PgResult::~PgResult() {
  if (res_ != nullptr) PQclear(res_);
}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (res_ != nullptr) PQclear(res_);
    res_ = other.res_;
    other.res_ = nullptr;
  }
  return *this;
}

int PgResult::rows() const { return res_ == nullptr ? 0 : PQntuples(res_); }
int PgResult::columns() const { return res_ == nullptr ? 0 : PQnfields(res_); }
int64_t PgResult::affected() const {
  int64_t value = 0;
  if (res_ == nullptr || !absl::SimpleAtoi(PQcmdTuples(res_), &value)) return 0;
  return value;
}
bool PgResult::IsNull(int row, int col) const { return PQgetisnull(res_, row, col) != 0; }
absl::string_view PgResult::Get(int row, int col) const {
  return absl::string_view(PQgetvalue(res_, row, col), PQgetlength(res_, row, col));
}
int64_t PgResult::GetInt(int row, int col) const {
  int64_t value = 0;
  if (IsNull(row, col) || !absl::SimpleAtoi(Get(row, col), &value)) return 0;
  return value;
}
std::string PgResult::GetBytes(int row, int col) const {
  size_t length = 0;
  unsigned char* bytes =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(res_, row, col)), &length);
  if (bytes == nullptr) return "";
  std::string out(reinterpret_cast<const char*>(bytes), length);
  PQfreemem(bytes);
  return out;
}

int64_t PgResult::GetBinaryInt(int row, int col) const {
  if (IsNull(row, col)) return 0;
  const absl::string_view bytes = Get(row, col);
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
  // Sign-extend the narrower integer types (network byte order, two's complement).
  const size_t bits = bytes.size() * 8;
  if (bits > 0 && bits < 64 && (value >> (bits - 1)) & 1) value |= ~uint64_t{0} << bits;
  return static_cast<int64_t>(value);
}

absl::StatusOr<std::unique_ptr<PgConn>> PgConn::Connect(const std::string& conninfo) {
  pg_conn* conn = PQconnectdb(conninfo.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("PostgreSQL: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn);
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("PostgreSQL: cannot connect: ", message));
  }
  // Server notices ("already exists, skipping") are not errors: keep them off stderr.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<PgConn>(new PgConn(conn));
}

PgConn::~PgConn() { PQfinish(conn_); }

bool PgConn::ok() const { return PQstatus(conn_) == CONNECTION_OK; }
int PgConn::socket() const { return PQsocket(conn_); }

absl::Status PgConn::StatusOf(pg_result* res, absl::string_view context) const {
  const ExecStatusType status = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_PIPELINE_SYNC) {
    return absl::OkStatus();
  }
  const char* state = res == nullptr ? nullptr : PQresultErrorField(res, PG_DIAG_SQLSTATE);
  last_error_state_ = state != nullptr ? state : "";
  const std::string message =
      absl::StrCat("PostgreSQL: ", context.substr(0, 80), ": ",
                   res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
  if (PQstatus(conn_) != CONNECTION_OK) return absl::UnavailableError(message);
  if (state != nullptr && (std::strcmp(state, "40001") == 0 || std::strcmp(state, "40P01") == 0)) {
    return absl::AbortedError(message);
  }
  if (state != nullptr && std::strncmp(state, "08", 2) == 0) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

absl::Status PgConn::Exec(absl::string_view sql) {
  const std::string text(sql);
  PgResult res(PQexec(conn_, text.c_str()));
  return StatusOf(res.res_, sql);
}

absl::StatusOr<PgResult> PgConn::Query(const std::string& sql, const std::vector<PgParam>& params) {
  ParamArrays arrays(params);
  PgResult res(PQexecParams(conn_, sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), 0));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  return res;
}

absl::StatusOr<PgResult> PgConn::QueryBinary(const std::string& sql,
                                             const std::vector<PgParam>& params) {
  ParamArrays arrays(params);
  PgResult res(PQexecParams(conn_, sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), 1));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  return res;
}

absl::StatusOr<std::vector<PgResult>> PgConn::RunSequentially(const Pipeline& pipeline) {
  std::vector<PgResult> results;
  for (const Pipeline::Item& item : pipeline.items_) {
    absl::StatusOr<PgResult> res = Query(item.sql, item.params);
    if (!res.ok()) return res.status();
    results.push_back(std::move(*res));
  }
  return results;
}

absl::StatusOr<std::vector<PgResult>> PgConn::Run(const Pipeline& pipeline) {
  if (pipeline.items_.size() <= 1) return RunSequentially(pipeline);
  if (PQenterPipelineMode(conn_) != 1) {
    return absl::InternalError(absl::StrCat("PostgreSQL: pipeline mode: ", PQerrorMessage(conn_)));
  }
  absl::Status status;
  size_t sent = 0;
  for (const Pipeline::Item& item : pipeline.items_) {
    ParamArrays arrays(item.params);
    if (PQsendQueryParams(conn_, item.sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                          arrays.lengths.data(), arrays.formats.data(), 0) != 1) {
      status = absl::UnavailableError(absl::StrCat("PostgreSQL: send: ", PQerrorMessage(conn_)));
      break;
    }
    ++sent;
  }
  if (PQpipelineSync(conn_) != 1 && status.ok()) {
    status = absl::UnavailableError(absl::StrCat("PostgreSQL: sync: ", PQerrorMessage(conn_)));
  }
  // Results: each statement's result then a NULL; then the sync's PGRES_PIPELINE_SYNC.
  std::vector<PgResult> results;
  for (size_t i = 0; i < sent; ++i) {
    PgResult res(PQgetResult(conn_));
    if (res.res_ == nullptr) {
      if (status.ok()) status = absl::UnavailableError("PostgreSQL: pipeline lost its results");
      break;
    }
    absl::Status one = PQresultStatus(res.res_) == PGRES_PIPELINE_ABORTED
                           ? absl::AbortedError("PostgreSQL: pipeline aborted")
                           : StatusOf(res.res_, pipeline.items_[i].sql);
    if (status.ok() && !one.ok()) status = one;
    results.push_back(std::move(res));
    while (pg_result* extra = PQgetResult(conn_)) PQclear(extra);  // the NULL ending it
  }
  // Drain up to and including the sync.
  for (int spins = 0; PQstatus(conn_) == CONNECTION_OK && spins < 1000; ++spins) {
    pg_result* res = PQgetResult(conn_);
    if (res == nullptr) continue;
    const bool sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;
    PQclear(res);
    if (sync) break;
  }
  if (PQexitPipelineMode(conn_) != 1 && status.ok()) {
    status =
        absl::InternalError(absl::StrCat("PostgreSQL: pipeline exit: ", PQerrorMessage(conn_)));
  }
  if (!status.ok()) return status;
  return results;
}

std::string IntArray(const std::vector<int64_t>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace kcnet::pgstore
