#include "server/plans/plan_store.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "server/directory/text.h"

namespace kcnet::server {
namespace {

using kcnet::v1::Disbursement;
using kcnet::v1::FundingSource;
using kcnet::v1::Plan;
using kcnet::v1::PlanDraw;
using kcnet::v1::PlanLine;
using kcnet::v1::PlanRevision;
using kcnet::v1::SupportCategory;
using kcnet::v1::SupportRequest;
using sync::Statement;
using sync::Transaction;

// "KCPL" in ASCII: marks plans.db as kcnet's.
constexpr int64_t kApplicationId = 0x4B43504C;

// kMigrations[v] takes the layout from version v to v + 1.
constexpr const char* kMigrations[] = {
    // 0 -> 1: plans and their lines, the revision audit, draws, disbursements, the change
    // counter.
    "CREATE TABLE plans("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  created_by INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  updated_by INTEGER NOT NULL,"
    "  PRIMARY KEY(province_id, year)) WITHOUT ROWID;"
    "CREATE TABLE plan_lines("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  category INTEGER NOT NULL,"
    "  funding INTEGER NOT NULL,"
    "  planned_vnd INTEGER NOT NULL,"
    "  planned_facilities INTEGER NOT NULL,"
    "  PRIMARY KEY(province_id, year, funding, category)) WITHOUT ROWID;"
    // before/after: a serialized Plan holding only the lines.
    "CREATE TABLE plan_revisions("
    "  province_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  note TEXT NOT NULL,"
    "  before BLOB NOT NULL,"
    "  after BLOB NOT NULL,"
    "  PRIMARY KEY(province_id, year, revision)) WITHOUT ROWID;"
    "CREATE TABLE draws("
    "  request_id TEXT PRIMARY KEY,"
    "  province_id INTEGER NOT NULL,"
    "  commune_id INTEGER NOT NULL,"
    "  year INTEGER NOT NULL,"
    "  category INTEGER NOT NULL,"
    "  funding INTEGER NOT NULL,"
    "  amount_vnd INTEGER NOT NULL,"
    "  own_contribution_vnd INTEGER NOT NULL,"
    "  remaining_before_vnd INTEGER NOT NULL,"
    "  has_plan INTEGER NOT NULL,"
    "  over_plan_reason TEXT NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  confirmed INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX draws_line ON draws(province_id, year, funding, category);"
    "CREATE INDEX draws_unconfirmed ON draws(confirmed) WHERE confirmed = 0;"
    "CREATE TABLE disbursements("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id TEXT NOT NULL,"
    "  amount_vnd INTEGER NOT NULL,"
    "  paid_date TEXT NOT NULL,"
    "  reference TEXT NOT NULL,"
    "  note TEXT NOT NULL,"
    "  actor_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL);"
    "CREATE INDEX disbursements_request ON disbursements(request_id);"
    "CREATE TABLE changes(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);"
    "INSERT INTO changes VALUES (1, 0);",
};
static_assert(std::size(kMigrations) == kPlansSchemaVersion);

constexpr size_t kMaxReferenceBytes = 200;
constexpr size_t kMaxNoteBytes = 1000;

const absl::TimeZone& VietnamZone() {
  static const absl::TimeZone* zone = new absl::TimeZone(absl::FixedTimeZone(7 * 3600));
  return *zone;
}

std::string Group(int64_t vnd, char separator) {
  const bool negative = vnd < 0;
  std::string digits = absl::StrCat(negative ? -vnd : vnd);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(separator);
    out.push_back(digits[i]);
  }
  return negative ? absl::StrCat("-", out) : out;
}

std::string EnumShort(const google::protobuf::EnumDescriptor* d, absl::string_view prefix, int v) {
  const google::protobuf::EnumValueDescriptor* value = d->FindValueByNumber(v);
  if (value == nullptr) return absl::StrCat(v);
  absl::string_view name = value->name();
  if (absl::StartsWith(name, prefix)) name.remove_prefix(prefix.size());
  return std::string(name);
}
std::string CategoryEn(SupportCategory c) {
  return EnumShort(kcnet::v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_", c);
}
std::string FundingEn(FundingSource f) {
  return EnumShort(kcnet::v1::FundingSource_descriptor(), "FUNDING_SOURCE_", f);
}

// INVALID_ARGUMENT naming `field` unless `text` is valid UTF-8 of at most `max` bytes
// (and not empty when `required`).
absl::Status CheckNote(absl::string_view field, absl::string_view text, size_t max, bool required) {
  if (required && text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  }
  if (text.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at most ", max, " bytes, got ", text.size()));
  }
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError(absl::StrCat(field, ": not UTF-8"));
  return absl::OkStatus();
}

absl::Status CheckYear(absl::string_view field, int32_t year) {
  if (year < kMinPlanYear || year > kMaxPlanYear) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be between ", kMinPlanYear,
                                                   " and ", kMaxPlanYear, ", got ", year));
  }
  return absl::OkStatus();
}

