#include "sync/model/rules.h"

#include <functional>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/schema.h"

namespace kcnet::model {
namespace {

using ::kcnet::v1::RecordChange;
using ::kcnet::v1::RequestAction;
using ::kcnet::v1::RequestStatus;
using ::kcnet::v1::Role;
using ::testing::HasSubstr;
using namespace ::kcnet::v1;  // enum constants

constexpr int64_t kCommune = 11;
constexpr int64_t kOtherCommune = 99;
constexpr int64_t kAuthor = 7;
constexpr int64_t kSomeoneElse = 8;

const char* kFacilityId = "0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70";
const char* kRequestId = "0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e71";

// Records the checks read, in memory.
class MapReader : public sync::RecordReader {
 public:
  void Put(const google::protobuf::Message& m) {
    RecordChange c = *ToChange(m);
    c.set_op(1);
    c.set_bucket(kCommune);
    records_[{c.type(), c.id()}] = c;
  }
  absl::StatusOr<std::optional<RecordChange>> Read(uint32_t type, absl::string_view id) override {
    auto it = records_.find({type, std::string(id)});
    if (it == records_.end()) return std::optional<RecordChange>();
    return std::optional<RecordChange>(it->second);
  }

 private:
  std::map<std::pair<uint32_t, std::string>, RecordChange> records_;
};

Actor MakeActor(int64_t user, Role role) {
  return Actor{user, role, [](int64_t commune) { return commune == kCommune; }};
}

// The life cycle as DOMAIN.md states it, written out independently of rules.cc:
// (action, from) -> (to, roles, who).
struct Expected {
  RequestStatus to;
  std::vector<Role> roles;
  enum { kAnyone, kAuthorOnly, kNotAuthor } who;
};
std::map<std::pair<RequestAction, RequestStatus>, Expected> ExpectedTable() {
  const std::vector<Role> drafters = {ROLE_COMMUNE_COLLABORATOR, ROLE_DISTRICT_COORDINATOR};
  return {
      {{REQUEST_ACTION_SUBMIT, REQUEST_STATUS_DRAFT},
       {REQUEST_STATUS_SUBMITTED, drafters, Expected::kAuthorOnly}},
      {{REQUEST_ACTION_SUBMIT, REQUEST_STATUS_RETURNED},
       {REQUEST_STATUS_SUBMITTED, drafters, Expected::kAuthorOnly}},
      {{REQUEST_ACTION_ENDORSE, REQUEST_STATUS_SUBMITTED},
       {REQUEST_STATUS_ENDORSED, {ROLE_DISTRICT_COORDINATOR}, Expected::kNotAuthor}},
      {{REQUEST_ACTION_RETURN, REQUEST_STATUS_SUBMITTED},
       {REQUEST_STATUS_RETURNED, {ROLE_DISTRICT_COORDINATOR}, Expected::kAnyone}},
      {{REQUEST_ACTION_REJECT, REQUEST_STATUS_SUBMITTED},
       {REQUEST_STATUS_REJECTED, {ROLE_DISTRICT_COORDINATOR}, Expected::kAnyone}},
      {{REQUEST_ACTION_APPROVE, REQUEST_STATUS_ENDORSED},
       {REQUEST_STATUS_APPROVED, {ROLE_PROVINCE_OFFICER}, Expected::kAnyone}},
      {{REQUEST_ACTION_RETURN, REQUEST_STATUS_ENDORSED},
       {REQUEST_STATUS_RETURNED, {ROLE_PROVINCE_OFFICER}, Expected::kAnyone}},
      {{REQUEST_ACTION_REJECT, REQUEST_STATUS_ENDORSED},
       {REQUEST_STATUS_REJECTED, {ROLE_PROVINCE_OFFICER}, Expected::kAnyone}},
      {{REQUEST_ACTION_START, REQUEST_STATUS_APPROVED},
       {REQUEST_STATUS_IN_PROGRESS,
        {ROLE_PROVINCE_OFFICER, ROLE_DISTRICT_COORDINATOR},
        Expected::kAnyone}},
      {{REQUEST_ACTION_COMPLETE, REQUEST_STATUS_IN_PROGRESS},
       {REQUEST_STATUS_COMPLETED, {ROLE_PROVINCE_OFFICER}, Expected::kAnyone}},
      {{REQUEST_ACTION_CANCEL, REQUEST_STATUS_DRAFT},
       {REQUEST_STATUS_CANCELLED, drafters, Expected::kAuthorOnly}},
      {{REQUEST_ACTION_CANCEL, REQUEST_STATUS_SUBMITTED},
       {REQUEST_STATUS_CANCELLED, drafters, Expected::kAuthorOnly}},
      {{REQUEST_ACTION_CANCEL, REQUEST_STATUS_RETURNED},
       {REQUEST_STATUS_CANCELLED, drafters, Expected::kAuthorOnly}},
  };
}

// Record ids are version 7 UUIDs: the creation millisecond first, so later ids sort later.
TEST(RecordIdTest, IdsAreTimeOrderedVersion7Uuids) {
  const absl::Time t = absl::FromUnixMillis(1764000000123);
  const std::string a = NewRecordIdBytes(t);
  ASSERT_EQ(a.size(), 16u);
  EXPECT_EQ(static_cast<uint8_t>(a[6]) >> 4, 7);  // version
  EXPECT_EQ(static_cast<uint8_t>(a[8]) >> 6, 2);  // RFC 9562 variant
  uint64_t ms = 0;
  for (int i = 0; i < 6; ++i) ms = ms << 8 | static_cast<uint8_t>(a[i]);
  EXPECT_EQ(ms, 1764000000123u);
  EXPECT_NE(NewRecordIdBytes(t), a);  // same millisecond: random bits differ
  EXPECT_LT(a, NewRecordIdBytes(t + absl::Milliseconds(1)));
  EXPECT_LT(*sync::UuidToText(a), *sync::UuidToText(NewRecordIdBytes(t + absl::Milliseconds(1))));
  const std::string text = NewRecordId();
  EXPECT_TRUE(sync::UuidFromText(text).ok()) << text;
  EXPECT_EQ(text[14], '7');
}

TEST(RulesTest, EveryActionFromEveryStatusForEveryRoleMatchesTheLifeCycle) {
  const auto expected = ExpectedTable();
  int allowed = 0, refused = 0;
  for (int a = REQUEST_ACTION_SUBMIT; a <= REQUEST_ACTION_CANCEL; ++a) {
    for (int s = REQUEST_STATUS_DRAFT; s <= REQUEST_STATUS_CANCELLED; ++s) {
      for (int r = ROLE_COMMUNE_COLLABORATOR; r <= ROLE_ADMINISTRATOR; ++r) {
        for (bool is_author : {true, false}) {
          const auto action = static_cast<RequestAction>(a);
          const auto from = static_cast<RequestStatus>(s);
          const auto role = static_cast<Role>(r);
          const Actor actor = MakeActor(is_author ? kAuthor : kSomeoneElse, role);
          auto got = FindTransition(action, from, actor, kAuthor);
          auto it = expected.find({action, from});
          bool want = false;
          if (it != expected.end()) {
            const Expected& e = it->second;
            want = std::find(e.roles.begin(), e.roles.end(), role) != e.roles.end() &&
                   (e.who == Expected::kAnyone || (e.who == Expected::kAuthorOnly) == is_author);
          }
          SCOPED_TRACE(absl::StrCat(RequestAction_Name(action), " from ", RequestStatus_Name(from),
                                    " by ", Role_Name(role), is_author ? " (author)" : ""));
          EXPECT_EQ(got.ok(), want) << got.status();
          if (got.ok()) {
            EXPECT_EQ((*got)->to, it->second.to);
            ++allowed;
          } else {
            ++refused;
            // A wrong state is FAILED_PRECONDITION; a wrong person, PERMISSION_DENIED.
            EXPECT_EQ(got.status().code(), it == expected.end()
                                               ? absl::StatusCode::kFailedPrecondition
                                               : absl::StatusCode::kPermissionDenied);
          }
        }
      }
    }
  }
  EXPECT_GT(allowed, 10);
  EXPECT_GT(refused, 500);
}

class CheckMutationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Facility f;
    f.set_id(kFacilityId);
    f.set_commune_id(kCommune);
    f.set_name("HTX Mây tre đan");
    f.set_created_by(kAuthor);
    reader_.Put(f);
  }

