// kcnet-admin rebuild-reports and export, as real processes on a seeded data directory.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ShellQuote(const std::string& arg) {
  return absl::StrCat("'", absl::StrReplaceAll(arg, {{"'", "'\\''"}}), "'");
}

class AdminReportsTest : public ::testing::Test {
 protected:
  struct Result {
    int exit_code = -1;
    std::string out, err;
  };
  Result Run(const std::vector<std::string>& args) {
    std::string command =
        absl::StrCat(ShellQuote(KCNET_ADMIN_PATH), " --data_dir=", ShellQuote(tmp_.File("data")));
    for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
    absl::StrAppend(&command, " >", ShellQuote(tmp_.File("stdout")), " 2>",
                    ShellQuote(tmp_.File("stderr")));
    const int status = std::system(command.c_str());
    Result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFile(tmp_.File("stdout"));
    r.err = ReadFile(tmp_.File("stderr"));
    return r;
  }
  kcnet::testing::TempDir tmp_;
};

TEST_F(AdminReportsTest, RebuildsAndExportsTheSeededData) {
  ASSERT_EQ(Run({"seed-demo"}).exit_code, 0);
  Result rebuilt = Run({"rebuild-reports"});
  ASSERT_EQ(rebuilt.exit_code, 0) << rebuilt.err;
  EXPECT_THAT(rebuilt.out, StartsWith("rebuilt the report summaries up to op "));

  Result csv = Run({"export", "coverage", "--format=csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  EXPECT_THAT(csv.out, StartsWith("\xEF\xBB\xBF"
                                  "Mã xã / Commune id,"));
  EXPECT_THAT(csv.out, HasSubstr("Tổng / Total,"));

  Result xlsx = Run({"export", "quality", "--format=xlsx", "--out=" + tmp_.File("q.xlsx")});
  ASSERT_EQ(xlsx.exit_code, 0) << xlsx.err;
  EXPECT_THAT(ReadFile(tmp_.File("q.xlsx")), StartsWith("PK"));  // a zip: the XLSX container

  // The budget of the seeded plan (this year; the one province) and the outcomes.
  Result budget = Run({"export", "budget", "--format=csv", "--org_unit=90"});
  ASSERT_EQ(budget.exit_code, 0) << budget.err;
  EXPECT_THAT(budget.out, StartsWith("\xEF\xBB\xBF"
                                     "Năm / Year,"));
  EXPECT_THAT(budget.out, HasSubstr("Ngân sách địa phương,Đào tạo nghề,"
                                    "500000000,0,0,500000000,5,0\r\n"));
  Result budget_xlsx = Run({"export", "budget", "--format=xlsx", "--year=2030"});
  ASSERT_EQ(budget_xlsx.exit_code, 0) << budget_xlsx.err;  // no plan that year: no rows
  EXPECT_THAT(budget_xlsx.out, StartsWith("PK"));
  Result bad_year = Run({"export", "budget", "--format=csv", "--year=1999"});
  EXPECT_EQ(bad_year.exit_code, 1);
  EXPECT_THAT(bad_year.err, HasSubstr("year:"));
  Result outcomes = Run({"export", "outcomes", "--format=csv"});
  ASSERT_EQ(outcomes.exit_code, 0) << outcomes.err;
  EXPECT_THAT(outcomes.out, HasSubstr("Tổng / Total,0,"));

  Result bad = Run({"export", "budgets", "--format=csv"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("report: 'budgets' is not"));
  Result format = Run({"export", "coverage", "--format=pdf"});
  EXPECT_EQ(format.exit_code, 2);
  EXPECT_THAT(format.err, HasSubstr("--format"));
  Result unit = Run({"export", "coverage", "--format=csv", "--org_unit=NOPE"});
  EXPECT_NE(unit.exit_code, 0);
  EXPECT_THAT(unit.err, HasSubstr("--org_unit: no org unit with code 'NOPE'"));
}

TEST_F(AdminReportsTest, RefusesADataDirWithoutRecords) {
  Result r = Run({"rebuild-reports"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no record store"));
}

}  // namespace
}  // namespace kcnet::server
