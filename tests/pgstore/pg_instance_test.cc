// The PostgreSQL test harness itself: a private server that starts, serves, and leaves
// nothing behind.
#include "tests/testing/pg_instance.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace kcnet::testing {
namespace {

std::string QueryOne(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::string value = "<no connection: " + std::string(PQerrorMessage(conn)) + ">";
  if (PQstatus(conn) == CONNECTION_OK) {
    PGresult* res = PQexec(conn, sql.c_str());
    value = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                ? PQgetvalue(res, 0, 0)
                : "<error: " + std::string(PQerrorMessage(conn)) + ">";
    PQclear(res);
  }
  PQfinish(conn);
  return value;
}

TEST(PgInstanceTest, StartsServesAndCleansUp) {
  auto pg = PgInstance::Start();
  if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
  ASSERT_TRUE(pg.ok()) << pg.status();
  const std::string dir = (*pg)->dir();
  const pid_t pid = (*pg)->pid();
  EXPECT_GT((*pg)->port(), 0);
  EXPECT_EQ(QueryOne((*pg)->conninfo(), "SELECT current_database()"), "kcnet");
  EXPECT_EQ(QueryOne((*pg)->conninfo(), "SHOW fsync"), "on");
  EXPECT_EQ(QueryOne((*pg)->conninfo(), "SHOW listen_addresses"), "127.0.0.1");
  // The socket directory is the private one, not /var/run/postgresql.
  EXPECT_EQ(QueryOne((*pg)->conninfo(), "SHOW unix_socket_directories"), dir);
  struct stat st {};
  ASSERT_EQ(stat((dir + "/data").c_str(), &st), 0);
  if (geteuid() == 0) {
    EXPECT_NE(st.st_uid, 0u) << "the cluster must not belong to root";
  }

  ASSERT_TRUE((*pg)->CreateDatabase("second").ok());
  EXPECT_EQ(QueryOne((*pg)->conninfo("second"), "SELECT current_database()"), "second");

  pg->reset();
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_NE(kill(pid, 0), 0) << "the server process must be gone";
}

TEST(PgInstanceTest, TwoInstancesAreIndependent) {
  auto a = PgInstance::Start();
  if (absl::IsNotFound(a.status())) GTEST_SKIP() << a.status();
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = PgInstance::Start();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->port(), (*b)->port());
  EXPECT_NE((*a)->dir(), (*b)->dir());
  ASSERT_TRUE((*a)->CreateDatabase("only_on_a").ok());
  EXPECT_EQ(
      QueryOne((*b)->conninfo(), "SELECT count(*) FROM pg_database WHERE datname = 'only_on_a'"),
      "0");
}

}  // namespace
}  // namespace kcnet::testing
