// Two Directory instances on one PostgreSQL database, as two kcnet-server instances
// behind nginx: a token issued by one is accepted by the other at once, a revocation or
// deactivation on one is refused by the other within 1 s (the default refresh interval),
// and failed sign-ins spread over both lock the account out on both. Starts its own
// PostgreSQL; skipped without the binaries.
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/directory/directory.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_directory_store.h"
#include "sync/hlc.h"
#include "tests/testing/pg_instance.h"

namespace kcnet::server {
namespace {

constexpr char kPassword[] = "correct horse";

class SharedDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = kcnet::testing::PgInstance::Start();
    if (absl::IsNotFound(pg.status())) GTEST_SKIP() << "no PostgreSQL binaries: " << pg.status();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    a_ = Open();
    b_ = Open();
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    auto province = a_->CreateOrgUnit("01", "Thành phố Hà Nội", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    ASSERT_TRUE(province.ok()) << province.status();
    auto commune =
        a_->CreateOrgUnit("00001", "Phường Phúc Xá", v1::ORG_UNIT_LEVEL_COMMUNE, province->id());
    ASSERT_TRUE(commune.ok()) << commune.status();
    commune_ = commune->id();
  }

  std::unique_ptr<Directory> Open() {
    auto store = pgstore::OpenPgDirectoryStore(pg_->conninfo());
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    DirectoryOptions options;  // the default refresh interval (250 ms)
    options.clock = &clock_;
    options.password_ops_limit = kArgon2OpsLimitMin;
    options.password_mem_limit = kArgon2MemLimitMin;
    auto directory = Directory::Open(*std::move(store), options);
    EXPECT_TRUE(directory.ok()) << directory.status();
    return directory.ok() ? *std::move(directory) : nullptr;
  }

  int64_t MustCreateUser(Directory& on, const std::string& username) {
    auto user =
        on.CreateUser(username, "Người Dùng", kPassword, v1::ROLE_COMMUNE_COLLABORATOR, {commune_});
    EXPECT_TRUE(user.ok()) << user.status();
    return user.ok() ? user->id() : 0;
  }

  // How long until `on` refuses `token` (at most 3 s).
  absl::Duration TimeUntilRefused(Directory& on, const std::string& token) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < absl::Seconds(3)) {
      if (absl::IsUnauthenticated(on.Authenticate(token).status())) return absl::Now() - start;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return absl::InfiniteDuration();
  }

  sync::FakeClock clock_{1764000000000};
  std::unique_ptr<kcnet::testing::PgInstance> pg_;
  std::unique_ptr<Directory> a_;
  std::unique_ptr<Directory> b_;
  int64_t commune_ = 0;
};

TEST_F(SharedDirectoryTest, TokenFromOneInstanceWorksOnTheOtherAtOnce) {
  // The user, created on A a moment ago, is not yet in B's caches either.
  const int64_t id = MustCreateUser(*a_, "lan");
  auto login = a_->Login("lan", kPassword);
  ASSERT_TRUE(login.ok()) << login.status();
  auto principal = b_->Authenticate(login->token);
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->user_id, id);
  EXPECT_EQ(principal->username, "lan");
  // And B signs in a user created on A as quickly.
  MustCreateUser(*a_, "minh");
  auto on_b = b_->Login("minh", kPassword);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_TRUE(a_->Authenticate(on_b->token).ok());
}

TEST_F(SharedDirectoryTest, LogoutOnOneInstanceIsRefusedByTheOtherWithinOneSecond) {
  MustCreateUser(*a_, "lan");
  auto login = a_->Login("lan", kPassword);
  ASSERT_TRUE(login.ok()) << login.status();
  ASSERT_TRUE(b_->Authenticate(login->token).ok());  // now in B's cache
  ASSERT_TRUE(a_->Logout(login->token).ok());
  EXPECT_LE(TimeUntilRefused(*b_, login->token), absl::Seconds(1));
}

