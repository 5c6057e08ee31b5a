// OrgUnitService.ImportOrgUnits through a real server: the dry run changes nothing, the
// import adds, a reorganisation or a bad row is refused whole, and only an administrator
// whose scope covers every root unit may import.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;

class OrgUnitImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    Directory& d = server_.directory();
    auto p1 = *d.CreateOrgUnit("90", "Tỉnh Một", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    auto p2 = *d.CreateOrgUnit("91", "Tỉnh Hai", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    ASSERT_TRUE(d.CreateUser("national", "National", "national-password", v1::ROLE_ADMINISTRATOR,
                             {p1.id(), p2.id()})
                    .ok());
    ASSERT_TRUE(
        d.CreateUser("prov", "Province", "prov-password", v1::ROLE_ADMINISTRATOR, {p1.id()}).ok());
    ASSERT_TRUE(d.CreateUser("officer", "Officer", "officer-password", v1::ROLE_PROVINCE_OFFICER,
                             {p1.id(), p2.id()})
                    .ok());
    channel_ = server_.Channel();
  }

  grpc::Status Import(const std::string& user, const std::string& csv, bool dry_run,
                      v1::ImportOrgUnitsResponse* out) {
    auto stub = v1::OrgUnitService::NewStub(channel_);
    grpc::ClientContext context;
    Authorize(&context, SignIn(channel_, user, user + "-password"));
    v1::ImportOrgUnitsRequest request;
    request.set_csv(csv);
    request.set_dry_run(dry_run);
    return stub->ImportOrgUnits(&context, request, out);
  }

  TestServer server_;
  std::shared_ptr<grpc::Channel> channel_;
};

constexpr char kList[] =
    "code,name,level,parent_code\n"
    "90,Tỉnh Một,province,\n"
    "905,Huyện Năm,district,90\n"
    "90501,Xã Năm Một,commune,905\n";

TEST_F(OrgUnitImportTest, DryRunChangesNothingThenImportAdds) {
  v1::ImportOrgUnitsResponse out;
  grpc::Status status = Import("national", kList, /*dry_run=*/true, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(out.applied());
  EXPECT_EQ(out.rows(), 3);
  ASSERT_EQ(out.added_size(), 2);
  EXPECT_EQ(out.added(0), "905");
  EXPECT_EQ(out.unchanged_size(), 1);
  EXPECT_FALSE(server_.directory().FindByCode("905").ok()) << "a dry run stores nothing";

  out.Clear();
  status = Import("national", kList, /*dry_run=*/false, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(out.applied());
  EXPECT_TRUE(server_.directory().FindByCode("90501").ok());
  EXPECT_FALSE(out.summary().empty());
}

TEST_F(OrgUnitImportTest, RenameOrBadRowRefusesTheWholeList) {
  v1::ImportOrgUnitsResponse out;
  grpc::Status status = Import("national", "90,Tỉnh Đổi Tên,province,\n905,Huyện Năm,district,90\n",
                               /*dry_run=*/true, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  status = Import("national", "906,Huyện Sáu,town,90\n", /*dry_run=*/false, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("level"), std::string::npos) << status.error_message();
  EXPECT_FALSE(server_.directory().FindByCode("906").ok());
  EXPECT_FALSE(server_.directory().FindByCode("905").ok());
}

TEST_F(OrgUnitImportTest, OnlyAnAdministratorOfEveryRoot) {
  v1::ImportOrgUnitsResponse out;
  EXPECT_EQ(Import("prov", kList, /*dry_run=*/true, &out).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Import("officer", kList, /*dry_run=*/true, &out).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(server_.directory().FindByCode("905").ok());
}

}  // namespace
}  // namespace kcnet::server
