// Trust on the sync stream, tried as an outside client would: raw pushes with chosen ids,
// device ids and sequences against a real KcnetServer on port 0. Each test was written
// against the code before its defence and failed there (docs/RELIABILITY.md, Security):
//   - a refused push hands out nothing outside the caller's scope, and a foreign id is
//     answered word for word like a missing one;
//   - a refusal's server values are each record once, within a byte cap;
//   - a device id belongs to the user who registered it; a borrowed one is refused;
//   - a sequence pushed again with another payload is an error, never DUPLICATE;
//   - a life-cycle transition made on a stale view of the status is refused, not merged;
//   - request events are written with their transition only, with the server's time.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/plans/budget.h"
#include "server/plans/plan_store.h"
#include "sync/model/requests.h"
#include "sync/model/rules.h"
#include "tests/sync_stream/stream_fixture.h"

namespace kcnet::sdk {
namespace {

using ::testing::HasSubstr;
using namespace ::kcnet::v1;     // NOLINT: messages and enum constants
using namespace testing_stream;  // NOLINT: the fixture and its helpers

class StreamTrustTest : public SyncStreamTest {
 protected:
  // Opens a stream as `token` with `device_id`, pushes `batch` and returns the PushAck, or
  // the stream's final status when it ends without one.
  absl::StatusOr<PushAck> RawPush(const std::string& token, const std::string& device_id,
                                  const MutationBatch& batch, Welcome* welcome = nullptr) {
    auto stub = SyncService::NewStub(channel_);
    auto ctx = As(token);
    auto stream = stub->Sync(ctx.get());
    SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(device_id);
    hello.mutable_hello()->set_schema_version(SCHEMA_VERSION_1);
    stream->Write(hello);
    SyncClientMessage push;
    *push.mutable_push() = batch;
    stream->Write(push);
    SyncServerMessage in;
    std::optional<PushAck> ack;
    while (!ack.has_value() && stream->Read(&in)) {
      if (in.has_push_ack()) ack = in.push_ack();
      if (in.has_welcome() && welcome != nullptr) *welcome = in.welcome();
    }
    stream->WritesDone();
    while (stream->Read(&in)) {
    }
    grpc::Status status = stream->Finish();
    if (ack.has_value()) return *ack;
    if (status.ok()) return absl::InternalError("the stream ended without a PushAck");
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }

  static Mutation OneChange(uint64_t seq, RecordChange change) {
    Mutation m;
    m.set_seq(seq);
    if (change.hlc() == 0) change.set_hlc(sync::HybridClock(sync::SystemClock()).Now());
    *m.add_changes() = std::move(change);
    return m;
  }