// The checks of a plan's identity and lines (both CreatePlan and RevisePlan).
absl::Status CheckPlan(const Plan& plan) {
  if (plan.province_id() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan.province_id: must be > 0, got ", plan.province_id()));
  }
  absl::Status year = CheckYear("plan.year", plan.year());
  if (!year.ok()) return year;
  std::set<std::pair<int, int>> seen;
  for (int i = 0; i < plan.lines_size(); ++i) {
    const PlanLine& line = plan.lines(i);
    const std::string at = absl::StrCat("plan.lines[", i, "]");
    if (line.category() == kcnet::v1::SUPPORT_CATEGORY_UNSPECIFIED ||
        !kcnet::v1::SupportCategory_IsValid(line.category())) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".category: unknown or unspecified support category ",
                       static_cast<int>(line.category())));
    }
    if (line.funding() == kcnet::v1::FUNDING_SOURCE_UNSPECIFIED ||
        !kcnet::v1::FundingSource_IsValid(line.funding())) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".funding: unknown or unspecified funding source ",
                       static_cast<int>(line.funding())));
    }
    if (line.planned_amount_vnd() < 0 || line.planned_amount_vnd() > kMaxPlanAmountVnd) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".planned_amount_vnd: must be a whole number of VND from 0 to ",
                       kMaxPlanAmountVnd, ", got ", line.planned_amount_vnd()));
    }
    if (line.planned_facilities() < 0 || line.planned_facilities() > 1'000'000'000) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".planned_facilities: must be from 0 to 1000000000, got ",
                       line.planned_facilities()));
    }
    if (!seen.insert({line.funding(), line.category()}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": a second line for ", CategoryEn(line.category()), " / ",
                       FundingEn(line.funding()), " (one line per category and funding source)"));
    }
  }
  return absl::OkStatus();
}

// A copy of the plan's lines, sorted by funding then category (the stored order).
Plan LinesOnly(const Plan& plan) {
  Plan out;
  std::vector<PlanLine> lines(plan.lines().begin(), plan.lines().end());
  std::sort(lines.begin(), lines.end(), [](const PlanLine& a, const PlanLine& b) {
    return std::pair(a.funding(), a.category()) < std::pair(b.funding(), b.category());
  });
  for (PlanLine& line : lines) *out.add_lines() = std::move(line);
  return out;
}

// A real date "YYYY-MM-DD".
bool ParseDate(absl::string_view text, absl::CivilDay* day) {
  int y = 0, m = 0, d = 0;
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
  if (!absl::SimpleAtoi(text.substr(0, 4), &y) || !absl::SimpleAtoi(text.substr(5, 2), &m) ||
      !absl::SimpleAtoi(text.substr(8, 2), &d)) {
    return false;
  }
  for (char c : text) {
    if (c != '-' && (c < '0' || c > '9')) return false;
  }
  *day = absl::CivilDay(y, m, d);
  return day->year() == y && day->month() == m && day->day() == d;
}

}  // namespace

int32_t VietnamYear(int64_t ms) {
  return static_cast<int32_t>(absl::ToCivilYear(absl::FromUnixMillis(ms), VietnamZone()).year());
}

std::string VietnamDate(int64_t ms) {
  return absl::FormatCivilTime(absl::ToCivilDay(absl::FromUnixMillis(ms), VietnamZone()));
}

std::string VndVi(int64_t vnd) { return Group(vnd, '.'); }
std::string VndEn(int64_t vnd) { return Group(vnd, ','); }

std::string CategoryVi(SupportCategory category) {
  switch (category) {
    case kcnet::v1::SUPPORT_CATEGORY_DEMONSTRATION_MODEL:
      return "mô hình trình diễn";
    case kcnet::v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY:
      return "máy móc, công nghệ";
    case kcnet::v1::SUPPORT_CATEGORY_TRAINING:
      return "đào tạo";
    case kcnet::v1::SUPPORT_CATEGORY_MANAGEMENT_CONSULTING:
      return "tư vấn quản lý";
    case kcnet::v1::SUPPORT_CATEGORY_PRODUCT_DEVELOPMENT:
      return "phát triển sản phẩm";
    case kcnet::v1::SUPPORT_CATEGORY_TRADE_PROMOTION:
      return "xúc tiến thương mại";
    case kcnet::v1::SUPPORT_CATEGORY_CLEANER_PRODUCTION:
      return "sản xuất sạch hơn";
    case kcnet::v1::SUPPORT_CATEGORY_OTHER:
      return "khác";
    default:
      return CategoryEn(category);
  }
}

