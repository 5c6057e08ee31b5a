// A thin RAII layer over libpq: one connection (PgConn), its results (PgResult), and
// pipelines of statements (PgConn::Pipeline). libpq errors become absl::Status here and
// nowhere else: UNAVAILABLE when the connection is lost (the caller reconnects),
// ABORTED for a serialization failure or deadlock (the caller retries), INTERNAL else.
//
// Parameters are sent as text, or in binary: bytea (PgParam::Bytes) and whole arrays
// (PgBinaryArray: a batch of rows as one parameter per column, for `unnest`). Results come
// back as text (bytea columns through PgResult::GetBytes), or binary when asked.
//
// Prepared statements: Prepared() and Pipeline::AddPrepared() parse and plan a statement
// once per connection (named `kcnet_s<N>`, kept for the connection's life, also across
// rollbacks) and then only bind and execute it. Behind PgBouncer in transaction pooling
// this needs PgBouncer 1.21 or later with max_prepared_statements > 0; Query() stays
// unnamed.
//
// Thread-safety: a PgConn belongs to one thread at a time (the caller serialises access).
#ifndef KCNET_SERVER_PGSTORE_PG_CONN_H_
#define KCNET_SERVER_PGSTORE_PG_CONN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct pg_conn;
struct pg_result;

namespace kcnet::pgstore {

struct PgParam {
  static PgParam Text(std::string value) { return {std::move(value), false, false}; }
  static PgParam Int(int64_t value) { return {std::to_string(value), false, false}; }
  static PgParam Bytes(std::string value) { return {std::move(value), true, false}; }
  static PgParam Null() { return {"", false, true}; }
  std::string value;
  bool binary = false;
  bool null = false;
};

// A one-dimensional array bound as one binary parameter: PostgreSQL's array wire format
// (no text escaping; bytea elements travel as raw bytes). The SQL must cast the parameter
// to the array's type: $1::int[] (kInt4), ::bigint[] (kInt8), ::boolean[], ::text[],
// ::bytea[]; PostgreSQL checks the element type. No NULL elements.
class PgBinaryArray {
 public:
  enum class Type { kInt4, kInt8, kBool, kText, kBytea };
  explicit PgBinaryArray(Type type) : type_(type) {}
  void AddInt(int64_t value);              // kInt4 (must fit 32 bits) or kInt8
  void AddBool(bool value);                // kBool
  void AddBytes(absl::string_view value);  // kText (UTF-8) or kBytea
  size_t size() const { return count_; }
  // The parameter (the array's header, then its elements).
  PgParam Finish() const;

  static PgParam Ints(Type type, const std::vector<int64_t>& values);
  static PgParam Texts(const std::vector<std::string>& values);

 private:
  Type type_;
  std::string body_;
  size_t count_ = 0;
};

class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* res) : res_(res) {}
  ~PgResult();
  PgResult(PgResult&& other) noexcept : res_(other.res_) { other.res_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;

  int rows() const;
  int columns() const;
  // Rows changed by an INSERT, UPDATE or DELETE (PQcmdTuples); 0 for other statements.
  int64_t affected() const;
  bool IsNull(int row, int col) const;
  absl::string_view Get(int row, int col) const;
  int64_t GetInt(int row, int col) const;        // 0 for NULL
  std::string GetBytes(int row, int col) const;  // a bytea column, unescaped
  // Results of QueryBinary(): an integer column (int2, int4, int8) and raw bytes (bytea).
  int64_t GetBinaryInt(int row, int col) const;

 private:
  friend class PgConn;
  pg_result* res_ = nullptr;
};

class PgConn {
 public:
  // Connects (blocking). UNAVAILABLE with libpq's message when it cannot.
  static absl::StatusOr<std::unique_ptr<PgConn>> Connect(const std::string& conninfo);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // One or more statements without parameters (simple query protocol).
  absl::Status Exec(absl::string_view sql);
  // One statement with parameters ($1, $2...), unnamed (works behind PgBouncer).
  absl::StatusOr<PgResult> Query(const std::string& sql, const std::vector<PgParam>& params = {});
  // The same with results in binary format: bytea columns as raw bytes (Get), integers
  // through GetBinaryInt; half the bytes of hex text, and nothing to unescape.
  absl::StatusOr<PgResult> QueryBinary(const std::string& sql,
                                       const std::vector<PgParam>& params = {});
  // The same as a prepared statement of this connection (parsed and planned at its first
  // use, then only executed): for statements of a fixed shape run again and again.
  absl::StatusOr<PgResult> Prepared(const std::string& sql, const std::vector<PgParam>& params,
                                    bool binary_results = false);

