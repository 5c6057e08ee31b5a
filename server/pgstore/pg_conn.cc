#include "server/pgstore/pg_conn.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>

#include "absl/container/flat_hash_map.h"
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

void PutInt32(std::string* out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(value >> shift));
}

void PutInt64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(value >> shift));
}

// Element type OIDs (pg_type.h): what array_recv checks the header against.
uint32_t ElementOid(PgBinaryArray::Type type) {
  switch (type) {
    case PgBinaryArray::Type::kInt4:
      return 23;
    case PgBinaryArray::Type::kInt8:
      return 20;
    case PgBinaryArray::Type::kBool:
      return 16;
    case PgBinaryArray::Type::kText:
      return 25;
    case PgBinaryArray::Type::kBytea:
      return 17;
  }
  return 0;
}

}  // namespace

void PgBinaryArray::AddInt(int64_t value) {
  if (type_ == Type::kInt4) {
    PutInt32(&body_, 4);
    PutInt32(&body_, static_cast<uint32_t>(static_cast<int32_t>(value)));
  } else {
    PutInt32(&body_, 8);
    PutInt64(&body_, static_cast<uint64_t>(value));
  }
  ++count_;
}

void PgBinaryArray::AddBool(bool value) {
  PutInt32(&body_, 1);
  body_.push_back(value ? 1 : 0);
  ++count_;
}

void PgBinaryArray::AddBytes(absl::string_view value) {
  PutInt32(&body_, static_cast<uint32_t>(value.size()));
  body_.append(value.data(), value.size());
  ++count_;
}

PgParam PgBinaryArray::Finish() const {
  // Header: dimensions (0 for an empty array), has-nulls flag, element type; then per
  // dimension its length and lower bound; then the elements, each length-prefixed.
  std::string out;
  out.reserve(20 + body_.size());
  PutInt32(&out, count_ == 0 ? 0 : 1);
  PutInt32(&out, 0);
  PutInt32(&out, ElementOid(type_));
  if (count_ > 0) {
    PutInt32(&out, static_cast<uint32_t>(count_));
    PutInt32(&out, 1);
  }
  out += body_;
  return PgParam::Bytes(std::move(out));
}

PgParam PgBinaryArray::Ints(Type type, const std::vector<int64_t>& values) {
  PgBinaryArray array(type);
  for (int64_t v : values) array.AddInt(v);
  return array.Finish();
}

PgParam PgBinaryArray::Texts(const std::vector<std::string>& values) {
  PgBinaryArray array(Type::kText);
  for (const std::string& v : values) array.AddBytes(v);
  return array.Finish();
}

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

void PgConn::DropPending() {
  if (pending_ != nullptr) Receive().IgnoreError();
}

absl::Status PgConn::Exec(absl::string_view sql) {
  DropPending();
  const std::string text(sql);
  PgResult res(PQexec(conn_, text.c_str()));
  return StatusOf(res.res_, sql);
}

absl::StatusOr<PgResult> PgConn::Query(const std::string& sql, const std::vector<PgParam>& params) {
  DropPending();
  ParamArrays arrays(params);
  PgResult res(PQexecParams(conn_, sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), 0));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  return res;
}

absl::StatusOr<PgResult> PgConn::QueryBinary(const std::string& sql,
                                             const std::vector<PgParam>& params) {
  DropPending();
  ParamArrays arrays(params);
  PgResult res(PQexecParams(conn_, sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), 1));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  return res;
}

absl::StatusOr<std::string> PgConn::PreparedName(const std::string& sql, int params) {
  auto known = prepared_.find(sql);
  if (known != prepared_.end()) return known->second;
  std::string name = absl::StrCat("kcnet_s", prepared_.size() + 1);
  PgResult res(PQprepare(conn_, name.c_str(), sql.c_str(), params, nullptr));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  prepared_.emplace(sql, name);
  return name;
}

absl::StatusOr<PgResult> PgConn::Prepared(const std::string& sql,
                                          const std::vector<PgParam>& params, bool binary_results) {
  DropPending();
  ParamArrays arrays(params);
  absl::StatusOr<std::string> name = PreparedName(sql, arrays.count());
  if (!name.ok()) return name.status();
  PgResult res(PQexecPrepared(conn_, name->c_str(), arrays.count(), arrays.values.data(),
                              arrays.lengths.data(), arrays.formats.data(),
                              binary_results ? 1 : 0));
  absl::Status status = StatusOf(res.res_, sql);
  if (!status.ok()) return status;
  return res;
}

absl::StatusOr<std::vector<PgResult>> PgConn::RunSequentially(const Pipeline& pipeline) {
  DropPending();
  std::vector<PgResult> results;
  for (const Pipeline::Item& item : pipeline.items_) {
    if (item.sync) continue;  // one statement at a time: each is its own transaction anyway
    absl::StatusOr<PgResult> res = item.prepared
                                       ? Prepared(item.sql, item.params, item.binary_results)
                                       : (item.binary_results ? QueryBinary(item.sql, item.params)
                                                              : Query(item.sql, item.params));
    if (!res.ok()) return res.status();
    results.push_back(std::move(*res));
  }
  return results;
}