std::string FundingVi(FundingSource funding) {
  switch (funding) {
    case kcnet::v1::FUNDING_SOURCE_LOCAL:
      return "ngân sách địa phương";
    case kcnet::v1::FUNDING_SOURCE_NATIONAL:
      return "ngân sách trung ương";
    case kcnet::v1::FUNDING_SOURCE_COUNTERPART:
      return "vốn đối ứng";
    default:
      return FundingEn(funding);
  }
}

absl::StatusOr<std::unique_ptr<PlanStore>> PlanStore::Open(const std::string& path,
                                                           sync::Clock* clock) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path);
  if (!db.ok()) return db.status();
  std::unique_ptr<PlanStore> store(new PlanStore(*std::move(db), clock));
  absl::MutexLock lock(&store->mu_);
  absl::Status migrated = store->Migrate();
  if (!migrated.ok()) return migrated;
  return store;
}

absl::Status PlanStore::Migrate() {
  return sync::MigrateAppFile(*db_, {.application_id = kApplicationId,
                                     .name = "kcnet plans file",
                                     .schema = "plans",
                                     .migrations = kMigrations,
                                     .version = kPlansSchemaVersion});
}

absl::Status PlanStore::BumpChangeLocked() {
  return db_->RunCached("UPDATE changes SET seq = seq + 1 WHERE id = 1");
}

absl::StatusOr<std::optional<Plan>> PlanStore::ReadPlanLocked(int64_t province_id, int32_t year) {
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT revision, created_ms, created_by, updated_ms, updated_by FROM plans "
      "WHERE province_id = ? AND year = ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, province_id);
  (*st)->BindInt(2, year);
  absl::StatusOr<bool> row = (*st)->Step();
  if (!row.ok()) return row.status();
  if (!*row) {
    (*st)->Reset();
    return std::optional<Plan>();
  }
  Plan plan;
  plan.set_province_id(province_id);
  plan.set_year(year);
  plan.set_revision((*st)->ColumnInt(0));
  plan.set_created_ms((*st)->ColumnInt(1));
  plan.set_created_by((*st)->ColumnInt(2));
  plan.set_updated_ms((*st)->ColumnInt(3));
  plan.set_updated_by((*st)->ColumnInt(4));
  (*st)->Reset();
  absl::StatusOr<Statement*> lines = db_->Prepare(
      "SELECT category, funding, planned_vnd, planned_facilities FROM plan_lines "
      "WHERE province_id = ? AND year = ? ORDER BY funding, category");
  if (!lines.ok()) return lines.status();
  (*lines)->BindInt(1, province_id);
  (*lines)->BindInt(2, year);
  while (true) {
    absl::StatusOr<bool> r = (*lines)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    PlanLine* line = plan.add_lines();
    line->set_category(static_cast<SupportCategory>((*lines)->ColumnInt(0)));
    line->set_funding(static_cast<FundingSource>((*lines)->ColumnInt(1)));
    line->set_planned_amount_vnd((*lines)->ColumnInt(2));
    line->set_planned_facilities((*lines)->ColumnInt(3));
  }
  (*lines)->Reset();
  return std::optional<Plan>(std::move(plan));
}

