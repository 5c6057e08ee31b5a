// Trust holes of issue 13 (part 5) on a real server: conflict review out of scope and
// twice, repeated enums with unknown values, buckets that are not communes, refusals that
// do not name their field, and a retried CreateFacility. Each test failed on the code
// before its fix.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/records/record_access.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/model/rules.h"
#include "tests/server/services/test_server.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    Directory& d = server_.directory();
    const int64_t province = d.CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    district_ = d.CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province)->id();
    commune_ = d.CreateOrgUnit("90101", "Xã", ORG_UNIT_LEVEL_COMMUNE, district_)->id();
    // A district with no commune yet: its coordinator's scope holds no bucket.
    empty_district_ =
        d.CreateOrgUnit("902", "Huyện trống", ORG_UNIT_LEVEL_DISTRICT, province)->id();
    ASSERT_TRUE(
        d.CreateUser("collab1", "C", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_}).ok());
    ASSERT_TRUE(
        d.CreateUser("coord1", "D", kPassword, ROLE_DISTRICT_COORDINATOR, {district_}).ok());
    ASSERT_TRUE(
        d.CreateUser("coord2", "D2", kPassword, ROLE_DISTRICT_COORDINATOR, {district_}).ok());
    ASSERT_TRUE(
        d.CreateUser("coord.empty", "E", kPassword, ROLE_DISTRICT_COORDINATOR, {empty_district_})
            .ok());
    channel_ = server_.Channel();
    sync_ = SyncService::NewStub(channel_);
    facilities_ = FacilityService::NewStub(channel_);
    visits_ = VisitService::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user) {
    auto context = std::make_unique<grpc::ClientContext>();
    auto it = tokens_.find(user);
    if (it == tokens_.end()) it = tokens_.emplace(user, SignIn(channel_, user, kPassword)).first;
    Authorize(context.get(), it->second);
    return context;
  }

  // One change of facility `id` by `node`, setting `fields` (number -> value).
  PushAck Write(const std::string& node, const std::string& id, uint64_t base_op,
                const std::vector<std::pair<uint32_t, Value>>& fields,
                const sync::MutationValidator& validator = nullptr) {
    MutationBatch batch;
    RecordChange* change = batch.add_mutations()->add_changes();
    change->set_type(model::kFacilityType);
    change->set_id(id);
    change->set_base_op(base_op);
    change->set_hlc(server_.server().store()->clock().Now());
    for (const auto& [number, value] : fields) {
      FieldChange* f = change->add_fields();
      f->set_field(number);
      *f->mutable_value() = value;
    }
    absl::StatusOr<PushAck> ack =
        server_.server().store()->Apply(sync::Writer{"", sync::NodeIdFor(node)}, batch, validator);
    EXPECT_TRUE(ack.ok()) << ack.status();
    return ack.ok() ? *ack : PushAck();
  }

  static Value Text(const std::string& text) {
    Value v;
    v.set_string_value(text);
    return v;
  }
  static Value Int(int64_t n) {
    Value v;
    v.set_int_value(n);
    return v;
  }

  // A facility whose name "B" (by tablet one) was overwritten by "C" (tablet two, which had
  // not seen "B"): one conflict, loser "B". Returns the facility id (16 bytes).
  std::string MakeConflict() {
    const std::string id = *sync::UuidFromText(model::NewRecordId());
    PushAck ack = Write("tablet-1", id, 0, {{2, Int(commune_)}, {3, Text("A")}});
    const uint64_t created = ack.results(0).op();
    Write("tablet-1", id, created, {{3, Text("B")}});
    ack = Write("tablet-2", id, created, {{3, Text("C")}});
    EXPECT_EQ(ack.results(0).outcome(), MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
    return id;
  }

  uint64_t ConflictId() {
    auto conflicts = server_.server().store()->ListConflicts({commune_}, true, 0, 100);
    EXPECT_TRUE(conflicts.ok());
    EXPECT_FALSE(conflicts->empty());
    return conflicts->empty() ? 0 : conflicts->front().id();  // the name's
  }

  std::string NameOf(const std::string& id) {
    auto record = server_.server().store()->ReadRecord(model::kFacilityType, id);
    EXPECT_TRUE(record.ok() && record->has_value());
    Facility f;
    EXPECT_TRUE(model::FromChange(**record, &f).ok());
    return f.name();
  }

  TestServer server_;
  int64_t district_ = 0, commune_ = 0, empty_district_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::map<std::string, std::string> tokens_;
  std::unique_ptr<SyncService::Stub> sync_;
  std::unique_ptr<FacilityService::Stub> facilities_;
  std::unique_ptr<VisitService::Stub> visits_;
};

