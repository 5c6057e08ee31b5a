#include "server/plans/plan_service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kcnet/v1/plans.grpc.pb.h"
#include "server/plans/approval_guard.h"
#include "server/plans/budget.h"
#include "server/records/record_access.h"
#include "server/rpc/paging.h"
#include "server/services/checks.h"
#include "sync/model/record_types.h"

namespace kcnet::server {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;
using kcnet::v1::Plan;
namespace v1 = kcnet::v1;

absl::Status PlanNotFound(int64_t province_id, int32_t year) {
  return absl::NotFoundError(
      absl::StrCat("plan: no plan of province ", province_id, " for ", year));
}

absl::Status CheckYear(absl::string_view field, int32_t year) {
  if (year < kMinPlanYear || year > kMaxPlanYear) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be between ", kMinPlanYear,
                                                   " and ", kMaxPlanYear, ", got ", year));
  }
  return absl::OkStatus();
}

class PlanServiceImpl : public v1::PlanService::CallbackService {
 public:
  explicit PlanServiceImpl(const PlanServiceDeps& deps)
      : deps_(deps),
        access_(RecordServiceDeps{.directory = deps.directory,
                                  .store = deps.records,
                                  .runner = deps.runner,
                                  .clock = deps.clock}) {}

  ServerUnaryReactor* GetPlan(CallbackServerContext* ctx, const v1::GetPlanRequest* req,
                              Plan* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/GetPlan", [=, this](const Principal* p) -> absl::Status {
          absl::Status s = CheckId("province_id", req->province_id());
          if (s.ok()) s = CheckYear("year", req->year());
          if (!s.ok()) return s;
          if (!MaySee(*p, req->province_id())) {
            return PlanNotFound(req->province_id(), req->year());
          }
          absl::StatusOr<Plan> plan = deps_.plans->GetPlan(req->province_id(), req->year());
          if (!plan.ok()) return plan.status();
          *resp = *std::move(plan);
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* ListPlans(CallbackServerContext* ctx, const v1::ListPlansRequest* req,
                                v1::ListPlansResponse* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/ListPlans", [=, this](const Principal* p) -> absl::Status {
          if (req->province_id() < 0) {
            return absl::InvalidArgumentError(
                absl::StrCat("province_id: must not be negative, got ", req->province_id()));
          }
          if (req->year() != 0) {
            absl::Status s = CheckYear("year", req->year());
            if (!s.ok()) return s;
          }
          if (req->province_id() > 0 && !MaySee(*p, req->province_id())) {
            return absl::NotFoundError(
                absl::StrCat("province_id: no province ", req->province_id()));
          }
          absl::StatusOr<int> size = PageSize(req->page_size());
          if (!size.ok()) return size.status();
          const uint64_t fingerprint = QueryFingerprint(*req, absl::StrCat(p->user_id));
          absl::StatusOr<std::string> position = DecodePageToken(req->page_token(), fingerprint);
          if (!position.ok()) return position.status();
          std::vector<int64_t> provinces;
          if (req->province_id() > 0) provinces.push_back(req->province_id());
          absl::StatusOr<std::vector<Plan>> plans = deps_.plans->ListPlans(provinces, req->year());
          if (!plans.ok()) return plans.status();
          std::vector<Plan> visible;
          for (Plan& plan : *plans) {
            if (MaySee(*p, plan.province_id())) visible.push_back(std::move(plan));
          }
          // Newest year first, then by province: the key sorts that way as text.
          auto key = [](const Plan& plan) {
            return absl::StrFormat("%04d:%020d", kMaxPlanYear - plan.year(), plan.province_id());
          };
          std::string next;
          for (Plan& plan : TakePage(std::move(visible), *position, *size, key, &next)) {
            *resp->add_plans() = std::move(plan);
          }
          if (!next.empty()) resp->set_next_page_token(EncodePageToken(fingerprint, next));
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* CreatePlan(CallbackServerContext* ctx, const v1::CreatePlanRequest* req,
                                 Plan* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/CreatePlan", [=, this](const Principal* p) -> absl::Status {
          absl::Status s = MayWrite(*p, req->plan());
          if (!s.ok()) return s;
          absl::StatusOr<Plan> plan = deps_.plans->CreatePlan(req->plan(), Actor(*p), req->note());
          if (!plan.ok()) return plan.status();
          *resp = *std::move(plan);
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* RevisePlan(CallbackServerContext* ctx, const v1::RevisePlanRequest* req,
                                 Plan* resp) override {
    return deps_.runner->Run(ctx, "/kcnet.v1.PlanService/RevisePlan",
                             [=, this](const Principal* p) -> absl::Status {
                               absl::Status s = MayWrite(*p, req->plan());
                               if (!s.ok()) return s;
                               absl::StatusOr<Plan> plan = deps_.plans->RevisePlan(
                                   req->plan(), req->expected_revision(), Actor(*p), req->note());
                               if (!plan.ok()) return plan.status();
                               *resp = *std::move(plan);
                               return absl::OkStatus();
                             });
  }

  ServerUnaryReactor* ListPlanRevisions(CallbackServerContext* ctx,
                                        const v1::ListPlanRevisionsRequest* req,
                                        v1::ListPlanRevisionsResponse* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/ListPlanRevisions",
        [=, this](const Principal* p) -> absl::Status {
          absl::Status s = CheckId("province_id", req->province_id());
          if (s.ok()) s = CheckYear("year", req->year());
          if (!s.ok()) return s;
          if (!MaySee(*p, req->province_id())) return PlanNotFound(req->province_id(), req->year());
          absl::StatusOr<Plan> plan = deps_.plans->GetPlan(req->province_id(), req->year());
          if (!plan.ok()) return plan.status();
          absl::StatusOr<int> size = PageSize(req->page_size());
          if (!size.ok()) return size.status();
          const uint64_t fingerprint = QueryFingerprint(*req, absl::StrCat(p->user_id));
          absl::StatusOr<std::string> position = DecodePageToken(req->page_token(), fingerprint);
          if (!position.ok()) return position.status();
          int64_t after = 0;
          if (!position->empty() && !absl::SimpleAtoi(*position, &after)) {
            return absl::InvalidArgumentError("page_token: not a position of this list");
          }
          absl::StatusOr<std::vector<v1::PlanRevision>> revisions =
              deps_.plans->ListRevisions(req->province_id(), req->year(), after, *size);
          if (!revisions.ok()) return revisions.status();
          for (v1::PlanRevision& r : *revisions) *resp->add_revisions() = std::move(r);
          if (resp->revisions_size() == *size) {
            resp->set_next_page_token(EncodePageToken(
                fingerprint, absl::StrCat(resp->revisions(resp->revisions_size() - 1).revision())));
          }
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* RecordDisbursement(CallbackServerContext* ctx,
                                         const v1::RecordDisbursementRequest* req,
                                         v1::Disbursement* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/RecordDisbursement",
        [=, this](const Principal* p) -> absl::Status {
          v1::SupportRequest request;
          absl::Status s = ReadRequest(*p, req->disbursement().request_id(),
                                       "disbursement.request_id", &request);
          if (!s.ok()) return s;
          if (p->role != v1::ROLE_PROVINCE_OFFICER) {
            return absl::PermissionDeniedError("role: only province officers record disbursements");
          }
          absl::StatusOr<v1::Disbursement> d =
              deps_.plans->RecordDisbursement(request, req->disbursement(), Actor(*p));
          if (!d.ok()) return d.status();
          // The request is in progress or completed: its approval is committed.
          s = deps_.plans->ConfirmDraw(request.id());
          if (!s.ok()) return s;
          *resp = *std::move(d);
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* ListDisbursements(CallbackServerContext* ctx,
                                        const v1::ListDisbursementsRequest* req,
                                        v1::ListDisbursementsResponse* resp) override {
    return deps_.runner->Run(
        ctx, "/kcnet.v1.PlanService/ListDisbursements",
        [=, this](const Principal* p) -> absl::Status {
          v1::SupportRequest request;
          absl::Status s = ReadRequest(*p, req->request_id(), "request_id", &request);
          if (!s.ok()) return s;
          absl::StatusOr<std::vector<v1::Disbursement>> list =
              deps_.plans->ListDisbursements(request.id());
          if (!list.ok()) return list.status();
          int64_t paid = 0;
          for (v1::Disbursement& d : *list) {
            paid += d.amount_vnd();
            *resp->add_disbursements() = std::move(d);
          }
          resp->set_approved_amount_vnd(request.approved_amount_vnd());
          resp->set_disbursed_vnd(paid);
          resp->set_remaining_vnd(request.approved_amount_vnd() - paid);
          absl::StatusOr<std::optional<v1::PlanDraw>> draw = deps_.plans->GetDraw(request.id());
          if (!draw.ok()) return draw.status();
          if (draw->has_value()) *resp->mutable_draw() = **draw;
          return absl::OkStatus();
        });
  }

 private:
  static PlanActor Actor(const Principal& p) { return {p.user_id, p.username}; }

  // The caller may see the province's plans: its subtrees hold the province, or lie inside
  // it. Units that are not provinces hold no plan and are never "seen" here.
  bool MaySee(const Principal& p, int64_t province_id) {
    absl::StatusOr<v1::OrgUnit> unit = deps_.directory->GetOrgUnit(province_id);
    if (!unit.ok() || unit->level() != v1::ORG_UNIT_LEVEL_PROVINCE) return false;
    return MaySeeOrgUnit(*deps_.directory, p, province_id);
  }

  // Who may create or revise `plan`: NOT_FOUND when the caller may not see its province
  // (or it is no province), PERMISSION_DENIED unless a province officer covering it.
  absl::Status MayWrite(const Principal& p, const Plan& plan) {
    absl::Status s = CheckId("plan.province_id", plan.province_id());
    if (!s.ok()) return s;
    if (!MaySee(p, plan.province_id())) {
      return absl::NotFoundError(
          absl::StrCat("plan.province_id: no province ", plan.province_id()));
    }
    if (p.role != v1::ROLE_PROVINCE_OFFICER || !Covers(*deps_.directory, p, plan.province_id())) {
      return absl::PermissionDeniedError(
          "role: only province officers of the province create and revise its plan");
    }
    return absl::OkStatus();
  }

  // The request `id` in the caller's scope, with NOT_FOUND and INVALID_ARGUMENT naming
  // `field`.
  absl::Status ReadRequest(const Principal& p, const std::string& id, absl::string_view field,
                           v1::SupportRequest* out) {
    absl::StatusOr<uint64_t> op = access_.Read(p, model::kSupportRequestType, id, out);
    if (op.ok()) return absl::OkStatus();
    absl::string_view message = op.status().message();
    if (absl::StartsWith(message, "id: ")) message.remove_prefix(4);
    return absl::Status(op.status().code(), absl::StrCat(field, ": ", message));
  }

  PlanServiceDeps deps_;
  RecordAccess access_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakePlanService(const PlanServiceDeps& deps) {
  return std::make_unique<PlanServiceImpl>(deps);
}

}  // namespace kcnet::server
