// The PostgreSQL op log (server/pgstore/pg_op_log.h) on a real, private PostgreSQL:
// migrations, partitions by province, exactly-once pushes, ordering under concurrent
// writers on several instances, and commits reaching other instances.
#include "server/pgstore/pg_op_log.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_schema.h"
#include "tests/testing/pg_instance.h"

namespace kcnet::pgstore {
namespace {

using ::kcnet::testing::PgInstance;

// One server for the suite (starting one takes seconds on a busy machine); a fresh
// database for every test.
class PgOpLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pg = PgInstance::Start();
    if (absl::IsNotFound(pg.status())) {
      skip_ = new std::string(pg.status().ToString());
      return;
    }
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  void SetUp() override {
    if (skip_ != nullptr) GTEST_SKIP() << *skip_;
    ASSERT_NE(pg_, nullptr);
    static int databases = 0;
    database_ = absl::StrCat("t", ++databases);
    ASSERT_TRUE(pg_->CreateDatabase(database_).ok());
  }
  std::string conninfo() const { return pg_->conninfo(database_); }
  std::unique_ptr<PgOpLog> Open(PgOpLogOptions options = {}) {
    auto log = PgOpLog::Open(conninfo(), std::move(options));
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(*log) : nullptr;
  }
  std::unique_ptr<PgConn> Connect() {
    auto conn = PgConn::Connect(conninfo());
    EXPECT_TRUE(conn.ok()) << conn.status();
    return conn.ok() ? std::move(*conn) : nullptr;
  }
  int64_t Count(const std::string& sql) {
    auto conn = Connect();
    auto rows = conn->Query(sql);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? rows->GetInt(0, 0) : -1;
  }
  static PgInstance* pg_;
  static std::string* skip_;
  std::string database_;
};
PgInstance* PgOpLogTest::pg_ = nullptr;
std::string* PgOpLogTest::skip_ = nullptr;

PgOp Op(int64_t bucket, const std::string& id, const std::string& body = "x") {
  return PgOp{bucket, 1, id, body};
}

TEST_F(PgOpLogTest, MigratesOnceAndRefusesANewerSchema) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto conn = Connect();
  EXPECT_EQ(*SchemaVersion(*conn), kPgSchemaVersion);
  log.reset();
  ASSERT_NE(Open(), nullptr) << "opening again must not migrate again";
  EXPECT_EQ(Count("SELECT count(*) FROM kcnet_schema"), kPgSchemaVersion);

  ASSERT_TRUE(
      conn->Exec(absl::StrCat("INSERT INTO kcnet_schema VALUES (", kPgSchemaVersion + 1, ")"))
          .ok());
  auto newer = PgOpLog::Open(conninfo());
  EXPECT_TRUE(absl::IsFailedPrecondition(newer.status())) << newer.status();
  EXPECT_NE(newer.status().message().find("newer kcnet"), std::string::npos);
}

TEST_F(PgOpLogTest, PartitionsTheLogByProvince) {
  PgOpLogOptions options;
  options.province_of = [](int64_t bucket) { return static_cast<int32_t>(bucket / 1000); };
  auto log = Open(options);
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append({"", 0, {Op(1001, "a"), Op(2002, "b"), Op(2003, "c")}, ""}).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM kcnet_ops_p1"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM kcnet_ops_p2"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'kcnet_ops'::regclass"), 2);
  // Reads go through the parent, whatever the partition.
  auto ops = log->ReadSince(2003, 0, 10);
  ASSERT_TRUE(ops.ok()) << ops.status();
  ASSERT_EQ(ops->size(), 1u);
  EXPECT_EQ((*ops)[0].id, "c");
}

