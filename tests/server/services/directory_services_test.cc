// AuthService, OrgUnitService and UserService through a real server and real channels:
// authentication on every method, and each role's scope, in and out.
#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::FieldViolations;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAreArray;

using v1::OrgUnit;
using v1::User;

// Calls `method` of `stub` with `token` as bearer ("" for no metadata).
template <typename Stub, typename Request, typename Response>
grpc::Status Call(Stub* stub,
                  grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                  const std::string& token, const Request& request, Response* response) {
  grpc::ClientContext context;
  if (!token.empty()) Authorize(&context, token);
  return (stub->*method)(&context, request, response);
}

class DirectoryServicesTest : public ::testing::Test {
 protected:
  // The tree:  10 ── 101 ── 10101, 10102      20 ── 201 ── 20101
  //               └─ 102 ── 10201
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    p1_ = AddUnit("10", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    d1_ = AddUnit("101", v1::ORG_UNIT_LEVEL_DISTRICT, p1_);
    d2_ = AddUnit("102", v1::ORG_UNIT_LEVEL_DISTRICT, p1_);
    c11_ = AddUnit("10101", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
    c12_ = AddUnit("10102", v1::ORG_UNIT_LEVEL_COMMUNE, d1_);
    c21_ = AddUnit("10201", v1::ORG_UNIT_LEVEL_COMMUNE, d2_);
    p2_ = AddUnit("20", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    d3_ = AddUnit("201", v1::ORG_UNIT_LEVEL_DISTRICT, p2_);
    c31_ = AddUnit("20101", v1::ORG_UNIT_LEVEL_COMMUNE, d3_);

    AddUser("admin.p1", v1::ROLE_ADMINISTRATOR, {p1_});
    AddUser("admin.d2", v1::ROLE_ADMINISTRATOR, {d2_});
    AddUser("officer.p1", v1::ROLE_PROVINCE_OFFICER, {p1_});
    AddUser("coord.d1", v1::ROLE_DISTRICT_COORDINATOR, {d1_});
    AddUser("collab.c11", v1::ROLE_COMMUNE_COLLABORATOR, {c11_});
    AddUser("collab.c21", v1::ROLE_COMMUNE_COLLABORATOR, {c21_});
    AddUser("collab.c31", v1::ROLE_COMMUNE_COLLABORATOR, {c31_});
    AddUser("collab.two", v1::ROLE_COMMUNE_COLLABORATOR, {c12_, c31_});  // two provinces

    channel_ = server_.Channel();
    auth_ = v1::AuthService::NewStub(channel_);
    units_ = v1::OrgUnitService::NewStub(channel_);
    users_ = v1::UserService::NewStub(channel_);
  }

  int64_t AddUnit(const std::string& code, v1::OrgUnitLevel level, int64_t parent) {
    absl::StatusOr<OrgUnit> unit =
        server_.directory().CreateOrgUnit(code, absl::StrCat("Unit ", code), level, parent);
    EXPECT_TRUE(unit.ok()) << unit.status();
    parent_of_[unit->id()] = parent;
    return unit->id();
  }

  void AddUser(const std::string& name, v1::Role role, const std::vector<int64_t>& units) {
    absl::StatusOr<User> user = server_.directory().CreateUser(name, absl::StrCat("User ", name),
                                                               Password(name), role, units);
    ASSERT_TRUE(user.ok()) << user.status();
    user_ids_[name] = user->id();
    user_units_[name] = units;
  }

  static std::string Password(const std::string& name) { return absl::StrCat("pw-", name, "-x"); }

  const std::string& Token(const std::string& name) {
    auto it = tokens_.find(name);
    if (it == tokens_.end())
      it = tokens_.emplace(name, SignIn(channel_, name, Password(name))).first;
    return it->second;
  }

  // The test's own scope rules, from the tree it built.
  bool Within(int64_t unit, int64_t root) const {
    for (int64_t at = unit; at != 0; at = parent_of_.at(at)) {
      if (at == root) return true;
    }
    return false;
  }
  bool InScope(const std::string& caller, int64_t unit) const {
    for (int64_t root : user_units_.at(caller)) {
      if (Within(unit, root)) return true;
    }
    return false;
  }
  bool MaySeeUnit(const std::string& caller, int64_t unit) const {
    if (InScope(caller, unit)) return true;
    for (int64_t root : user_units_.at(caller)) {
      if (Within(root, unit)) return true;
    }
    return false;
  }
  bool MaySeeUser(const std::string& caller, const std::string& user) const {
    for (int64_t unit : user_units_.at(user)) {
      if (InScope(caller, unit)) return true;
    }
    return false;
  }

  grpc::Status GetUnit(const std::string& caller, int64_t id, OrgUnit* out = nullptr) {
    v1::GetOrgUnitRequest request;
    request.set_id(id);
    OrgUnit response;
    grpc::Status status = Call(units_.get(), &v1::OrgUnitService::Stub::GetOrgUnit, Token(caller),
                               request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  // Every page of ListOrgUnits(parent): the codes, or the first failure.
  grpc::Status ListUnits(const std::string& caller, int64_t parent, int page_size,
                         std::vector<OrgUnit>* out) {
    out->clear();
    v1::ListOrgUnitsRequest request;
    request.set_parent_id(parent);
    request.set_page_size(page_size);
    for (int pages = 0; pages < 100; ++pages) {
      v1::ListOrgUnitsResponse response;
      grpc::Status status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits,
                                 Token(caller), request, &response);
      if (!status.ok()) return status;
      EXPECT_LE(response.org_units_size(), page_size == 0 ? 50 : page_size);
      for (const OrgUnit& unit : response.org_units()) out->push_back(unit);
      if (response.next_page_token().empty()) return grpc::Status::OK;
      request.set_page_token(response.next_page_token());
    }
    return grpc::Status(grpc::StatusCode::INTERNAL, "too many pages");
  }

  grpc::Status ScopeDirectory(const std::string& caller, const std::string& known_version,
                              v1::ScopeDirectory* out) {
    v1::GetScopeDirectoryRequest request;
    request.set_known_version(known_version);
    return Call(units_.get(), &v1::OrgUnitService::Stub::GetScopeDirectory, Token(caller), request,
                out);
  }

  grpc::Status ListAllUsers(const std::string& caller, int page_size,
                            std::vector<std::string>* usernames) {
    usernames->clear();
    v1::ListUsersRequest request;
    request.set_page_size(page_size);
    for (int pages = 0; pages < 100; ++pages) {
      v1::ListUsersResponse response;
      grpc::Status status =
          Call(users_.get(), &v1::UserService::Stub::ListUsers, Token(caller), request, &response);
      if (!status.ok()) return status;
      for (const User& user : response.users()) usernames->push_back(user.username());
      if (response.next_page_token().empty()) return grpc::Status::OK;
      request.set_page_token(response.next_page_token());
    }
    return grpc::Status(grpc::StatusCode::INTERNAL, "too many pages");
  }

  grpc::Status GetUser(const std::string& caller, int64_t id, User* out = nullptr) {
    v1::GetUserRequest request;
    request.set_id(id);
    User response;
    grpc::Status status =
        Call(users_.get(), &v1::UserService::Stub::GetUser, Token(caller), request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  grpc::Status CreateUser(const std::string& caller, const std::string& username, v1::Role role,
                          const std::vector<int64_t>& units,
                          const std::string& password = "a-good-password", User* out = nullptr) {
    v1::CreateUserRequest request;
    request.mutable_user()->set_username(username);
    request.mutable_user()->set_display_name("New User");
    request.mutable_user()->set_role(role);
    for (int64_t unit : units) request.mutable_user()->add_org_unit_ids(unit);
    request.set_password(password);
    User response;
    grpc::Status status =
        Call(users_.get(), &v1::UserService::Stub::CreateUser, Token(caller), request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  grpc::Status UpdateUser(const std::string& caller, const User& user,
                          const std::vector<std::string>& paths, User* out = nullptr) {
    v1::UpdateUserRequest request;
    *request.mutable_user() = user;
    for (const std::string& path : paths) request.mutable_update_mask()->add_paths(path);
    User response;
    grpc::Status status =
        Call(users_.get(), &v1::UserService::Stub::UpdateUser, Token(caller), request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  grpc::Status ResetPassword(const std::string& caller, int64_t user_id,
                             const std::string& password) {
    v1::ResetPasswordRequest request;
    request.set_user_id(user_id);
    request.set_new_password(password);
    v1::ResetPasswordResponse response;
    return Call(users_.get(), &v1::UserService::Stub::ResetPassword, Token(caller), request,
                &response);
  }

  grpc::Status Login(const std::string& username, const std::string& password,
                     v1::LoginResponse* out = nullptr) {
    v1::LoginRequest request;
    request.set_username(username);
    request.set_password(password);
    v1::LoginResponse response;
    grpc::Status status = Call(auth_.get(), &v1::AuthService::Stub::Login, "", request, &response);
    if (out != nullptr) *out = response;
    return status;
  }

  // Each authenticated method of the three services, called with `context`.
  std::vector<std::pair<std::string, std::function<grpc::Status(grpc::ClientContext*)>>>
  AuthenticatedMethods() {
    const int64_t someone = user_ids_.at("collab.c11");
    return {
        {"Logout",
         [this](grpc::ClientContext* c) {
           v1::LogoutResponse r;
           return auth_->Logout(c, {}, &r);
         }},
        {"WhoAmI",
         [this](grpc::ClientContext* c) {
           v1::WhoAmIResponse r;
           return auth_->WhoAmI(c, {}, &r);
         }},
        {"GetOrgUnit",
         [this](grpc::ClientContext* c) {
           v1::GetOrgUnitRequest q;
           q.set_id(p1_);
           OrgUnit r;
           return units_->GetOrgUnit(c, q, &r);
         }},
        {"ListOrgUnits",
         [this](grpc::ClientContext* c) {
           v1::ListOrgUnitsResponse r;
           return units_->ListOrgUnits(c, {}, &r);
         }},
        {"GetScopeDirectory",
         [this](grpc::ClientContext* c) {
           v1::ScopeDirectory r;
           return units_->GetScopeDirectory(c, {}, &r);
         }},
        {"GetUser",
         [this, someone](grpc::ClientContext* c) {
           v1::GetUserRequest q;
           q.set_id(someone);
           User r;
           return users_->GetUser(c, q, &r);
         }},
        {"ListUsers",
         [this](grpc::ClientContext* c) {
           v1::ListUsersResponse r;
           return users_->ListUsers(c, {}, &r);
         }},
        {"CreateUser",
         [this](grpc::ClientContext* c) {
           v1::CreateUserRequest q;
           q.mutable_user()->set_username("sneaky");
           q.mutable_user()->set_display_name("Sneaky");
           q.mutable_user()->set_role(v1::ROLE_ADMINISTRATOR);
           q.mutable_user()->add_org_unit_ids(p1_);
           q.set_password("a-good-password");
           User r;
           return users_->CreateUser(c, q, &r);
         }},
        {"UpdateUser",
         [this, someone](grpc::ClientContext* c) {
           v1::UpdateUserRequest q;
           q.mutable_user()->set_id(someone);
           q.mutable_update_mask()->add_paths("active");
           User r;
           return users_->UpdateUser(c, q, &r);
         }},
        {"ResetPassword",
         [this, someone](grpc::ClientContext* c) {
           v1::ResetPasswordRequest q;
           q.set_user_id(someone);
           q.set_new_password("a-good-password");
           v1::ResetPasswordResponse r;
           return users_->ResetPassword(c, q, &r);
         }},
    };
  }

  TestServer server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AuthService::Stub> auth_;
  std::unique_ptr<v1::OrgUnitService::Stub> units_;
  std::unique_ptr<v1::UserService::Stub> users_;
  int64_t p1_ = 0, d1_ = 0, d2_ = 0, c11_ = 0, c12_ = 0, c21_ = 0, p2_ = 0, d3_ = 0, c31_ = 0;
  std::map<int64_t, int64_t> parent_of_;
  std::map<std::string, int64_t> user_ids_;
  std::map<std::string, std::vector<int64_t>> user_units_;
  std::map<std::string, std::string> tokens_;
};

const std::vector<std::string> kEveryone = {"admin.p1",   "admin.d2",   "officer.p1", "coord.d1",
                                            "collab.c11", "collab.c21", "collab.c31", "collab.two"};

// ---- Authentication -----------------------------------------------------------------

TEST_F(DirectoryServicesTest, EveryMethodRefusesMissingOrBadTokens) {
  // Nothing else touches the users, so a refused call that slipped through would show.
  const std::vector<std::pair<std::string, std::string>> bad_metadata = {
      {"", ""},  // no metadata at all
      {"authorization", "Bearer not-a-token"},
      {"authorization", "Basic dXNlcjpwYXNz"},
      {"authorization", "Bearer "},
  };
  for (auto& [name, call] : AuthenticatedMethods()) {
    for (const auto& [key, value] : bad_metadata) {
      grpc::ClientContext context;
      if (!key.empty()) context.AddMetadata(key, value);
      const grpc::Status status = call(&context);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << name << " with '" << value << "': " << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr("authorization"));
    }
  }
  // The refused calls changed nothing.
  absl::StatusOr<User> someone = server_.directory().FindUser("collab.c11");
  ASSERT_TRUE(someone.ok());
  EXPECT_TRUE(someone->active());
  EXPECT_FALSE(server_.directory().FindUser("sneaky").ok());
  EXPECT_EQ(Login("collab.c11", Password("collab.c11")).error_code(), grpc::StatusCode::OK);
}

TEST_F(DirectoryServicesTest, EveryMethodRefusesAnExpiredToken) {
  const std::string token = Token("admin.p1");
  ASSERT_FALSE(token.empty());
  server_.clock().Advance(absl::ToInt64Milliseconds(absl::Hours(12) + absl::Seconds(1)));
  for (auto& [name, call] : AuthenticatedMethods()) {
    grpc::ClientContext context;
    Authorize(&context, token);
    const grpc::Status status = call(&context);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << name;
    EXPECT_THAT(status.error_message(), HasSubstr("expired")) << name;
  }
}

TEST_F(DirectoryServicesTest, LoginWhoAmILogout) {
  v1::LoginResponse login;
  ASSERT_TRUE(Login("coord.d1", Password("coord.d1"), &login).ok());
  EXPECT_FALSE(login.token().empty());
  EXPECT_GT(login.expires_ms(), testing::kTestStartMs);
  EXPECT_EQ(login.user().username(), "coord.d1");
  EXPECT_EQ(login.user().role(), v1::ROLE_DISTRICT_COORDINATOR);
  EXPECT_THAT(login.user().org_unit_ids(), ElementsAre(d1_));

  v1::WhoAmIResponse who;
  ASSERT_TRUE(
      Call(auth_.get(), &v1::AuthService::Stub::WhoAmI, login.token(), v1::WhoAmIRequest(), &who)
          .ok());
  EXPECT_EQ(who.user().id(), user_ids_.at("coord.d1"));
  EXPECT_EQ(who.user().username(), "coord.d1");

  v1::LogoutResponse logout;
  ASSERT_TRUE(
      Call(auth_.get(), &v1::AuthService::Stub::Logout, login.token(), v1::LogoutRequest(), &logout)
          .ok());
  const grpc::Status after =
      Call(auth_.get(), &v1::AuthService::Stub::WhoAmI, login.token(), v1::WhoAmIRequest(), &who);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Another session of the same user is not affected.
  EXPECT_TRUE(Call(auth_.get(), &v1::AuthService::Stub::WhoAmI, Token("coord.d1"),
                   v1::WhoAmIRequest(), &who)
                  .ok());
}

TEST_F(DirectoryServicesTest, LoginFailures) {
  grpc::Status status = Login("coord.d1", "wrong-password");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const std::string wrong_password_message = status.error_message();
  status = Login("nobody", "wrong-password");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(), wrong_password_message);  // no hint which one was wrong

  status = Login("", "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("username", "required")));
  status = Login("coord.d1", "");
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("password", "required")));
}

// ---- Org units ------------------------------------------------------------------------

TEST_F(DirectoryServicesTest, GetOrgUnitFollowsScopeForEveryRole) {
  const std::vector<int64_t> all = {p1_, d1_, d2_, c11_, c12_, c21_, p2_, d3_, c31_};
  for (const std::string& caller : kEveryone) {
    for (int64_t unit : all) {
      OrgUnit got;
      const grpc::Status status = GetUnit(caller, unit, &got);
      if (MaySeeUnit(caller, unit)) {
        EXPECT_TRUE(status.ok()) << caller << " unit " << unit << ": " << status.error_message();
        EXPECT_EQ(got.id(), unit);
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << caller << " unit " << unit;
        // The same answer as for a unit that does not exist.
        EXPECT_EQ(status.error_message(), absl::StrCat("id: no org unit ", unit));
      }
    }
  }
  // Spot checks of the rule itself.
  EXPECT_TRUE(GetUnit("collab.c11", p1_).ok());  // the path above its commune
  EXPECT_EQ(GetUnit("collab.c11", c12_).error_code(), grpc::StatusCode::NOT_FOUND);  // sibling
  EXPECT_EQ(GetUnit("coord.d1", c21_).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetUnit("officer.p1", c31_).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetUnit("admin.p1", 999999).error_message(), "id: no org unit 999999");

  const grpc::Status bad = GetUnit("admin.p1", 0);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(bad), ElementsAre(Pair("id", "must be > 0, got 0")));
}

TEST_F(DirectoryServicesTest, ListOrgUnitsNeverShowsUnitsOutsideScope) {
  const std::vector<int64_t> all = {0, p1_, d1_, d2_, c11_, c12_, c21_, p2_, d3_, c31_};
  for (const std::string& caller : kEveryone) {
    for (int64_t parent : all) {
      std::vector<OrgUnit> listed;
      const grpc::Status status = ListUnits(caller, parent, 1, &listed);
      if (parent != 0 && !MaySeeUnit(caller, parent)) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << caller << " " << parent;
        continue;
      }
      ASSERT_TRUE(status.ok()) << caller << " " << parent << ": " << status.error_message();
      std::vector<int64_t> expected;
      for (int64_t unit : all) {
        if (unit == 0) continue;
        const bool listed_here = parent == 0 ? absl::c_linear_search(user_units_.at(caller), unit)
                                             : parent_of_.at(unit) == parent;
        if (listed_here && MaySeeUnit(caller, unit)) expected.push_back(unit);
      }
      std::vector<int64_t> ids;
      for (const OrgUnit& unit : listed) ids.push_back(unit.id());
      EXPECT_THAT(ids, UnorderedElementsAreArray(expected)) << caller << " parent " << parent;
    }
  }
}

// ---- The device's directory (GetScopeDirectory) -------------------------------------

TEST_F(DirectoryServicesTest, ScopeDirectoryHoldsExactlyTheScopeThePathAboveAndTheirUsers) {
  const std::vector<int64_t> all = {p1_, d1_, d2_, c11_, c12_, c21_, p2_, d3_, c31_};
  for (const std::string& caller : kEveryone) {
    v1::ScopeDirectory got;
    const grpc::Status status = ScopeDirectory(caller, "", &got);
    ASSERT_TRUE(status.ok()) << caller << ": " << status.error_message();
    std::vector<int64_t> expected_units;
    for (int64_t unit : all) {
      if (MaySeeUnit(caller, unit)) expected_units.push_back(unit);
    }
    std::vector<int64_t> units;
    for (const OrgUnit& unit : got.org_units()) {
      units.push_back(unit.id());
      EXPECT_EQ(unit.name(), absl::StrCat("Unit ", unit.code()));
      EXPECT_EQ(unit.parent_id(), parent_of_.at(unit.id()));
    }
    EXPECT_EQ(units, expected_units) << caller;  // ordered by id, as created

    std::vector<int64_t> expected_users;
    for (const std::string& user : kEveryone) {
      const bool works_there = absl::c_any_of(
          user_units_.at(user), [&](int64_t unit) { return MaySeeUnit(caller, unit); });
      if (works_there) expected_users.push_back(user_ids_.at(user));
    }
    std::sort(expected_users.begin(), expected_users.end());
    std::vector<int64_t> users;
    for (const v1::DirectoryUser& user : got.users()) {
      users.push_back(user.id());
      EXPECT_THAT(user.display_name(), HasSubstr("User "));
      EXPECT_NE(user.role(), v1::ROLE_UNSPECIFIED);
    }
    EXPECT_EQ(users, expected_users) << caller;
    EXPECT_FALSE(got.version().empty());
    EXPECT_FALSE(got.not_modified());
  }
}

TEST_F(DirectoryServicesTest, ScopeDirectoryNeverNamesAnythingOfAnotherCommune) {
  // An attacker's view: the collaborator of commune 10101 reads every byte of its answer.
  ASSERT_TRUE(server_.directory()
                  .UpdateProfile(user_ids_.at("collab.c21"), "Trần Thị Bình", "0912345678")
                  .ok());
  // In scope, but its phone is private all the same.
  ASSERT_TRUE(server_.directory()
                  .UpdateProfile(user_ids_.at("coord.d1"), "User coord.d1", "0987654321")
                  .ok());
  v1::ScopeDirectory got;
  ASSERT_TRUE(ScopeDirectory("collab.c11", "", &got).ok());
  const std::string bytes = got.SerializeAsString();
  for (const std::string& secret :
       {std::string("Unit 10102"), std::string("Unit 10201"), std::string("Unit 102"),
        std::string("Unit 20"), std::string("Trần Thị Bình"), std::string("User collab.two"),
        std::string("User admin.d2"), std::string("0912345678"), std::string("0987654321")}) {
    EXPECT_EQ(bytes.find(secret), std::string::npos) << secret;
  }
  // What it does learn: its commune, the path above, and who decides there.
  std::vector<std::string> names;
  for (const OrgUnit& unit : got.org_units()) names.push_back(unit.name());
  EXPECT_THAT(names, ElementsAre("Unit 10", "Unit 101", "Unit 10101"));
  std::vector<std::string> people;
  for (const v1::DirectoryUser& user : got.users()) people.push_back(user.display_name());
  EXPECT_THAT(people, UnorderedElementsAreArray({"User admin.p1", "User officer.p1",
                                                 "User coord.d1", "User collab.c11"}));
  // Another caller's version buys nothing: the answer is still the caller's own.
  v1::ScopeDirectory other;
  ASSERT_TRUE(ScopeDirectory("collab.c21", "", &other).ok());
  v1::ScopeDirectory again;
  ASSERT_TRUE(ScopeDirectory("collab.c11", other.version(), &again).ok());
  EXPECT_FALSE(again.not_modified());
  EXPECT_EQ(again.SerializeAsString(), got.SerializeAsString());
}

TEST_F(DirectoryServicesTest, ScopeDirectoryNotModifiedUntilSomethingInItChanges) {
  v1::ScopeDirectory first;
  ASSERT_TRUE(ScopeDirectory("collab.c11", "", &first).ok());
  v1::ScopeDirectory same;
  ASSERT_TRUE(ScopeDirectory("collab.c11", first.version(), &same).ok());
  EXPECT_TRUE(same.not_modified());
  EXPECT_EQ(same.version(), first.version());
  EXPECT_EQ(same.org_units_size(), 0);
  EXPECT_EQ(same.users_size(), 0);

  // A change outside the caller's directory leaves it unchanged.
  ASSERT_TRUE(
      server_.directory().UpdateProfile(user_ids_.at("collab.c31"), "Lê Văn Cường", "").ok());
  ASSERT_TRUE(server_.directory()
                  .CreateOrgUnit("10202", "Unit 10202", v1::ORG_UNIT_LEVEL_COMMUNE, d2_)
                  .ok());
  ASSERT_TRUE(ScopeDirectory("collab.c11", first.version(), &same).ok());
  EXPECT_TRUE(same.not_modified());

  // A new name of the district coordinator above the commune is a new version.
  ASSERT_TRUE(
      server_.directory().UpdateProfile(user_ids_.at("coord.d1"), "Nguyễn Văn An", "").ok());
  v1::ScopeDirectory changed;
  ASSERT_TRUE(ScopeDirectory("collab.c11", first.version(), &changed).ok());
  EXPECT_FALSE(changed.not_modified());
  EXPECT_NE(changed.version(), first.version());
  bool found = false;
  for (const v1::DirectoryUser& user : changed.users()) {
    if (user.id() == user_ids_.at("coord.d1")) found = user.display_name() == "Nguyễn Văn An";
  }
  EXPECT_TRUE(found);
  // A new commune in its district is a new version for the coordinator too.
  v1::ScopeDirectory coord;
  ASSERT_TRUE(ScopeDirectory("coord.d1", "", &coord).ok());
  ASSERT_TRUE(server_.directory()
                  .CreateOrgUnit("10103", "Xã An Bình", v1::ORG_UNIT_LEVEL_COMMUNE, d1_)
                  .ok());
  v1::ScopeDirectory coord2;
  ASSERT_TRUE(ScopeDirectory("coord.d1", coord.version(), &coord2).ok());
  EXPECT_FALSE(coord2.not_modified());
  EXPECT_EQ(coord2.org_units_size(), coord.org_units_size() + 1);

  // A version that is not one: refused naming the field.
  const grpc::Status bad = ScopeDirectory("collab.c11", std::string(65, 'x'), &same);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("known_version"));
}

TEST_F(DirectoryServicesTest, ListOrgUnitsExamplesAndPaging) {
  std::vector<OrgUnit> listed;
  ASSERT_TRUE(ListUnits("collab.c11", 0, 0, &listed).ok());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].code(), "10101");
  ASSERT_TRUE(ListUnits("collab.c11", p1_, 0, &listed).ok());  // only the way down to it
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].code(), "101");
  ASSERT_TRUE(ListUnits("officer.p1", p1_, 0, &listed).ok());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].code(), "101");
  EXPECT_EQ(listed[1].code(), "102");

  // Page by page, in code order.
  v1::ListOrgUnitsRequest request;
  request.set_parent_id(d1_);
  request.set_page_size(1);
  v1::ListOrgUnitsResponse page1, page2;
  ASSERT_TRUE(Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"),
                   request, &page1)
                  .ok());
  ASSERT_EQ(page1.org_units_size(), 1);
  EXPECT_EQ(page1.org_units(0).code(), "10101");
  ASSERT_FALSE(page1.next_page_token().empty());
  request.set_page_token(page1.next_page_token());
  ASSERT_TRUE(Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"),
                   request, &page2)
                  .ok());
  ASSERT_EQ(page2.org_units_size(), 1);
  EXPECT_EQ(page2.org_units(0).code(), "10102");
  EXPECT_TRUE(page2.next_page_token().empty());

  // The token belongs to that query: another parent, or another caller, is refused.
  v1::ListOrgUnitsResponse ignored;
  request.set_parent_id(p1_);
  grpc::Status status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits,
                             Token("officer.p1"), request, &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), Contains(Pair("page_token", HasSubstr("another query"))));
  request.set_parent_id(d1_);
  status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("admin.p1"), request,
                &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_page_token("garbage!!");
  status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"), request,
                &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), Contains(Pair("page_token", ::testing::_)));

  // Bad page sizes and parents name their field.
  request.clear_page_token();
  request.set_page_size(501);
  status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"), request,
                &ignored);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), Contains(Pair("page_size", ::testing::_)));
  request.set_page_size(-1);
  EXPECT_EQ(Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"),
                 request, &ignored)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.set_page_size(500);
  request.set_parent_id(-3);
  status = Call(units_.get(), &v1::OrgUnitService::Stub::ListOrgUnits, Token("officer.p1"), request,
                &ignored);
  EXPECT_THAT(FieldViolations(status), Contains(Pair("parent_id", ::testing::_)));
}