absl::StatusOr<std::vector<PgResult>> PgConn::Run(const Pipeline& pipeline) {
  if (pipeline.items_.size() <= 1 && pending_ == nullptr) return RunSequentially(pipeline);
  if (absl::Status sent = Send(pipeline); !sent.ok()) return sent;
  return Receive();
}

absl::Status PgConn::Send(const Pipeline& pipeline) {
  DropPending();
  if (PQenterPipelineMode(conn_) != 1) {
    return absl::InternalError(absl::StrCat("PostgreSQL: pipeline mode: ", PQerrorMessage(conn_)));
  }
  // What was sent, in order: a statement's execution (its index), the preparation of a
  // statement first used here (-1, with its name and SQL), or a sync (-2): one result each.
  auto pending = std::make_unique<PendingPipeline>();
  absl::Status& status = pending->status;
  std::vector<PendingPipeline::Sent>& sent = pending->sent;
  absl::flat_hash_map<std::string, std::string> preparing;  // SQL -> name, in this pipeline
  for (size_t i = 0; i < pipeline.items_.size() && status.ok(); ++i) {
    const Pipeline::Item& item = pipeline.items_[i];
    if (item.sync) {
      if (PQpipelineSync(conn_) != 1) {
        status = absl::UnavailableError(absl::StrCat("PostgreSQL: sync: ", PQerrorMessage(conn_)));
        break;
      }
      sent.push_back({-2, "", ""});
      continue;
    }
    ParamArrays arrays(item.params);
    const int format = item.binary_results ? 1 : 0;
    if (!item.prepared) {
      if (PQsendQueryParams(conn_, item.sql.c_str(), arrays.count(), nullptr, arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), format) != 1) {
        status = absl::UnavailableError(absl::StrCat("PostgreSQL: send: ", PQerrorMessage(conn_)));
        break;
      }
      sent.push_back({static_cast<int>(i), "", item.sql});
      continue;
    }
    std::string name;
    if (auto known = prepared_.find(item.sql); known != prepared_.end()) {
      name = known->second;
    } else if (auto in_pipeline = preparing.find(item.sql); in_pipeline != preparing.end()) {
      name = in_pipeline->second;
    } else {
      name = absl::StrCat("kcnet_s", prepared_.size() + preparing.size() + 1);
      if (PQsendPrepare(conn_, name.c_str(), item.sql.c_str(), arrays.count(), nullptr) != 1) {
        status = absl::UnavailableError(absl::StrCat("PostgreSQL: send: ", PQerrorMessage(conn_)));
        break;
      }
      preparing.emplace(item.sql, name);
      sent.push_back({-1, name, item.sql});
    }
    if (PQsendQueryPrepared(conn_, name.c_str(), arrays.count(), arrays.values.data(),
                            arrays.lengths.data(), arrays.formats.data(), format) != 1) {
      status = absl::UnavailableError(absl::StrCat("PostgreSQL: send: ", PQerrorMessage(conn_)));
      break;
    }
    sent.push_back({static_cast<int>(i), "", item.sql});
  }
  if (PQpipelineSync(conn_) != 1 && status.ok()) {
    status = absl::UnavailableError(absl::StrCat("PostgreSQL: sync: ", PQerrorMessage(conn_)));
  }
  // Even a failed send is received (and drained) by Receive(), which reports it.
  pending_ = std::move(pending);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PgResult>> PgConn::Receive() {
  if (pending_ == nullptr) {
    return absl::FailedPreconditionError("PostgreSQL: no pipeline was sent");
  }
  const std::unique_ptr<PendingPipeline> pending = std::move(pending_);
  absl::Status status = pending->status;
  // Results: each one then a NULL; then the sync's PGRES_PIPELINE_SYNC.
  std::vector<PgResult> results;
  for (const PendingPipeline::Sent& one_sent : pending->sent) {
    PgResult res(PQgetResult(conn_));
    if (one_sent.item == -2) {
      // A sync in the middle: its PGRES_PIPELINE_SYNC (no NULL follows it).
      if (res.res_ == nullptr || PQresultStatus(res.res_) != PGRES_PIPELINE_SYNC) {
        if (status.ok()) status = absl::UnavailableError("PostgreSQL: pipeline lost its sync");
        break;
      }
      continue;
    }
    if (res.res_ == nullptr) {
      if (status.ok()) status = absl::UnavailableError("PostgreSQL: pipeline lost its results");
      break;
    }
    absl::Status one = PQresultStatus(res.res_) == PGRES_PIPELINE_ABORTED
                           ? absl::AbortedError("PostgreSQL: pipeline aborted")
                           : StatusOf(res.res_, one_sent.sql);
    if (status.ok() && !one.ok()) status = one;
    if (one_sent.item < 0) {
      // A statement prepared: known to the connection from now on (not transactional).
      if (one.ok()) prepared_.emplace(one_sent.sql, one_sent.name);
    } else {
      results.push_back(std::move(res));
    }
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
