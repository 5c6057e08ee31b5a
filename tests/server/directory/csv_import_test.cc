#include "server/directory/csv_import.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/directory/directory.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {

// Found by argument-dependent lookup, for readable failure messages.
void PrintTo(const UnitChange& c, std::ostream* os) {
  *os << c.code << " '" << c.old_value << "' -> '" << c.new_value << "'";
}

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int64_t kT0 = 1764000000000;

// Three-tier: a province, two districts, three communes, listed children first.
constexpr char kThreeTier[] =
    "code,name,level,parent_code\n"
    "00001,Phường Phúc Xá,commune,001\n"
    "00004,Phường Trúc Bạch,commune,001\n"
    "00037,Phường Phúc Tân,commune,002\n"
    "001,Quận Ba Đình,district,01\n"
    "002,Quận Hoàn Kiếm,district,01\n"
    "01,Thành phố Hà Nội,province,\n";

class CsvImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DirectoryOptions options;
    options.clock = &clock_;
    options.password_ops_limit = kArgon2OpsLimitMin;
    options.password_mem_limit = kArgon2MemLimitMin;
    auto opened = Directory::Open(tmp_.File("directory.db"), options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    dir_ = *std::move(opened);
  }

  ImportReport MustImport(absl::string_view csv) {
    ImportReport report = ImportOrgUnits(*dir_, csv, ImportMode::kApply);
    EXPECT_TRUE(report.status.ok()) << report.status;
    return report;
  }

  std::string NameOf(const std::string& code) {
    auto unit = dir_->FindByCode(code);
    return unit.ok() ? unit->name() : "<missing>";
  }
  std::string ParentCodeOf(const std::string& code) {
    auto unit = dir_->FindByCode(code);
    if (!unit.ok()) return "<missing>";
    if (unit->parent_id() == 0) return "";
    auto parent = dir_->GetOrgUnit(unit->parent_id());
    return parent.ok() ? parent->code() : "<missing>";
  }

  testing::TempDir tmp_;
  sync::FakeClock clock_{kT0};
  std::unique_ptr<Directory> dir_;
};

TEST_F(CsvImportTest, ImportsIntoAnEmptyDirectoryInAnyRowOrder) {
  ImportReport report = MustImport(kThreeTier);
  EXPECT_TRUE(report.applied);
  EXPECT_EQ(report.rows, 6);
  EXPECT_THAT(report.added, ElementsAre("00001", "00004", "00037", "001", "002", "01"));
  EXPECT_THAT(report.unchanged, IsEmpty());
  EXPECT_EQ(dir_->OrgUnitCount(), 6u);

  auto commune = dir_->FindByCode("00004");
  ASSERT_TRUE(commune.ok());
  EXPECT_EQ(commune->name(), "Phường Trúc Bạch");
  EXPECT_EQ(commune->level(), v1::ORG_UNIT_LEVEL_COMMUNE);
  EXPECT_EQ(commune->effective_from_ms(), kT0);
  EXPECT_EQ(ParentCodeOf("00004"), "001");
  EXPECT_EQ(ParentCodeOf("001"), "01");
  EXPECT_EQ(ParentCodeOf("01"), "");
  auto province = dir_->FindByCode("01");
  ASSERT_TRUE(province.ok());
  EXPECT_EQ(province->level(), v1::ORG_UNIT_LEVEL_PROVINCE);
  auto communes = dir_->Communes({province->id()});
  ASSERT_TRUE(communes.ok());
  EXPECT_EQ(communes->size(), 3u);
}

TEST_F(CsvImportTest, ImportsTheTwoTierShape) {
  ImportReport report = MustImport(
      "00008,Phường Ngọc Hà,commune,01\n"
      "01,Thành phố Hà Nội,province,\n");
  EXPECT_THAT(report.added, ElementsAre("00008", "01"));
  EXPECT_EQ(ParentCodeOf("00008"), "01");
}

