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
  absl::StatusOr<std::unique_ptr<PlanDb>> db = OpenSqlitePlanDb(path);
  if (!db.ok()) return db.status();
  return Open(*std::move(db), clock);
}

absl::StatusOr<std::unique_ptr<PlanStore>> PlanStore::Open(std::unique_ptr<PlanDb> db,
                                                           sync::Clock* clock) {
  std::unique_ptr<PlanStore> store(new PlanStore(std::move(db), clock));
  absl::MutexLock lock(&store->mu_);
  absl::Status migrated = store->db_->Migrate();
  if (!migrated.ok()) return migrated;
  return store;
}

bool PlanStore::shared() const { return shared_; }

absl::Status PlanStore::BumpChangeLocked() {
  return db_->Query("UPDATE changes SET seq = seq + 1 WHERE id = 1").status();
}

absl::StatusOr<std::optional<Plan>> PlanStore::ReadPlanLocked(int64_t province_id, int32_t year) {
  absl::StatusOr<DirRows> head = db_->Query(
      "SELECT revision, created_ms, created_by, updated_ms, updated_by FROM plans "
      "WHERE province_id = ?1 AND year = ?2",
      {DirValue::Int(province_id), DirValue::Int(year)});
  if (!head.ok()) return head.status();
  if (head->empty()) return std::optional<Plan>();
  Plan plan;
  plan.set_province_id(province_id);
  plan.set_year(year);
  plan.set_revision(head->Int(0, 0));
  plan.set_created_ms(head->Int(0, 1));
  plan.set_created_by(head->Int(0, 2));
  plan.set_updated_ms(head->Int(0, 3));
  plan.set_updated_by(head->Int(0, 4));
  absl::StatusOr<DirRows> lines = db_->Query(
      "SELECT category, funding, planned_vnd, planned_facilities FROM plan_lines "
      "WHERE province_id = ?1 AND year = ?2 ORDER BY funding, category",
      {DirValue::Int(province_id), DirValue::Int(year)});
  if (!lines.ok()) return lines.status();
  for (size_t r = 0; r < lines->size(); ++r) {
    PlanLine* line = plan.add_lines();
    line->set_category(static_cast<SupportCategory>(lines->Int(r, 0)));
    line->set_funding(static_cast<FundingSource>(lines->Int(r, 1)));
    line->set_planned_amount_vnd(lines->Int(r, 2));
    line->set_planned_facilities(lines->Int(r, 3));
  }
  return std::optional<Plan>(std::move(plan));
}