// ---- Users ----------------------------------------------------------------------------

TEST_F(DirectoryServicesTest, GetAndListUsersFollowScopeForEveryRole) {
  std::vector<std::string> all_users;
  for (const auto& [name, id] : user_ids_) all_users.push_back(name);
  for (const std::string& caller : kEveryone) {
    std::vector<std::string> expected;
    for (const std::string& user : all_users) {
      User got;
      const grpc::Status status = GetUser(caller, user_ids_.at(user), &got);
      if (MaySeeUser(caller, user)) {
        expected.push_back(user);
        EXPECT_TRUE(status.ok()) << caller << " -> " << user << ": " << status.error_message();
        EXPECT_EQ(got.username(), user);
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << caller << " -> " << user;
        EXPECT_EQ(status.error_message(), absl::StrCat("id: no user ", user_ids_.at(user)));
      }
    }
    std::vector<std::string> listed;
    ASSERT_TRUE(ListAllUsers(caller, 2, &listed).ok()) << caller;
    EXPECT_THAT(listed, UnorderedElementsAreArray(expected)) << caller;
    EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end())) << caller;
    std::vector<std::string> one_page;
    ASSERT_TRUE(ListAllUsers(caller, 0, &one_page).ok());
    EXPECT_EQ(one_page, listed);
  }
  // Spot checks: a collaborator sees its commune only; the province sees its province.
  std::vector<std::string> listed;
  ASSERT_TRUE(ListAllUsers("collab.c21", 0, &listed).ok());
  EXPECT_THAT(listed, ElementsAre("collab.c21"));  // not even its district's people
  ASSERT_TRUE(ListAllUsers("collab.c31", 0, &listed).ok());
  EXPECT_THAT(listed, ElementsAre("collab.c31", "collab.two"));
  EXPECT_EQ(GetUser("admin.p1", 999999).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(FieldViolations(GetUser("admin.p1", -1)), ElementsAre(Pair("id", ::testing::_)));
}