  // A facility of commune `commune` written on the server by a coordinator of its district.
  std::string ServerFacility(int64_t commune, int64_t district, const std::string& name) {
    const Account coord = MakeUser(absl::StrCat("coord-", commune, "-", name.size()),
                                   ROLE_DISTRICT_COORDINATOR, district);
    auto device = NewDevice(absl::StrCat("seed-", commune, "-", name.size()), coord.token);
    const std::string id = NewUuid();
    RecordChange f = NewFacility(id, commune, coord.id, name);
    device->Write({f});
    device->Sync();
    EXPECT_TRUE(ServerRead(kFacilityType, id).has_value());
    return id;
  }
};

// A collaborator of 90101 names the id of a facility of 90201 in an update: the refusal
// carries nothing of the foreign facility and reads exactly like the refusal of an update
// naming an id that does not exist.
TEST_F(StreamTrustTest, RefusedForeignIdReadsLikeAMissingIdAndLeaksNothing) {
  const std::string foreign = ServerFacility(c3_, d2_, "Cơ sở của xã khác");
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  const std::string missing = NewUuid();

  MutationBatch batch;
  *batch.add_mutations() = OneChange(1, Edit(kFacilityType, foreign, kNameField, Str("chiếm")));
  *batch.add_mutations() = OneChange(2, Edit(kFacilityType, missing, kNameField, Str("chiếm")));
  absl::StatusOr<PushAck> ack = RawPush(collab.token, "tablet-probe", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results_size(), 2);
  const MutationResult& on_foreign = ack->results(0);
  const MutationResult& on_missing = ack->results(1);
  EXPECT_EQ(on_foreign.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(on_missing.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(on_foreign.server_values_size(), 0) << on_foreign.DebugString();
  EXPECT_EQ(on_missing.server_values_size(), 0);
  EXPECT_EQ(on_foreign.code(), on_missing.code());
  EXPECT_EQ(on_foreign.code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(on_foreign.field(), on_missing.field());
  EXPECT_EQ(absl::StrReplaceAll(on_foreign.reason(), {{foreign, "ID"}}),
            absl::StrReplaceAll(on_missing.reason(), {{missing, "ID"}}));
  EXPECT_THAT(on_foreign.reason(), ::testing::Not(HasSubstr("org unit")));
  // The foreign facility is untouched.
  EXPECT_EQ(StringField(ServerRead(kFacilityType, foreign), kNameField), "Cơ sở của xã khác");
}

// A visit in the caller's commune naming a foreign facility, and an event naming a foreign
// request, read like references to records that do not exist.
TEST_F(StreamTrustTest, ForeignReferencesReadLikeMissingOnes) {
  const std::string foreign = ServerFacility(c3_, d2_, "Cơ sở ngoài");
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  const std::string missing = NewUuid();
  auto visit_of = [&](const std::string& facility) {
    Visit v;
    v.set_id(NewUuid());
    v.set_commune_id(c1_);
    v.set_facility_id(facility);
    v.set_collaborator_id(collab.id);
    v.set_visited_ms(NowMs());
    v.set_purpose(VISIT_PURPOSE_SURVEY);
    return Created(v);
  };
  MutationBatch batch;
  *batch.add_mutations() = OneChange(1, visit_of(foreign));
  *batch.add_mutations() = OneChange(2, visit_of(missing));
  absl::StatusOr<PushAck> ack = RawPush(collab.token, "tablet-probe", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results_size(), 2);
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack->results(0).code(), ack->results(1).code());
  EXPECT_EQ(absl::StrReplaceAll(ack->results(0).reason(), {{foreign, "ID"}}),
            absl::StrReplaceAll(ack->results(1).reason(), {{missing, "ID"}}));
  EXPECT_EQ(ack->results(0).server_values_size(), 0);
}

// One refused mutation naming the same large record two hundred times answers with the
// record once; distinct records stop at the acknowledgement's byte cap.
TEST_F(StreamTrustTest, RefusalServerValuesAreEachRecordOnceWithinACap) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto a = NewDevice("tablet-a", collab.token);
  std::vector<std::string> ids;
  const std::string big(1000, 'x');  // the most a facility's text field takes
  for (int i = 0; i < 60; ++i) {
    ids.push_back(NewUuid());
    RecordChange f = NewFacility(ids.back(), c1_, collab.id, "Cơ sở lớn");
    Facility full;
    ASSERT_TRUE(model::FromChange(f, &full).ok());
    full.set_address(big);
    full.set_main_products(big);
    full.set_owner_name(big);
    a->Write({Created(full)});
  }
  a->Sync();

  // The same record 200 times, then a change that breaks a rule: refused whole.
  Mutation same;
  same.set_seq(1);
  const uint64_t hlc = sync::HybridClock(sync::SystemClock()).Now();
  for (int i = 0; i < 199; ++i) {
    RecordChange c = Edit(kFacilityType, ids[0], kNameField, Str(absl::StrCat("tên ", i)));
    c.set_hlc(hlc);
    *same.add_changes() = c;
  }
  RecordChange bad = Edit(kFacilityType, ids[0], kNameField, Str(""));  // name is required
  bad.set_hlc(hlc);
  *same.add_changes() = bad;
  // Every record once, as many as fit.
  Mutation many;
  many.set_seq(2);
  for (const std::string& id : ids) {
    RecordChange c = Edit(kFacilityType, id, kNameField, Str(""));
    c.set_hlc(hlc);
    *many.add_changes() = c;
  }
  MutationBatch batch;
  *batch.add_mutations() = same;
  *batch.add_mutations() = many;
  absl::StatusOr<PushAck> ack = RawPush(collab.token, "tablet-big", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results_size(), 2);
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack->results(0).server_values_size(), 1);
  EXPECT_EQ(ack->results(1).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_GT(ack->results(1).server_values_size(), 0);
  EXPECT_LT(ack->results(1).server_values_size(), static_cast<int>(ids.size()));
  EXPECT_LE(ack->ByteSizeLong(), size_t{128} << 10);
}

// A pushed creation of a new facility in commune `commune` by `author`, as mutation `seq`.
Mutation CreateAt(uint64_t seq, int64_t commune, int64_t author, const std::string& name,
                  std::string* id = nullptr) {
  Mutation m;
  m.set_seq(seq);
  RecordChange c = NewFacility(NewUuid(), commune, author, name);
  c.set_hlc(sync::HybridClock(sync::SystemClock()).Now());
  if (id != nullptr) *id = *sync::UuidToText(c.id());
  *m.add_changes() = std::move(c);
  return m;
}

// User B opens a stream with A's device id to move A's sequence forward with refused
// mutations: the Hello is refused, and A's next writes are applied, not DUPLICATE.
TEST_F(StreamTrustTest, BorrowedDeviceIdIsRefusedAndTheOwnersWritesApply) {
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account b = MakeUser("collab-b", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto tablet = NewDevice("tablet-a", a.token);
  tablet->Write({NewFacility(NewUuid(), c1_, a.id, "Cơ sở đầu")});
  tablet->Sync();

  MutationBatch borrowed;
  for (uint64_t seq = 2; seq <= 4; ++seq) {
    *borrowed.add_mutations() =
        OneChange(seq, Edit(kFacilityType, NewUuid(), kNameField, Str("không có")));
  }
  borrowed.set_settled_through(4);
  absl::StatusOr<PushAck> ack = RawPush(b.token, "tablet-a", borrowed);
  EXPECT_EQ(ack.status().code(), absl::StatusCode::kPermissionDenied) << ack.status();

  const std::string next = NewUuid();
  tablet->Write({NewFacility(next, c1_, a.id, "Cơ sở thứ hai")});
  SyncResult result = tablet->Sync();
  EXPECT_TRUE(result.reports.empty());
  ASSERT_TRUE(ServerRead(kFacilityType, next).has_value());
  ExpectSameAsServer(*tablet, kFacilityType, next);

  absl::StatusOr<std::vector<sync::ServerStore::DeviceEvent>> log =
      server_->store()->DeviceLog("tablet-a");
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].event, "registered");
  EXPECT_EQ((*log)[0].owner, a.id);
}

// Two installations with one device id (a cloned tablet) both push sequence 1: the second
// payload is refused with a reason, never answered DUPLICATE and dropped.
TEST_F(StreamTrustTest, SameSequenceWithAnotherPayloadIsNeverDuplicate) {
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  std::string first, second;
  MutationBatch one, again, clone;
  *one.add_mutations() = CreateAt(1, c1_, a.id, "Bản gốc", &first);
  *clone.add_mutations() = CreateAt(1, c1_, a.id, "Bản sao", &second);
  absl::StatusOr<PushAck> ack = RawPush(a.token, "tablet-x", one);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_APPLIED);
  ack = RawPush(a.token, "tablet-x", one);  // a retry after a lost acknowledgement
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_DUPLICATE);
  ack = RawPush(a.token, "tablet-x", clone);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack->results(0).field(), "seq");
  EXPECT_THAT(ack->results(0).reason(), HasSubstr("device id"));
  EXPECT_TRUE(ServerRead(kFacilityType, first).has_value());
  EXPECT_FALSE(ServerRead(kFacilityType, second).has_value());
}

