// Runs the real kcnet-admin binary on a temporary data directory.
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/directory/directory.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Single-quotes `arg` for /bin/sh.
std::string ShellQuote(const std::string& arg) {
  return absl::StrCat("'", absl::StrReplaceAll(arg, {{"'", "'\\''"}}), "'");
}

int CountLines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

class AdminCliTest : public ::testing::Test {
 protected:
  // Runs kcnet-admin --data_dir=<tmp>/data with `args`, feeding `input` on stdin.
  RunResult Run(const std::vector<std::string>& args, const std::string& input = "") {
    WriteFile(tmp_.File("stdin"), input);
    std::string command =
        absl::StrCat(ShellQuote(KCNET_ADMIN_PATH), " --data_dir=", ShellQuote(data_dir()));
    for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
    absl::StrAppend(&command, " <", ShellQuote(tmp_.File("stdin")), " >",
                    ShellQuote(tmp_.File("stdout")), " 2>", ShellQuote(tmp_.File("stderr")));
    const int status = std::system(command.c_str());
    RunResult result;
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = ReadFile(tmp_.File("stdout"));
    result.err = ReadFile(tmp_.File("stderr"));
    return result;
  }

  std::string data_dir() const { return tmp_.File("data"); }

  void ImportSmallList() {
    WriteFile(tmp_.File("units.csv"),
              "code,name,level,parent_code\n"
              "00001,Phường Phúc Xá,commune,001\n"
              "001,Quận Ba Đình,district,01\n"
              "01,Thành phố Hà Nội,province,\n");
    RunResult r = Run({"import-org-units", tmp_.File("units.csv")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("3 new, 0 unchanged"));
  }

  testing::TempDir tmp_;
};

TEST_F(AdminCliTest, ImportCreateUserAndList) {
  ImportSmallList();

  // The password comes on stdin.
  RunResult created = Run({"create-user", "--username=alice", "--display_name=Nguyễn Thị An",
                           "--role=district_coordinator", "--org_units=001"},
                          "s3cret-password\n");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("created user alice"));
  EXPECT_THAT(created.out, HasSubstr("district_coordinator at 001"));

