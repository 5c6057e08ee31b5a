#include "server/directory/directory.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/sqlite.h"
#include "tests/testing/test_util.h"
#if KCNET_DIRECTORY_TEST_PG
#include "server/pgstore/pg_directory_store.h"
#include "tests/testing/pg_instance.h"
#endif

namespace kcnet::server {
namespace {

using ::kcnet::v1::OrgUnit;
using ::kcnet::v1::User;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr int64_t kT0 = 1764000000000;
constexpr char kPassword[] = "correct horse";

DirectoryOptions FastOptions(sync::Clock* clock) {
  DirectoryOptions options;
  options.clock = clock;
  options.password_ops_limit = kArgon2OpsLimitMin;
  options.password_mem_limit = kArgon2MemLimitMin;
  return options;
}

// Expects `status` to have `code` and a message naming `field`.
void ExpectError(const absl::Status& status, absl::StatusCode code, absl::string_view field) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(field) + ":")) << status;
}

// The stores every test runs on: the SQLite file (directory_test) or PostgreSQL
// (directory_pg_test, its own server, one database per test; skipped without the
// PostgreSQL binaries).
enum class StoreKind { kSqlite, kPostgres };

std::string StoreName(const ::testing::TestParamInfo<StoreKind>& info) {
  return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

class DirectoryTest : public ::testing::TestWithParam<StoreKind> {
 protected:
#if KCNET_DIRECTORY_TEST_PG
  static void SetUpTestSuite() {
    auto pg = kcnet::testing::PgInstance::Start();
    if (!pg.ok()) {
      pg_status_ = new absl::Status(pg.status());
      return;
    }
    pg_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static inline kcnet::testing::PgInstance* pg_ = nullptr;
  static inline absl::Status* pg_status_ = nullptr;
  static inline int databases_ = 0;
  std::string conninfo_;
#endif

  void SetUp() override {
#if KCNET_DIRECTORY_TEST_PG
    if (GetParam() == StoreKind::kPostgres) {
      if (pg_ == nullptr && pg_status_ != nullptr && absl::IsNotFound(*pg_status_)) {
        GTEST_SKIP() << "no PostgreSQL binaries: " << *pg_status_;
      }
      ASSERT_NE(pg_, nullptr) << (pg_status_ ? *pg_status_ : absl::UnknownError("no server"));
      const std::string name = "dir" + std::to_string(++databases_);
      ASSERT_TRUE(pg_->CreateDatabase(name).ok());
      conninfo_ = pg_->conninfo(name);
    }
#endif
    Reopen();
    // 01 province > 001 district > 00001, 00004 communes; 01 > 002 > 00037;
    // 02 province > 00100 commune (the two-tier shape).
    p1_ = MustCreate("01", "Thành phố Hà Nội", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    d1_ = MustCreate("001", "Quận Ba Đình", v1::ORG_UNIT_LEVEL_DISTRICT, p1_);
    c1_ = MustCreate("00001", "Phường Phúc Xá", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
    c2_ = MustCreate("00004", "Phường Trúc Bạch", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
    d2_ = MustCreate("002", "Quận Hoàn Kiếm", v1::ORG_UNIT_LEVEL_DISTRICT, p1_);
    c3_ = MustCreate("00037", "Phường Phúc Tân", v1::ORG_UNIT_LEVEL_COMMUNE, d2_);
    p2_ = MustCreate("02", "Tỉnh Hà Giang", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    c4_ = MustCreate("00100", "Xã Lũng Cú", v1::ORG_UNIT_LEVEL_COMMUNE, p2_);
  }

  bool sqlite() const { return GetParam() == StoreKind::kSqlite; }

  // A new connection to the test's store, migrated (for reading its tables directly).
  std::unique_ptr<DirectoryStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<DirectoryStore>> store = absl::InternalError("no store");
    if (sqlite()) {
      store = OpenSqliteDirectoryStore(tmp_.File("directory.db"));
    } else {
#if KCNET_DIRECTORY_TEST_PG
      store = pgstore::OpenPgDirectoryStore(conninfo_);
#endif
    }
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    absl::Status status = (*store)->Migrate();
    EXPECT_TRUE(status.ok()) << status;
    return *std::move(store);
  }

  // Another Directory on the test's store (another process, another server instance).
  absl::StatusOr<std::unique_ptr<Directory>> OpenDirectory(DirectoryOptions options) {
    if (sqlite()) return Directory::Open(tmp_.File("directory.db"), options);
#if KCNET_DIRECTORY_TEST_PG
    auto store = pgstore::OpenPgDirectoryStore(conninfo_);
    if (!store.ok()) return store.status();
    // The tests see other instances' changes at once, as SQLite's data_version does.
    options.shared_refresh_interval = absl::ZeroDuration();
    return Directory::Open(*std::move(store), options);
#else
    return absl::InternalError("built without PostgreSQL");
#endif
  }

  void Reopen() {
    dir_.reset();
    auto opened = OpenDirectory(FastOptions(&clock_));
    ASSERT_TRUE(opened.ok()) << opened.status();
    dir_ = *std::move(opened);
  }

  int64_t MustCreate(const std::string& code, const std::string& name, v1::OrgUnitLevel level,
                     int64_t parent) {
    auto unit = dir_->CreateOrgUnit(code, name, level, parent);
    EXPECT_TRUE(unit.ok()) << unit.status();
    return unit.ok() ? unit->id() : -1;
  }

  User MustCreateUser(const std::string& username, v1::Role role, std::vector<int64_t> units) {
    auto user = dir_->CreateUser(username, "Người Dùng " + username, kPassword, role, units);
    EXPECT_TRUE(user.ok()) << user.status();
    return user.ok() ? *user : User();
  }

  LoginResult MustLogin(const std::string& username, const std::string& password = kPassword) {
    auto login = dir_->Login(username, password);
    EXPECT_TRUE(login.ok()) << login.status();
    return login.ok() ? *login : LoginResult();
  }

  testing::TempDir tmp_;
  sync::FakeClock clock_{kT0};
  std::unique_ptr<Directory> dir_;
  int64_t p1_ = 0, d1_ = 0, c1_ = 0, c2_ = 0, d2_ = 0, c3_ = 0, p2_ = 0, c4_ = 0;
};

// ---- Org units ------------------------------------------------------------------------

TEST_P(DirectoryTest, GetAndFindOrgUnits) {
  auto unit = dir_->GetOrgUnit(c1_);
  ASSERT_TRUE(unit.ok()) << unit.status();
  EXPECT_EQ(unit->code(), "00001");
  EXPECT_EQ(unit->name(), "Phường Phúc Xá");
  EXPECT_EQ(unit->level(), v1::ORG_UNIT_LEVEL_COMMUNE);
  EXPECT_EQ(unit->parent_id(), d1_);
  EXPECT_EQ(unit->effective_from_ms(), kT0);

  auto by_code = dir_->FindByCode("00037");
  ASSERT_TRUE(by_code.ok()) << by_code.status();
  EXPECT_EQ(by_code->id(), c3_);

  ExpectError(dir_->GetOrgUnit(9999).status(), absl::StatusCode::kNotFound, "org_unit_id");
  ExpectError(dir_->FindByCode("77777").status(), absl::StatusCode::kNotFound, "code");
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
}

TEST_P(DirectoryTest, IdsAreTheSystemsNotTheCodes) {
  // The commune with code 00100 is the 8th unit created: its id is not its code.
  auto unit = dir_->FindByCode("00100");
  ASSERT_TRUE(unit.ok());
  EXPECT_NE(unit->id(), 100);
  std::vector<int64_t> ids = {p1_, d1_, c1_, c2_, d2_, c3_, p2_, c4_};
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_GT(ids[i], ids[i - 1]);
}

TEST_P(DirectoryTest, ListChildrenOrderedByCode) {
  auto roots = dir_->ListChildren(0);
  ASSERT_TRUE(roots.ok()) << roots.status();
  ASSERT_EQ(roots->size(), 2u);
  EXPECT_EQ((*roots)[0].code(), "01");
  EXPECT_EQ((*roots)[1].code(), "02");

  auto communes = dir_->ListChildren(d1_);
  ASSERT_TRUE(communes.ok());
  ASSERT_EQ(communes->size(), 2u);
  EXPECT_EQ((*communes)[0].id(), c1_);
  EXPECT_EQ((*communes)[1].id(), c2_);

  auto leaf = dir_->ListChildren(c1_);
  ASSERT_TRUE(leaf.ok());
  EXPECT_THAT(*leaf, IsEmpty());
  ExpectError(dir_->ListChildren(4242).status(), absl::StatusCode::kNotFound, "parent_id");
}

TEST_P(DirectoryTest, IsWithin) {
  EXPECT_TRUE(dir_->IsWithin(c1_, c1_));
  EXPECT_TRUE(dir_->IsWithin(c1_, d1_));
  EXPECT_TRUE(dir_->IsWithin(c1_, p1_));
  EXPECT_TRUE(dir_->IsWithin(d2_, p1_));
  EXPECT_FALSE(dir_->IsWithin(c1_, d2_));
  EXPECT_FALSE(dir_->IsWithin(c1_, p2_));
  EXPECT_FALSE(dir_->IsWithin(p1_, d1_));  // a parent is not within its child
  EXPECT_TRUE(dir_->IsWithin(c4_, p2_));
  EXPECT_FALSE(dir_->IsWithin(9999, p1_));
  EXPECT_FALSE(dir_->IsWithin(c1_, 9999));
}

TEST_P(DirectoryTest, SubtreeAndCommunes) {
  auto subtree = dir_->Subtree({d1_});
  ASSERT_TRUE(subtree.ok()) << subtree.status();
  EXPECT_THAT(*subtree, ElementsAre(d1_, c1_, c2_));

  // Overlapping roots: the union, each id once.
  auto union_ids = dir_->Subtree({p1_, d1_, c4_});
  ASSERT_TRUE(union_ids.ok());
  EXPECT_THAT(*union_ids, ElementsAre(p1_, d1_, c1_, c2_, d2_, c3_, c4_));

  auto communes = dir_->Communes({p1_});
  ASSERT_TRUE(communes.ok());
  EXPECT_THAT(*communes, ElementsAre(c1_, c2_, c3_));
  auto all = dir_->Communes({p1_, p2_});
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(*all, ElementsAre(c1_, c2_, c3_, c4_));
  auto one = dir_->Communes({c3_});
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(*one, ElementsAre(c3_));

  ExpectError(dir_->Subtree({p1_, 9999}).status(), absl::StatusCode::kNotFound, "org_unit_ids");
  ExpectError(dir_->Communes({9999}).status(), absl::StatusCode::kNotFound, "org_unit_ids");
}

TEST_P(DirectoryTest, CreateOrgUnitValidationNamesTheField) {
  using v1::ORG_UNIT_LEVEL_COMMUNE;
  using v1::ORG_UNIT_LEVEL_DISTRICT;
  ExpectError(dir_->CreateOrgUnit("", "X", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kInvalidArgument, "code");
  ExpectError(dir_->CreateOrgUnit("00 9", "X", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kInvalidArgument, "code");
  ExpectError(dir_->CreateOrgUnit("00009", "", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kInvalidArgument, "name");
  ExpectError(dir_->CreateOrgUnit("00009", "Bad \xC3", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kInvalidArgument, "name");
  ExpectError(dir_->CreateOrgUnit("00009", "Tab\tname", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kInvalidArgument, "name");
  ExpectError(dir_->CreateOrgUnit("00009", "X", v1::ORG_UNIT_LEVEL_UNSPECIFIED, d1_).status(),
              absl::StatusCode::kInvalidArgument, "level");
  // A district under a commune, a commune under a commune.
  ExpectError(dir_->CreateOrgUnit("009", "X", ORG_UNIT_LEVEL_DISTRICT, c1_).status(),
              absl::StatusCode::kInvalidArgument, "level");
  ExpectError(dir_->CreateOrgUnit("00009", "X", ORG_UNIT_LEVEL_COMMUNE, c1_).status(),
              absl::StatusCode::kInvalidArgument, "level");
  ExpectError(dir_->CreateOrgUnit("00009", "X", ORG_UNIT_LEVEL_COMMUNE, 9999).status(),
              absl::StatusCode::kNotFound, "parent_id");
  ExpectError(dir_->CreateOrgUnit("00001", "X", ORG_UNIT_LEVEL_COMMUNE, d1_).status(),
              absl::StatusCode::kAlreadyExists, "code");
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
}

TEST_P(DirectoryTest, AddOrgUnitsResolvesParentsInAnyOrder) {
  // Children first, then their parents; one parent is already in the directory.
  auto added = dir_->AddOrgUnits({
      {"00200", "Xã Con", v1::ORG_UNIT_LEVEL_COMMUNE, "020"},
      {"020", "Huyện Mới", v1::ORG_UNIT_LEVEL_DISTRICT, "03"},
      {"00201", "Xã Khác", v1::ORG_UNIT_LEVEL_COMMUNE, "001"},
      {"03", "Tỉnh Mới", v1::ORG_UNIT_LEVEL_PROVINCE, ""},
  });
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_EQ(added->size(), 4u);
  EXPECT_EQ((*added)[0].code(), "00200");
  EXPECT_EQ((*added)[0].parent_id(), (*added)[1].id());
  EXPECT_EQ((*added)[1].parent_id(), (*added)[3].id());
  EXPECT_EQ((*added)[2].parent_id(), d1_);
  EXPECT_EQ((*added)[3].parent_id(), 0);
  EXPECT_TRUE(dir_->IsWithin((*added)[0].id(), (*added)[3].id()));
  EXPECT_EQ(dir_->OrgUnitCount(), 12u);
}

TEST_P(DirectoryTest, AddOrgUnitsIsAllOrNothing) {
  // The last unit's parent is unknown: the valid ones before it are not added either.
  auto added = dir_->AddOrgUnits({
      {"03", "Tỉnh Mới", v1::ORG_UNIT_LEVEL_PROVINCE, ""},
      {"030", "Huyện Mới", v1::ORG_UNIT_LEVEL_DISTRICT, "03"},
      {"00300", "Xã Mồ Côi", v1::ORG_UNIT_LEVEL_COMMUNE, "999"},
  });
  ExpectError(added.status(), absl::StatusCode::kNotFound, "parent_code");
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
  EXPECT_FALSE(dir_->FindByCode("03").ok());

  // A cycle of parents.
  added = dir_->AddOrgUnits({
      {"040", "A", v1::ORG_UNIT_LEVEL_DISTRICT, "041"},
      {"041", "B", v1::ORG_UNIT_LEVEL_DISTRICT, "040"},
  });
  ExpectError(added.status(), absl::StatusCode::kInvalidArgument, "parent_code");
  // A code listed twice, and a code already taken.
  added = dir_->AddOrgUnits(
      {{"05", "A", v1::ORG_UNIT_LEVEL_PROVINCE, ""}, {"05", "B", v1::ORG_UNIT_LEVEL_PROVINCE, ""}});
  ExpectError(added.status(), absl::StatusCode::kInvalidArgument, "code");
  added = dir_->AddOrgUnits(
      {{"06", "A", v1::ORG_UNIT_LEVEL_PROVINCE, ""}, {"01", "B", v1::ORG_UNIT_LEVEL_PROVINCE, ""}});
  ExpectError(added.status(), absl::StatusCode::kAlreadyExists, "code");
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
  // The failed transactions left the cache and the file in step.
  Reopen();
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
}

// ---- Users ----------------------------------------------------------------------------

TEST_P(DirectoryTest, CreateAndFindUsers) {
  User alice = MustCreateUser("alice", v1::ROLE_DISTRICT_COORDINATOR, {d2_, d1_, d1_});
  EXPECT_GT(alice.id(), 0);
  EXPECT_EQ(alice.username(), "alice");
  EXPECT_EQ(alice.display_name(), "Người Dùng alice");
  EXPECT_EQ(alice.role(), v1::ROLE_DISTRICT_COORDINATOR);
  EXPECT_TRUE(alice.active());
  EXPECT_THAT(alice.org_unit_ids(), ElementsAre(d1_, d2_));  // sorted, no duplicates

  auto got = dir_->GetUser(alice.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->username(), "alice");
  auto found = dir_->FindUser("alice");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->id(), alice.id());
  ExpectError(dir_->GetUser(999).status(), absl::StatusCode::kNotFound, "user_id");
  ExpectError(dir_->FindUser("nobody").status(), absl::StatusCode::kNotFound, "username");
}

TEST_P(DirectoryTest, ListUsersFiltersBySubtreeAndActivity) {
  MustCreateUser("zoe.c", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  MustCreateUser("bao-d", v1::ROLE_DISTRICT_COORDINATOR, {d2_});
  User far = MustCreateUser("an_p", v1::ROLE_PROVINCE_OFFICER, {p2_});

  auto all = dir_->ListUsers();
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::string> names;
  for (const User& u : *all) names.push_back(u.username());
  EXPECT_THAT(names, ElementsAre("an_p", "bao-d", "zoe.c"));

  UserFilter in_d1;
  in_d1.within = {d1_};
  auto within = dir_->ListUsers(in_d1);
  ASSERT_TRUE(within.ok());
  ASSERT_EQ(within->size(), 1u);
  EXPECT_EQ((*within)[0].username(), "zoe.c");

  UserFilter in_p1;
  in_p1.within = {p1_};
  within = dir_->ListUsers(in_p1);
  ASSERT_TRUE(within.ok());
  EXPECT_EQ(within->size(), 2u);

  ASSERT_TRUE(dir_->DeactivateUser(far.id()).ok());
  UserFilter active_only;
  active_only.include_inactive = false;
  auto active = dir_->ListUsers(active_only);
  ASSERT_TRUE(active.ok());
  EXPECT_EQ(active->size(), 2u);

  UserFilter unknown;
  unknown.within = {9999};
  ExpectError(dir_->ListUsers(unknown).status(), absl::StatusCode::kNotFound, "within");
}

TEST_P(DirectoryTest, CreateUserValidationNamesTheField) {
  const auto role = v1::ROLE_COMMUNE_COLLABORATOR;
  auto create = [&](absl::string_view username, absl::string_view display,
                    absl::string_view password, v1::Role r, std::vector<int64_t> units) {
    return dir_->CreateUser(username, display, password, r, units).status();
  };
  ExpectError(create("ab", "A", kPassword, role, {c1_}), absl::StatusCode::kInvalidArgument,
              "username");
  ExpectError(create(std::string(65, 'a'), "A", kPassword, role, {c1_}),
              absl::StatusCode::kInvalidArgument, "username");
  ExpectError(create("Alice", "A", kPassword, role, {c1_}), absl::StatusCode::kInvalidArgument,
              "username");
  ExpectError(create("al ice", "A", kPassword, role, {c1_}), absl::StatusCode::kInvalidArgument,
              "username");
  ExpectError(create("alice", "", kPassword, role, {c1_}), absl::StatusCode::kInvalidArgument,
              "display_name");
  ExpectError(create("alice", "A", "1234567", role, {c1_}), absl::StatusCode::kInvalidArgument,
              "password");
  ExpectError(create("alice", "A", kPassword, v1::ROLE_UNSPECIFIED, {c1_}),
              absl::StatusCode::kInvalidArgument, "role");
  ExpectError(create("alice", "A", kPassword, static_cast<v1::Role>(42), {c1_}),
              absl::StatusCode::kInvalidArgument, "role");
  ExpectError(create("alice", "A", kPassword, role, {}), absl::StatusCode::kInvalidArgument,
              "org_unit_ids");
  ExpectError(create("alice", "A", kPassword, role, {c1_, 9999}), absl::StatusCode::kNotFound,
              "org_unit_ids");
  auto none = dir_->ListUsers();
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());

  // Exactly 8 bytes and 3 characters are enough.
  EXPECT_TRUE(create("abc", "A", "12345678", role, {c1_}).ok());
  ExpectError(create("abc", "B", kPassword, role, {c2_}), absl::StatusCode::kAlreadyExists,
              "username");
}

TEST_P(DirectoryTest, AssignUserChangesRoleAndUnitsOfLiveTokens) {
  User user = MustCreateUser("carol", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("carol");

  auto assigned = dir_->AssignUser(user.id(), v1::ROLE_PROVINCE_OFFICER, {p2_, p1_});
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  EXPECT_EQ(assigned->role(), v1::ROLE_PROVINCE_OFFICER);
  EXPECT_THAT(assigned->org_unit_ids(), ElementsAre(p1_, p2_));

  auto principal = dir_->Authenticate(login.token);
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->role, v1::ROLE_PROVINCE_OFFICER);
  EXPECT_THAT(principal->org_unit_ids, ElementsAre(p1_, p2_));

  ExpectError(dir_->AssignUser(user.id(), v1::ROLE_UNSPECIFIED, {c1_}).status(),
              absl::StatusCode::kInvalidArgument, "role");
  ExpectError(dir_->AssignUser(user.id(), v1::ROLE_ADMINISTRATOR, {}).status(),
              absl::StatusCode::kInvalidArgument, "org_unit_ids");
  ExpectError(dir_->AssignUser(user.id(), v1::ROLE_ADMINISTRATOR, {9999}).status(),
              absl::StatusCode::kNotFound, "org_unit_ids");
  ExpectError(dir_->AssignUser(999, v1::ROLE_ADMINISTRATOR, {p1_}).status(),
              absl::StatusCode::kNotFound, "user_id");
  // The failed calls changed nothing.
  auto after = dir_->GetUser(user.id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->role(), v1::ROLE_PROVINCE_OFFICER);
  EXPECT_THAT(after->org_unit_ids(), ElementsAre(p1_, p2_));
}

// ---- Passwords, tokens, lock-out -------------------------------------------------------

TEST_P(DirectoryTest, PasswordsAreStoredAsArgon2idHashes) {
  User user = MustCreateUser("dave", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("dave");
  dir_.reset();
  std::unique_ptr<DirectoryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto rows = store->Query("SELECT password_hash FROM users WHERE username = 'dave'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  const std::string hash = rows->Text(0, 0);
  EXPECT_TRUE(absl::StartsWith(hash, "$argon2id$")) << hash;
  EXPECT_FALSE(absl::StrContains(hash, kPassword));
  // Tokens are stored as their SHA-256 only.
  rows = store->Query("SELECT hash FROM tokens");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  const std::string stored = rows->Blob(0, 0);
  EXPECT_EQ(stored.size(), 32u);
  EXPECT_NE(stored, login.token);
  EXPECT_FALSE(absl::StrContains(stored, login.token));
}

TEST_P(DirectoryTest, LoginChecksThePassword) {
  User user = MustCreateUser("erin", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("erin");
  EXPECT_EQ(login.user.id(), user.id());
  EXPECT_EQ(login.expires_ms, kT0 + 12 * 3600 * 1000);
  EXPECT_EQ(login.token.size(), 43u);  // 32 bytes, base64url without padding
  for (char c : login.token) {
    EXPECT_TRUE(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_');
  }

  auto wrong = dir_->Login("erin", "not the password");
  auto unknown = dir_->Login("nobody", kPassword);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnauthenticated);
  // The same message: it must not say whether the username exists.
  EXPECT_EQ(wrong.status().message(), unknown.status().message());
  // Two sign-ins, two different tokens.
  EXPECT_NE(MustLogin("erin").token, login.token);
}

TEST_P(DirectoryTest, AuthenticateReturnsThePrincipal) {
  User user = MustCreateUser("frank", v1::ROLE_DISTRICT_COORDINATOR, {d1_, d2_});
  LoginResult login = MustLogin("frank");
  auto principal = dir_->Authenticate(login.token);
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->user_id, user.id());
  EXPECT_EQ(principal->username, "frank");
  EXPECT_EQ(principal->role, v1::ROLE_DISTRICT_COORDINATOR);
  EXPECT_THAT(principal->org_unit_ids, ElementsAre(d1_, d2_));

  EXPECT_EQ(dir_->Authenticate("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(dir_->Authenticate("forged-token").status().code(), absl::StatusCode::kUnauthenticated);
  std::string altered = login.token;
  altered[0] = altered[0] == 'A' ? 'B' : 'A';
  EXPECT_EQ(dir_->Authenticate(altered).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_P(DirectoryTest, TokensExpireByTheInjectedClock) {
  MustCreateUser("gina", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("gina");
  clock_.Advance(12 * 3600 * 1000 - 1);
  EXPECT_TRUE(dir_->Authenticate(login.token).ok());
  clock_.Advance(1);
  auto expired = dir_->Authenticate(login.token);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(expired.status().message()), HasSubstr("expired"));
  // A new sign-in works (and sweeps the expired token away).
  LoginResult again = MustLogin("gina");
  EXPECT_TRUE(dir_->Authenticate(again.token).ok());
}

TEST_P(DirectoryTest, TokenTtlIsConfigurable) {
  dir_.reset();
  DirectoryOptions options = FastOptions(&clock_);
  options.token_ttl = absl::Minutes(10);
  auto opened = OpenDirectory(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  dir_ = *std::move(opened);
  MustCreateUser("hana", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("hana");
  EXPECT_EQ(login.expires_ms, kT0 + 10 * 60 * 1000);
  clock_.Advance(10 * 60 * 1000);
  EXPECT_FALSE(dir_->Authenticate(login.token).ok());
}

TEST_P(DirectoryTest, LogoutRevokesOnlyThatToken) {
  MustCreateUser("ivan", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult tablet = MustLogin("ivan");
  LoginResult laptop = MustLogin("ivan");
  ASSERT_TRUE(dir_->Logout(tablet.token).ok());
  EXPECT_EQ(dir_->Authenticate(tablet.token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(dir_->Authenticate(laptop.token).ok());
  EXPECT_TRUE(dir_->Logout(tablet.token).ok());  // idempotent
  Reopen();
  EXPECT_FALSE(dir_->Authenticate(tablet.token).ok());
  EXPECT_TRUE(dir_->Authenticate(laptop.token).ok());
}

TEST_P(DirectoryTest, DeactivatedUsersCannotSignInOrUseTokens) {
  User user = MustCreateUser("jack", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("jack");
  ASSERT_TRUE(dir_->DeactivateUser(user.id()).ok());
  EXPECT_EQ(dir_->Authenticate(login.token).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(dir_->Login("jack", kPassword).status().code(), absl::StatusCode::kUnauthenticated);
  // A wrong password gets the generic answer, not "deactivated".
  auto wrong = dir_->Login("jack", "wrong password");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::Not(HasSubstr("deactivated")));
  auto got = dir_->GetUser(user.id());
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->active());
  EXPECT_TRUE(dir_->DeactivateUser(user.id()).ok());  // idempotent
  ExpectError(dir_->DeactivateUser(999), absl::StatusCode::kNotFound, "user_id");
  Reopen();
  EXPECT_FALSE(dir_->Authenticate(login.token).ok());
  EXPECT_FALSE(dir_->Login("jack", kPassword).ok());
}

TEST_P(DirectoryTest, ResetPasswordRevokesTokens) {
  User user = MustCreateUser("kim", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("kim");
  ASSERT_TRUE(dir_->ResetPassword(user.id(), "brand new secret").ok());
  EXPECT_FALSE(dir_->Authenticate(login.token).ok());
  EXPECT_EQ(dir_->Login("kim", kPassword).status().code(), absl::StatusCode::kUnauthenticated);
  MustLogin("kim", "brand new secret");
  ExpectError(dir_->ResetPassword(user.id(), "short"), absl::StatusCode::kInvalidArgument,
              "password");
  ExpectError(dir_->ResetPassword(999, "long enough"), absl::StatusCode::kNotFound, "user_id");
  MustLogin("kim", "brand new secret");  // the refused reset changed nothing
}

// A reset password is the administrator's answer to a lost or shared password: a tablet
// that signed in with the old one must not go on renewing its tokens for months.
TEST_P(DirectoryTest, ResetPasswordRevokesDeviceCredentials) {
  User user = MustCreateUser("kha", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  User other = MustCreateUser("khanh", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  absl::StatusOr<std::string> tablet = dir_->IssueDeviceCredential(user.id(), "tab-1");
  absl::StatusOr<std::string> phone = dir_->IssueDeviceCredential(user.id(), "phone-1");
  absl::StatusOr<std::string> others = dir_->IssueDeviceCredential(other.id(), "tab-2");
  ASSERT_TRUE(tablet.ok() && phone.ok() && others.ok());
  ASSERT_TRUE(dir_->RefreshToken("tab-1", *tablet).ok());
  ASSERT_TRUE(dir_->ResetPassword(user.id(), "brand new secret").ok());
  EXPECT_EQ(dir_->RefreshToken("tab-1", *tablet).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(dir_->RefreshToken("phone-1", *phone).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(dir_->RefreshToken("tab-2", *others).ok()) << "another user's credential stays";
  // A refused reset revokes nothing.
  absl::StatusOr<std::string> again = dir_->IssueDeviceCredential(user.id(), "tab-1");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(dir_->ResetPassword(user.id(), "short").ok());
  EXPECT_TRUE(dir_->RefreshToken("tab-1", *again).ok());
}

TEST_P(DirectoryTest, RepeatedFailuresLockTheUsernameOut) {
  MustCreateUser("lan", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(dir_->Login("lan", "wrong").status().code(), absl::StatusCode::kUnauthenticated) << i;
  }
  // Locked for 1 s: even the right password is refused, without being checked.
  auto locked = dir_->Login("lan", kPassword);
  EXPECT_EQ(locked.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(locked.status().message()), HasSubstr("try again after"));
  EXPECT_THAT(std::string(locked.status().message()), HasSubstr("in 1 s"));
  // Other usernames are not affected.
  MustCreateUser("minh", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  MustLogin("minh");

  clock_.Advance(999);
  EXPECT_EQ(dir_->Login("lan", kPassword).status().code(), absl::StatusCode::kResourceExhausted);
  clock_.Advance(1);
  // The window has passed; one more failure doubles it to 2 s.
  EXPECT_EQ(dir_->Login("lan", "wrong").status().code(), absl::StatusCode::kUnauthenticated);
  clock_.Advance(1999);
  EXPECT_EQ(dir_->Login("lan", kPassword).status().code(), absl::StatusCode::kResourceExhausted);
  clock_.Advance(1);
  MustLogin("lan");

  // Success reset the counter: four failures do not lock.
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(dir_->Login("lan", "wrong").ok());
  MustLogin("lan");
}

TEST_P(DirectoryTest, LockOutWindowIsCappedAndAppliesToUnknownUsernames) {
  // Unknown usernames lock out like known ones, so that lock-out does not reveal which
  // usernames exist.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(dir_->Login("ghost", "wrong").ok());
  EXPECT_EQ(dir_->Login("ghost", "wrong").status().code(), absl::StatusCode::kResourceExhausted);
  // Keep failing after each window: 1, 2, 4, ... s, capped at 5 min.
  int64_t window_ms = 1000;
  for (int i = 0; i < 12; ++i) {
    clock_.Advance(window_ms);
    EXPECT_EQ(dir_->Login("ghost", "wrong").status().code(), absl::StatusCode::kUnauthenticated);
    window_ms = std::min<int64_t>(window_ms * 2, 300 * 1000);
  }
  EXPECT_EQ(window_ms, 300 * 1000);
  clock_.Advance(300 * 1000 - 1);
  EXPECT_EQ(dir_->Login("ghost", "wrong").status().code(), absl::StatusCode::kResourceExhausted);
  clock_.Advance(1);
  EXPECT_EQ(dir_->Login("ghost", "wrong").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_P(DirectoryTest, ResetPasswordClearsTheLockOut) {
  User user = MustCreateUser("mai", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(dir_->Login("mai", "wrong").ok());
  EXPECT_EQ(dir_->Login("mai", kPassword).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(dir_->ResetPassword(user.id(), "another secret").ok());
  MustLogin("mai", "another secret");
}

TEST_P(DirectoryTest, HashesWithOldCostsAreUpgradedAtSignIn) {
  MustCreateUser("nam", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  auto read_hash = [&]() -> std::string {
    std::unique_ptr<DirectoryStore> store = OpenStore();
    if (store == nullptr) return "";
    auto rows = store->Query("SELECT password_hash FROM users WHERE username = 'nam'");
    EXPECT_TRUE(rows.ok() && rows->size() == 1);
    return rows.ok() && rows->size() == 1 ? rows->Text(0, 0) : "";
  };
  const std::string before = read_hash();
  EXPECT_THAT(before, HasSubstr("t=1,"));
  dir_.reset();
  DirectoryOptions options = FastOptions(&clock_);
  options.password_ops_limit = 3;
  auto opened = OpenDirectory(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  dir_ = *std::move(opened);
  MustLogin("nam");
  const std::string after = read_hash();
  EXPECT_NE(after, before);
  EXPECT_THAT(after, HasSubstr("t=3,"));
  MustLogin("nam");
}

TEST_P(DirectoryTest, DefaultsUseInteractiveCosts) {
  DirectoryOptions defaults;
  EXPECT_EQ(defaults.password_ops_limit, kArgon2OpsLimitInteractive);
  EXPECT_EQ(defaults.password_mem_limit, kArgon2MemLimitInteractive);
  EXPECT_EQ(defaults.token_ttl, absl::Hours(12));
  EXPECT_EQ(defaults.lockout_after_failures, 5);
}

// ---- Persistence and files ---------------------------------------------------------------

TEST_P(DirectoryTest, ReopenKeepsEverything) {
  User user = MustCreateUser("oanh", v1::ROLE_DISTRICT_COORDINATOR, {d1_});
  LoginResult login = MustLogin("oanh");
  Reopen();
  EXPECT_EQ(dir_->OrgUnitCount(), 8u);
  auto unit = dir_->FindByCode("00004");
  ASSERT_TRUE(unit.ok());
  EXPECT_EQ(unit->id(), c2_);
  EXPECT_EQ(unit->parent_id(), d1_);
  EXPECT_TRUE(dir_->IsWithin(c2_, p1_));
  auto communes = dir_->Communes({p1_});
  ASSERT_TRUE(communes.ok());
  EXPECT_THAT(*communes, ElementsAre(c1_, c2_, c3_));
  auto got = dir_->FindUser("oanh");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->id(), user.id());
  EXPECT_THAT(got->org_unit_ids(), ElementsAre(d1_));
  auto principal = dir_->Authenticate(login.token);
  ASSERT_TRUE(principal.ok()) << principal.status();
  EXPECT_EQ(principal->user_id, user.id());
  MustLogin("oanh");
  // New ids continue after the old ones.
  EXPECT_GT(MustCreate("03", "Tỉnh Mới", v1::ORG_UNIT_LEVEL_PROVINCE, 0), c4_);
}

TEST_P(DirectoryTest, RefusesAFileFromANewerVersion) {
  if (!sqlite()) GTEST_SKIP() << "SQLite files only (PostgreSQL: pg_server_store_test)";
  dir_.reset();
  {
    auto db = sync::Db::Open(tmp_.File("directory.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version = 99").ok());
  }
  auto opened = Directory::Open(tmp_.File("directory.db"), FastOptions(&clock_));
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr("newer"));
}

TEST_P(DirectoryTest, RefusesAForeignFile) {
  if (!sqlite()) GTEST_SKIP() << "SQLite files only";
  {
    auto db = sync::Db::Open(tmp_.File("other.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("CREATE TABLE item(id INTEGER PRIMARY KEY)").ok());
  }
  auto opened = Directory::Open(tmp_.File("other.db"), FastOptions(&clock_));
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr("not a kcnet directory"));
}

TEST_P(DirectoryTest, SeesChangesMadeByAnotherConnection) {
  // The admin tool and the server share the file.
  User user = MustCreateUser("phuc", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("phuc");
  auto other = OpenDirectory(FastOptions(&clock_));
  ASSERT_TRUE(other.ok()) << other.status();

  ASSERT_TRUE((*other)->DeactivateUser(user.id()).ok());
  EXPECT_EQ(dir_->Authenticate(login.token).status().code(), absl::StatusCode::kUnauthenticated);
  auto seen = dir_->GetUser(user.id());
  ASSERT_TRUE(seen.ok());
  EXPECT_FALSE(seen->active());

  auto added = (*other)->CreateOrgUnit("00007", "Phường Mới", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
  ASSERT_TRUE(added.ok()) << added.status();
  auto found = dir_->FindByCode("00007");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->id(), added->id());
  EXPECT_TRUE(dir_->IsWithin(added->id(), p1_));
}

// The reports name their communes in one call (a national report has 3,321 of them).
TEST_P(DirectoryTest, OrgUnitNamesAreTheUnitsNamesByIdAndLeaveOutUnknownIds) {
  auto names = dir_->OrgUnitNames({c1_, p2_, 9999, c1_});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(names->size(), 2u);
  EXPECT_EQ(names->at(c1_), dir_->GetOrgUnit(c1_)->name());
  EXPECT_EQ(names->at(p2_), dir_->GetOrgUnit(p2_)->name());
  EXPECT_FALSE(names->contains(9999));
  auto none = dir_->OrgUnitNames({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  // A unit another connection added just now is named too (the miss reloads the cache).
  auto other = OpenDirectory(FastOptions(&clock_));
  ASSERT_TRUE(other.ok()) << other.status();
  auto added = (*other)->CreateOrgUnit("00008", "Xã Tân Lập", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
  ASSERT_TRUE(added.ok()) << added.status();
  names = dir_->OrgUnitNames({added->id(), c1_});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(names->size(), 2u);
  EXPECT_EQ((*names)[added->id()], "Xã Tân Lập");
}

TEST_P(DirectoryTest, ConcurrentCallsAreSafe) {
  MustCreateUser("quang", v1::ROLE_COMMUNE_COLLABORATOR, {c1_});
  LoginResult login = MustLogin("quang");
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (!dir_->Authenticate(login.token).ok()) ++failures;
        if (!dir_->IsWithin(c1_, p1_)) ++failures;
        if (i % 10 == 0) {
          if (!dir_->Login("quang", kPassword).ok()) ++failures;
          const std::string code = std::to_string(90000 + t * 100 + i);
          if (!dir_->CreateOrgUnit(code, "Xã", v1::ORG_UNIT_LEVEL_COMMUNE, d2_).ok()) {
            ++failures;
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(dir_->OrgUnitCount(), 8u + 4 * 5);
}

#if KCNET_DIRECTORY_TEST_PG
INSTANTIATE_TEST_SUITE_P(Stores, DirectoryTest, ::testing::Values(StoreKind::kPostgres), StoreName);
#else
INSTANTIATE_TEST_SUITE_P(Stores, DirectoryTest, ::testing::Values(StoreKind::kSqlite), StoreName);
#endif

TEST(RoleNamesTest, RoundTrip) {
  for (v1::Role role : {v1::ROLE_COMMUNE_COLLABORATOR, v1::ROLE_DISTRICT_COORDINATOR,
                        v1::ROLE_PROVINCE_OFFICER, v1::ROLE_ADMINISTRATOR}) {
    auto parsed = ParseRole(RoleName(role));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, role);
  }
  ExpectError(ParseRole("boss").status(), absl::StatusCode::kInvalidArgument, "role");
  EXPECT_EQ(LevelName(v1::ORG_UNIT_LEVEL_COMMUNE), "commune");
}

}  // namespace
}  // namespace kcnet::server
