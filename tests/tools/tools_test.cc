// The tools' shared command-line code: whole numbers with thousands separators, flags,
// password files, tables of Vietnamese text, loopback addresses.
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"
#include "tools/address.h"
#include "tools/args.h"
#include "tools/password.h"
#include "tools/table.h"

namespace kcnet::tools {
namespace {

using ::testing::HasSubstr;

TEST(ParseWholeNumberTest, SeparatorsOnlyBetweenGroupsOfThree) {
  EXPECT_EQ(ParseWholeNumber("45000000"), 45000000);
  EXPECT_EQ(ParseWholeNumber("45.000.000"), 45000000);
  EXPECT_EQ(ParseWholeNumber("45,000,000"), 45000000);
  EXPECT_EQ(ParseWholeNumber("1.000"), 1000);
  EXPECT_EQ(ParseWholeNumber("100,000"), 100000);
  EXPECT_EQ(ParseWholeNumber("0"), 0);
  EXPECT_EQ(ParseWholeNumber("-1.500"), -1500);
  EXPECT_EQ(ParseWholeNumber("+8"), 8);
  for (const char* bad :
       {"45,5", "2.5", "455,", ".455", "1.0000.000", "1.00.000", "45.000,000", "1,,000", "", "-",
        "12a", "1_000", " 1", "1 000", "0x10", "1e6", "99999999999999999999", "1.000.00"}) {
    EXPECT_EQ(ParseWholeNumber(bad), std::nullopt) << bad;
  }
}

TEST(ArgsTest, FlagsWordsAndBooleans) {
  absl::StatusOr<Args> args = Args::Parse(
      {"--store", "s.db", "login", "--insecure", "collab1", "--password-file=p"}, {"insecure"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->words(), (std::vector<std::string>{"login", "collab1"}));
  EXPECT_EQ(args->Get("store"), "s.db");
  EXPECT_EQ(args->Get("password_file"), "p");
  EXPECT_EQ(args->Bool("insecure").value(), true);
  EXPECT_EQ(args->Bool("tls").value(), std::nullopt);
  EXPECT_TRUE(args->CheckFlags({"password_file"}, {"store", "insecure"}).ok());
  const absl::Status unknown = args->CheckFlags({"password_file"});
  EXPECT_TRUE(IsUsageError(unknown));
  EXPECT_THAT(unknown.message(), HasSubstr("unknown flag --insecure"));

  absl::StatusOr<Args> numbers = Args::Parse({"--amount=45,5", "--workers=8", "--tls=maybe"});
  ASSERT_TRUE(numbers.ok());
  EXPECT_EQ(numbers->Int("workers").value(), 8);
  EXPECT_EQ(numbers->Int("amount").status().message(),
            "--amount: '45,5' is not a whole number (separators only between groups of three "
            "digits: 45.000.000)");
  EXPECT_TRUE(IsUsageError(numbers->Int("amount").status()));
  EXPECT_TRUE(IsUsageError(numbers->Bool("tls").status()));
  EXPECT_TRUE(IsUsageError(Args::Parse({"--a=1", "--a=2"}).status()));
  EXPECT_TRUE(IsUsageError(Args::Parse({"--a"}).status()));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("x")));
}

TEST(PasswordTest, FromAFileNeverAnArgument) {
  kcnet::testing::TempDir dir;
  std::ofstream(dir.File("p")) << "mật khẩu\r\nsecond line\n";
  EXPECT_EQ(ReadPasswordFile(dir.File("p")).value(), "mật khẩu");
  std::ofstream(dir.File("empty")) << "\n";
  EXPECT_EQ(ReadPasswordFile(dir.File("empty")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPasswordFile(dir.File("none")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ReadPasswordFile(dir.File("none")).status().message(),
              HasSubstr("--password-file: cannot read"));
  EXPECT_TRUE(IsUsageError(PasswordArgumentError()));
  EXPECT_THAT(PasswordArgumentError().message(), HasSubstr("--password-file=PATH"));
}

TEST(TableTest, AlignsVietnameseByDisplayWidth) {
  EXPECT_EQ(DisplayWidth("Nguyễn"), 6u);
  EXPECT_EQ(DisplayWidth("Nguye\xcc\x82\xcc\x83n"), 6u);  // e + combining circumflex + tilde
  EXPECT_EQ(DisplayWidth("abc"), 3u);
  EXPECT_EQ(DisplayWidth("\xff"), 1u);
  Table table({"TÊN", "VAI TRÒ"});
  table.AddRow({"Nguyễn Thị Ánh", "cộng tác viên"});
  table.AddRow({"Bo", "x"});
  EXPECT_EQ(table.Render("  ", "  "),
            "  TÊN             VAI TRÒ\n"
            "  Nguyễn Thị Ánh  cộng tác viên\n"
            "  Bo              x\n");
  Table bare;
  bare.AddRow({"user:", "collab1"});
  bare.AddRow({"last sync:", ""});
  EXPECT_EQ(bare.Render(), "user:      collab1\nlast sync:\n");
}

TEST(AddressTest, LoopbackOrNot) {
  EXPECT_EQ(HostOf("127.0.0.1:50051"), "127.0.0.1");
  EXPECT_EQ(HostOf("[::1]:50051"), "::1");
  EXPECT_EQ(HostOf("dns:///kcnet.example.vn:443"), "kcnet.example.vn");
  EXPECT_EQ(HostOf("kcnet.example.vn"), "kcnet.example.vn");
  EXPECT_EQ(HostOf("::1"), "::1");
  for (const char* address :
       {"127.0.0.1:50051", "127.1.2.3:1", "localhost:50051", "LOCALHOST:1", "[::1]:50051",
        "[::ffff:127.0.0.1]:1", "unix:/tmp/kcnet.sock", "ipv4:127.0.0.1:1"}) {
    EXPECT_TRUE(IsLoopbackAddress(address)) << address;
  }
  for (const char* address :
       {"0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "kcnet.example.vn:443", "128.0.0.1:1",
        "[2001:db8::1]:1", "localhost.example.vn:1", "127.0.0.1.example.vn:1"}) {
    EXPECT_FALSE(IsLoopbackAddress(address)) << address;
  }
}

}  // namespace
}  // namespace kcnet::tools