  SupportRequest Draft() {
    SupportRequest r;
    r.set_id(kRequestId);
    r.set_commune_id(kCommune);
    r.set_facility_id(kFacilityId);
    r.set_author_id(kAuthor);
    r.set_status(REQUEST_STATUS_DRAFT);
    r.set_requested_amount_vnd(50000000);
    return r;
  }

  RequestEvent EventFor(const SupportRequest& r, RequestAction action, RequestStatus from,
                        RequestStatus to, int64_t actor) {
    RequestEvent e;
    e.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e72");
    e.set_commune_id(r.commune_id());
    e.set_request_id(r.id());
    e.set_actor_id(actor);
    e.set_action(action);
    e.set_from_status(from);
    e.set_to_status(to);
    return e;
  }

  absl::Status Check(const Actor& actor, std::vector<RecordChange> changes) {
    kcnet::v1::Mutation m;
    for (auto& c : changes) *m.add_changes() = c;
    return CheckMutation(actor, m, reader_);
  }

  static RecordChange StatusChange(const SupportRequest& r, RequestStatus to) {
    RecordChange c = *ToChange(r);
    c.clear_fields();
    auto* f = c.add_fields();
    f->set_field(SupportRequest::kStatusFieldNumber);
    f->mutable_value()->set_int_value(to);
    return c;
  }