TEST_F(DirectoryServicesTest, OnlyAdministratorsChangeAccounts) {
  const User target = *server_.directory().FindUser("collab.c11");
  for (const char* caller : {"officer.p1", "coord.d1", "collab.c11"}) {
    EXPECT_EQ(CreateUser(caller, "newbie", v1::ROLE_COMMUNE_COLLABORATOR, {c11_}).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << caller;
    User change = target;
    change.set_active(false);
    EXPECT_EQ(UpdateUser(caller, change, {"active"}).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << caller;
    EXPECT_EQ(ResetPassword(caller, target.id(), "another-password").error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << caller;
  }
  EXPECT_FALSE(server_.directory().FindUser("newbie").ok());
  EXPECT_TRUE(server_.directory().FindUser("collab.c11")->active());
  EXPECT_TRUE(Login("collab.c11", Password("collab.c11")).ok());
}

TEST_F(DirectoryServicesTest, CreateUserWithinTheAdministratorsScope) {
  User created;
  ASSERT_TRUE(CreateUser("admin.p1", "newbie", v1::ROLE_COMMUNE_COLLABORATOR, {c12_}, "pw-newbie-1",
                         &created)
                  .ok());
  EXPECT_GT(created.id(), 0);
  EXPECT_EQ(created.username(), "newbie");
  EXPECT_TRUE(created.active());
  EXPECT_THAT(created.org_unit_ids(), ElementsAre(c12_));
  EXPECT_TRUE(Login("newbie", "pw-newbie-1").ok());

  // Outside the administrator's subtree (or nowhere at all): refused, nothing created.
  grpc::Status status = CreateUser("admin.d2", "other1", v1::ROLE_COMMUNE_COLLABORATOR, {c11_});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("user.org_unit_ids[0]"));
  EXPECT_EQ(CreateUser("admin.p1", "other2", v1::ROLE_PROVINCE_OFFICER, {p2_}).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(
      CreateUser("admin.p1", "other3", v1::ROLE_PROVINCE_OFFICER, {c11_, 999999}).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  for (const char* name : {"other1", "other2", "other3"}) {
    EXPECT_FALSE(server_.directory().FindUser(name).ok()) << name;
  }

  // Bad input names the field.
  status = CreateUser("admin.p1", "Not Valid", v1::ROLE_COMMUNE_COLLABORATOR, {c11_});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.username", ::testing::_)));
  status = CreateUser("admin.p1", "okname", static_cast<v1::Role>(42), {c11_});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.role", "unknown role 42")));
  status = CreateUser("admin.p1", "okname", v1::ROLE_UNSPECIFIED, {c11_});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.role", "required")));
  status = CreateUser("admin.p1", "okname", v1::ROLE_COMMUNE_COLLABORATOR, {});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.org_unit_ids", ::testing::_)));
  status = CreateUser("admin.p1", "okname", v1::ROLE_COMMUNE_COLLABORATOR, {0});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.org_unit_ids[0]", ::testing::_)));
  status = CreateUser("admin.p1", "okname", v1::ROLE_COMMUNE_COLLABORATOR, {c11_}, "short");
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("password", ::testing::_)));
  EXPECT_FALSE(server_.directory().FindUser("okname").ok());
  status = CreateUser("admin.p1", "newbie", v1::ROLE_COMMUNE_COLLABORATOR, {c11_});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(DirectoryServicesTest, UpdateUser) {
  User change = *server_.directory().FindUser("collab.c11");
  change.set_role(v1::ROLE_DISTRICT_COORDINATOR);
  change.clear_org_unit_ids();
  change.add_org_unit_ids(d1_);
  User updated;
  ASSERT_TRUE(UpdateUser("admin.p1", change, {"role", "org_unit_ids"}, &updated).ok());
  EXPECT_EQ(updated.role(), v1::ROLE_DISTRICT_COORDINATOR);
  EXPECT_THAT(updated.org_unit_ids(), ElementsAre(d1_));

  // Only the masked fields change.
  change.set_role(v1::ROLE_PROVINCE_OFFICER);
  change.clear_org_unit_ids();
  change.add_org_unit_ids(c12_);
  ASSERT_TRUE(UpdateUser("admin.p1", change, {"org_unit_ids"}, &updated).ok());
  EXPECT_EQ(updated.role(), v1::ROLE_DISTRICT_COORDINATOR);
  EXPECT_THAT(updated.org_unit_ids(), ElementsAre(c12_));

  // The mask must name known, writable fields.
  grpc::Status status = UpdateUser("admin.p1", change, {"colour"});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("update_mask.paths[0]", ::testing::_)));
  status = UpdateUser("admin.p1", change, {});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("update_mask", ::testing::_)));
  change.set_role(static_cast<v1::Role>(9));
  status = UpdateUser("admin.p1", change, {"role"});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.role", ::testing::_)));

  // Scope: an administrator elsewhere does not see the user; a user working partly
  // outside the administrator's scope cannot be changed by it; units must be in scope.
  User other = *server_.directory().FindUser("collab.c31");
  other.set_active(false);
  EXPECT_EQ(UpdateUser("admin.p1", other, {"active"}).error_code(), grpc::StatusCode::NOT_FOUND);
  User two = *server_.directory().FindUser("collab.two");
  two.set_active(false);
  EXPECT_EQ(UpdateUser("admin.p1", two, {"active"}).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  User move = *server_.directory().FindUser("collab.c21");
  move.clear_org_unit_ids();
  move.add_org_unit_ids(c11_);
  EXPECT_EQ(UpdateUser("admin.d2", move, {"org_unit_ids"}).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(server_.directory().FindUser("collab.c21")->org_unit_ids(), ElementsAre(c21_));
  EXPECT_TRUE(server_.directory().FindUser("collab.c31")->active());
  EXPECT_TRUE(server_.directory().FindUser("collab.two")->active());

  // A new display name and phone; a bad phone names the field and changes nothing.
  User renamed = *server_.directory().FindUser("coord.d1");
  renamed.set_display_name("Trần Thị B");
  renamed.set_phone("+84 912 345 678");
  ASSERT_TRUE(UpdateUser("admin.p1", renamed, {"display_name", "phone"}, &updated).ok());
  EXPECT_EQ(updated.display_name(), "Trần Thị B");
  EXPECT_EQ(updated.phone(), "+84 912 345 678");
  renamed.set_phone("call me");
  status = UpdateUser("admin.p1", renamed, {"phone"});
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("user.phone", ::testing::_)));
  EXPECT_EQ(server_.directory().FindUser("coord.d1")->phone(), "+84 912 345 678");

  // Deactivation signs the user out at once.
  const std::string token = Token("coord.d1");
  User off = *server_.directory().FindUser("coord.d1");
  off.set_active(false);
  ASSERT_TRUE(UpdateUser("admin.p1", off, {"active"}, &updated).ok());
  EXPECT_FALSE(updated.active());
  v1::WhoAmIResponse who;
  EXPECT_EQ(Call(auth_.get(), &v1::AuthService::Stub::WhoAmI, token, v1::WhoAmIRequest(), &who)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Reactivation lets the user sign in again; the old token stays revoked.
  off.set_active(true);
  ASSERT_TRUE(UpdateUser("admin.p1", off, {"active"}, &updated).ok());
  EXPECT_TRUE(updated.active());
  EXPECT_TRUE(Login("coord.d1", Password("coord.d1")).ok());
  EXPECT_EQ(Call(auth_.get(), &v1::AuthService::Stub::WhoAmI, token, v1::WhoAmIRequest(), &who)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(DirectoryServicesTest, ResetPassword) {
  const int64_t target = user_ids_.at("collab.c21");
  EXPECT_TRUE(ResetPassword("admin.d2", target, "brand-new-password").ok());
  EXPECT_TRUE(Login("collab.c21", "brand-new-password").ok());
  EXPECT_EQ(Login("collab.c21", Password("collab.c21")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_EQ(
      ResetPassword("admin.d2", user_ids_.at("collab.c11"), "brand-new-password").error_code(),
      grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(
      ResetPassword("admin.p1", user_ids_.at("collab.two"), "brand-new-password").error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  const grpc::Status status = ResetPassword("admin.p1", target, "short");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(FieldViolations(status), ElementsAre(Pair("new_password", ::testing::_)));
  EXPECT_THAT(FieldViolations(ResetPassword("admin.p1", 0, "brand-new-password")),
              ElementsAre(Pair("user_id", ::testing::_)));
  EXPECT_TRUE(Login("collab.two", Password("collab.two")).ok());
}

}  // namespace
}  // namespace kcnet::server
