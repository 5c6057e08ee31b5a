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
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "tests/sync_stream/stream_fixture.h"

namespace kcnet::sdk {
namespace {

using ::testing::HasSubstr;
using namespace ::kcnet::v1;     // NOLINT: messages and enum constants
using namespace testing_stream;  // NOLINT: the fixture and its helpers

class TrustTest : public SyncStreamTest {
 protected:
  // Opens a stream as `token` with `device_id`, pushes `batch` and returns the PushAck, or
  // the stream's final status when it ends without one.
  absl::StatusOr<PushAck> RawPush(const std::string& token, const std::string& device_id,
                                  const MutationBatch& batch) {
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
TEST_F(TrustTest, RefusedForeignIdReadsLikeAMissingIdAndLeaksNothing) {
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
TEST_F(TrustTest, ForeignReferencesReadLikeMissingOnes) {
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
TEST_F(TrustTest, RefusalServerValuesAreEachRecordOnceWithinACap) {
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

}  // namespace
}  // namespace kcnet::sdk