  MapReader reader_;
};

TEST_F(CheckMutationTest, ACollaboratorDraftsARequestForAFacilityInScope) {
  EXPECT_TRUE(Check(MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR), {*ToChange(Draft())}).ok());
}

TEST_F(CheckMutationTest, WritesAreRefusedWithTheFieldAndTheReason) {
  const Actor collab = MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR);
  SupportRequest r = Draft();
  EXPECT_THAT(Check(MakeActor(kAuthor, ROLE_ADMINISTRATOR), {*ToChange(r)}).message(),
              HasSubstr("administrators manage accounts"));
  EXPECT_THAT(Check(MakeActor(kAuthor, ROLE_PROVINCE_OFFICER), {*ToChange(r)}).message(),
              HasSubstr("changes[0].type: support requests are drafted by"));
  r.set_commune_id(kOtherCommune);
  absl::Status s = Check(collab, {*ToChange(r)});
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("changes[0].commune_id: org unit 99 is outside"));
  r = Draft();
  r.set_status(REQUEST_STATUS_APPROVED);
  EXPECT_THAT(Check(collab, {*ToChange(r)}).message(), HasSubstr("a new request is a DRAFT"));
  r = Draft();
  r.set_author_id(kSomeoneElse);
  EXPECT_THAT(Check(collab, {*ToChange(r)}).message(), HasSubstr("author_id: must be you"));
  r = Draft();
  r.set_facility_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e79");
  s = Check(collab, {*ToChange(r)});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("facility_id: facility"));
}