absl::Status PlanStore::WriteLinesLocked(const Plan& plan) {
  absl::StatusOr<Statement*> del =
      db_->Prepare("DELETE FROM plan_lines WHERE province_id = ? AND year = ?");
  if (!del.ok()) return del.status();
  (*del)->BindInt(1, plan.province_id());
  (*del)->BindInt(2, plan.year());
  absl::Status s = (*del)->Run();
  if (!s.ok()) return s;
  absl::StatusOr<Statement*> ins = db_->Prepare(
      "INSERT INTO plan_lines(province_id, year, category, funding, planned_vnd, "
      "planned_facilities) VALUES (?, ?, ?, ?, ?, ?)");
  if (!ins.ok()) return ins.status();
  for (const PlanLine& line : plan.lines()) {
    (*ins)->Reset();
    (*ins)->BindInt(1, plan.province_id());
    (*ins)->BindInt(2, plan.year());
    (*ins)->BindInt(3, line.category());
    (*ins)->BindInt(4, line.funding());
    (*ins)->BindInt(5, line.planned_amount_vnd());
    (*ins)->BindInt(6, line.planned_facilities());
    s = (*ins)->Run();
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PlanStore::AuditLocked(const Plan& before, const Plan& after, const PlanActor& actor,
                                    const std::string& note, int64_t now_ms) {
  absl::StatusOr<Statement*> st = db_->Prepare(
      "INSERT INTO plan_revisions(province_id, year, revision, actor_id, actor, at_ms, note, "
      "before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st.ok()) return st.status();
  const std::string before_bytes = LinesOnly(before).SerializeAsString();
  const std::string after_bytes = LinesOnly(after).SerializeAsString();
  (*st)->BindInt(1, after.province_id());
  (*st)->BindInt(2, after.year());
  (*st)->BindInt(3, after.revision());
  (*st)->BindInt(4, actor.user_id);
  (*st)->BindText(5, actor.username);
  (*st)->BindInt(6, now_ms);
  (*st)->BindText(7, note);
  (*st)->BindBlob(8, before_bytes);
  (*st)->BindBlob(9, after_bytes);
  return (*st)->Run();
}

absl::StatusOr<Plan> PlanStore::GetPlan(int64_t province_id, int32_t year) {
  absl::Status y = CheckYear("year", year);
  if (!y.ok()) return y;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(province_id, year);
  if (!plan.ok()) return plan.status();
  if (!plan->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("plan: no plan of province ", province_id, " for ", year));
  }
  return **std::move(plan);
}

absl::StatusOr<std::vector<Plan>> PlanStore::ListPlans(const std::vector<int64_t>& provinces,
                                                       int32_t year) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st =
      db_->Prepare("SELECT province_id, year FROM plans ORDER BY year DESC, province_id");
  if (!st.ok()) return st.status();
  std::vector<std::pair<int64_t, int32_t>> keys;
  const std::set<int64_t> wanted(provinces.begin(), provinces.end());
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    const int64_t province = (*st)->ColumnInt(0);
    const int32_t y = static_cast<int32_t>((*st)->ColumnInt(1));
    if (year != 0 && y != year) continue;
    if (!wanted.empty() && !wanted.contains(province)) continue;
    keys.emplace_back(province, y);
  }
  (*st)->Reset();
  std::vector<Plan> out;
  for (const auto& [province, y] : keys) {
    absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(province, y);
    if (!plan.ok()) return plan.status();
    if (plan->has_value()) out.push_back(**std::move(plan));
  }
  return out;
}

absl::StatusOr<Plan> PlanStore::CreatePlan(const Plan& input, const PlanActor& actor,
                                           const std::string& note) {
  absl::Status valid = CheckPlan(input);
  if (!valid.ok()) return valid;
  valid = CheckNote("note", note, kMaxNoteBytes, /*required=*/false);
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<std::optional<Plan>> existing = ReadPlanLocked(input.province_id(), input.year());
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    return absl::AlreadyExistsError(absl::StrCat("plan: province ", input.province_id(),
                                                 " already has a plan for ", input.year(),
                                                 "; revise it (RevisePlan)"));
  }
  const int64_t now = clock_->NowMs();
  Plan plan = LinesOnly(input);
  plan.set_province_id(input.province_id());
  plan.set_year(input.year());
  plan.set_revision(1);
  plan.set_created_ms(now);
  plan.set_created_by(actor.user_id);
  plan.set_updated_ms(now);
  plan.set_updated_by(actor.user_id);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "INSERT INTO plans(province_id, year, revision, created_ms, created_by, updated_ms, "
      "updated_by) VALUES (?, ?, 1, ?, ?, ?, ?)");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, plan.province_id());
  (*st)->BindInt(2, plan.year());
  (*st)->BindInt(3, now);
  (*st)->BindInt(4, actor.user_id);
  (*st)->BindInt(5, now);
  (*st)->BindInt(6, actor.user_id);
  absl::Status s = (*st)->Run();
  if (s.ok()) s = WriteLinesLocked(plan);
  if (s.ok()) s = AuditLocked(Plan(), plan, actor, note, now);
  if (s.ok()) s = BumpChangeLocked();
  if (s.ok()) s = (*tx)->Commit();
  if (!s.ok()) return s;
  return plan;
}