absl::Status PlanStore::WriteLinesLocked(const Plan& before, const Plan& plan) {
  // Lines are changed in place (a draw on another instance may hold one locked: it then
  // reads the new amount), the ones the plan no longer has are deleted.
  std::set<std::pair<int, int>> kept;
  for (const PlanLine& line : plan.lines()) {
    kept.insert({line.funding(), line.category()});
    absl::Status s =
        db_->Query(
               "INSERT INTO plan_lines(province_id, year, category, funding, planned_vnd, "
               "planned_facilities) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
               "ON CONFLICT(province_id, year, funding, category) DO UPDATE SET "
               "planned_vnd = excluded.planned_vnd, "
               "planned_facilities = excluded.planned_facilities",
               {DirValue::Int(plan.province_id()), DirValue::Int(plan.year()),
                DirValue::Int(line.category()), DirValue::Int(line.funding()),
                DirValue::Int(line.planned_amount_vnd()), DirValue::Int(line.planned_facilities())})
            .status();
    if (!s.ok()) return s;
  }
  for (const PlanLine& line : before.lines()) {
    if (kept.contains({line.funding(), line.category()})) continue;
    absl::Status s = db_->Query(
                            "DELETE FROM plan_lines WHERE province_id = ?1 AND year = ?2 AND "
                            "funding = ?3 AND category = ?4",
                            {DirValue::Int(plan.province_id()), DirValue::Int(plan.year()),
                             DirValue::Int(line.funding()), DirValue::Int(line.category())})
                         .status();
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PlanStore::AuditLocked(const Plan& before, const Plan& after, const PlanActor& actor,
                                    const std::string& note, int64_t now_ms) {
  return db_
      ->Query(
          "INSERT INTO plan_revisions(province_id, year, revision, actor_id, actor, at_ms, note, "
          "before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
          {DirValue::Int(after.province_id()), DirValue::Int(after.year()),
           DirValue::Int(after.revision()), DirValue::Int(actor.user_id),
           DirValue::Text(actor.username), DirValue::Int(now_ms), DirValue::Text(note),
           DirValue::Blob(LinesOnly(before).SerializeAsString()),
           DirValue::Blob(LinesOnly(after).SerializeAsString())})
      .status();
}

absl::StatusOr<Plan> PlanStore::GetPlan(int64_t province_id, int32_t year) {
  absl::Status y = CheckYear("year", year);
  if (!y.ok()) return y;
  absl::MutexLock lock(&mu_);
  // One snapshot: the plan's revision and its lines agree.
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx =
      PlanTransaction::Begin(db_.get(), /*read_only=*/true);
  if (!tx.ok()) return tx.status();
  absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(province_id, year);
  if (!plan.ok()) return plan.status();
  if (!plan->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("plan: no plan of province ", province_id, " for ", year));
  }
  absl::Status s = (*tx)->Commit();
  if (!s.ok()) return s;
  return **std::move(plan);
}

absl::StatusOr<std::vector<Plan>> PlanStore::ListPlans(const std::vector<int64_t>& provinces,
                                                       int32_t year) {
  absl::MutexLock lock(&mu_);
  // One snapshot: every plan as of one moment.
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx =
      PlanTransaction::Begin(db_.get(), /*read_only=*/true);
  if (!tx.ok()) return tx.status();
  absl::StatusOr<DirRows> rows =
      db_->Query("SELECT province_id, year FROM plans ORDER BY year DESC, province_id");
  if (!rows.ok()) return rows.status();
  std::vector<std::pair<int64_t, int32_t>> keys;
  const std::set<int64_t> wanted(provinces.begin(), provinces.end());
  for (size_t r = 0; r < rows->size(); ++r) {
    const int64_t province = rows->Int(r, 0);
    const int32_t y = static_cast<int32_t>(rows->Int(r, 1));
    if (year != 0 && y != year) continue;
    if (!wanted.empty() && !wanted.contains(province)) continue;
    keys.emplace_back(province, y);
  }
  std::vector<Plan> out;
  for (const auto& [province, y] : keys) {
    absl::StatusOr<std::optional<Plan>> plan = ReadPlanLocked(province, y);
    if (!plan.ok()) return plan.status();
    if (plan->has_value()) out.push_back(**std::move(plan));
  }
  absl::Status s = (*tx)->Commit();
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<Plan> PlanStore::CreatePlan(const Plan& input, const PlanActor& actor,
                                           const std::string& note) {
  absl::Status valid = CheckPlan(input);
  if (!valid.ok()) return valid;
  valid = CheckNote("note", note, kMaxNoteBytes, /*required=*/false);
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  const int64_t now = clock_->NowMs();
  Plan plan = LinesOnly(input);
  plan.set_province_id(input.province_id());
  plan.set_year(input.year());
  plan.set_revision(1);
  plan.set_created_ms(now);
  plan.set_created_by(actor.user_id);
  plan.set_updated_ms(now);
  plan.set_updated_by(actor.user_id);
  // ON CONFLICT DO NOTHING: two instances creating the same plan at once, the second
  // finds the first's row (it waits for its commit) and is told so.
  absl::StatusOr<DirRows> made = db_->Query(
      "INSERT INTO plans(province_id, year, revision, created_ms, created_by, updated_ms, "
      "updated_by) VALUES (?1, ?2, 1, ?3, ?4, ?3, ?4) "
      "ON CONFLICT(province_id, year) DO NOTHING RETURNING revision",
      {DirValue::Int(plan.province_id()), DirValue::Int(plan.year()), DirValue::Int(now),
       DirValue::Int(actor.user_id)});
  if (!made.ok()) return made.status();
  if (made->empty()) {
    return absl::AlreadyExistsError(absl::StrCat("plan: province ", input.province_id(),
                                                 " already has a plan for ", input.year(),
                                                 "; revise it (RevisePlan)"));
  }
  absl::Status s = WriteLinesLocked(Plan(), plan);
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
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  if (db_->shared()) {
    // Revisions on two instances take turns: the second reads the first's revision.
    absl::Status locked = db_->Query(
                                 "SELECT revision FROM plans WHERE province_id = ?1 AND "
                                 "year = ?2 FOR UPDATE",
                                 {DirValue::Int(input.province_id()), DirValue::Int(input.year())})
                              .status();
    if (!locked.ok()) return locked;
  }
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
  absl::Status s =
      db_->Query(
             "UPDATE plans SET revision = ?1, updated_ms = ?2, updated_by = ?3 "
             "WHERE province_id = ?4 AND year = ?5",
             {DirValue::Int(plan.revision()), DirValue::Int(now), DirValue::Int(actor.user_id),
              DirValue::Int(plan.province_id()), DirValue::Int(plan.year())})
          .status();
  if (s.ok()) s = WriteLinesLocked(before, plan);
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
  absl::StatusOr<DirRows> rows = db_->Query(
      "SELECT revision, actor_id, actor, at_ms, note, before, after FROM plan_revisions "
      "WHERE province_id = ?1 AND year = ?2 AND revision > ?3 ORDER BY revision LIMIT ?4",
      {DirValue::Int(province_id), DirValue::Int(year), DirValue::Int(after_revision),
       DirValue::Int(limit)});
  if (!rows.ok()) return rows.status();
  std::vector<PlanRevision> out;
  for (size_t r = 0; r < rows->size(); ++r) {
    PlanRevision rev;
    rev.set_province_id(province_id);
    rev.set_year(year);
    rev.set_revision(rows->Int(r, 0));
    rev.set_actor_id(rows->Int(r, 1));
    rev.set_actor(rows->Text(r, 2));
    rev.set_at_ms(rows->Int(r, 3));
    rev.set_note(rows->Text(r, 4));
    Plan before, after;
    if (!before.ParseFromString(rows->Blob(r, 5)) || !after.ParseFromString(rows->Blob(r, 6))) {
      return absl::DataLossError("plan_revisions: a stored revision does not parse");
    }
    *rev.mutable_before() = before.lines();
    *rev.mutable_after() = after.lines();
    out.push_back(std::move(rev));
  }
  return out;
}

absl::Status PlanStore::Draw(const ApprovalDraw& draw, const PlanActor& actor,
                             const std::string& over_plan_reason, const DrawHolds& holds) {
  const int64_t now = clock_->NowMs();
  const int32_t year = VietnamYear(now);
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  const std::vector<DirValue> line_key = {DirValue::Int(draw.province_id), DirValue::Int(year),
                                          DirValue::Int(draw.funding),
                                          DirValue::Int(draw.category)};
  if (db_->shared()) {
    // The check-and-record of one line, atomic across instances: draws on the line take
    // turns on its row (a revision changing the line waits too, and is read after).
    absl::Status locked = db_->Query(
                                 "SELECT planned_vnd FROM plan_lines WHERE province_id = ?1 "
                                 "AND year = ?2 AND funding = ?3 AND category = ?4 FOR UPDATE",
                                 line_key)
                              .status();
    if (!locked.ok()) return locked;
  }
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
  // record store shows (committed, or earlier in the same transaction) or may still commit.
  std::vector<DirValue> params = line_key;
  params.push_back(DirValue::Text(draw.request_id));
  absl::StatusOr<DirRows> rows = db_->Query(
      "SELECT request_id, amount_vnd, confirmed, commune_id FROM draws "
      "WHERE province_id = ?1 AND year = ?2 AND funding = ?3 AND category = ?4 "
      "AND request_id != ?5",
      params);
  if (!rows.ok()) return rows.status();
  int64_t approved = 0;
  for (size_t r = 0; r < rows->size(); ++r) {
    if (rows->Int(r, 2) != 0) {
      approved += rows->Int(r, 1);
      continue;
    }
    absl::StatusOr<bool> held = holds(rows->Text(r, 0), rows->Int(r, 3));
    if (!held.ok()) return held.status();
    if (*held) approved += rows->Int(r, 1);
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
  absl::Status s =
      db_->Query(
             "INSERT INTO draws(request_id, province_id, commune_id, year, category, "
             "funding, amount_vnd, own_contribution_vnd, remaining_before_vnd, has_plan, "
             "over_plan_reason, actor_id, at_ms, confirmed) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0) "
             "ON CONFLICT(request_id) DO UPDATE SET province_id = excluded.province_id, "
             "commune_id = excluded.commune_id, year = excluded.year, "
             "category = excluded.category, funding = excluded.funding, "
             "amount_vnd = excluded.amount_vnd, "
             "own_contribution_vnd = excluded.own_contribution_vnd, "
             "remaining_before_vnd = excluded.remaining_before_vnd, "
             "has_plan = excluded.has_plan, over_plan_reason = excluded.over_plan_reason, "
             "actor_id = excluded.actor_id, at_ms = excluded.at_ms, confirmed = 0",
             {DirValue::Text(draw.request_id), DirValue::Int(draw.province_id),
              DirValue::Int(draw.commune_id), DirValue::Int(year), DirValue::Int(draw.category),
              DirValue::Int(draw.funding), DirValue::Int(draw.amount_vnd),
              DirValue::Int(draw.own_contribution_vnd), DirValue::Int(has_plan ? remaining : 0),
              DirValue::Int(has_plan ? 1 : 0), DirValue::Text(over_plan_reason),
              DirValue::Int(actor.user_id), DirValue::Int(now)})
          .status();
  if (!s.ok()) return s;
  return (*tx)->Commit();
}

absl::Status PlanStore::ConfirmDraw(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  absl::StatusOr<int64_t> changed =
      db_->Exec("UPDATE draws SET confirmed = 1 WHERE request_id = ?1 AND confirmed = 0",
                {DirValue::Text(request_id)});
  if (!changed.ok()) return changed.status();
  if (*changed > 0) {
    absl::Status s = BumpChangeLocked();
    if (!s.ok()) return s;
  }
  return (*tx)->Commit();
}

absl::StatusOr<std::optional<PlanDraw>> PlanStore::GetDraw(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<DirRows> rows = db_->Query(
      "SELECT province_id, commune_id, year, category, funding, amount_vnd, "
      "remaining_before_vnd, has_plan, over_plan_reason, actor_id, at_ms FROM draws "
      "WHERE request_id = ?1",
      {DirValue::Text(request_id)});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<PlanDraw>();
  PlanDraw d;
  d.set_request_id(request_id);
  d.set_province_id(rows->Int(0, 0));
  d.set_commune_id(rows->Int(0, 1));
  d.set_year(static_cast<int32_t>(rows->Int(0, 2)));
  d.set_category(static_cast<SupportCategory>(rows->Int(0, 3)));
  d.set_funding(static_cast<FundingSource>(rows->Int(0, 4)));
  d.set_amount_vnd(rows->Int(0, 5));
  d.set_remaining_before_vnd(rows->Int(0, 6));
  d.set_has_plan(rows->Int(0, 7) != 0);
  d.set_over_plan_reason(rows->Text(0, 8));
  d.set_actor_id(rows->Int(0, 9));
  d.set_at_ms(rows->Int(0, 10));
  return std::optional<PlanDraw>(std::move(d));
}

absl::StatusOr<std::vector<std::string>> PlanStore::RequestIdsLocked(absl::string_view sql) {
  absl::StatusOr<DirRows> rows = db_->Query(sql);
  if (!rows.ok()) return rows.status();
  std::vector<std::string> out;
  out.reserve(rows->size());
  for (size_t r = 0; r < rows->size(); ++r) out.push_back(rows->Text(r, 0));
  return out;
}

absl::StatusOr<std::vector<std::string>> PlanStore::UnconfirmedDraws() {
  absl::MutexLock lock(&mu_);
  return RequestIdsLocked("SELECT request_id FROM draws WHERE confirmed = 0 ORDER BY request_id");
}

absl::StatusOr<std::vector<std::string>> PlanStore::AllDraws() {
  absl::MutexLock lock(&mu_);
  return RequestIdsLocked("SELECT request_id FROM draws ORDER BY request_id");
}

absl::Status PlanStore::DropForRestore(const std::string& request_id, bool draw) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  std::vector<const char*> deletes = {"DELETE FROM disbursements WHERE request_id = ?1"};
  if (draw) deletes.push_back("DELETE FROM draws WHERE request_id = ?1");
  int64_t changes = 0;
  for (const char* sql : deletes) {
    absl::StatusOr<int64_t> gone = db_->Exec(sql, {DirValue::Text(request_id)});
    if (!gone.ok()) return gone.status();
    changes += *gone;
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
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx = PlanTransaction::Begin(db_.get());
  if (!tx.ok()) return tx.status();
  // The change counter first: its row lock makes payments on several instances take
  // turns, so the sum below is the one the new payment joins.
  s = BumpChangeLocked();
  if (!s.ok()) return s;
  absl::StatusOr<DirRows> sum =
      db_->Query("SELECT COALESCE(SUM(amount_vnd), 0) FROM disbursements WHERE request_id = ?1",
                 {DirValue::Text(request.id())});
  if (!sum.ok()) return sum.status();
  const int64_t paid_so_far = sum->empty() ? 0 : sum->Int(0, 0);
  const int64_t remaining = request.approved_amount_vnd() - paid_so_far;
  if (input.amount_vnd() > remaining) {
    return absl::FailedPreconditionError(absl::StrCat(
        "disbursement.amount_vnd: Vượt số tiền được duyệt: còn lại ", VndVi(remaining), " ₫ trên ",
        VndVi(request.approved_amount_vnd()), " ₫ / above the approved amount: ", VndEn(remaining),
        " VND of ", VndEn(request.approved_amount_vnd()), " VND remain, ",
        VndEn(input.amount_vnd()), " VND asked"));
  }
  absl::StatusOr<DirRows> made = db_->Query(
      "INSERT INTO disbursements(request_id, amount_vnd, paid_date, reference, note, actor_id, "
      "at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
      {DirValue::Text(request.id()), DirValue::Int(input.amount_vnd()),
       DirValue::Text(input.paid_date()), DirValue::Text(input.reference()),
       DirValue::Text(input.note()), DirValue::Int(actor.user_id), DirValue::Int(now)});
  if (!made.ok()) return made.status();
  if (made->empty()) return absl::InternalError("disbursements: the insert returned no id");
  Disbursement out = input;
  out.set_id(made->Int(0, 0));
  out.set_request_id(request.id());
  out.set_actor_id(actor.user_id);
  out.set_at_ms(now);
  s = (*tx)->Commit();
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<Disbursement>> PlanStore::ListDisbursements(
    const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<DirRows> rows = db_->Query(
      "SELECT id, amount_vnd, paid_date, reference, note, actor_id, at_ms FROM disbursements "
      "WHERE request_id = ?1 ORDER BY id",
      {DirValue::Text(request_id)});
  if (!rows.ok()) return rows.status();
  std::vector<Disbursement> out;
  for (size_t r = 0; r < rows->size(); ++r) {
    Disbursement d;
    d.set_id(rows->Int(r, 0));
    d.set_request_id(request_id);
    d.set_amount_vnd(rows->Int(r, 1));
    d.set_paid_date(rows->Text(r, 2));
    d.set_reference(rows->Text(r, 3));
    d.set_note(rows->Text(r, 4));
    d.set_actor_id(rows->Int(r, 5));
    d.set_at_ms(rows->Int(r, 6));
    out.push_back(std::move(d));
  }
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
  absl::StatusOr<std::unique_ptr<PlanTransaction>> tx =
      PlanTransaction::Begin(db_.get(), /*read_only=*/true);
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
  absl::StatusOr<DirRows> draws = db_->Query(
      "SELECT d.commune_id, d.funding, d.category, d.amount_vnd, d.own_contribution_vnd, "
      "  (SELECT COALESCE(SUM(x.amount_vnd), 0) FROM disbursements x "
      "   WHERE x.request_id = d.request_id) "
      "FROM draws d WHERE d.province_id = ?1 AND d.year = ?2 AND d.confirmed = 1",
      {DirValue::Int(query.province_id), DirValue::Int(query.year)});
  if (!draws.ok()) return draws.status();
  for (size_t r = 0; r < draws->size(); ++r) {
    const int64_t commune = draws->Int(r, 0);
    if (!communes.empty() && !communes.contains(commune)) continue;
    BudgetRow& line = row(static_cast<int>(draws->Int(r, 1)), static_cast<int>(draws->Int(r, 2)));
    line.approved_vnd += draws->Int(r, 3);
    line.disbursed_vnd += draws->Int(r, 5);
    line.approved_requests += 1;
    const int64_t own = draws->Int(r, 4);
    if (own > 0) {
      BudgetRow& counterpart =
          row(kcnet::v1::FUNDING_SOURCE_COUNTERPART, static_cast<int>(draws->Int(r, 2)));
      counterpart.approved_vnd += own;
      counterpart.approved_requests += 1;
    }
  }
  for (auto& [key, r] : rows) {
    r.remaining_vnd = r.planned_vnd - r.approved_vnd;
    out.rows.push_back(r);
  }
  absl::StatusOr<DirRows> seq = db_->Query("SELECT seq FROM changes WHERE id = 1");
  if (!seq.ok()) return seq.status();
  if (seq->empty()) return absl::InternalError("plans: the changes row is missing");
  out.as_of_change = seq->Int(0, 0);
  absl::Status s = (*tx)->Commit();
  if (!s.ok()) return s;
  return out;
}

}  // namespace kcnet::server