TEST_F(CheckMutationTest, ATransitionNeedsItsRoleAndItsAuditEvent) {
  SupportRequest r = Draft();
  reader_.Put(r);
  const Actor author = MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR);
  // Submitting without the event is refused; with it, accepted.
  absl::Status s = Check(author, {StatusChange(r, REQUEST_STATUS_SUBMITTED)});
  EXPECT_THAT(s.message(), HasSubstr("needs its request event"));
  EXPECT_TRUE(Check(author, {StatusChange(r, REQUEST_STATUS_SUBMITTED),
                             *ToChange(EventFor(r, REQUEST_ACTION_SUBMIT, REQUEST_STATUS_DRAFT,
                                                REQUEST_STATUS_SUBMITTED, kAuthor))})
                  .ok());
  // Skipping states is refused.
  s = Check(author, {StatusChange(r, REQUEST_STATUS_APPROVED)});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(),
              HasSubstr("changes[0].status: a request cannot go from DRAFT to APPROVED"));
  // Someone else may not submit the author's draft.
  s = Check(MakeActor(kSomeoneElse, ROLE_COMMUNE_COLLABORATOR),
            {StatusChange(r, REQUEST_STATUS_SUBMITTED)});
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(CheckMutationTest, ApprovalChecksTheAmountAndFunding) {
  SupportRequest r = Draft();
  r.set_status(REQUEST_STATUS_ENDORSED);
  reader_.Put(r);
  const Actor officer = MakeActor(kSomeoneElse, ROLE_PROVINCE_OFFICER);
  auto approve = [&](int64_t amount, FundingSource funding) {
    RecordChange c = StatusChange(r, REQUEST_STATUS_APPROVED);
    auto* a = c.add_fields();
    a->set_field(SupportRequest::kApprovedAmountVndFieldNumber);
    a->mutable_value()->set_int_value(amount);
    auto* f = c.add_fields();
    f->set_field(SupportRequest::kApprovedFundingFieldNumber);
    f->mutable_value()->set_int_value(funding);
    RequestEvent e = EventFor(r, REQUEST_ACTION_APPROVE, REQUEST_STATUS_ENDORSED,
                              REQUEST_STATUS_APPROVED, kSomeoneElse);
    e.set_amount_vnd(amount);  // an APPROVE event carries the approved amount
    return Check(officer, {c, *ToChange(e)});
  };
  EXPECT_TRUE(approve(40000000, FUNDING_SOURCE_LOCAL).ok());
  EXPECT_THAT(approve(60000000, FUNDING_SOURCE_LOCAL).message(),
              HasSubstr("approved_amount_vnd: must be above 0 and at most the requested"));
  EXPECT_THAT(approve(0, FUNDING_SOURCE_LOCAL).message(), HasSubstr("approved_amount_vnd"));
  EXPECT_THAT(approve(100, FUNDING_SOURCE_UNSPECIFIED).message(),
              HasSubstr("approved_funding: must be LOCAL or NATIONAL"));
}

TEST_F(CheckMutationTest, OnlyDraftsAndReturnedRequestsAreEditedAndOnlyByTheAuthor) {
  SupportRequest r = Draft();
  r.set_status(REQUEST_STATUS_SUBMITTED);
  reader_.Put(r);
  RecordChange edit = *ToChange(r);
  edit.clear_fields();
  auto* f = edit.add_fields();
  f->set_field(SupportRequest::kDescriptionFieldNumber);
  f->mutable_value()->set_string_value("more detail");
  absl::Status s = Check(MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR), {edit});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("a SUBMITTED request cannot be edited"));
  s = Check(MakeActor(kSomeoneElse, ROLE_DISTRICT_COORDINATOR), {edit});
  EXPECT_THAT(s.message(), HasSubstr("only the request's author edits it"));
}

TEST_F(CheckMutationTest, RequestEventsAreAppendOnly) {
  SupportRequest r = Draft();
  reader_.Put(r);
  RequestEvent e =
      EventFor(r, REQUEST_ACTION_COMMENT, REQUEST_STATUS_DRAFT, REQUEST_STATUS_DRAFT, kAuthor);
  const Actor author = MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR);
  EXPECT_TRUE(Check(author, {*ToChange(e)}).ok());
  reader_.Put(e);
  e.set_note("rewritten history");
  EXPECT_THAT(Check(author, {*ToChange(e)}).message(), HasSubstr("append-only"));
  e.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e73");
  e.set_actor_id(kSomeoneElse);
  EXPECT_THAT(Check(author, {*ToChange(e)}).message(), HasSubstr("actor_id: must be you"));
}