absl::StatusOr<Plan> PlanStore::RevisePlan(const Plan& input, int64_t expected_revision,
                                           const PlanActor& actor, const std::string& note) {
  absl::Status valid = CheckPlan(input);
  if (!valid.ok()) return valid;
  valid = CheckNote("note", note, kMaxNoteBytes, /*required=*/true);
  if (!valid.ok()) return valid;
  if (expected_revision < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected_revision: must not be negative, got ", expected_revision));
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<std::optional<Plan>> existing = ReadPlanLocked(input.province_id(), input.year());
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("plan: no plan of province ", input.province_id(), " for ", input.year()));
  }
  const Plan& before = **existing;
  if (expected_revision != 0 && expected_revision != before.revision()) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected_revision: the plan is at revision ", before.revision(), ", not ",
                     expected_revision, " (another revision came first; read it again)"));
  }
  const int64_t now = clock_->NowMs();
  Plan plan = LinesOnly(input);
  plan.set_province_id(before.province_id());
  plan.set_year(before.year());
  plan.set_revision(before.revision() + 1);
  plan.set_created_ms(before.created_ms());
  plan.set_created_by(before.created_by());
  plan.set_updated_ms(now);
  plan.set_updated_by(actor.user_id);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "UPDATE plans SET revision = ?, updated_ms = ?, updated_by = ? "
      "WHERE province_id = ? AND year = ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, plan.revision());
  (*st)->BindInt(2, now);
  (*st)->BindInt(3, actor.user_id);
  (*st)->BindInt(4, plan.province_id());
  (*st)->BindInt(5, plan.year());
  absl::Status s = (*st)->Run();
  if (s.ok()) s = WriteLinesLocked(plan);
  if (s.ok()) s = AuditLocked(before, plan, actor, note, now);
  if (s.ok()) s = BumpChangeLocked();
  if (s.ok()) s = (*tx)->Commit();
  if (!s.ok()) return s;
  return plan;
}

absl::StatusOr<std::vector<PlanRevision>> PlanStore::ListRevisions(int64_t province_id,
                                                                   int32_t year,
                                                                   int64_t after_revision,
                                                                   int limit) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT revision, actor_id, actor, at_ms, note, before, after FROM plan_revisions "
      "WHERE province_id = ? AND year = ? AND revision > ? ORDER BY revision LIMIT ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, province_id);
  (*st)->BindInt(2, year);
  (*st)->BindInt(3, after_revision);
  (*st)->BindInt(4, limit);
  std::vector<PlanRevision> out;
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    PlanRevision rev;
    rev.set_province_id(province_id);
    rev.set_year(year);
    rev.set_revision((*st)->ColumnInt(0));
    rev.set_actor_id((*st)->ColumnInt(1));
    rev.set_actor(std::string((*st)->ColumnText(2)));
    rev.set_at_ms((*st)->ColumnInt(3));
    rev.set_note(std::string((*st)->ColumnText(4)));
    Plan before, after;
    if (!before.ParseFromString(std::string((*st)->ColumnBlob(5))) ||
        !after.ParseFromString(std::string((*st)->ColumnBlob(6)))) {
      (*st)->Reset();
      return absl::DataLossError("plan_revisions: a stored revision does not parse");
    }
    *rev.mutable_before() = before.lines();
    *rev.mutable_after() = after.lines();
    out.push_back(std::move(rev));
  }
  (*st)->Reset();
  return out;
}