// A shared tablet changes hands: after its user releases it, the next user registers it
// with a new identity (its own node and sequence space) and its first write applies.
TEST_F(StreamTrustTest, ReleasedDeviceChangesHandsWithANewIdentity) {
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account b = MakeUser("collab-b", ROLE_COMMUNE_COLLABORATOR, c1_);
  MutationBatch by_a, by_b;
  *by_a.add_mutations() = CreateAt(1, c1_, a.id, "Của A");
  std::string b_facility;
  *by_b.add_mutations() = CreateAt(1, c1_, b.id, "Của B", &b_facility);
  Welcome welcome_a, welcome_b;
  ASSERT_TRUE(RawPush(a.token, "tablet-s", by_a, &welcome_a).ok());
  EXPECT_EQ(RawPush(b.token, "tablet-s", by_b).status().code(),
            absl::StatusCode::kPermissionDenied);

  auto stub = SyncService::NewStub(channel_);
  ReleaseDeviceRequest release;
  release.set_device_id("tablet-s");
  ReleaseDeviceResponse released;
  // Only its own user (or an administrator) releases a device; to anyone else it reads
  // like a device that is not registered.
  grpc::Status s = stub->ReleaseDevice(As(b.token).get(), release, &released);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = stub->ReleaseDevice(As(a.token).get(), release, &released);
  ASSERT_TRUE(s.ok()) << s.error_message();

  absl::StatusOr<PushAck> ack = RawPush(b.token, "tablet-s", by_b, &welcome_b);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_APPLIED);
  EXPECT_NE(welcome_a.node(), 0u);
  EXPECT_NE(welcome_b.node(), 0u);
  EXPECT_NE(welcome_a.node(), welcome_b.node());
  const std::optional<RecordChange> stored = ServerRead(kFacilityType, b_facility);
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->node(), welcome_b.node());

  absl::StatusOr<std::vector<sync::ServerStore::DeviceEvent>> log =
      server_->store()->DeviceLog("tablet-s");
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::string> events;
  for (const auto& e : *log) events.push_back(e.event);
  EXPECT_THAT(events, ::testing::ElementsAre("registered", "released", "re-registered"));
}