TEST_F(CheckMutationTest, VisitsBelongToTheirCollaborator) {
  Visit v;
  v.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e74");
  v.set_commune_id(kCommune);
  v.set_facility_id(kFacilityId);
  v.set_collaborator_id(kAuthor);
  EXPECT_TRUE(Check(MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR), {*ToChange(v)}).ok());
  EXPECT_THAT(Check(MakeActor(kSomeoneElse, ROLE_COMMUNE_COLLABORATOR), {*ToChange(v)}).message(),
              HasSubstr("collaborator_id: must be you"));
  v.set_commune_id(12);
  EXPECT_THAT(
      Check(Actor{kAuthor, ROLE_COMMUNE_COLLABORATOR, [](int64_t) { return true; }}, {*ToChange(v)})
          .message(),
      HasSubstr("commune_id: must be the facility's commune"));
}

TEST_F(CheckMutationTest, AttachmentsAreCheckedFieldByField) {
  const Actor author = MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR);
  Attachment a;
  a.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e75");
  a.set_commune_id(kCommune);
  a.set_owner_type(ATTACHMENT_OWNER_TYPE_FACILITY);
  a.set_owner_id(kFacilityId);
  a.set_sha256(std::string(64, 'a'));
  a.set_size_bytes(2'000'000);
  a.set_media_type("image/jpeg");
  a.set_author_id(kAuthor);
  ASSERT_TRUE(Check(author, {*ToChange(a)}).ok()) << Check(author, {*ToChange(a)});

  auto refusal = [&](const std::function<void(Attachment*)>& change) {
    Attachment bad = a;
    change(&bad);
    return Check(author, {*ToChange(bad)});
  };
  EXPECT_THAT(refusal([](Attachment* x) { x->set_size_bytes(0); }).message(),
              HasSubstr("size_bytes: must be above 0"));
  EXPECT_THAT(refusal([](Attachment* x) { x->set_size_bytes(kAttachmentMaxBytes + 1); }).message(),
              HasSubstr("size_bytes"));
  EXPECT_THAT(refusal([](Attachment* x) { x->set_media_type("image/gif"); }).message(),
              HasSubstr("media_type"));
  EXPECT_THAT(refusal([](Attachment* x) { x->set_sha256(std::string(64, 'A')); }).message(),
              HasSubstr("sha256"));
  EXPECT_THAT(refusal([](Attachment* x) { x->set_sha256("abc"); }).message(), HasSubstr("sha256"));
  EXPECT_THAT(refusal([](Attachment* x) { x->set_author_id(kSomeoneElse); }).message(),
              HasSubstr("author_id: must be you"));
  EXPECT_THAT(refusal([](Attachment* x) {
                x->set_owner_type(ATTACHMENT_OWNER_TYPE_UNSPECIFIED);
              }).message(),
              HasSubstr("owner_type"));
  // An owner that does not exist, or one out of scope, reads the same: NOT_FOUND owner_id.
  absl::Status missing =
      refusal([](Attachment* x) { x->set_owner_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f"); });
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("owner_id"));
  absl::Status not_visible = Check(MakeActor(kAuthor, ROLE_COMMUNE_COLLABORATOR), [&] {
    Attachment v = a;
    v.set_owner_type(ATTACHMENT_OWNER_TYPE_VISIT);  // no visit with the facility's id
    return std::vector<RecordChange>{*ToChange(v)};
  }());
  EXPECT_EQ(not_visible.code(), absl::StatusCode::kNotFound);

  // Once stored, the content fields never change; the caption may.
  reader_.Put(a);
  Attachment edit = a;
  edit.set_caption("Máy sấy mới");
  EXPECT_TRUE(Check(author, {*ToChange(edit)}).ok());
  edit.set_sha256(std::string(64, 'b'));
  EXPECT_THAT(Check(author, {*ToChange(edit)}).message(), HasSubstr("sha256: may not change"));
}

}  // namespace
}  // namespace kcnet::model