TEST_F(CsvImportTest, ReimportingTheSameListChangesNothing) {
  MustImport(kThreeTier);
  ImportReport again = MustImport(kThreeTier);
  EXPECT_FALSE(again.applied);
  EXPECT_THAT(again.added, IsEmpty());
  EXPECT_EQ(again.unchanged.size(), 6u);
  EXPECT_THAT(again.would_rename, IsEmpty());
  EXPECT_THAT(again.would_reparent, IsEmpty());
  EXPECT_THAT(again.would_relevel, IsEmpty());
  EXPECT_EQ(dir_->OrgUnitCount(), 6u);
  EXPECT_THAT(again.Summary(), HasSubstr("0 new, 6 unchanged"));
}

TEST_F(CsvImportTest, ALongerListAddsOnlyTheNewUnits) {
  MustImport(kThreeTier);
  auto before = dir_->FindByCode("001");
  ASSERT_TRUE(before.ok());
  ImportReport report = MustImport(std::string(kThreeTier) +
                                   "00040,Phường Hàng Mã,commune,002\n"
                                   "003,Quận Tây Hồ,district,01\n"
                                   "00091,Phường Phú Thượng,commune,003\n");
  EXPECT_TRUE(report.applied);
  EXPECT_THAT(report.added, ElementsAre("00040", "003", "00091"));
  EXPECT_EQ(report.unchanged.size(), 6u);
  EXPECT_EQ(dir_->OrgUnitCount(), 9u);
  // Existing units keep their ids.
  auto after = dir_->FindByCode("001");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->id(), before->id());
}

TEST_F(CsvImportTest, ParentsMayBeInTheDirectoryAlready) {
  MustImport("01,Thành phố Hà Nội,province,\n");
  ImportReport report = MustImport(
      "00001,Phường Phúc Xá,commune,001\n"
      "001,Quận Ba Đình,district,01\n");
  EXPECT_THAT(report.added, ElementsAre("00001", "001"));
  EXPECT_EQ(ParentCodeOf("001"), "01");
}

TEST_F(CsvImportTest, HandlesBomCrlfAndQuotedFields) {
  const std::string csv =
      "\xEF\xBB\xBF"
      "code,name,level,parent_code\r\n"
      "\"01\",\"Thành phố Hà Nội, thủ đô\",province,\"\"\r\n"
      "001,\"Quận \"\"Ba\"\" Đình\",district,01\r\n"
      "00001,Xã Ia H' Drai,commune,001\r\n"
      "00002,Thị trấn Bà Rịa - Vũng Tàu,\"commune\",001";  // no final line break
  ImportReport report = MustImport(csv);
  EXPECT_EQ(report.rows, 4);
  EXPECT_EQ(report.added.size(), 4u);
  EXPECT_EQ(NameOf("01"), "Thành phố Hà Nội, thủ đô");
  EXPECT_EQ(NameOf("001"), "Quận \"Ba\" Đình");
  EXPECT_EQ(NameOf("00001"), "Xã Ia H' Drai");
  EXPECT_EQ(NameOf("00002"), "Thị trấn Bà Rịa - Vũng Tàu");
  // The same list with LF endings and no BOM is the same list.
  std::string lf;
  for (char c : csv.substr(3)) {
    if (c != '\r') lf.push_back(c);
  }
  ImportReport again = MustImport(lf);
  EXPECT_EQ(again.unchanged.size(), 4u);
}

TEST_F(CsvImportTest, BlankLinesAndAMissingHeaderAreFine) {
  ImportReport report =
      MustImport("\n01,Thành phố Hà Nội,province,\n\n001,Quận Ba Đình,district,01\n\n");
  EXPECT_EQ(report.rows, 2);
  EXPECT_EQ(dir_->OrgUnitCount(), 2u);
  ImportReport empty = MustImport("");
  EXPECT_EQ(empty.rows, 0);
  ImportReport header_only = MustImport("code,name,level,parent_code\r\n");
  EXPECT_EQ(header_only.rows, 0);
}

// ---- Bad rows ---------------------------------------------------------------------------