TEST_F(PgOpLogTest, DevicePushesApplyExactlyOnceWithTheirRefusals) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  std::string binary_id("\0\x01\xff", 3);  // bytea, not text
  auto first = log->Append({"tablet-1", 1, {Op(7, binary_id, "v1")}, "refused: field 3"});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->duplicate);
  ASSERT_EQ(first->ops.size(), 1u);

  auto replay = log->Append({"tablet-1", 1, {Op(7, binary_id, "v1")}, "refused: field 3"});
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(replay->duplicate);
  EXPECT_TRUE(replay->ops.empty());
  EXPECT_EQ(replay->refusal, "refused: field 3");
  EXPECT_EQ(*log->LastSeq("tablet-1"), 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM kcnet_ops"), 1);

  auto second = log->Append({"tablet-1", 2, {Op(7, binary_id, "v2")}, ""});
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->duplicate);
  EXPECT_GT(second->ops[0], first->ops[0]);
  auto ops = log->ReadSince(7, 0, 10);
  ASSERT_EQ(ops->size(), 2u);
  EXPECT_EQ((*ops)[0].id, binary_id);
  EXPECT_EQ((*ops)[1].body, "v2");
  EXPECT_EQ(*log->Checkpoint(7), second->ops[0]);
  EXPECT_EQ(*log->LastSeq("unknown"), 0u);

  auto bad = log->Append({"tablet-1", 0, {Op(7, "z")}, ""});
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_NE(bad.status().message().find("push.seq"), std::string::npos);
}

TEST_F(PgOpLogTest, SequentialStatementsGiveTheSameAnswers) {
  PgOpLogOptions options;
  options.pipeline = false;
  auto log = Open(options);
  ASSERT_NE(log, nullptr);
  auto first = log->Append({"d", 1, {Op(1, "a"), Op(2, "b")}, "r"});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->ops.size(), 2u);
  auto again = log->Append({"d", 1, {Op(1, "a")}, ""});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->refusal, "r");
}

// The ordering property (docs/POSTGRES.md): many writers on several instances on the same
// few buckets, and a reader polling `op > cursor` per bucket while they write. Every
// committed op must reach the reader exactly once, in increasing order.
TEST_F(PgOpLogTest, ConcurrentWritersNeverMakeAPollingReaderMissAnOp) {
  constexpr int kInstances = 3;
  constexpr int kWritersPerInstance = 4;
  constexpr int kPushesPerWriter = 150;
  constexpr int kBuckets = 4;
  PgOpLogOptions options;
  options.watch = false;
  std::vector<std::unique_ptr<PgOpLog>> instances;
  for (int i = 0; i < kInstances + 1; ++i) {
    instances.push_back(Open(options));
    ASSERT_NE(instances.back(), nullptr);
  }
  PgOpLog& reader_log = *instances.back();

  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::map<int64_t, std::vector<uint64_t>> seen;  // per bucket, in the order read
  std::thread reader([&] {
    std::map<int64_t, uint64_t> cursor;
    auto poll_all = [&] {
      for (int64_t b = 1; b <= kBuckets; ++b) {
        auto ops = reader_log.ReadSince(b, cursor[b], 100);
        if (!ops.ok()) {
          ++failures;
          continue;
        }
        for (const PgStoredOp& op : *ops) {
          seen[b].push_back(op.op);
          cursor[b] = op.op;
        }
      }
    };
    while (writing.load()) poll_all();
    for (int i = 0; i < 3; ++i) poll_all();  // the rest, after the last commit
  });

  std::vector<std::thread> writers;
  for (int i = 0; i < kInstances; ++i) {
    for (int w = 0; w < kWritersPerInstance; ++w) {
      writers.emplace_back([&, i, w] {
        std::mt19937 rng(static_cast<uint32_t>(i * 100 + w));
        const std::string device = absl::StrCat("dev-", i, "-", w);
        for (int n = 1; n <= kPushesPerWriter; ++n) {
          PgPush push{device, static_cast<uint64_t>(n), {}, ""};
          const int ops = 1 + static_cast<int>(rng() % 3);
          for (int k = 0; k < ops; ++k) {
            push.ops.push_back(Op(1 + static_cast<int64_t>(rng() % kBuckets),
                                  absl::StrCat(device, "/", n, "/", k)));
          }
          if (!instances[i]->Append(push).ok()) ++failures;
        }
      });
    }
  }
  for (std::thread& t : writers) t.join();
  writing = false;
  reader.join();
  EXPECT_EQ(failures.load(), 0);

  auto conn = Connect();
  int64_t total = 0;
  for (int64_t b = 1; b <= kBuckets; ++b) {
    auto rows =
        conn->Query("SELECT op FROM kcnet_ops WHERE bucket = $1 ORDER BY op", {PgParam::Int(b)});
    ASSERT_TRUE(rows.ok());
    std::vector<uint64_t> committed;
    for (int r = 0; r < rows->rows(); ++r) committed.push_back(rows->GetInt(r, 0));
    total += static_cast<int64_t>(committed.size());
    // Read in increasing order, each once, and nothing committed was skipped.
    EXPECT_TRUE(std::is_sorted(seen[b].begin(), seen[b].end())) << "bucket " << b;
    EXPECT_EQ(seen[b], committed) << "bucket " << b << ": the reader saw " << seen[b].size()
                                  << " of " << committed.size() << " ops";
  }
  EXPECT_GE(total, kInstances * kWritersPerInstance * kPushesPerWriter);
  for (int i = 0; i < kInstances; ++i) {
    for (int w = 0; w < kWritersPerInstance; ++w) {
      EXPECT_EQ(*reader_log.LastSeq(absl::StrCat("dev-", i, "-", w)),
                static_cast<uint64_t>(kPushesPerWriter));
    }
  }
}