// The request life cycle through the unary services, and a stale view of it pushed raw.
class LifeCycleTrustTest : public StreamTrustTest {
 protected:
  void SetUp() override {
    StreamTrustTest::SetUp();
    requests_ = SupportRequestService::NewStub(channel_);
    author_ = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
    coord_ = MakeUser("coord-1", ROLE_DISTRICT_COORDINATOR, d1_);
    officer_ = MakeUser("officer-1", ROLE_PROVINCE_OFFICER, d1_);
    officer2_ = MakeUser("officer-2", ROLE_PROVINCE_OFFICER, d1_);
    // This year's plan of the province: 85,000,000 VND of national budget for machinery
    // (every approval draws on it, pushed ones too).
    Plan plan;
    plan.set_province_id(p_);
    plan.set_year(server::VietnamYear(NowMs()));
    PlanLine* line = plan.add_lines();
    line->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    line->set_funding(FUNDING_SOURCE_NATIONAL);
    line->set_planned_amount_vnd(85'000'000);
    ASSERT_TRUE(server_->plans()->CreatePlan(plan, {officer_.id, "officer-1"}, "").ok());
    FacilityService::Stub facilities(channel_);
    CreateFacilityRequest cf;
    *cf.mutable_facility() = Facility();
    cf.mutable_facility()->set_commune_id(c1_);
    cf.mutable_facility()->set_name("Cơ sở dệt");
    Facility facility;
    grpc::Status s = facilities.CreateFacility(As(author_.token).get(), cf, &facility);
    ASSERT_TRUE(s.ok()) << s.error_message();
    CreateSupportRequestRequest cr;
    SupportRequest* r = cr.mutable_support_request();
    r->set_facility_id(facility.id());
    r->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    r->set_description("Máy dệt");
    r->set_requested_amount_vnd(100'000'000);
    r->set_proposed_funding(FUNDING_SOURCE_LOCAL);
    SupportRequest created;
    s = requests_->CreateSupportRequest(As(author_.token).get(), cr, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
    id_ = created.id();
    Transition(&SupportRequestService::Stub::SubmitSupportRequest, author_);
    Transition(&SupportRequestService::Stub::EndorseSupportRequest, coord_);
  }

  using Call = grpc::Status (SupportRequestService::Stub::*)(grpc::ClientContext*,
                                                             const TransitionRequest&,
                                                             SupportRequest*);
  void Transition(Call call, const Account& who) {
    TransitionRequest t;
    t.set_id(id_);
    t.set_note("ghi chú");
    SupportRequest out;
    grpc::Status s = ((*requests_).*call)(As(who.token).get(), t, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // The request as the server holds it now, and its op.
  std::pair<SupportRequest, uint64_t> Seen() {
    std::optional<RecordChange> c = ServerRead(kSupportRequestType, id_);
    SupportRequest r;
    EXPECT_TRUE(c.has_value() && model::FromChange(*c, &r).ok());
    return {r, c.has_value() ? c->op() : 0};
  }

  // An approval made by `who` on the view `seen` (taken at op `base`), as a mutation.
  Mutation ApproveOn(const std::pair<SupportRequest, uint64_t>& seen, const Account& who,
                     int64_t amount, uint64_t hlc) {
    model::Actor actor;
    actor.user_id = who.id;
    actor.role = ROLE_PROVINCE_OFFICER;
    model::RequestActionInput input;
    input.action = REQUEST_ACTION_APPROVE;
    input.approved_amount_vnd = amount;
    input.funding = FUNDING_SOURCE_NATIONAL;
    input.note = "Duyệt";
    absl::StatusOr<std::vector<RecordChange>> changes =
        model::RequestActionChanges(seen.first, seen.second, actor, input, NowMs());
    EXPECT_TRUE(changes.ok()) << changes.status();
    Mutation m;
    m.set_seq(1);
    for (RecordChange& c : *changes) {
      c.set_hlc(hlc);
      *m.add_changes() = c;
    }
    return m;
  }

  std::unique_ptr<SupportRequestService::Stub> requests_;
  Account author_, coord_, officer_, officer2_;
  std::string id_;
};

// An officer approves offline what it saw ENDORSED; meanwhile the request was returned,
// edited and endorsed again. The approval is refused with a reason, never merged: no
// approved amount stands beside a status that stayed ENDORSED.
TEST_F(LifeCycleTrustTest, StaleApprovalIsRefusedNotMerged) {
  const auto seen = Seen();
  ASSERT_EQ(seen.first.status(), REQUEST_STATUS_ENDORSED);
  Transition(&SupportRequestService::Stub::ReturnSupportRequest, officer2_);
  UpdateSupportRequestRequest edit;
  edit.mutable_support_request()->set_id(id_);
  edit.mutable_support_request()->set_requested_amount_vnd(300'000'000);
  edit.mutable_update_mask()->add_paths("requested_amount_vnd");
  SupportRequest edited;
  grpc::Status s = requests_->UpdateSupportRequest(As(author_.token).get(), edit, &edited);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Transition(&SupportRequestService::Stub::SubmitSupportRequest, author_);
  Transition(&SupportRequestService::Stub::EndorseSupportRequest, coord_);

  MutationBatch batch;
  *batch.add_mutations() =
      ApproveOn(seen, officer_, 70'000'000, sync::HybridClock(sync::SystemClock()).Now());
  absl::StatusOr<PushAck> ack = RawPush(officer_.token, "tablet-officer", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  const MutationResult& r = ack->results(0);
  EXPECT_EQ(r.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.field(), HasSubstr("changes[0]"));
  EXPECT_THAT(r.reason(), HasSubstr("status"));
  const auto now = Seen();
  EXPECT_EQ(now.first.status(), REQUEST_STATUS_ENDORSED);
  EXPECT_EQ(now.first.approved_amount_vnd(), 0);
  // The plan check passed (70,000,000 of 85,000,000) before the merge refused the stale
  // view: the draw it wrote never counts, as its approval was never stored.
  ASSERT_TRUE(server::ConfirmCommittedDraws(*server_->plans(), *server_->store()).ok());
  absl::StatusOr<server::BudgetFigures> budget =
      server_->plans()->Budget({.province_id = p_, .year = server::VietnamYear(NowMs())});
  ASSERT_TRUE(budget.ok()) << budget.status();
  ASSERT_EQ(budget->rows.size(), 1u);
  EXPECT_EQ(budget->rows[0].approved_vnd, 0);
  EXPECT_EQ(budget->rows[0].remaining_vnd, 85'000'000);
}

// An approval made on the current view by a tablet whose clock is an hour behind: the
// transition is applied whole (status and amount), never half.
TEST_F(LifeCycleTrustTest, ApprovalOnTheCurrentViewAppliesWholeWhateverTheClock) {
  // A coordinator's tablet holds the request as endorsed.
  auto coordinator = NewDevice("tablet-coord", coord_.token);
  coordinator->Sync();
  ASSERT_EQ(
      IntField(coordinator->Read(kSupportRequestType, id_), SupportRequest::kStatusFieldNumber),
      REQUEST_STATUS_ENDORSED);
  const auto seen = Seen();
  const uint64_t behind = sync::HybridClock(sync::SystemClock()).Now() -
                          (static_cast<uint64_t>(absl::ToInt64Milliseconds(absl::Hours(1))) << 16);
  MutationBatch batch;
  *batch.add_mutations() = ApproveOn(seen, officer_, 80'000'000, behind);
  absl::StatusOr<PushAck> ack = RawPush(officer_.token, "tablet-officer", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_APPLIED) << ack->results(0).reason();
  const auto now = Seen();
  EXPECT_EQ(now.first.status(), REQUEST_STATUS_APPROVED);
  EXPECT_EQ(now.first.approved_amount_vnd(), 80'000'000);
  EXPECT_EQ(now.first.approved_funding(), FUNDING_SOURCE_NATIONAL);
  // The tablet takes the approval at its next sync, as the server holds it (no reset).
  SyncResult after = coordinator->Sync();
  EXPECT_TRUE(after.reset_buckets.empty());
  ExpectSameAsServer(*coordinator, kSupportRequestType, id_);
  ExpectSameBucket(*coordinator, c1_);
}

// A tablet's approval beyond what remains of the plan line is refused like any other
// broken rule (a tablet cannot give an over-plan reason: that approval is made online).
TEST_F(LifeCycleTrustTest, PushedApprovalBeyondThePlanIsRefused) {
  const auto seen = Seen();
  MutationBatch batch;
  *batch.add_mutations() =
      ApproveOn(seen, officer_, 90'000'000, sync::HybridClock(sync::SystemClock()).Now());
  absl::StatusOr<PushAck> ack = RawPush(officer_.token, "tablet-officer", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  const MutationResult& r = ack->results(0);
  EXPECT_EQ(r.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(r.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.reason(), HasSubstr("changes[0].approved_amount_vnd: Vượt kế hoạch"));
  EXPECT_THAT(r.reason(), HasSubstr("85,000,000 VND remain"));
  const auto now = Seen();
  EXPECT_EQ(now.first.status(), REQUEST_STATUS_ENDORSED);
  EXPECT_EQ(now.first.approved_amount_vnd(), 0);
}

// Audit events are written with the transition they describe, carry the approved amount
// only on APPROVE, and take the server's time.
TEST_F(LifeCycleTrustTest, EventsComeOnlyWithTheirTransitionAndTheServersTime) {
  const auto seen = Seen();
  auto event = [&](RequestAction action, RequestStatus from, RequestStatus to, int64_t amount,
                   int64_t at_ms, const Account& who) {
    RecordChange e = NewEvent(c1_, id_, who.id, action, from, to);
    for (FieldChange& f : *e.mutable_fields()) {
      if (f.field() == RequestEvent::kAmountVndFieldNumber)
        f.mutable_value()->set_int_value(amount);
      if (f.field() == RequestEvent::kAtMsFieldNumber) f.mutable_value()->set_int_value(at_ms);
    }
    e.set_hlc(sync::HybridClock(sync::SystemClock()).Now());
    return e;
  };
  MutationBatch batch;
  // An APPROVE event with no transition (its amount the request's, 0): a forged audit line.
  Mutation forged;
  forged.set_seq(1);
  *forged.add_changes() = event(REQUEST_ACTION_APPROVE, REQUEST_STATUS_ENDORSED,
                                REQUEST_STATUS_APPROVED, 0, NowMs(), officer_);
  // A comment claiming an amount.
  Mutation priced;
  priced.set_seq(2);
  *priced.add_changes() = event(REQUEST_ACTION_COMMENT, REQUEST_STATUS_ENDORSED,
                                REQUEST_STATUS_ENDORSED, 1'000, NowMs(), officer_);
  // A plain comment dated 1970 by the tablet: stored with the server's time.
  Mutation comment;
  comment.set_seq(3);
  RecordChange dated = event(REQUEST_ACTION_COMMENT, REQUEST_STATUS_ENDORSED,
                             REQUEST_STATUS_ENDORSED, 0, 1, officer_);
  *comment.add_changes() = dated;
  *batch.add_mutations() = forged;
  *batch.add_mutations() = priced;
  *batch.add_mutations() = comment;
  const int64_t before = NowMs();
  absl::StatusOr<PushAck> ack = RawPush(officer_.token, "tablet-officer", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results_size(), 3);
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack->results(0).reason(), HasSubstr("transition"));
  EXPECT_EQ(ack->results(1).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack->results(1).reason(), HasSubstr("amount_vnd"));
  EXPECT_EQ(ack->results(2).outcome(), MUTATION_OUTCOME_APPLIED) << ack->results(2).reason();
  const std::optional<RecordChange> stored =
      ServerRead(kRequestEventType, *sync::UuidToText(dated.id()));
  ASSERT_TRUE(stored.has_value());
  EXPECT_GE(IntField(stored, RequestEvent::kAtMsFieldNumber), before);
  EXPECT_EQ(Seen().first.status(), REQUEST_STATUS_ENDORSED);
}

// Typing local time into a tablet set to UTC puts it 7 hours ahead: its write is kept,
// with the server's clock, and the result says so.
TEST_F(StreamTrustTest, AClockHoursAheadIsRestampedNotRefused) {
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  std::string id;
  Mutation m = CreateAt(1, c1_, a.id, "Giờ sai", &id);
  const int64_t now = NowMs();
  m.mutable_changes(0)->set_hlc(sync::HlcPack(now + 7 * 3600 * 1000, 0));
  MutationBatch batch;
  *batch.add_mutations() = m;
  absl::StatusOr<PushAck> ack = RawPush(a.token, "tablet-fast", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_APPLIED) << ack->results(0).reason();
  EXPECT_NE(ack->results(0).restamped_hlc(), 0u);
  const std::optional<RecordChange> stored = ServerRead(kFacilityType, id);
  ASSERT_TRUE(stored.has_value());
  EXPECT_LT(sync::HlcWallMs(stored->hlc()), NowMs() + 60 * 1000);
  // The same push again is a retry, not another write.
  ack = RawPush(a.token, "tablet-fast", batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_DUPLICATE);
}

// A tablet 7 hours fast works offline, syncs (nothing lost, the skew measured), then its
// date is fixed: its clock comes back, and its next writes carry the right time.
TEST_F(StreamTrustTest, ATabletSevenHoursFastLosesNoOfflineWorkAndRecoversItsClock) {
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  const int64_t seven_hours = 7 * 3600 * 1000;
  sync::FakeClock clock(NowMs() + seven_hours);
  auto tablet = NewDevice("tablet-fast", a.token, &clock);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(NewUuid());
    tablet->Write({NewFacility(ids.back(), c1_, a.id, absl::StrCat("Ghi khi giờ sai ", i))});
  }
  SyncResult first = tablet->Sync();
  EXPECT_TRUE(first.reports.empty());
  for (const std::string& id : ids) {
    ASSERT_TRUE(ServerRead(kFacilityType, id).has_value()) << id;
    ExpectSameAsServer(*tablet, kFacilityType, id);
  }
  ASSERT_TRUE(first.clock_skew_ms.has_value());
  EXPECT_GT(*first.clock_skew_ms, seven_hours - 60 * 1000);
  EXPECT_FALSE(first.clock_recovered);  // the wall clock itself is still ahead

  clock.Set(NowMs());  // the date is fixed
  SyncResult fixed = tablet->Sync();
  EXPECT_TRUE(fixed.clock_recovered);
  ASSERT_TRUE(fixed.clock_skew_ms.has_value());
  EXPECT_LT(std::abs(*fixed.clock_skew_ms), 60 * 1000);
  const std::string later = NewUuid();
  tablet->Write({NewFacility(later, c1_, a.id, "Ghi sau khi sửa giờ")});
  SyncResult after = tablet->Sync();
  EXPECT_TRUE(after.reports.empty());
  const std::optional<RecordChange> stored = ServerRead(kFacilityType, later);
  ASSERT_TRUE(stored.has_value());
  EXPECT_LT(sync::HlcWallMs(stored->hlc()), NowMs() + 60 * 1000);
  EXPECT_GT(sync::HlcWallMs(stored->hlc()), NowMs() - 60 * 1000);
  ExpectSameBucket(*tablet, c1_);
}

// A user's pushes beyond the limit end the stream with RESOURCE_EXHAUSTED and a delay.
TEST_F(StreamTrustTest, PushesBeyondTheUsersLimitAreResourceExhausted) {
  server_->Shutdown(absl::Seconds(1));
  server::SyncServiceOptions limited;
  limited.push_limit = {.burst = 2, .per_second = 0.01};
  StartServer(limited);
  const Account a = MakeUser("collab-a", ROLE_COMMUNE_COLLABORATOR, c1_);
  for (uint64_t seq = 1; seq <= 2; ++seq) {
    MutationBatch batch;
    *batch.add_mutations() = CreateAt(seq, c1_, a.id, "Cơ sở");
    absl::StatusOr<PushAck> ack = RawPush(a.token, "tablet-busy", batch);
    ASSERT_TRUE(ack.ok()) << ack.status();
  }
  MutationBatch batch;
  *batch.add_mutations() = CreateAt(3, c1_, a.id, "Cơ sở");
  absl::StatusOr<PushAck> ack = RawPush(a.token, "tablet-busy", batch);
  EXPECT_EQ(ack.status().code(), absl::StatusCode::kResourceExhausted) << ack.status();
  EXPECT_THAT(ack.status().message(), HasSubstr("retry in"));
}

// The authorization matrix of the sync stream: every record type x every role x a record
// inside and one outside the caller's scope, through a download, a push and a refused push.
// Records of commune 90101 (district 901) and of 90201 (district 902) are made through the
// unary services; each role signs in at district 901 (or the province, for an
// administrator) and syncs from a new tablet.
TEST_F(LifeCycleTrustTest, SyncStreamAuthorizationMatrix) {
  // The fixture made a request (and its events) in 90101; the same in 90201 here.
  const Account far_author = MakeUser("collab-far", ROLE_COMMUNE_COLLABORATOR, c3_);
  FacilityService::Stub facilities(channel_);
  VisitService::Stub visits(channel_);
  struct Records {
    std::string facility, visit, request, event;
  };
  auto make = [&](const Account& author) {
    Records out;
    CreateFacilityRequest cf;
    cf.mutable_facility()->set_commune_id(author.id == far_author.id ? c3_ : c1_);
    cf.mutable_facility()->set_name("Cơ sở ma trận");
    Facility f;
    grpc::Status s = facilities.CreateFacility(As(author.token).get(), cf, &f);
    EXPECT_TRUE(s.ok()) << s.error_message();
    out.facility = f.id();
    CreateVisitRequest cv;
    cv.mutable_visit()->set_facility_id(f.id());
    cv.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
    Visit v;
    s = visits.CreateVisit(As(author.token).get(), cv, &v);
    EXPECT_TRUE(s.ok()) << s.error_message();
    out.visit = v.id();
    CreateSupportRequestRequest cr;
    cr.mutable_support_request()->set_facility_id(f.id());
    cr.mutable_support_request()->set_category(SUPPORT_CATEGORY_TRAINING);
    cr.mutable_support_request()->set_requested_amount_vnd(10'000'000);
    cr.mutable_support_request()->set_proposed_funding(FUNDING_SOURCE_LOCAL);
    SupportRequest r;
    s = requests_->CreateSupportRequest(As(author.token).get(), cr, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    out.request = r.id();
    ListRequestEventsRequest le;
    le.set_request_id(r.id());
    ListRequestEventsResponse events;
    s = requests_->ListRequestEvents(As(author.token).get(), le, &events);
    EXPECT_TRUE(s.ok() && events.events_size() > 0) << s.error_message();
    if (events.events_size() > 0) out.event = events.events(0).id();
    return out;
  };
  const Records near = make(author_);
  const Records far = make(far_author);
  struct Type {
    uint32_t type;
    std::string Records::*id;
    uint32_t field;  // a text field to edit
  };
  const std::vector<Type> types = {
      {kFacilityType, &Records::facility, Facility::kNameFieldNumber},
      {model::kVisitType, &Records::visit, Visit::kFindingsFieldNumber},
      {kSupportRequestType, &Records::request, SupportRequest::kDescriptionFieldNumber},
      {kRequestEventType, &Records::event, RequestEvent::kNoteFieldNumber},
  };
  struct Caller {
    kcnet::v1::Role role;
    int64_t unit;
    bool sees_near;  // its scope holds commune 90101
    bool sees_far;   // ... and 90201
  };
  const std::vector<Caller> roles = {
      {ROLE_COMMUNE_COLLABORATOR, c1_, true, false},
      {ROLE_COMMUNE_COLLABORATOR, c2_, false, false},  // a neighbour commune, same district
      {ROLE_DISTRICT_COORDINATOR, d1_, true, false},
      {ROLE_PROVINCE_OFFICER, d1_, true, false},
      {ROLE_ADMINISTRATOR, d1_, true, false},  // writes no records, reads its scope
      {ROLE_ADMINISTRATOR, p_, true, true},
  };
  int n = 0;
  for (const Caller& role : roles) {
    SCOPED_TRACE(absl::StrCat(Role_Name(role.role), " at ", role.unit));
    const Account who = MakeUser(absl::StrCat("matrix-", n), role.role, role.unit);
    auto tablet = NewDevice(absl::StrCat("tablet-matrix-", n++), who.token);
    tablet->Sync();
    // Download: the records of its scope, nothing of 90201.
    for (const Type& t : types) {
      SCOPED_TRACE(absl::StrCat("type ", t.type));
      EXPECT_EQ(tablet->Read(t.type, near.*t.id).has_value(), role.sees_near);
      EXPECT_EQ(tablet->Read(t.type, far.*t.id).has_value(), role.sees_far);
    }
    // Pushes naming each record, in and out of scope: an edit, then a refused edit (a
    // text too long for the field).
    MutationBatch batch;
    uint64_t seq = 0;
    const uint64_t hlc = sync::HybridClock(sync::SystemClock()).Now();
    for (const Type& t : types) {
      for (const Records* r : {&near, &far}) {
        RecordChange edit = Edit(t.type, r->*t.id, t.field, Str("sửa"));
        edit.set_hlc(hlc);
        std::optional<RecordChange> current = ServerRead(t.type, r->*t.id);
        edit.set_base_op(current.has_value() ? current->op() : 0);
        Mutation m;
        m.set_seq(++seq);
        *m.add_changes() = edit;
        *batch.add_mutations() = m;
        RecordChange bad = Edit(t.type, r->*t.id, t.field, Str(std::string(20000, 'x')));
        bad.set_hlc(hlc);
        Mutation refused;
        refused.set_seq(++seq);
        *refused.add_changes() = bad;
        *batch.add_mutations() = refused;
      }
    }
    std::map<std::string, std::string> before;  // record id -> its state before the push
    for (const Type& t : types) {
      for (const Records* r : {&near, &far}) {
        before[r->*t.id] = ServerRead(t.type, r->*t.id).value_or(RecordChange()).DebugString();
      }
    }
    absl::StatusOr<PushAck> ack = RawPush(who.token, absl::StrCat("raw-", n), batch);
    ASSERT_TRUE(ack.ok()) << ack.status();
    ASSERT_EQ(ack->results_size(), batch.mutations_size());
    for (const MutationResult& r : ack->results()) {
      // Whatever the outcome, nothing of 90201 comes back.
      for (const RecordChange& v : r.server_values()) {
        EXPECT_TRUE((v.bucket() == c1_ && role.sees_near) || (v.bucket() == c3_ && role.sees_far))
            << r.ShortDebugString();
      }
    }
    for (size_t i = 0; i < types.size(); ++i) {
      const MutationResult& on_far = ack->results(static_cast<int>(4 * i + 2));
      const MutationResult& on_far_bad = ack->results(static_cast<int>(4 * i + 3));
      const MutationResult& on_near = ack->results(static_cast<int>(4 * i));
      const MutationResult& on_near_bad = ack->results(static_cast<int>(4 * i + 1));
      EXPECT_EQ(on_near_bad.outcome(), MUTATION_OUTCOME_REFUSED);
      EXPECT_EQ(on_far_bad.outcome(), MUTATION_OUTCOME_REFUSED);
      if (role.role == ROLE_ADMINISTRATOR) {
        // Refused for the role, word for word the same in and out of scope.
        EXPECT_EQ(on_far.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
        EXPECT_EQ(on_far.reason(), on_near.reason());
      } else if (!role.sees_far) {
        // Outside the scope: refused as a record that does not exist, for every type.
        EXPECT_EQ(on_far.outcome(), MUTATION_OUTCOME_REFUSED);
        EXPECT_EQ(on_far.code(), static_cast<int>(absl::StatusCode::kNotFound)) << on_far.reason();
        EXPECT_EQ(on_far.server_values_size(), 0);
        EXPECT_EQ(on_far_bad.server_values_size(), 0);
      }
      if (!role.sees_near) {
        EXPECT_EQ(on_near.outcome(), MUTATION_OUTCOME_REFUSED);
        EXPECT_EQ(on_near.code(), on_far.code());
        EXPECT_EQ(on_near.server_values_size(), 0);
      } else if (role.role == ROLE_ADMINISTRATOR) {
        EXPECT_EQ(on_near.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
      }
    }
    // What the caller may not write is as it was.
    for (const Type& t : types) {
      for (const Records* r : {&near, &far}) {
        const bool may_write =
            role.role != ROLE_ADMINISTRATOR && (r == &near ? role.sees_near : role.sees_far);
        if (may_write) continue;
        std::optional<RecordChange> stored = ServerRead(t.type, r->*t.id);
        ASSERT_TRUE(stored.has_value());
        EXPECT_EQ(stored->DebugString(), before[r->*t.id]);
      }
    }
  }
}

}  // namespace
}  // namespace kcnet::sdk