absl::Status PlanStore::Draw(
    const ApprovalDraw& draw, const PlanActor& actor, const std::string& over_plan_reason,
    const std::function<absl::StatusOr<bool>(const std::string& id)>& is_approved) {
  const int64_t now = clock_->NowMs();
  const int32_t year = VietnamYear(now);
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(draw.province_id, year);
  if (!plan.ok()) return plan.status();
  const bool has_plan = plan->has_value();
  int64_t planned = 0;
  if (has_plan) {
    for (const PlanLine& line : (*plan)->lines()) {
      if (line.category() == draw.category && line.funding() == draw.funding) {
        planned = line.planned_amount_vnd();
      }
    }
  }
  // What the line already holds: confirmed draws, and unconfirmed ones whose approval the
  // record store shows (committed, or earlier in the same transaction).
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT request_id, amount_vnd, confirmed FROM draws "
      "WHERE province_id = ? AND year = ? AND funding = ? AND category = ? AND request_id != ?");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, draw.province_id);
  (*st)->BindInt(2, year);
  (*st)->BindInt(3, draw.funding);
  (*st)->BindInt(4, draw.category);
  (*st)->BindText(5, draw.request_id);
  int64_t approved = 0;
  std::vector<std::pair<std::string, int64_t>> unconfirmed;
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    if ((*st)->ColumnInt(2) != 0) {
      approved += (*st)->ColumnInt(1);
    } else {
      unconfirmed.emplace_back(std::string((*st)->ColumnText(0)), (*st)->ColumnInt(1));
    }
  }
  (*st)->Reset();
  for (const auto& [id, amount] : unconfirmed) {
    absl::StatusOr<bool> counts = is_approved(id);
    if (!counts.ok()) return counts.status();
    if (*counts) approved += amount;
  }
  const int64_t remaining = planned - approved;
  if (over_plan_reason.empty()) {
    if (!has_plan) {
      return absl::FailedPreconditionError(
          absl::StrCat("approved_amount_vnd: Chưa có kế hoạch khuyến công năm ", year,
                       " của tỉnh (mã ", draw.province_id,
                       "): chỉ duyệt được khi ghi lý do vượt kế hoạch / no extension plan of "
                       "province ",
                       draw.province_id, " for ", year,
                       ": approve only with an over-plan reason (over_plan_reason), online"));
    }
    if (draw.amount_vnd > remaining) {
      const int64_t left = std::max<int64_t>(remaining, 0);
      return absl::FailedPreconditionError(absl::StrCat(
          "approved_amount_vnd: Vượt kế hoạch: dòng ", CategoryVi(draw.category), " / ",
          FundingVi(draw.funding), " năm ", year, " còn lại ", VndVi(left), " ₫, đề nghị duyệt ",
          VndVi(draw.amount_vnd), " ₫ / over plan: line ", CategoryEn(draw.category), " / ",
          FundingEn(draw.funding), " of ", year, ": ", VndEn(left), " VND remain, ",
          VndEn(draw.amount_vnd),
          " VND asked; give an over-plan reason (over_plan_reason) to approve beyond the plan"));
    }
  }
  absl::StatusOr<Statement*> ins = db_->Prepare(
      "INSERT OR REPLACE INTO draws(request_id, province_id, commune_id, year, category, "
      "funding, amount_vnd, own_contribution_vnd, remaining_before_vnd, has_plan, "
      "over_plan_reason, actor_id, at_ms, confirmed) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)");
  if (!ins.ok()) return ins.status();
  (*ins)->BindText(1, draw.request_id);
  (*ins)->BindInt(2, draw.province_id);
  (*ins)->BindInt(3, draw.commune_id);
  (*ins)->BindInt(4, year);
  (*ins)->BindInt(5, draw.category);
  (*ins)->BindInt(6, draw.funding);
  (*ins)->BindInt(7, draw.amount_vnd);
  (*ins)->BindInt(8, draw.own_contribution_vnd);
  (*ins)->BindInt(9, has_plan ? remaining : 0);
  (*ins)->BindInt(10, has_plan ? 1 : 0);
  (*ins)->BindText(11, over_plan_reason);
  (*ins)->BindInt(12, actor.user_id);
  (*ins)->BindInt(13, now);
  absl::Status s = (*ins)->Run();
  if (!s.ok()) return s;
  return (*tx)->Commit();
}

absl::Status PlanStore::ConfirmDraw(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> st =
      db_->Prepare("UPDATE draws SET confirmed = 1 WHERE request_id = ? AND confirmed = 0");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, request_id);
  absl::Status s = (*st)->Run();
  if (!s.ok()) return s;
  if (db_->Changes() > 0) {
    s = BumpChangeLocked();
    if (!s.ok()) return s;
  }
  return (*tx)->Commit();
}

absl::StatusOr<std::optional<PlanDraw>> PlanStore::GetDraw(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT province_id, commune_id, year, category, funding, amount_vnd, "
      "remaining_before_vnd, has_plan, over_plan_reason, actor_id, at_ms FROM draws "
      "WHERE request_id = ?");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, request_id);
  absl::StatusOr<bool> r = (*st)->Step();
  if (!r.ok()) return r.status();
  if (!*r) {
    (*st)->Reset();
    return std::optional<PlanDraw>();
  }
  PlanDraw d;
  d.set_request_id(request_id);
  d.set_province_id((*st)->ColumnInt(0));
  d.set_commune_id((*st)->ColumnInt(1));
  d.set_year(static_cast<int32_t>((*st)->ColumnInt(2)));
  d.set_category(static_cast<SupportCategory>((*st)->ColumnInt(3)));
  d.set_funding(static_cast<FundingSource>((*st)->ColumnInt(4)));
  d.set_amount_vnd((*st)->ColumnInt(5));
  d.set_remaining_before_vnd((*st)->ColumnInt(6));
  d.set_has_plan((*st)->ColumnInt(7) != 0);
  d.set_over_plan_reason(std::string((*st)->ColumnText(8)));
  d.set_actor_id((*st)->ColumnInt(9));
  d.set_at_ms((*st)->ColumnInt(10));
  (*st)->Reset();
  return std::optional<PlanDraw>(std::move(d));
}

absl::StatusOr<std::vector<std::string>> PlanStore::UnconfirmedDraws() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st =
      db_->Prepare("SELECT request_id FROM draws WHERE confirmed = 0 ORDER BY request_id");
  if (!st.ok()) return st.status();
  std::vector<std::string> out;
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    out.emplace_back((*st)->ColumnText(0));
  }
  (*st)->Reset();
  return out;
}