// Collects what a commit listener hears.
class Heard {
 public:
  void Add(const std::vector<int64_t>& buckets) {
    absl::MutexLock lock(&mu_);
    for (int64_t b : buckets) buckets_.insert(b);
  }
  bool WaitFor(int64_t bucket, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto has = [this, bucket]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return buckets_.count(bucket) > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&has), timeout);
  }

 private:
  absl::Mutex mu_;
  std::set<int64_t> buckets_ ABSL_GUARDED_BY(mu_);
};

TEST_F(PgOpLogTest, CommitsReachTheOtherInstancesListeners) {
  PgOpLogOptions no_poll;
  no_poll.poll_interval = absl::Seconds(60);  // only the NOTIFY can tell b in time
  auto a = Open();
  auto b = Open(no_poll);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  Heard on_a, on_b;
  a->SetCommitListener([&](const std::vector<int64_t>& buckets, uint64_t) { on_a.Add(buckets); });
  b->SetCommitListener([&](const std::vector<int64_t>& buckets, uint64_t) { on_b.Add(buckets); });
  ASSERT_TRUE(a->Append({"", 0, {Op(41, "x")}, ""}).ok());
  EXPECT_TRUE(on_a.WaitFor(41, absl::Seconds(1))) << "a local commit is told at once";
  EXPECT_TRUE(on_b.WaitFor(41, absl::Seconds(20)));
}

TEST_F(PgOpLogTest, ThePollFindsCommitsThatSentNoNotification) {
  PgOpLogOptions quiet;
  quiet.watch = false;  // commits without NOTIFY, as if the notification were lost
  auto writer = Open(quiet);
  auto watcher = Open();
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(watcher, nullptr);
  Heard heard;
  watcher->SetCommitListener(
      [&](const std::vector<int64_t>& buckets, uint64_t) { heard.Add(buckets); });
  ASSERT_TRUE(writer->Append({"", 0, {Op(42, "x")}, ""}).ok());
  EXPECT_TRUE(heard.WaitFor(42, absl::Seconds(10)));
}

TEST_F(PgOpLogTest, TheWatcherReconnectsAndLooksAgain) {
  PgOpLogOptions no_poll;
  no_poll.poll_interval = absl::Seconds(60);  // only a new LISTEN or the re-query can tell it
  auto writer = Open();
  auto watcher = Open(no_poll);
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(watcher, nullptr);
  Heard heard;
  watcher->SetCommitListener(
      [&](const std::vector<int64_t>& buckets, uint64_t) { heard.Add(buckets); });
  // Cut every other session (the watcher's LISTEN among them), then commit.
  auto admin = Connect();
  ASSERT_TRUE(admin
                  ->Query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE pid <> pg_backend_pid() AND datname = current_database()")
                  .ok());
  // The writer's connection was cut too: its first try may fail, the next reconnects.
  absl::StatusOr<PgPushResult> pushed = writer->Append({"", 0, {Op(43, "x")}, ""});
  if (!pushed.ok()) pushed = writer->Append({"", 0, {Op(43, "x")}, ""});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_TRUE(heard.WaitFor(43, absl::Seconds(20)));
}

}  // namespace
}  // namespace kcnet::pgstore