TEST_F(TrustTest, ResolveConflictByACallerWithoutCommunesIsNotFound) {
  MakeConflict();
  const uint64_t id = ConflictId();
  ResolveConflictRequest request;
  request.set_id(id);
  Conflict out;
  grpc::Status status = sync_->ResolveConflict(As("coord.empty").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  // Word for word the answer for a conflict that does not exist.
  ResolveConflictRequest missing;
  missing.set_id(id + 1000);
  grpc::Status none = sync_->ResolveConflict(As("coord1").get(), missing, &out);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), absl::StrCat("id: conflict ", id, " not found"));
  // And nothing changed: the conflict is still open.
  auto open = server_.server().store()->ListConflicts({commune_}, false, 0, 10);
  ASSERT_TRUE(open.ok());
  EXPECT_EQ(open->size(), 1u);
}

TEST_F(TrustTest, AResolvedConflictCannotBeResolvedAgain) {
  const std::string facility = MakeConflict();
  ResolveConflictRequest request;
  request.set_id(ConflictId());
  request.set_restore_loser(true);
  Conflict out;
  grpc::Status status = sync_->ResolveConflict(As("coord1").get(), request, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(out.resolved());
  EXPECT_EQ(NameOf(facility), "B");

  // Someone edits the name since; a second coordinator's stale restore must not undo it.
  auto record = server_.server().store()->ReadRecord(model::kFacilityType, facility);
  Write("tablet-2", facility, (*record)->op(), {{3, Text("D")}});
  status = sync_->ResolveConflict(As("coord2").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("already resolved"));
  EXPECT_EQ(NameOf(facility), "D");
  request.set_restore_loser(false);
  status = sync_->ResolveConflict(As("coord2").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(TrustTest, ARefusedRestoreLeavesTheConflictOpen) {
  const std::string facility = MakeConflict();
  // The record is deleted: nothing to restore, and the conflict stays open.
  MutationBatch batch;
  RecordChange* tomb = batch.add_mutations()->add_changes();
  tomb->set_type(model::kFacilityType);
  tomb->set_id(facility);
  tomb->set_deleted(true);
  tomb->set_hlc(server_.server().store()->clock().Now());
  ASSERT_TRUE(
      server_.server().store()->Apply(sync::Writer{"", sync::NodeIdFor("tablet-1")}, batch).ok());
  ResolveConflictRequest request;
  request.set_id(ConflictId());
  request.set_restore_loser(true);
  Conflict out;
  grpc::Status status = sync_->ResolveConflict(As("coord1").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  auto open = server_.server().store()->ListConflicts({commune_}, false, 0, 10);
  ASSERT_TRUE(open.ok());
  EXPECT_FALSE(open->empty());
}

TEST_F(TrustTest, UnknownRepeatedEnumValuesAreRefusedOnTheUnaryPath) {
  CreateFacilityRequest create;
  create.mutable_facility()->set_commune_id(commune_);
  create.mutable_facility()->set_name("Cơ sở");
  Facility facility;
  grpc::Status status = facilities_->CreateFacility(As("collab1").get(), create, &facility);
  ASSERT_TRUE(status.ok()) << status.error_message();

  CreateVisitRequest request;
  request.mutable_visit()->set_facility_id(facility.id());
  request.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
  request.mutable_visit()->add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  request.mutable_visit()->add_needs(static_cast<SupportCategory>(999));
  Visit visit;
  status = visits_->CreateVisit(As("collab1").get(), request, &visit);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("needs"));
  EXPECT_THAT(status.error_message(), HasSubstr("999"));
  ListVisitsRequest list;
  list.set_facility_id(facility.id());
  ListVisitsResponse visits;
  ASSERT_TRUE(visits_->ListVisits(As("collab1").get(), list, &visits).ok());
  EXPECT_EQ(visits.visits_size(), 0);  // nothing stored
}

TEST_F(TrustTest, TheSyncPathRefusesABucketThatIsNotACommuneAndNamesTheField) {
  absl::StatusOr<Principal> coord =
      server_.directory().Authenticate(SignIn(channel_, "coord1", kPassword));
  ASSERT_TRUE(coord.ok());
  const std::string id = *sync::UuidFromText(model::NewRecordId());
  Facility f;
  f.set_id(*sync::UuidToText(id));
  f.set_commune_id(district_);  // in the coordinator's scope, but a district
  f.set_name("Cơ sở vô hình");
  f.set_created_by(coord->user_id);
  absl::StatusOr<RecordChange> change = model::ToChange(f);
  ASSERT_TRUE(change.ok());
  change->set_hlc(server_.server().store()->clock().Now());
  MutationBatch batch;
  *batch.add_mutations()->add_changes() = *change;
  absl::StatusOr<PushAck> ack =
      server_.server().store()->Apply(sync::Writer{"", sync::NodeIdFor("user:coord1")}, batch,
                                      model::ValidatorFor(ActorFor(&server_.directory(), *coord)));
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack->results(0).field(), "changes[0].commune_id");
  EXPECT_THAT(ack->results(0).reason(), HasSubstr("commune"));
  auto stored = server_.server().store()->ReadRecord(model::kFacilityType, id);
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());
}

TEST_F(TrustTest, EveryValidatorRefusalNamesItsField) {
  absl::StatusOr<Principal> collab =
      server_.directory().Authenticate(SignIn(channel_, "collab1", kPassword));
  ASSERT_TRUE(collab.ok());
  // A facility without a name: the rules refuse it.
  Facility f;
  f.set_id(model::NewRecordId());
  f.set_commune_id(commune_);
  f.set_created_by(collab->user_id);
  absl::StatusOr<RecordChange> change = model::ToChange(f);
  ASSERT_TRUE(change.ok());
  change->set_hlc(server_.server().store()->clock().Now());
  MutationBatch batch;
  *batch.add_mutations()->add_changes() = *change;
  absl::StatusOr<PushAck> ack =
      server_.server().store()->Apply(sync::Writer{"", sync::NodeIdFor("user:collab1")}, batch,
                                      model::ValidatorFor(ActorFor(&server_.directory(), *collab)));
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack->results(0).field(), "changes[0].name");
}

TEST_F(TrustTest, ARetriedCreateFacilityIsIdempotent) {
  CreateFacilityRequest create;
  create.mutable_facility()->set_id(model::NewRecordId());
  create.mutable_facility()->set_commune_id(commune_);
  create.mutable_facility()->set_name("Cơ sở bánh đa");
  create.mutable_facility()->set_workers(8);
  Facility first, second;
  grpc::Status status = facilities_->CreateFacility(As("collab1").get(), create, &first);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The answer was lost; the client sends the same request again.
  status = facilities_->CreateFacility(As("collab1").get(), create, &second);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(second.SerializeAsString(), first.SerializeAsString());

  // The same id with other content is another facility: refused, nothing changed.
  create.mutable_facility()->set_name("Cơ sở khác");
  status = facilities_->CreateFacility(As("collab1").get(), create, &second);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("facility.id"));
  EXPECT_EQ(NameOf(*sync::UuidFromText(first.id())), "Cơ sở bánh đa");
  // Another user retrying someone else's id gets the same answer.
  status = facilities_->CreateFacility(As("coord1").get(), create, &second);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << status.error_message();
}

}  // namespace
}  // namespace kcnet::server