struct BadRowCase {
  std::string label;
  std::string row;  // placed on line 4, after a header and two good rows
  std::string field;
  std::string message_part;
};

// Keeps the generated test names short.
void PrintTo(const BadRowCase& c, std::ostream* os) { *os << c.label; }

class CsvImportBadRowTest : public CsvImportTest,
                            public ::testing::WithParamInterface<BadRowCase> {};

TEST_P(CsvImportBadRowTest, IsReportedWithItsLineAndFieldAndNothingIsApplied) {
  const BadRowCase& c = GetParam();
  const std::string csv =
      "code,name,level,parent_code\n"
      "01,Thành phố Hà Nội,province,\n"
      "001,Quận Ba Đình,district,01\n" +
      c.row +
      "\n"
      "00001,Phường Phúc Xá,commune,001\n";
  for (ImportMode mode : {ImportMode::kDryRun, ImportMode::kApply}) {
    ImportReport report = ImportOrgUnits(*dir_, csv, mode);
    EXPECT_EQ(report.status.code(), absl::StatusCode::kInvalidArgument) << report.status;
    EXPECT_FALSE(report.applied);
    ASSERT_EQ(report.errors.size(), 1u) << report.Summary();
    EXPECT_EQ(report.errors[0].line, 4) << report.errors[0].message;
    EXPECT_EQ(report.errors[0].field, c.field) << report.errors[0].message;
    EXPECT_THAT(report.errors[0].message, HasSubstr(c.message_part));
    EXPECT_THAT(std::string(report.status.message()), HasSubstr("line 4: " + c.field + ":"));
    EXPECT_THAT(std::string(report.status.message()), HasSubstr("nothing applied"));
    EXPECT_EQ(dir_->OrgUnitCount(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllKinds, CsvImportBadRowTest,
    ::testing::Values(
        BadRowCase{"TooFewFields", "002,Quận Hoàn Kiếm,district", "row", "found 3"},
        BadRowCase{"TooManyFields", "002,Quận Hoàn Kiếm,district,01,extra", "row", "found 5"},
        BadRowCase{"UnquotedComma", "002,Quận Hoàn Kiếm, Hà Nội,district,01", "row", "found 5"},
        BadRowCase{"EmptyCode", ",Quận Hoàn Kiếm,district,01", "code", "empty"},
        BadRowCase{"CodeNotDigits", "00A,Quận Hoàn Kiếm,district,01", "code", "not all digits"},
        BadRowCase{"CodeWithSpace", " 002,Quận Hoàn Kiếm,district,01", "code", "not all digits"},
        BadRowCase{"EmptyName", "002,,district,01", "name", "empty"},
        BadRowCase{"UnknownLevel", "002,Quận Hoàn Kiếm,ward,01", "level", "unknown level 'ward'"},
        BadRowCase{"UnknownParent", "002,Quận Hoàn Kiếm,district,99", "parent_code",
                   "neither in the file nor in the directory"},
        BadRowCase{"DistrictUnderDistrict", "002,Quận Hoàn Kiếm,district,001", "level",
                   "cannot be under a district"},
        BadRowCase{"CommuneUnderCommune", "00004,Phường Trúc Bạch,commune,00001", "level",
                   "cannot be under a commune"},
        BadRowCase{"ProvinceWithParent", "02,Tỉnh Hà Giang,province,01", "parent_code",
                   "a province has no parent"},
        BadRowCase{"DistrictWithoutParent", "002,Quận Hoàn Kiếm,district,", "parent_code",
                   "needs a parent"},
        BadRowCase{"DuplicateCode", "001,Quận Khác,district,01", "code", "duplicates line 3"},
        BadRowCase{"InvalidUtf8", "002,Qu\xE1\xBA n Hoàn Kiếm,district,01", "name",
                   "not valid UTF-8"},
        BadRowCase{"Overlong", "002,Qu\xC0\xAF,district,01", "name", "not valid UTF-8"},
        BadRowCase{"ControlCharacterInQuotes", "002,\"Quận\nHoàn Kiếm\",district,01", "name",
                   "control character"},
        BadRowCase{"StrayQuote", "002,Quận \"Hoàn\" Kiếm,district,01", "name", "quote"},
        BadRowCase{"TextAfterQuote", "002,\"Quận\" Hoàn Kiếm,district,01", "name",
                   "after the closing quote"}),
    [](const ::testing::TestParamInfo<BadRowCase>& info) { return info.param.label; });

TEST_F(CsvImportTest, AnUnclosedQuoteIsReportedAtItsLine) {
  ImportReport report = ImportOrgUnits(*dir_,
                                       "01,Thành phố Hà Nội,province,\n"
                                       "001,\"Quận Ba Đình,district,01\n"
                                       "00001,Phường Phúc Xá,commune,001\n",
                                       ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_FALSE(report.errors.empty());
  EXPECT_EQ(report.errors[0].line, 2);
  EXPECT_EQ(report.errors[0].field, "name");
  EXPECT_THAT(report.errors[0].message, HasSubstr("not closed"));
  EXPECT_EQ(dir_->OrgUnitCount(), 0u);
}

TEST_F(CsvImportTest, LineNumbersCountLineBreaksInsideQuotes) {
  // Line 2 holds a quoted field spanning two lines; the bad row after it is on line 4.
  ImportReport report = ImportOrgUnits(*dir_,
                                       "01,Thành phố Hà Nội,province,\n"
                                       "001,\"Quận Ba\r\nĐình\",district,01\n"
                                       "002,Quận Hoàn Kiếm,ward,01\n",
                                       ImportMode::kApply);
  ASSERT_EQ(report.errors.size(), 2u) << report.Summary();
  EXPECT_EQ(report.errors[0].line, 2);
  EXPECT_EQ(report.errors[0].field, "name");
  EXPECT_EQ(report.errors[1].line, 4);
  EXPECT_EQ(report.errors[1].field, "level");
}

TEST_F(CsvImportTest, EveryBadRowIsReportedInLineOrder) {
  ImportReport report = ImportOrgUnits(*dir_,
                                       "00001,Phường Phúc Xá,commune,009\n"  // unknown parent
                                       "01,Thành phố Hà Nội,province,\n"
                                       "0x1,Quận Ba Đình,district,01\n"
                                       "002,Quận Hoàn Kiếm,district\n",
                                       ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(report.errors.size(), 3u) << report.Summary();
  EXPECT_EQ(report.errors[0].line, 1);
  EXPECT_EQ(report.errors[0].field, "parent_code");
  EXPECT_EQ(report.errors[1].line, 3);
  EXPECT_EQ(report.errors[1].field, "code");
  EXPECT_EQ(report.errors[2].line, 4);
  EXPECT_EQ(report.errors[2].field, "row");
  EXPECT_THAT(std::string(report.status.message()), HasSubstr("3 bad rows"));
}

TEST_F(CsvImportTest, ABadRowStopsAnImportIntoAFilledDirectory) {
  MustImport(kThreeTier);
  ImportReport report = ImportOrgUnits(*dir_,
                                       std::string(kThreeTier) +
                                           "003,Quận Tây Hồ,district,01\n"
                                           "00091,Phường Phú Thượng,commune,\n",
                                       ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(report.applied);
  EXPECT_EQ(dir_->OrgUnitCount(), 6u);
  EXPECT_FALSE(dir_->FindByCode("003").ok());
}

// ---- Reorganisations are refused --------------------------------------------------------

TEST_F(CsvImportTest, ARenameIsRefusedWithASummary) {
  MustImport(kThreeTier);
  std::string renamed = kThreeTier;
  renamed.replace(renamed.find("Phường Trúc Bạch"), std::string("Phường Trúc Bạch").size(),
                  "Phường Ngọc Hà");
  renamed += "003,Quận Tây Hồ,district,01\n";
  ImportReport report = ImportOrgUnits(*dir_, renamed, ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition) << report.status;
  EXPECT_FALSE(report.applied);
  EXPECT_THAT(report.would_rename,
              ElementsAre(UnitChange{"00004", "Phường Trúc Bạch", "Phường Ngọc Hà"}));
  EXPECT_THAT(report.would_reparent, IsEmpty());
  EXPECT_THAT(report.added, ElementsAre("003"));
  EXPECT_EQ(report.unchanged.size(), 5u);
  const std::string message(report.status.message());
  EXPECT_THAT(message, HasSubstr("would rename 1, re-parent 0, re-level 0"));
  EXPECT_THAT(message, HasSubstr("00004 'Phường Trúc Bạch' -> 'Phường Ngọc Hà'"));
  EXPECT_THAT(message, HasSubstr("nothing applied"));
  // Nothing applied: neither the rename nor the new district.
  EXPECT_EQ(NameOf("00004"), "Phường Trúc Bạch");
  EXPECT_FALSE(dir_->FindByCode("003").ok());
  EXPECT_EQ(dir_->OrgUnitCount(), 6u);
}

TEST_F(CsvImportTest, AReparentIsRefused) {
  MustImport(kThreeTier);
  std::string moved = kThreeTier;
  moved.replace(moved.find("Phường Phúc Xá,commune,001"),
                std::string("Phường Phúc Xá,commune,001").size(), "Phường Phúc Xá,commune,002");
  ImportReport report = ImportOrgUnits(*dir_, moved, ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(report.would_reparent, ElementsAre(UnitChange{"00001", "001", "002"}));
  EXPECT_THAT(report.would_rename, IsEmpty());
  EXPECT_EQ(ParentCodeOf("00001"), "001");
}

TEST_F(CsvImportTest, AReLevelIsRefused) {
  MustImport(kThreeTier);
  // District 002 listed as a commune (still under the province).
  ImportReport report = ImportOrgUnits(*dir_,
                                       "01,Thành phố Hà Nội,province,\n"
                                       "002,Quận Hoàn Kiếm,commune,01\n",
                                       ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(report.would_relevel, ElementsAre(UnitChange{"002", "district", "commune"}));
  EXPECT_THAT(report.unchanged, ElementsAre("01"));
  auto unit = dir_->FindByCode("002");
  ASSERT_TRUE(unit.ok());
  EXPECT_EQ(unit->level(), v1::ORG_UNIT_LEVEL_DISTRICT);
}

TEST_F(CsvImportTest, TheSummaryGivesCountsAndTheFirstFewExamples) {
  MustImport("01,A,province,\n02,B,province,\n03,C,province,\n04,D,province,\n05,E,province,\n");
  ImportReport report = ImportOrgUnits(
      *dir_, "01,A2,province,\n02,B2,province,\n03,C2,province,\n04,D2,province,\n05,E,province,\n",
      ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(report.would_rename.size(), 4u);
  const std::string message(report.status.message());
  EXPECT_THAT(message, HasSubstr("would rename 4"));
  EXPECT_THAT(message, HasSubstr("03 'C' -> 'C2'"));
  EXPECT_THAT(message, Not(HasSubstr("04 'D' -> 'D2'")));
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

TEST_F(CsvImportTest, ADryRunChangesNothing) {
  ImportReport report = ImportOrgUnits(*dir_, kThreeTier, ImportMode::kDryRun);
  EXPECT_TRUE(report.status.ok()) << report.status;
  EXPECT_FALSE(report.applied);
  EXPECT_EQ(report.added.size(), 6u);
  EXPECT_EQ(dir_->OrgUnitCount(), 0u);

  MustImport(kThreeTier);
  std::string renamed = kThreeTier;
  renamed.replace(renamed.find("Quận Ba Đình"), std::string("Quận Ba Đình").size(), "Quận Mới");
  report = ImportOrgUnits(*dir_, renamed, ImportMode::kDryRun);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(report.would_rename, ElementsAre(UnitChange{"001", "Quận Ba Đình", "Quận Mới"}));
  EXPECT_EQ(NameOf("001"), "Quận Ba Đình");
}

}  // namespace
}  // namespace kcnet::server
