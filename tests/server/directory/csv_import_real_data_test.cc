// Imports the real official code lists from ../shared/data/vn_admin (next to the source
// tree). Skipped when the files are not there.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/directory/csv_import.h"
#include "server/directory/directory.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SHARED_DIR
#error "KCNET_SHARED_DIR must name the shared data folder"
#endif

namespace kcnet::server {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string DataFile(const std::string& name) {
  return std::string(KCNET_SHARED_DIR) + "/data/vn_admin/" + name;
}

class CsvImportRealDataTest : public ::testing::Test {
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

  // The file's text, or empty when it is absent.
  static std::string Read(const std::string& name) {
    std::ifstream in(DataFile(name), std::ios::binary);
    if (!in) return "";
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Units per level over the whole directory.
  std::map<v1::OrgUnitLevel, int> CountByLevel() {
    std::map<v1::OrgUnitLevel, int> counts;
    auto roots = dir_->ListChildren(0);
    EXPECT_TRUE(roots.ok());
    std::vector<int64_t> root_ids;
    for (const auto& root : *roots) root_ids.push_back(root.id());
    auto all = dir_->Subtree(root_ids);
    EXPECT_TRUE(all.ok());
    for (int64_t id : *all) {
      auto unit = dir_->GetOrgUnit(id);
      EXPECT_TRUE(unit.ok());
      ++counts[unit->level()];
    }
    return counts;
  }

  testing::TempDir tmp_;
  sync::FakeClock clock_{1764000000000};
  std::unique_ptr<Directory> dir_;
};

#define READ_OR_SKIP(var, name)                                                           \
  const std::string var = Read(name);                                                     \
  if (var.empty()) {                                                                      \
    GTEST_SKIP() << "real-data test skipped: " << DataFile(name)                          \
                 << " is absent (it lives in ../shared/data/vn_admin beside the source)"; \
  }

TEST_F(CsvImportRealDataTest, ThreeTierListImportsAndReimportsIdempotently) {
  READ_OR_SKIP(csv, "units_3tier.csv");
  ImportReport report = ImportOrgUnits(*dir_, csv, ImportMode::kApply);
  ASSERT_TRUE(report.status.ok()) << report.status;
  EXPECT_TRUE(report.applied);
  EXPECT_EQ(report.rows, 10794);
  EXPECT_EQ(report.added.size(), 10794u);
  EXPECT_EQ(dir_->OrgUnitCount(), 10794u);
  std::map<v1::OrgUnitLevel, int> counts = CountByLevel();
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_PROVINCE], 63);
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_DISTRICT], 696);
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_COMMUNE], 10035);

  auto hanoi = dir_->FindByCode("01");
  ASSERT_TRUE(hanoi.ok());
  auto communes = dir_->Communes({hanoi->id()});
  ASSERT_TRUE(communes.ok());
  EXPECT_GT(communes->size(), 500u);
  auto lieu_giai = dir_->FindByCode("00008");
  ASSERT_TRUE(lieu_giai.ok());
  EXPECT_EQ(lieu_giai->name(), "Phường Liễu Giai");
  EXPECT_TRUE(dir_->IsWithin(lieu_giai->id(), hanoi->id()));

  ImportReport again = ImportOrgUnits(*dir_, csv, ImportMode::kApply);
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_FALSE(again.applied);
  EXPECT_THAT(again.added, IsEmpty());
  EXPECT_EQ(again.unchanged.size(), 10794u);
  EXPECT_EQ(dir_->OrgUnitCount(), 10794u);
}

TEST_F(CsvImportRealDataTest, TwoTierListImportsIntoAnEmptyDirectory) {
  READ_OR_SKIP(csv, "units_2tier_2025.csv");
  ImportReport report = ImportOrgUnits(*dir_, csv, ImportMode::kApply);
  ASSERT_TRUE(report.status.ok()) << report.status;
  EXPECT_EQ(report.added.size(), 3355u);
  std::map<v1::OrgUnitLevel, int> counts = CountByLevel();
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_PROVINCE], 34);
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_DISTRICT], 0);
  EXPECT_EQ(counts[v1::ORG_UNIT_LEVEL_COMMUNE], 3321);
  auto ngoc_ha = dir_->FindByCode("00008");
  ASSERT_TRUE(ngoc_ha.ok());
  EXPECT_EQ(ngoc_ha->name(), "Phường Ngọc Hà");
  auto parent = dir_->GetOrgUnit(ngoc_ha->parent_id());
  ASSERT_TRUE(parent.ok());
  EXPECT_EQ(parent->code(), "01");

  ImportReport again = ImportOrgUnits(*dir_, csv, ImportMode::kApply);
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_THAT(again.added, IsEmpty());
  EXPECT_EQ(again.unchanged.size(), 3355u);
}

TEST_F(CsvImportRealDataTest, TwoTierOverThreeTierIsRefused) {
  READ_OR_SKIP(three_tier, "units_3tier.csv");
  READ_OR_SKIP(two_tier, "units_2tier_2025.csv");
  ASSERT_TRUE(ImportOrgUnits(*dir_, three_tier, ImportMode::kApply).status.ok());

  ImportReport report = ImportOrgUnits(*dir_, two_tier, ImportMode::kApply);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kFailedPrecondition) << report.status;
  EXPECT_FALSE(report.applied);
  EXPECT_THAT(report.errors, IsEmpty());
  // Codes are reused under other names and parents (DOMAIN.md): 00008 was Phường Liễu
  // Giai, under district 001; now it is Phường Ngọc Hà, under province 01.
  EXPECT_THAT(report.would_rename,
              Contains(AllOf(Field(&UnitChange::code, "00008"),
                             Field(&UnitChange::old_value, "Phường Liễu Giai"),
                             Field(&UnitChange::new_value, "Phường Ngọc Hà"))));
  EXPECT_THAT(report.would_reparent, Contains(AllOf(Field(&UnitChange::code, "00008"),
                                                    Field(&UnitChange::old_value, "001"),
                                                    Field(&UnitChange::new_value, "01"))));
  EXPECT_GT(report.would_rename.size(), 2000u);
  EXPECT_GT(report.would_reparent.size(), 3000u);
  EXPECT_THAT(std::string(report.status.message()), HasSubstr("would rename"));

  // Nothing applied.
  EXPECT_EQ(dir_->OrgUnitCount(), 10794u);
  auto unit = dir_->FindByCode("00008");
  ASSERT_TRUE(unit.ok());
  EXPECT_EQ(unit->name(), "Phường Liễu Giai");
  // The dry run says the same.
  ImportReport dry = ImportOrgUnits(*dir_, two_tier, ImportMode::kDryRun);
  EXPECT_EQ(dry.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dry.would_rename.size(), report.would_rename.size());
}

}  // namespace
}  // namespace kcnet::server