TEST_F(SharedDirectoryTest, DeactivationOnOneInstanceIsRefusedByTheOtherWithinOneSecond) {
  const int64_t id = MustCreateUser(*a_, "lan");
  auto login = b_->Login("lan", kPassword);
  ASSERT_TRUE(login.ok()) << login.status();
  ASSERT_TRUE(b_->Authenticate(login->token).ok());
  ASSERT_TRUE(a_->DeactivateUser(id).ok());
  EXPECT_LE(TimeUntilRefused(*b_, login->token), absl::Seconds(1));
  // Within the same second B refuses the password too.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsUnauthenticated(b_->Login("lan", kPassword).status()));
}

TEST_F(SharedDirectoryTest, FailuresSpreadOverTwoInstancesLockTheAccountOnBoth) {
  MustCreateUser(*a_, "lan");
  for (int i = 0; i < 5; ++i) {
    Directory& on = i % 2 == 0 ? *a_ : *b_;
    EXPECT_TRUE(absl::IsUnauthenticated(on.Login("lan", "wrong").status())) << i;
  }
  // Five failures in all (three on A, two on B): locked on both, the right password too.
  EXPECT_TRUE(absl::IsResourceExhausted(a_->Login("lan", kPassword).status()));
  EXPECT_TRUE(absl::IsResourceExhausted(b_->Login("lan", kPassword).status()));
  clock_.Advance(1000);
  auto login = b_->Login("lan", kPassword);
  ASSERT_TRUE(login.ok()) << login.status();
  // The success cleared the streak for both: four more failures do not lock.
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(a_->Login("lan", "wrong").ok());
  EXPECT_TRUE(a_->Login("lan", kPassword).ok());
}

TEST_F(SharedDirectoryTest, AuditAndOrgUnitsAreShared) {
  const int64_t id = MustCreateUser(*a_, "lan");
  ASSERT_TRUE(b_->UpdateProfile(id, "Nguyễn Thị Lan", "0912 345 678").ok());
  // A sees B's change after its refresh interval (250 ms) at the latest.
  absl::SleepFor(absl::Milliseconds(300));
  auto seen = a_->GetUser(id);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->display_name(), "Nguyễn Thị Lan");
  auto audit = a_->ListAudit(0, 10);
  ASSERT_TRUE(audit.ok()) << audit.status();
  ASSERT_EQ(audit->size(), 2u);
  EXPECT_EQ((*audit)[1].action, "update_profile");
  EXPECT_EQ(b_->OrgUnitCount(), 2u);
}

TEST_F(SharedDirectoryTest, TwoInstancesTakingOneUsernameAtOnceGetAlreadyExists) {
  // Instance A's insert of "lan" is in flight (its transaction holds the new row) when B,
  // which has not seen it, inserts the same name: B waits for A and must then answer
  // "username taken" (ALREADY_EXISTS naming the field), not an internal error.
  auto racer = pgstore::PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(racer.ok()) << racer.status();
  ASSERT_TRUE((*racer)->Exec("BEGIN").ok());
  ASSERT_TRUE((*racer)
                  ->Exec("INSERT INTO kcnet_directory.users(username, display_name, role, "
                         "password_hash, active, created_ms, updated_ms, phone) VALUES ('lan', "
                         "'Lan', 1, 'x', 1, 0, 0, '')")
                  .ok());
  absl::Status on_b;
  std::thread b([&] {
    on_b = b_->CreateUser("lan", "Người Dùng", kPassword, v1::ROLE_COMMUNE_COLLABORATOR, {commune_})
               .status();
  });
  absl::SleepFor(absl::Milliseconds(500));  // B is past its own check, waiting on the row
  ASSERT_TRUE((*racer)->Exec("COMMIT").ok());
  b.join();
  EXPECT_TRUE(absl::IsAlreadyExists(on_b)) << on_b;
  EXPECT_NE(on_b.message().find("username"), std::string::npos) << on_b;
  // Nothing of B's attempt was stored: one "lan", no audit line for it.
  auto audit = b_->ListAudit(0, 10);
  ASSERT_TRUE(audit.ok()) << audit.status();
  EXPECT_TRUE(audit->empty());
}

}  // namespace
}  // namespace kcnet::server