  // Statements sent in libpq pipeline mode: Add() queues, Run() sends them all, waits for
  // every result and returns them in order (one per statement, none for a Sync()); the first
  // failure fails the whole pipeline (inside a transaction, the transaction is then aborted).
  class Pipeline {
   public:
    void Add(std::string sql, std::vector<PgParam> params) {
      items_.push_back({std::move(sql), std::move(params), false, false, false});
    }
    // A prepared statement of the connection (prepared in the same pipeline at first use).
    void AddPrepared(std::string sql, std::vector<PgParam> params, bool binary_results = false) {
      items_.push_back({std::move(sql), std::move(params), true, binary_results, false});
    }
    // Ends the implicit transaction of the statements before it (outside a BEGIN block
    // each group between syncs is one transaction, as if sent alone), without waiting.
    void Sync() { items_.push_back({"", {}, false, false, true}); }
    size_t size() const { return items_.size(); }

   private:
    friend class PgConn;
    struct Item {
      std::string sql;
      std::vector<PgParam> params;
      bool prepared = false;
      bool binary_results = false;
      bool sync = false;  // a Sync() marker, not a statement
    };
    std::vector<Item> items_;
  };
  absl::StatusOr<std::vector<PgResult>> Run(const Pipeline& pipeline);
  // Run() in two halves, for work to overlap PostgreSQL's: Send() sends the statements
  // without waiting, Receive() waits for their results (and reports a failed send). In
  // between the connection is busy (pending()); any other use of it first receives and
  // drops the pending results (a read sent ahead that nobody came for).
  absl::Status Send(const Pipeline& pipeline);
  absl::StatusOr<std::vector<PgResult>> Receive();
  bool pending() const { return pending_ != nullptr; }
  // The same statements one after the other (no pipeline): for measuring what it pays.
  absl::StatusOr<std::vector<PgResult>> RunSequentially(const Pipeline& pipeline);

  // True while the connection is up.
  bool ok() const;
  pg_conn* raw() { return conn_; }
  // The socket, for waiting on notifications.
  int socket() const;
  // The SQLSTATE of the last failed statement ("23505": a unique key taken), or "".
  const std::string& last_error_state() const { return last_error_state_; }

 private:
  explicit PgConn(pg_conn* conn) : conn_(conn) {}
  absl::Status StatusOf(pg_result* res, absl::string_view context) const;
  // Receives and drops the results of a pipeline Send() left pending.
  void DropPending();
  // The name of `sql` as a prepared statement, preparing it first if needed.
  absl::StatusOr<std::string> PreparedName(const std::string& sql, int params);
  pg_conn* conn_;
  // A pipeline sent and not yet received: what was sent, in order (a statement's
  // execution: its index; a preparation: -1 with its name; a sync: -2), and a send's failure.
  struct PendingPipeline {
    struct Sent {
      int item = -1;
      std::string name;
      std::string sql;
    };
    std::vector<Sent> sent;
    absl::Status status;
  };
  std::unique_ptr<PendingPipeline> pending_;
  // Statements prepared on this connection: SQL text -> name.
  std::unordered_map<std::string, std::string> prepared_;
  mutable std::string last_error_state_;  // set by StatusOf (single-threaded, as the class)
};

// Array literals for parameters bound as text: `{1,2,3}` for bigint[], and for text[] every
// element quoted, backslash and quote escaped.
std::string IntArray(const std::vector<int64_t>& values);
std::string TextArray(const std::vector<std::string>& values);

}  // namespace kcnet::pgstore

#endif  // KCNET_SERVER_PGSTORE_PG_CONN_H_