absl::StatusOr<std::vector<std::string>> PlanStore::AllDraws() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare("SELECT request_id FROM draws ORDER BY request_id");
  if (!st.ok()) return st.status();
  std::vector<std::string> out;
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) {
      (*st)->Reset();
      return r.status();
    }
    if (!*r) break;
    out.emplace_back((*st)->ColumnText(0));
  }
  (*st)->Reset();
  return out;
}

absl::Status PlanStore::DropForRestore(const std::string& request_id, bool draw) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  std::vector<const char*> deletes = {"DELETE FROM disbursements WHERE request_id = ?"};
  if (draw) deletes.push_back("DELETE FROM draws WHERE request_id = ?");
  int64_t changes = 0;
  for (const char* sql : deletes) {
    absl::StatusOr<Statement*> st = db_->Prepare(sql);
    if (!st.ok()) return st.status();
    (*st)->BindText(1, request_id);
    absl::Status s = (*st)->Run();
    if (!s.ok()) return s;
    changes += db_->Changes();
  }
  if (changes > 0) {
    absl::Status s = BumpChangeLocked();
    if (!s.ok()) return s;
  }
  return (*tx)->Commit();
}

absl::StatusOr<Disbursement> PlanStore::RecordDisbursement(const SupportRequest& request,
                                                           const Disbursement& input,
                                                           const PlanActor& actor) {
  if (input.amount_vnd() <= 0 || input.amount_vnd() > kMaxPlanAmountVnd) {
    return absl::InvalidArgumentError(
        absl::StrCat("disbursement.amount_vnd: must be a whole number of VND above 0, got ",
                     input.amount_vnd()));
  }
  const int64_t now = clock_->NowMs();
  absl::CivilDay paid;
  if (!ParseDate(input.paid_date(), &paid)) {
    return absl::InvalidArgumentError(
        absl::StrCat("disbursement.paid_date: must be a date "
                     "YYYY-MM-DD, got '",
                     input.paid_date().substr(0, 32), "'"));
  }
  const absl::CivilDay today = absl::ToCivilDay(absl::FromUnixMillis(now), VietnamZone());
  if (paid.year() < kMinPlanYear || paid > today) {
    return absl::InvalidArgumentError(
        absl::StrCat("disbursement.paid_date: must be from 2000-01-01 to today (",
                     absl::FormatCivilTime(today), ", Vietnam), got ", input.paid_date()));
  }
  absl::Status s = CheckNote("disbursement.reference", input.reference(), kMaxReferenceBytes,
                             /*required=*/true);
  if (s.ok()) s = CheckNote("disbursement.note", input.note(), kMaxNoteBytes, false);
  if (!s.ok()) return s;
  if (request.status() != kcnet::v1::REQUEST_STATUS_IN_PROGRESS &&
      request.status() != kcnet::v1::REQUEST_STATUS_COMPLETED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "disbursement.request_id: Chỉ giải ngân cho đề nghị đang thực hiện hoặc đã hoàn thành "
        "/ payments are recorded only on requests in progress or completed; this one is ",
        EnumShort(kcnet::v1::RequestStatus_descriptor(), "REQUEST_STATUS_", request.status())));
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<Transaction>> tx = Transaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<Statement*> sum =
      db_->Prepare("SELECT COALESCE(SUM(amount_vnd), 0) FROM disbursements WHERE request_id = ?");
  if (!sum.ok()) return sum.status();
  (*sum)->BindText(1, request.id());
  absl::StatusOr<bool> r = (*sum)->Step();
  if (!r.ok()) return r.status();
  const int64_t paid_so_far = *r ? (*sum)->ColumnInt(0) : 0;
  (*sum)->Reset();
  const int64_t remaining = request.approved_amount_vnd() - paid_so_far;
  if (input.amount_vnd() > remaining) {
    return absl::FailedPreconditionError(absl::StrCat(
        "disbursement.amount_vnd: Vượt số tiền được duyệt: còn lại ", VndVi(remaining), " ₫ trên ",
        VndVi(request.approved_amount_vnd()), " ₫ / above the approved amount: ", VndEn(remaining),
        " VND of ", VndEn(request.approved_amount_vnd()), " VND remain, ",
        VndEn(input.amount_vnd()), " VND asked"));
  }
  absl::StatusOr<Statement*> ins = db_->Prepare(
      "INSERT INTO disbursements(request_id, amount_vnd, paid_date, reference, note, actor_id, "
      "at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)");
  if (!ins.ok()) return ins.status();
  (*ins)->BindText(1, request.id());
  (*ins)->BindInt(2, input.amount_vnd());
  (*ins)->BindText(3, input.paid_date());
  (*ins)->BindText(4, input.reference());
  (*ins)->BindText(5, input.note());
  (*ins)->BindInt(6, actor.user_id);
  (*ins)->BindInt(7, now);
  s = (*ins)->Run();
  if (!s.ok()) return s;
  Disbursement out = input;
  out.set_id(db_->LastInsertRowId());
  out.set_request_id(request.id());
  out.set_actor_id(actor.user_id);
  out.set_at_ms(now);
  s = BumpChangeLocked();
  if (s.ok()) s = (*tx)->Commit();
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<Disbursement>> PlanStore::ListDisbursements(
    const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT id, amount_vnd, paid_date, reference, note, actor_id, at_ms FROM disbursements "
      "WHERE request_id = ? ORDER BY id");
  if (!st.ok()) return st.status();
  (*st)->BindText(1, request_id);
  std::vector<Disbursement> out;
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    Disbursement d;
    d.set_id((*st)->ColumnInt(0));
    d.set_request_id(request_id);
    d.set_amount_vnd((*st)->ColumnInt(1));
    d.set_paid_date(std::string((*st)->ColumnText(2)));
    d.set_reference(std::string((*st)->ColumnText(3)));
    d.set_note(std::string((*st)->ColumnText(4)));
    d.set_actor_id((*st)->ColumnInt(5));
    d.set_at_ms((*st)->ColumnInt(6));
    out.push_back(std::move(d));
  }
  (*st)->Reset();
  return out;
}

