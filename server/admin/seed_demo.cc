#include "server/admin/seed_demo.h"

#include <cstdint>
#include <filesystem>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_plan_db.h"
#include "server/pgstore/pg_server_store.h"
#include "server/plans/approval_guard.h"
#include "server/plans/plan_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "sync/server_store.h"

namespace kcnet::server {
namespace {

using kcnet::v1::Facility;

const std::vector<NewOrgUnit>& DemoOrgUnits() {
  static const auto* units = new std::vector<NewOrgUnit>{
      {"90", "Tỉnh Demo", kcnet::v1::ORG_UNIT_LEVEL_PROVINCE, ""},
      {"901", "Huyện Đông Demo", kcnet::v1::ORG_UNIT_LEVEL_DISTRICT, "90"},
      {"902", "Huyện Tây Demo", kcnet::v1::ORG_UNIT_LEVEL_DISTRICT, "90"},
      {"90101", "Xã An Bình Demo", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, "901"},
      {"90102", "Xã Phú Lộc Demo", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, "901"},
      {"90103", "Thị trấn Đông Demo", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, "901"},
      {"90201", "Xã Tân Hòa Demo", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, "902"},
      {"90202", "Xã Long Điền Demo", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, "902"},
  };
  return *units;
}

struct DemoUser {
  const char* username;
  const char* display_name;
  kcnet::v1::Role role;
  const char* org_unit_code;
};

constexpr DemoUser kDemoUsers[] = {
    {"admin1", "Quản trị viên Demo", kcnet::v1::ROLE_ADMINISTRATOR, "90"},
    {"officer1", "Phạm Thị Dung (demo)", kcnet::v1::ROLE_PROVINCE_OFFICER, "90"},
    {"coord1", "Lê Văn Cường (demo)", kcnet::v1::ROLE_DISTRICT_COORDINATOR, "901"},
    {"collab1", "Nguyễn Văn An (demo)", kcnet::v1::ROLE_COMMUNE_COLLABORATOR, "90101"},
    {"collab2", "Trần Thị Bình (demo)", kcnet::v1::ROLE_COMMUNE_COLLABORATOR, "90201"},
};

struct DemoFacility {
  const char* commune_code;
  const char* name;
  const char* owner_name;
  kcnet::v1::FacilityKind kind;
  kcnet::v1::Sector sector;
  const char* main_products;
  int64_t workers;
  double latitude, longitude;
  // A survey visit a month ago records the facility's indicators (outcomes report): by
  // `visitor` (a demo account working in the commune; nullptr: no visit), with its main
  // products and last 12 months' output.
  const char* visitor;
  int64_t product_lines;
  int64_t annual_output_vnd;
};

constexpr DemoFacility kDemoFacilities[] = {
    {"90101", "Cơ sở mây tre đan An Bình (demo)", "Nguyễn Văn Hòa",
     kcnet::v1::FACILITY_KIND_HOUSEHOLD_BUSINESS, kcnet::v1::SECTOR_HANDICRAFTS,
     "Giỏ, khay mây tre", 12, 20.101, 105.501, "collab1", 2, 1'200'000'000},
    {"90101", "HTX chế biến nông sản An Bình (demo)", "Lê Thị Mai",
     kcnet::v1::FACILITY_KIND_COOPERATIVE, kcnet::v1::SECTOR_FOOD_PROCESSING, "Miến dong, bún khô",
     35, 20.103, 105.507, "collab1", 2, 4'500'000'000},
    {"90102", "Xưởng mộc Phú Lộc (demo)", "Trần Văn Minh", kcnet::v1::FACILITY_KIND_ENTERPRISE,
     kcnet::v1::SECTOR_WOOD_PROCESSING, "Bàn ghế gỗ", 20, 20.121, 105.522, "coord1", 1,
     3'000'000'000},
    {"90201", "Tổ hợp tác dệt thổ cẩm Tân Hòa (demo)", "Hà Thị Lan",
     kcnet::v1::FACILITY_KIND_COOPERATIVE_GROUP, kcnet::v1::SECTOR_TEXTILES_GARMENTS,
     "Khăn, túi thổ cẩm", 18, 20.201, 105.401, "collab2", 2, 900'000'000},
    {"90202", "Xưởng cơ khí Long Điền (demo)", "Phạm Văn Tài",
     kcnet::v1::FACILITY_KIND_HOUSEHOLD_BUSINESS, kcnet::v1::SECTOR_MECHANICAL, "Máy tuốt lúa mini",
     6, 20.215, 105.415, nullptr, 0, 0},
};

std::string DemoPassword(absl::string_view username) {
  return absl::StrCat("demo-", username, "-pass");
}

// A random (version 4) UUID in canonical text.
absl::StatusOr<std::string> NewUuid() {
  std::random_device random;
  std::string bytes(16, '\0');
  for (char& byte : bytes) byte = static_cast<char>(random() & 0xff);
  bytes[6] = static_cast<char>((bytes[6] & 0x0f) | 0x40);
  bytes[8] = static_cast<char>((bytes[8] & 0x3f) | 0x80);
  return sync::UuidToText(bytes);
}

absl::Status CheckEmpty(const std::string& data_dir) {
  std::error_code error;
  if (!std::filesystem::exists(data_dir, error)) return absl::OkStatus();
  if (!std::filesystem::is_directory(data_dir, error)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data_dir: ", data_dir, " exists and is not a directory"));
  }
  if (!std::filesystem::is_empty(data_dir, error) || error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data_dir: ", data_dir,
        " is not empty; seed-demo only fills a new, empty data directory (nothing was changed)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DemoSeed> SeedDemo(const std::string& data_dir,
                                  const DirectoryOptions& directory_options,
                                  const std::string& postgres) {
  absl::Status status = CheckEmpty(data_dir);
  if (!status.ok()) return status;
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        absl::StrCat("data_dir: cannot create ", data_dir, ": ", error.message()));
  }
  const std::filesystem::path dir(data_dir);
  absl::StatusOr<std::unique_ptr<Directory>> directory;
  if (postgres.empty()) {
    directory = Directory::Open((dir / "directory.db").string(), directory_options);
  } else {
    absl::StatusOr<std::unique_ptr<DirectoryStore>> shared =
        pgstore::OpenPgDirectoryStore(postgres);
    if (!shared.ok()) return shared.status();
    directory = Directory::Open(*std::move(shared), directory_options);
  }
  if (!directory.ok()) return directory.status();

  DemoSeed seed;
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> units = (*directory)->AddOrgUnits(DemoOrgUnits());
  if (!units.ok()) return units.status();
  seed.org_units = static_cast<int>(units->size());

  int64_t admin_id = 0;
  std::map<std::string, int64_t> user_ids;
  for (const DemoUser& demo : kDemoUsers) {
    absl::StatusOr<kcnet::v1::OrgUnit> unit = (*directory)->FindByCode(demo.org_unit_code);
    if (!unit.ok()) return unit.status();
    const std::string password = DemoPassword(demo.username);
    absl::StatusOr<kcnet::v1::User> user =
        (*directory)
            ->CreateUser(demo.username, demo.display_name, password, demo.role, {unit->id()});
    if (!user.ok()) return user.status();
    if (demo.role == kcnet::v1::ROLE_ADMINISTRATOR) admin_id = user->id();
    user_ids[demo.username] = user->id();
    seed.accounts.push_back({demo.username, password, RoleName(demo.role), demo.org_unit_code});
  }

  absl::StatusOr<std::unique_ptr<sync::ServerStore>> store;
  if (postgres.empty()) {
    store = sync::ServerStore::Open((dir / "kcnet.db").string(), &kcnet::model::KcnetSchema());
  } else {
    // The partitions kcnet-server reads: the province above each commune.
    pgstore::PgServerStoreOptions pg_options;
    pg_options.province_of = [d = directory->get()](int64_t bucket) {
      return static_cast<int32_t>(ProvinceOf(*d, bucket).value_or(0));
    };
    absl::StatusOr<std::unique_ptr<pgstore::PgServerStore>> pg = pgstore::PgServerStore::Open(
        postgres, &kcnet::model::KcnetSchema(), {}, std::move(pg_options));
    if (!pg.ok()) return pg.status();
    store = std::unique_ptr<sync::ServerStore>(*std::move(pg));
  }
  if (!store.ok()) return store.status();
  const int64_t now_ms = sync::SystemClock()->NowMs();
  kcnet::v1::MutationBatch batch;
  for (const DemoFacility& demo : kDemoFacilities) {
    absl::StatusOr<kcnet::v1::OrgUnit> commune = (*directory)->FindByCode(demo.commune_code);
    if (!commune.ok()) return commune.status();
    absl::StatusOr<std::string> id = NewUuid();
    if (!id.ok()) return id.status();
    Facility facility;
    facility.set_id(*id);
    facility.set_commune_id(commune->id());
    facility.set_name(demo.name);
    facility.set_owner_name(demo.owner_name);
    facility.set_kind(demo.kind);
    facility.set_sector(demo.sector);
    facility.set_address(absl::StrCat(commune->name(), ", Tỉnh Demo"));
    facility.set_latitude(demo.latitude);
    facility.set_longitude(demo.longitude);
    facility.set_workers(demo.workers);
    facility.set_main_products(demo.main_products);
    facility.set_created_by(admin_id);
    facility.set_created_ms(now_ms);
    absl::StatusOr<kcnet::v1::RecordChange> change = kcnet::model::ToChange(facility);
    if (!change.ok()) return change.status();
    change->set_hlc((*store)->clock().Now());
    kcnet::v1::Mutation* mutation = batch.add_mutations();
    mutation->set_seq(static_cast<uint64_t>(batch.mutations_size()));
    *mutation->add_changes() = *std::move(change);
    if (demo.visitor == nullptr) continue;
    absl::StatusOr<std::string> visit_id = NewUuid();
    if (!visit_id.ok()) return visit_id.status();
    kcnet::v1::Visit visit;
    visit.set_id(*visit_id);
    visit.set_commune_id(commune->id());
    visit.set_facility_id(*id);
    visit.set_collaborator_id(user_ids[demo.visitor]);
    visit.set_visited_ms(now_ms - 30LL * 24 * 3600 * 1000);
    visit.set_latitude(demo.latitude);
    visit.set_longitude(demo.longitude);
    visit.set_purpose(kcnet::v1::VISIT_PURPOSE_SURVEY);
    visit.set_findings("Khảo sát ban đầu (demo) / first survey (demo)");
    visit.set_workers(demo.workers);
    visit.set_product_lines(demo.product_lines);
    visit.set_annual_output_vnd(demo.annual_output_vnd);
    absl::StatusOr<kcnet::v1::RecordChange> visit_change = kcnet::model::ToChange(visit);
    if (!visit_change.ok()) return visit_change.status();
    visit_change->set_hlc((*store)->clock().Now());
    kcnet::v1::Mutation* visit_mutation = batch.add_mutations();
    visit_mutation->set_seq(static_cast<uint64_t>(batch.mutations_size()));
    *visit_mutation->add_changes() = *std::move(visit_change);
  }
  seed.facilities = static_cast<int>(std::size(kDemoFacilities));
  for (const DemoFacility& demo : kDemoFacilities) seed.visits += demo.visitor != nullptr ? 1 : 0;
  const sync::Writer writer{"", sync::NodeIdFor(absl::StrCat("user:", admin_id))};
  absl::StatusOr<kcnet::v1::PushAck> ack = (*store)->Apply(writer, batch);
  if (!ack.ok()) return ack.status();
  for (const kcnet::v1::MutationResult& result : ack->results()) {
    if (result.outcome() != kcnet::v1::MUTATION_OUTCOME_APPLIED) {
      return absl::InternalError(absl::StrCat("demo record ", result.seq(), " was not applied: ",
                                              result.reason(), " (", result.field(), ")"));
    }
  }

  // This year's extension plan of the demo province (approvals draw on it): every support
  // category, 500,000,000 VND of local and of national budget, 5 facilities each.
  // On PostgreSQL the plan goes into the schema every instance shares (kcnet_plans).
  absl::StatusOr<std::unique_ptr<PlanStore>> plans = absl::InternalError("plans: not opened");
  if (postgres.empty()) {
    plans = PlanStore::Open((dir / "plans.db").string());
  } else {
    absl::StatusOr<std::unique_ptr<PlanDb>> plan_db = pgstore::OpenPgPlanDb(postgres);
    if (!plan_db.ok()) return plan_db.status();
    plans = PlanStore::Open(*std::move(plan_db));
  }
  if (!plans.ok()) return plans.status();
  absl::StatusOr<kcnet::v1::OrgUnit> province = (*directory)->FindByCode("90");
  if (!province.ok()) return province.status();
  kcnet::v1::Plan plan;
  plan.set_province_id(province->id());
  plan.set_year(VietnamYear(now_ms));
  for (int category = kcnet::v1::SUPPORT_CATEGORY_DEMONSTRATION_MODEL;
       category <= kcnet::v1::SUPPORT_CATEGORY_OTHER; ++category) {
    for (kcnet::v1::FundingSource funding :
         {kcnet::v1::FUNDING_SOURCE_LOCAL, kcnet::v1::FUNDING_SOURCE_NATIONAL}) {
      kcnet::v1::PlanLine* line = plan.add_lines();
      line->set_category(static_cast<kcnet::v1::SupportCategory>(category));
      line->set_funding(funding);
      line->set_planned_amount_vnd(500'000'000);
      line->set_planned_facilities(5);
    }
  }
  absl::StatusOr<kcnet::v1::Plan> created =
      (*plans)->CreatePlan(plan, {admin_id, "local-admin"}, "kế hoạch demo / demo plan");
  if (!created.ok()) return created.status();
  seed.plan_year = plan.year();
  return seed;
}

}  // namespace kcnet::server