  RunResult listed = Run({"list-users"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out, "alice\tdistrict_coordinator\tactive\t001\tNguyễn Thị An\n");

  RunResult units = Run({"list-org-units", "--parent=001"});
  ASSERT_EQ(units.exit_code, 0) << units.err;
  EXPECT_EQ(units.out, "00001\tcommune\tPhường Phúc Xá\n");

  // The account works: sign in through the library on the same file.
  auto directory = Directory::Open(data_dir() + "/directory.db");
  ASSERT_TRUE(directory.ok()) << directory.status();
  auto login = (*directory)->Login("alice", "s3cret-password");
  ASSERT_TRUE(login.ok()) << login.status();
  EXPECT_EQ(login->user.role(), v1::ROLE_DISTRICT_COORDINATOR);
}

TEST_F(AdminCliTest, ErrorsPrintOneLineAndExitNonZero) {
  ImportSmallList();

  RunResult unknown_unit = Run({"create-user", "--username=bob", "--display_name=Bob",
                                "--role=commune_collaborator", "--org_units=99999"},
                               "long enough\n");
  EXPECT_EQ(unknown_unit.exit_code, 1);
  EXPECT_THAT(unknown_unit.out, IsEmpty());
  EXPECT_EQ(CountLines(unknown_unit.err), 1) << unknown_unit.err;
  EXPECT_THAT(unknown_unit.err, HasSubstr("99999"));

  RunResult bad_role =
      Run({"create-user", "--username=bob", "--display_name=Bob", "--role=king", "--org_units=001"},
          "long enough\n");
  EXPECT_EQ(bad_role.exit_code, 1);
  EXPECT_EQ(CountLines(bad_role.err), 1) << bad_role.err;
  EXPECT_THAT(bad_role.err, HasSubstr("role"));

  RunResult short_password = Run({"create-user", "--username=bob", "--display_name=Bob",
                                  "--role=commune_collaborator", "--org_units=00001"},
                                 "short\n");
  EXPECT_EQ(short_password.exit_code, 1);
  EXPECT_THAT(short_password.err, HasSubstr("password"));

  RunResult missing_flag = Run({"create-user", "--username=bob"});
  EXPECT_EQ(missing_flag.exit_code, 2);
  EXPECT_THAT(missing_flag.err, HasSubstr("--display_name is required"));

  RunResult no_command = Run({});
  EXPECT_EQ(no_command.exit_code, 2);
  EXPECT_EQ(CountLines(no_command.err), 1) << no_command.err;

  RunResult unknown_command = Run({"drop-everything"});
  EXPECT_EQ(unknown_command.exit_code, 2);
  EXPECT_THAT(unknown_command.err, HasSubstr("unknown command"));

  RunResult missing_file = Run({"import-org-units", tmp_.File("nope.csv")});
  EXPECT_EQ(missing_file.exit_code, 1);
  EXPECT_THAT(missing_file.err, HasSubstr("nope.csv"));

  RunResult unknown_user = Run({"deactivate-user", "--username=nobody"});
  EXPECT_EQ(unknown_user.exit_code, 1);
  EXPECT_THAT(unknown_user.err, HasSubstr("nobody"));

  // Nobody was created by the failed commands.
  RunResult listed = Run({"list-users"});
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_THAT(listed.out, IsEmpty());
}

// A password never travels in an argument (it would show in `ps`): a file or stdin.
TEST_F(AdminCliTest, PasswordNeverAnArgument) {
  ImportSmallList();
  for (const char* flag : {"--password=long enough", "--password="}) {
    RunResult given = Run({"create-user", "--username=bob", "--display_name=Bob",
                           "--role=commune_collaborator", "--org_units=00001", flag});
    EXPECT_EQ(given.exit_code, 2) << flag;
    EXPECT_EQ(given.err,
              "kcnet-admin: create-user: --password: a password in an argument shows in `ps`; "
              "give --password-file=PATH, or type it at the prompt (or on stdin)\n");
    RunResult reset = Run({"reset-password", "--username=bob", flag});
    EXPECT_EQ(reset.exit_code, 2) << flag;
    EXPECT_THAT(reset.err, HasSubstr("--password-file=PATH"));
  }
  RunResult missing =
      Run({"create-user", "--username=bob", "--display_name=Bob", "--role=commune_collaborator",
           "--org_units=00001", "--password-file=" + tmp_.File("nope")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("--password-file: cannot read "));
  RunResult listed = Run({"list-users"});
  EXPECT_THAT(listed.out, IsEmpty());

  WriteFile(tmp_.File("bob.password"), "mật khẩu đủ dài\n");
  RunResult created =
      Run({"create-user", "--username=bob", "--display_name=Bob", "--role=commune_collaborator",
           "--org_units=00001", "--password_file=" + tmp_.File("bob.password")});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  auto directory = Directory::Open(data_dir() + "/directory.db");
  ASSERT_TRUE(directory.ok()) << directory.status();
  EXPECT_TRUE((*directory)->Login("bob", "mật khẩu đủ dài").ok());
}

TEST_F(AdminCliTest, RefusedImportAndDryRun) {
  ImportSmallList();
  WriteFile(tmp_.File("renamed.csv"),
            "00001,Phường Mới,commune,001\n"
            "001,Quận Ba Đình,district,01\n"
            "01,Thành phố Hà Nội,province,\n");
  for (const char* dry_run : {"--dry_run", "--dry_run=false"}) {
    RunResult refused = Run({"import-org-units", tmp_.File("renamed.csv"), dry_run});
    EXPECT_EQ(refused.exit_code, 1) << dry_run;
    EXPECT_EQ(CountLines(refused.err), 1) << refused.err;
    EXPECT_THAT(refused.err, HasSubstr("00001 'Phường Phúc Xá' -> 'Phường Mới'"));
  }
  WriteFile(tmp_.File("more.csv"), "002,Quận Hoàn Kiếm,district,01\n");
  RunResult dry = Run({"import-org-units", tmp_.File("more.csv"), "--dry_run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr("dry run"));
  RunResult listed = Run({"list-org-units", "--parent=01"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out, "001\tdistrict\tQuận Ba Đình\n");
}

TEST_F(AdminCliTest, ManageAUser) {
  ImportSmallList();
  WriteFile(tmp_.File("chi.password"), "first password\n");
  RunResult created =
      Run({"create-user", "--username=chi", "--display_name=Chi", "--role=commune_collaborator",
           "--org_units=00001", "--password-file=" + tmp_.File("chi.password")});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  RunResult assigned =
      Run({"assign-user", "--username=chi", "--role=province_officer", "--org_units=01,001"});
  ASSERT_EQ(assigned.exit_code, 0) << assigned.err;
  EXPECT_THAT(assigned.out, HasSubstr("province_officer at 01,001"));

  RunResult reset = Run({"reset-password", "--username=chi"}, "second password\n");
  ASSERT_EQ(reset.exit_code, 0) << reset.err;
  {
    auto directory = Directory::Open(data_dir() + "/directory.db");
    ASSERT_TRUE(directory.ok()) << directory.status();
    EXPECT_FALSE((*directory)->Login("chi", "first password").ok());
    EXPECT_TRUE((*directory)->Login("chi", "second password").ok());
  }

  RunResult deactivated = Run({"deactivate-user", "--username=chi"});
  ASSERT_EQ(deactivated.exit_code, 0) << deactivated.err;
  RunResult listed = Run({"list-users"});
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_THAT(listed.out, HasSubstr("chi\tprovince_officer\tinactive\t"));
}

// Account changes are audited; an administrator reads the trail with list-audit.
TEST_F(AdminCliTest, ListAuditShowsWhoChangedWhichAccount) {
  ImportSmallList();
  const std::string password_file = tmp_.File("pw");
  WriteFile(password_file, "mat-khau-123\n");
  RunResult created = Run({"create-user", "--username=audited", "--display_name=Trần Văn B",
                           "--role=commune_collaborator", "--org_units=00001",
                           absl::StrCat("--password-file=", password_file)});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  RunResult deactivated = Run({"deactivate-user", "--username=audited"});
  ASSERT_EQ(deactivated.exit_code, 0) << deactivated.err;
  RunResult audit = Run({"list-audit"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  EXPECT_THAT(audit.out, ::testing::HasSubstr("audited"));
  EXPECT_THAT(audit.out, ::testing::HasSubstr("create_user"));
  EXPECT_EQ(audit.out.find("mat-khau-123"), std::string::npos);  // never a password
  EXPECT_GE(CountLines(audit.out), 3);  // the header, the creation, the deactivation
  RunResult bad = Run({"list-audit", "--after=x"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, ::testing::HasSubstr("--after"));
}

}  // namespace
}  // namespace kcnet::server