absl::StatusOr<BudgetFigures> PlanStore::Budget(const BudgetQuery& query) {
  if (query.province_id <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("province_id: must be > 0, got ", query.province_id));
  }
  absl::Status y = CheckYear("year", query.year);
  if (!y.ok()) return y;
  const std::set<int64_t> communes(query.commune_ids.begin(), query.commune_ids.end());
  absl::MutexLock lock(&mu_);
  // One read transaction: the figures and the change counter agree.
  absl::StatusOr<std::unique_ptr<Transaction>> tx =
      Transaction::Begin(db_.get(), Transaction::Kind::kRead);
  if (!tx.ok()) return tx.status();
  BudgetFigures out;
  out.province_id = query.province_id;
  out.year = query.year;
  std::map<std::pair<int, int>, BudgetRow> rows;  // (funding, category)
  auto row = [&](int funding, int category) -> BudgetRow& {
    BudgetRow& r = rows[{funding, category}];
    r.funding = static_cast<FundingSource>(funding);
    r.category = static_cast<SupportCategory>(category);
    return r;
  };
  absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(query.province_id, query.year);
  if (!plan.ok()) return plan.status();
  if (plan->has_value()) {
    out.has_plan = true;
    out.plan_revision = (*plan)->revision();
    for (const PlanLine& line : (*plan)->lines()) {
      BudgetRow& r = row(line.funding(), line.category());
      r.planned_vnd = line.planned_amount_vnd();
      r.planned_facilities = line.planned_facilities();
    }
  }
  // Approvals of the year (confirmed draws) with what was paid to each.
  absl::StatusOr<Statement*> st = db_->Prepare(
      "SELECT d.commune_id, d.funding, d.category, d.amount_vnd, d.own_contribution_vnd, "
      "  (SELECT COALESCE(SUM(x.amount_vnd), 0) FROM disbursements x "
      "   WHERE x.request_id = d.request_id) "
      "FROM draws d WHERE d.province_id = ? AND d.year = ? AND d.confirmed = 1");
  if (!st.ok()) return st.status();
  (*st)->BindInt(1, query.province_id);
  (*st)->BindInt(2, query.year);
  while (true) {
    absl::StatusOr<bool> r = (*st)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    const int64_t commune = (*st)->ColumnInt(0);
    if (!communes.empty() && !communes.contains(commune)) continue;
    const int funding = static_cast<int>((*st)->ColumnInt(1));
    const int category = static_cast<int>((*st)->ColumnInt(2));
    BudgetRow& line = row(funding, category);
    line.approved_vnd += (*st)->ColumnInt(3);
    line.disbursed_vnd += (*st)->ColumnInt(5);
    line.approved_requests += 1;
    const int64_t own = (*st)->ColumnInt(4);
    if (own > 0) {
      BudgetRow& counterpart = row(kcnet::v1::FUNDING_SOURCE_COUNTERPART, category);
      counterpart.approved_vnd += own;
      counterpart.approved_requests += 1;
    }
  }
  (*st)->Reset();
  for (auto& [key, r] : rows) {
    r.remaining_vnd = r.planned_vnd - r.approved_vnd;
    out.rows.push_back(r);
  }
  absl::StatusOr<int64_t> seq = db_->QueryInt("SELECT seq FROM changes WHERE id = 1");
  if (!seq.ok()) return seq.status();
  out.as_of_change = *seq;
  return out;
}

}  // namespace kcnet::server
