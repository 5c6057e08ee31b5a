#include "server/pgstore/pg_op_log.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/pgstore/pg_schema.h"

namespace kcnet::pgstore {
namespace {

constexpr size_t kMaxGroupPushes = 64;
constexpr size_t kMaxGroupOps = 2000;
constexpr char kChannel[] = "kcnet_commits";

}  // namespace

absl::StatusOr<std::unique_ptr<PgOpLog>> PgOpLog::Open(const std::string& conninfo,
                                                       PgOpLogOptions options) {
  std::unique_ptr<PgOpLog> log(new PgOpLog(std::move(options)));
  log->conninfo_ = conninfo;
  {
    absl::MutexLock lock(&log->write_mu_);
    absl::Status status = log->Reconnect(&log->writer_);
    if (!status.ok()) return status;
    status = Migrate(*log->writer_);
    if (!status.ok()) return status;
  }
  for (int i = 0; i < std::max(1, log->options_.reader_connections); ++i) {
    auto reader = std::make_unique<Reader>();
    absl::MutexLock lock(&reader->mu);
    absl::Status status = log->Reconnect(&reader->conn);
    if (!status.ok()) return status;
    log->readers_.push_back(std::move(reader));
  }
  if (log->options_.watch) {
    // The heads as they are now are the past, not news: the watcher reports what moves.
    absl::MutexLock lock(&log->write_mu_);
    absl::StatusOr<PgResult> rows =
        log->writer_->Query("SELECT bucket, last_op FROM kcnet_bucket_head");
    if (!rows.ok()) return rows.status();
    for (int r = 0; r < rows->rows(); ++r) {
      log->seen_heads_[rows->GetInt(r, 0)] = static_cast<uint64_t>(rows->GetInt(r, 1));
    }
  }
  if (log->options_.watch) {
    if (pipe2(log->wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      return absl::InternalError("pipe2 failed");
    }
    log->watcher_ = std::thread([raw = log.get()] { raw->Watch(); });
  }
  return log;
}

PgOpLog::~PgOpLog() {
  if (watcher_.joinable()) {
    {
      absl::MutexLock lock(&watch_mu_);
      stop_ = true;
    }
    char byte = 1;
    (void)!write(wake_[1], &byte, 1);
    watcher_.join();
  }
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

int32_t PgOpLog::ProvinceOf(int64_t bucket) const {
  return options_.province_of ? options_.province_of(bucket) : 0;
}

absl::Status PgOpLog::Reconnect(std::unique_ptr<PgConn>* conn) {
  conn->reset();
  absl::StatusOr<std::unique_ptr<PgConn>> fresh = PgConn::Connect(conninfo_);
  if (!fresh.ok()) return fresh.status();
  *conn = std::move(*fresh);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PgResult>> PgOpLog::RunPipeline(PgConn& conn,
                                                           const PgConn::Pipeline& p) {
  return options_.pipeline ? conn.Run(p) : conn.RunSequentially(p);
}

PgOpLog::WriteStats PgOpLog::write_stats() {
  absl::MutexLock lock(&write_mu_);
  return stats_;
}

void PgOpLog::SetCommitListener(CommitListener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

absl::StatusOr<PgPushResult> PgOpLog::Append(const PgPush& push) {
  if (!push.device_id.empty() && push.seq == 0) {
    return absl::InvalidArgumentError("push.seq: must be above 0 for a device's push");
  }
  if (push.ops.size() > kMaxGroupOps) {
    return absl::InvalidArgumentError(
        absl::StrCat("push.ops: ", push.ops.size(), " ops, at most ", kMaxGroupOps));
  }
  // Group commit, as the SQLite store: one caller at a time (the leader) commits every
  // push waiting, in arrival order, in one transaction.
  Pending pending{&push, absl::UnknownError("push: not committed")};
  queue_mu_.Lock();
  queue_.push_back(&pending);
  while (!pending.done && leader_) queue_cv_.Wait(&queue_mu_);
  if (!pending.done) {
    leader_ = true;
    while (!pending.done) {
      std::vector<Pending*> group;
      size_t ops = 0;
      while (!queue_.empty() &&
             (group.empty() || (group.size() < kMaxGroupPushes &&
                                ops + queue_.front()->push->ops.size() <= kMaxGroupOps))) {
        group.push_back(queue_.front());
        ops += queue_.front()->push->ops.size();
        queue_.pop_front();
      }
      queue_mu_.Unlock();
      CommitGroup(group);
      queue_mu_.Lock();
      for (Pending* p : group) p->done = true;
      queue_cv_.SignalAll();
    }
    leader_ = false;
    queue_cv_.SignalAll();
  }
  queue_mu_.Unlock();
  return std::move(pending.result);
}

void PgOpLog::CommitGroup(const std::vector<Pending*>& group) {
  absl::flat_hash_map<int64_t, uint64_t> heads;
  {
    absl::MutexLock lock(&write_mu_);
    absl::Status status;
    // A deadlock or serialization failure rolls everything back: try again (twice).
    for (int attempt = 0; attempt < 3; ++attempt) {
      heads.clear();
      status = CommitGroupLocked(group, &heads);
      if (!absl::IsAborted(status)) break;
    }
    if (!status.ok() && group.size() > 1 && !absl::IsUnavailable(status)) {
      // Nothing of the group was stored: commit each push alone, so that only the push
      // that fails gets the error.
      for (Pending* p : group) {
        absl::flat_hash_map<int64_t, uint64_t> one;
        absl::Status alone = CommitGroupLocked({p}, &one);
        if (!alone.ok()) p->result = alone;
        for (const auto& head : one) heads[head.first] = std::max(heads[head.first], head.second);
      }
    } else if (!status.ok()) {
      for (Pending* p : group) p->result = status;
    }
  }
  if (heads.empty()) return;
  std::vector<int64_t> buckets;
  uint64_t op = 0;
  for (const auto& head : heads) {
    buckets.push_back(head.first);
    op = std::max(op, head.second);
  }
  std::sort(buckets.begin(), buckets.end());
  {
    absl::MutexLock lock(&listener_mu_);
    if (listener_) listener_(buckets, op);
  }
  Announce(op);
}

void PgOpLog::Announce(uint64_t op) {
  if (!options_.watch) return;
  absl::MutexLock lock(&watch_mu_);
  to_announce_ = std::max(to_announce_, op);
  char byte = 1;
  (void)!write(wake_[1], &byte, 1);
}

absl::Status PgOpLog::CommitGroupLocked(const std::vector<Pending*>& group,
                                        absl::flat_hash_map<int64_t, uint64_t>* heads) {
  if (writer_ == nullptr || !writer_->ok()) {
    absl::Status status = Reconnect(&writer_);
    if (!status.ok()) return status;
  }
  PgConn& conn = *writer_;
  // What the group touches: buckets (with their provinces), devices, how many op ids.
  std::vector<int64_t> buckets;
  std::vector<std::string> devices;
  int64_t op_count = 0;
  for (const Pending* p : group) {
    if (!p->push->device_id.empty()) devices.push_back(p->push->device_id);
    for (const PgOp& op : p->push->ops) buckets.push_back(op.bucket);
    op_count += static_cast<int64_t>(p->push->ops.size());
  }
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  std::sort(devices.begin(), devices.end());
  devices.erase(std::unique(devices.begin(), devices.end()), devices.end());
  std::vector<int64_t> provinces;
  for (int64_t bucket : buckets) {
    const int32_t province = ProvinceOf(bucket);
    provinces.push_back(province);
    if (!partitions_.contains(province)) {
      absl::Status status = EnsureProvincePartition(conn, province);
      if (!status.ok()) return status;
      partitions_[province] = true;
    }
  }

  auto rollback = [&conn](absl::Status error) {
    conn.Exec("ROLLBACK").IgnoreError();
    return error;
  };

  // Round trip 1: lock the heads (sorted), lock the devices (sorted), then draw op ids.
  PgConn::Pipeline first;
  first.Add("BEGIN", {});
  if (!buckets.empty()) {
    first.Add(
        "INSERT INTO kcnet_bucket_head(bucket, province) SELECT b, p FROM "
        "unnest($1::bigint[], $2::integer[]) AS u(b, p) ORDER BY b ON CONFLICT (bucket) DO NOTHING",
        {PgParam::Text(IntArray(buckets)), PgParam::Text(IntArray(provinces))});
    first.Add(
        "SELECT bucket FROM kcnet_bucket_head WHERE bucket = ANY($1::bigint[]) ORDER BY bucket "
        "FOR UPDATE",
        {PgParam::Text(IntArray(buckets))});
  }
  int devices_result = -1;
  if (!devices.empty()) {
    first.Add(
        "INSERT INTO kcnet_devices(device_id, last_seq) SELECT d, 0 FROM unnest($1::text[]) AS d "
        "ORDER BY d ON CONFLICT (device_id) DO NOTHING",
        {PgParam::Text(TextArray(devices))});
    devices_result = static_cast<int>(first.size());
    first.Add(
        "SELECT device_id, last_seq FROM kcnet_devices WHERE device_id = ANY($1::text[]) "
        "ORDER BY device_id FOR UPDATE",
        {PgParam::Text(TextArray(devices))});
  }
  int ids_result = -1;
  if (op_count > 0) {
    ids_result = static_cast<int>(first.size());
    first.Add("SELECT nextval('kcnet_op_seq') FROM generate_series(1, $1::integer)",
              {PgParam::Int(op_count)});
  }
  absl::StatusOr<std::vector<PgResult>> locked = RunPipeline(conn, first);
  if (!locked.ok()) return rollback(locked.status());

  absl::flat_hash_map<std::string, uint64_t> last_seq;
  if (devices_result >= 0) {
    const PgResult& rows = (*locked)[devices_result];
    for (int r = 0; r < rows.rows(); ++r) {
      last_seq[std::string(rows.Get(r, 0))] = static_cast<uint64_t>(rows.GetInt(r, 1));
    }
  }
  std::vector<uint64_t> ids;
  if (ids_result >= 0) {
    const PgResult& rows = (*locked)[ids_result];
    for (int r = 0; r < rows.rows(); ++r) ids.push_back(static_cast<uint64_t>(rows.GetInt(r, 0)));
    std::sort(ids.begin(), ids.end());
  }

  // Round trip 2: the ops, the devices' sequences, refusals, the heads, COMMIT.
  PgConn::Pipeline second;
  std::vector<PgPushResult> results(group.size());
  std::vector<int> refusal_lookup(group.size(), -1);
  absl::flat_hash_map<int64_t, uint64_t> moved;
  size_t next_id = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    const PgPush& push = *group[i]->push;
    if (!push.device_id.empty()) {
      uint64_t& last = last_seq[push.device_id];
      if (push.seq <= last) {
        results[i].duplicate = true;
        refusal_lookup[i] = static_cast<int>(second.size());
        second.Add("SELECT result FROM kcnet_refusals WHERE device_id = $1 AND seq = $2",
                   {PgParam::Text(push.device_id), PgParam::Int(static_cast<int64_t>(push.seq))});
        continue;
      }
      last = push.seq;
    }
    for (const PgOp& op : push.ops) {
      const uint64_t id = ids[next_id++];
      results[i].ops.push_back(id);
      moved[op.bucket] = std::max(moved[op.bucket], id);
      second.Add(
          "INSERT INTO kcnet_ops(province, bucket, op, type, id, body) "
          "VALUES ($1, $2, $3, $4, $5, $6)",
          {PgParam::Int(ProvinceOf(op.bucket)), PgParam::Int(op.bucket),
           PgParam::Int(static_cast<int64_t>(id)), PgParam::Int(op.type), PgParam::Bytes(op.id),
           PgParam::Bytes(op.body)});
    }
    if (!push.refusal.empty()) {
      second.Add(
          "INSERT INTO kcnet_refusals(device_id, seq, result) VALUES ($1, $2, $3) "
          "ON CONFLICT (device_id, seq) DO UPDATE SET result = EXCLUDED.result",
          {PgParam::Text(push.device_id), PgParam::Int(static_cast<int64_t>(push.seq)),
           PgParam::Bytes(push.refusal)});
    }
  }
  for (const auto& device : last_seq) {
    second.Add("UPDATE kcnet_devices SET last_seq = $2 WHERE device_id = $1 AND last_seq < $2",
               {PgParam::Text(device.first), PgParam::Int(static_cast<int64_t>(device.second))});
  }
  if (!moved.empty()) {
    std::vector<int64_t> moved_buckets, moved_ops;
    for (const auto& head : moved) {
      moved_buckets.push_back(head.first);
      moved_ops.push_back(static_cast<int64_t>(head.second));
    }
    second.Add(
        "UPDATE kcnet_bucket_head AS h SET last_op = u.op FROM "
        "unnest($1::bigint[], $2::bigint[]) AS u(b, op) WHERE h.bucket = u.b",
        {PgParam::Text(IntArray(moved_buckets)), PgParam::Text(IntArray(moved_ops))});
  }
  second.Add("COMMIT", {});
  absl::StatusOr<std::vector<PgResult>> done = RunPipeline(conn, second);
  if (!done.ok()) return rollback(done.status());

  for (size_t i = 0; i < group.size(); ++i) {
    if (refusal_lookup[i] >= 0 && (*done)[refusal_lookup[i]].rows() > 0) {
      results[i].refusal = (*done)[refusal_lookup[i]].GetBytes(0, 0);
    }
    group[i]->result = std::move(results[i]);
  }
  stats_.pushes += group.size();
  stats_.transactions += 1;
  *heads = std::move(moved);
  return absl::OkStatus();
}

absl::Status PgOpLog::WithReader(const std::function<absl::Status(PgConn& conn)>& fn) {
  Reader& reader = *readers_[next_reader_.fetch_add(1) % readers_.size()];
  absl::MutexLock lock(&reader.mu);
  for (int attempt = 0;; ++attempt) {
    if (reader.conn == nullptr || !reader.conn->ok()) {
      absl::Status status = Reconnect(&reader.conn);
      if (!status.ok()) return status;
    }
    absl::Status status = fn(*reader.conn);
    if (!absl::IsUnavailable(status) || attempt > 0) return status;
  }
}

absl::StatusOr<std::vector<PgStoredOp>> PgOpLog::ReadSince(int64_t bucket, uint64_t cursor,
                                                           size_t limit) {
  std::vector<PgStoredOp> ops;
  // The province lets PostgreSQL prune to one partition and walk its (province, bucket,
  // op) primary key in order.
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    ops.clear();
    absl::StatusOr<PgResult> rows = conn.QueryBinary(
        "SELECT o.op, o.type, o.id, o.body FROM kcnet_ops o JOIN kcnet_bucket_head h "
        "ON h.bucket = o.bucket AND h.province = o.province "
        "WHERE o.province = $4 AND o.bucket = $1 AND o.op > $2 AND o.op <= h.last_op "
        "ORDER BY o.op LIMIT $3",
        {PgParam::Int(bucket), PgParam::Int(static_cast<int64_t>(cursor)),
         PgParam::Int(static_cast<int64_t>(limit)), PgParam::Int(ProvinceOf(bucket))});
    if (!rows.ok()) return rows.status();
    for (int r = 0; r < rows->rows(); ++r) {
      PgStoredOp op;
      op.op = static_cast<uint64_t>(rows->GetBinaryInt(r, 0));
      op.bucket = bucket;
      op.type = static_cast<uint32_t>(rows->GetBinaryInt(r, 1));
      op.id = std::string(rows->Get(r, 2));
      op.body = std::string(rows->Get(r, 3));
      ops.push_back(std::move(op));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return ops;
}

absl::StatusOr<uint64_t> PgOpLog::Checkpoint(int64_t bucket) {
  uint64_t op = 0;
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> rows = conn.Query(
        "SELECT last_op FROM kcnet_bucket_head WHERE bucket = $1", {PgParam::Int(bucket)});
    if (!rows.ok()) return rows.status();
    op = rows->rows() > 0 ? static_cast<uint64_t>(rows->GetInt(0, 0)) : 0;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return op;
}

absl::StatusOr<uint64_t> PgOpLog::LastSeq(const std::string& device_id) {
  uint64_t seq = 0;
  absl::Status status = WithReader([&](PgConn& conn) -> absl::Status {
    absl::StatusOr<PgResult> rows = conn.Query(
        "SELECT last_seq FROM kcnet_devices WHERE device_id = $1", {PgParam::Text(device_id)});
    if (!rows.ok()) return rows.status();
    seq = rows->rows() > 0 ? static_cast<uint64_t>(rows->GetInt(0, 0)) : 0;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return seq;
}

absl::Status PgOpLog::CheckHeads(PgConn& conn) {
  absl::StatusOr<PgResult> rows = conn.Query("SELECT bucket, last_op FROM kcnet_bucket_head");
  if (!rows.ok()) return rows.status();
  std::vector<int64_t> buckets;
  uint64_t op = 0;
  for (int r = 0; r < rows->rows(); ++r) {
    const int64_t bucket = rows->GetInt(r, 0);
    const uint64_t last = static_cast<uint64_t>(rows->GetInt(r, 1));
    uint64_t& seen = seen_heads_[bucket];
    if (last > seen) {
      seen = last;
      buckets.push_back(bucket);
      op = std::max(op, last);
    }
  }
  if (!buckets.empty()) {
    std::sort(buckets.begin(), buckets.end());
    absl::MutexLock lock(&listener_mu_);
    if (listener_) listener_(buckets, op);
  }
  return absl::OkStatus();
}

void PgOpLog::Watch() {
  std::unique_ptr<PgConn> conn;
  uint64_t announced = 0;
  absl::Time last_notify = absl::InfinitePast();
  while (true) {
    uint64_t announce = 0;
    {
      absl::MutexLock lock(&watch_mu_);
      if (stop_) return;
      announce = to_announce_;
    }
    if (conn == nullptr || !conn->ok()) {
      // (Re)connect, LISTEN, and look at the heads at once: a notification sent while we
      // were away is lost, the heads are not.
      if (!Reconnect(&conn).ok() || !conn->Exec(absl::StrCat("LISTEN ", kChannel)).ok()) {
        conn.reset();
        absl::MutexLock lock(&watch_mu_);
        watch_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(200));
        continue;
      }
      if (!CheckHeads(*conn).ok()) {
        conn.reset();  // lost again at once: reconnect, and look again
        continue;
      }
    }
    // Our commits: one NOTIFY for all of them since the last, at most every notify_interval.
    absl::Duration wait = options_.poll_interval;
    if (announce > announced) {
      const absl::Duration since = absl::Now() - last_notify;
      if (since >= options_.notify_interval) {
        if (conn->Query("SELECT pg_notify($1, $2)",
                        {PgParam::Text(kChannel), PgParam::Text(absl::StrCat(announce))})
                .ok()) {
          announced = announce;
          last_notify = absl::Now();
        }
      } else {
        wait = options_.notify_interval - since;
      }
    }
    if (!conn->ok()) {
      conn.reset();  // a failed NOTIFY found it lost: never wait on a dead socket
      continue;
    }
    pollfd fds[2] = {{conn->socket(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
    const int ready = poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(wait)) + 1);
    if (fds[1].revents & POLLIN) {
      char buffer[64];
      while (read(wake_[0], buffer, sizeof(buffer)) > 0) {
      }
    }
    bool notified = false;
    if (ready > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) {
      if (PQconsumeInput(conn->raw()) != 1) {
        conn.reset();  // lost: reconnect on the next turn
        continue;
      }
      while (PGnotify* n = PQnotifies(conn->raw())) {
        notified = true;
        PQfreemem(n);
      }
    }
    if (notified || ready == 0) {
      if (!CheckHeads(*conn).ok()) conn.reset();
    }
  }
}

}  // namespace kcnet::pgstore
