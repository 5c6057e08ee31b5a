// The sync stream end to end: a real KcnetServer on port 0, real channels, SyncClient
// driving real DeviceStore files in a temp dir. Concurrent edits and their conflict
// report, a forbidden transition rolled back, an interrupted download resumed from its
// cursor, reassignment (push, then purge), checksum repair, live updates on an open
// stream, and bad input.
#include "tests/sync_stream/stream_fixture.h"

namespace kcnet::sdk {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::kcnet::v1;     // NOLINT: messages and enum constants
using namespace testing_stream;  // NOLINT: the fixture and its helpers

// (a) Two devices edit the same field offline; the later clock wins everywhere, the
// conflict is recorded for the coordinator, and the device whose edit lost is told.
TEST_P(SyncStreamStoreTest, ConcurrentEditsConvergeAndTheLoserIsTold) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account coord = MakeUser("coord1", ROLE_DISTRICT_COORDINATOR, d1_);
  const int64_t t0 = NowMs();
  sync::FakeClock clock_a(t0), clock_b(t0);
  auto a = NewDevice("tablet-a", collab.token, &clock_a);
  auto b = NewDevice("tablet-b", coord.token, &clock_b);
  ASSERT_TRUE(a && b);

  const std::string f = NewUuid();
  a->Write({NewFacility(f, c1_, collab.id, "Cơ sở mây tre đan")});
  SyncResult first = a->Sync();
  EXPECT_EQ(first.pushed_mutations, 1u);
  EXPECT_TRUE(first.reports.empty());
  EXPECT_THAT(first.welcome.buckets(), ElementsAre(c1_));
  SyncResult fetched = b->Sync();
  EXPECT_THAT(fetched.welcome.buckets(), ElementsAre(c1_, c2_));
  ExpectSameAsServer(*b, kFacilityType, f);

  // Offline: A edits first (earlier clock), B later (later clock).
  clock_a.Set(t0 + 1000);
  const uint64_t seq_a = a->Write({Edit(kFacilityType, f, kNameField, Str("Tên của A"))});
  clock_b.Set(t0 + 2000);
  b->Write({Edit(kFacilityType, f, kNameField, Str("Tên của B"))});
  EXPECT_EQ(StringField(a->Read(kFacilityType, f), kNameField), "Tên của A");

  // B pushes first (its edit wins and is not concurrent with anything stored); A pushes its
  // older concurrent edit second: it loses and A's acknowledgement carries the conflict.
  SyncResult b_push = b->Sync();
  EXPECT_TRUE(b_push.reports.empty());
  SyncResult a_push = a->Sync();
  ASSERT_EQ(a_push.reports.size(), 1u);
  const sync::Report& report = a_push.reports[0];
  EXPECT_EQ(report.mutation.seq(), seq_a);
  EXPECT_EQ(report.result.outcome(), MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
  ASSERT_EQ(report.result.conflicts_size(), 1);
  const Conflict& conflict = report.result.conflicts(0);
  EXPECT_EQ(conflict.record_id(), Bytes(f));
  EXPECT_EQ(conflict.field(), kNameField);
  EXPECT_EQ(conflict.winner_value().string_value(), "Tên của B");
  EXPECT_EQ(conflict.loser_value().string_value(), "Tên của A");
  EXPECT_EQ(conflict.loser_mutation().device_id(), "tablet-a");
  EXPECT_EQ(conflict.loser_mutation().seq(), seq_a);
  absl::StatusOr<std::vector<sync::Report>> kept = a->store->ListReports();
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->size(), 1u);
  b->Sync();

  // Every replica equals the server.
  EXPECT_EQ(StringField(ServerRead(kFacilityType, f), kNameField), "Tên của B");
  for (Device* d : {a.get(), b.get()}) {
    ExpectSameAsServer(*d, kFacilityType, f);
    ExpectSameBucket(*d, c1_);
    EXPECT_EQ(d->Pending(), 0);
    EXPECT_EQ(d->Unconfirmed(), 0);
  }

  // The coordinator sees the conflict.
  auto stub = SyncService::NewStub(channel_);
  ListConflictsRequest req;
  ListConflictsResponse resp;
  grpc::Status s = stub->ListConflicts(As(coord.token).get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.conflicts_size(), 1);
  EXPECT_EQ(resp.conflicts(0).record_id(), Bytes(f));
  EXPECT_EQ(resp.conflicts(0).field(), kNameField);
  EXPECT_EQ(resp.conflicts(0).loser_value().string_value(), "Tên của A");
  EXPECT_EQ(resp.conflicts(0).winner_value().string_value(), "Tên của B");
  EXPECT_EQ(resp.conflicts(0).bucket(), c1_);
  EXPECT_FALSE(resp.conflicts(0).resolved());

  // Only reviewers resolve; an unknown id is NOT_FOUND.
  ResolveConflictRequest resolve;
  resolve.set_id(resp.conflicts(0).id());
  resolve.set_restore_loser(true);
  Conflict resolved;
  EXPECT_EQ(stub->ResolveConflict(As(collab.token).get(), resolve, &resolved).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ResolveConflictRequest unknown;
  unknown.set_id(resp.conflicts(0).id() + 1000);
  EXPECT_EQ(stub->ResolveConflict(As(coord.token).get(), unknown, &resolved).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The coordinator restores A's overwritten value: it is written as the coordinator's
  // edit and reaches every device through the normal download.
  s = stub->ResolveConflict(As(coord.token).get(), resolve, &resolved);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resolved.resolved());
  EXPECT_EQ(StringField(ServerRead(kFacilityType, f), kNameField), "Tên của A");
  for (Device* d : {a.get(), b.get()}) {
    d->Sync();
    EXPECT_EQ(StringField(d->Read(kFacilityType, f), kNameField), "Tên của A");
    ExpectSameBucket(*d, c1_);
  }
  ListConflictsResponse after;
  ASSERT_TRUE(stub->ListConflicts(As(coord.token).get(), req, &after).ok());
  EXPECT_EQ(after.conflicts_size(), 0);  // resolved ones are not listed by default
  req.set_include_resolved(true);
  ASSERT_TRUE(stub->ListConflicts(As(coord.token).get(), req, &after).ok());
  ASSERT_EQ(after.conflicts_size(), 1);
  EXPECT_TRUE(after.conflicts(0).resolved());
}

// (b) A collaborator endorses its own submitted request offline: the server refuses it,
// the device rolls back to the server's values and keeps a report saying why.
TEST_P(SyncStreamStoreTest, ForbiddenTransitionIsRefusedAndRolledBack) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto a = NewDevice("tablet-a", collab.token);
  ASSERT_TRUE(a);

  const std::string f = NewUuid();
  const std::string r = NewUuid();
  SupportRequest request;
  request.set_id(r);
  request.set_commune_id(c1_);
  request.set_facility_id(f);
  request.set_author_id(collab.id);
  request.set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  request.set_description("Máy sấy nông sản");
  request.set_requested_amount_vnd(80000000);
  request.set_proposed_funding(FUNDING_SOURCE_LOCAL);
  request.set_status(REQUEST_STATUS_DRAFT);
  request.set_created_ms(NowMs());
  a->Write({NewFacility(f, c1_, collab.id, "Xưởng gỗ"), Created(request)});
  a->Write({Edit(kSupportRequestType, r, kStatusField, Int(REQUEST_STATUS_SUBMITTED)),
            NewEvent(c1_, r, collab.id, REQUEST_ACTION_SUBMIT, REQUEST_STATUS_DRAFT,
                     REQUEST_STATUS_SUBMITTED)});
  SyncResult submitted = a->Sync();
  EXPECT_TRUE(submitted.reports.empty());
  EXPECT_EQ(IntField(ServerRead(kSupportRequestType, r), kStatusField), REQUEST_STATUS_SUBMITTED);

  // Endorsing is a coordinator's step (and never the author's).
  RecordChange event = NewEvent(c1_, r, collab.id, REQUEST_ACTION_ENDORSE, REQUEST_STATUS_SUBMITTED,
                                REQUEST_STATUS_ENDORSED);
  const std::string event_id = *sync::UuidToText(event.id());
  const uint64_t seq =
      a->Write({Edit(kSupportRequestType, r, kStatusField, Int(REQUEST_STATUS_ENDORSED)), event});
  EXPECT_EQ(IntField(a->Read(kSupportRequestType, r), kStatusField), REQUEST_STATUS_ENDORSED);
  SyncResult endorsed = a->Sync();

  ASSERT_EQ(endorsed.reports.size(), 1u);
  const MutationResult& result = endorsed.reports[0].result;
  EXPECT_EQ(endorsed.reports[0].mutation.seq(), seq);
  EXPECT_EQ(result.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(result.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(result.reason(), HasSubstr("status"));
  bool has_request = false;
  for (const RecordChange& v : result.server_values()) {
    if (v.type() == kSupportRequestType && v.id() == Bytes(r)) {
      has_request = true;
      EXPECT_EQ(kcnet::testing::FieldOf(v, kStatusField).int_value(), REQUEST_STATUS_SUBMITTED);
    }
  }
  EXPECT_TRUE(has_request) << result.DebugString();

  // The device shows the server's state again; the report stays until taken.
  EXPECT_EQ(IntField(a->Read(kSupportRequestType, r), kStatusField), REQUEST_STATUS_SUBMITTED);
  EXPECT_FALSE(a->Read(kRequestEventType, event_id).has_value());
  EXPECT_FALSE(ServerRead(kRequestEventType, event_id).has_value());
  ExpectSameAsServer(*a, kSupportRequestType, r);
  ExpectSameBucket(*a, c1_);
  absl::StatusOr<std::vector<sync::Report>> reports = a->store->TakeReports();
  ASSERT_TRUE(reports.ok()) << reports.status();
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].result.reason(), result.reason());
  EXPECT_EQ(a->Pending(), 0);
  EXPECT_EQ(a->Unconfirmed(), 0);
}

// (c) A download cut after its first page resumes from the stored cursor: no record is
// sent twice and the bucket ends equal to the server's.
TEST_P(SyncStreamStoreTest, InterruptedDownloadResumesFromItsCursor) {
  constexpr int kRecords = 2000;
  constexpr int kPerMutation = 100;
  const Account writer = MakeUser("writer", ROLE_COMMUNE_COLLABORATOR, c2_);
  const Account reader = MakeUser("reader", ROLE_COMMUNE_COLLABORATOR, c2_);
  SyncClientOptions slow;
  slow.timeout = absl::Seconds(120);
  auto w = NewDevice("tablet-w", writer.token, sync::SystemClock(), slow);
  ASSERT_TRUE(w);
  std::vector<std::string> ids;
  for (int m = 0; m < kRecords / kPerMutation; ++m) {
    std::vector<RecordChange> changes;
    for (int i = 0; i < kPerMutation; ++i) {
      ids.push_back(NewUuid());
      changes.push_back(
          NewFacility(ids.back(), c2_, writer.id, absl::StrCat("Cơ sở ", ids.size())));
    }
    w->Write(std::move(changes));
  }
  SyncResult pushed = w->Sync();
  EXPECT_EQ(pushed.pushed_mutations, static_cast<size_t>(kRecords / kPerMutation));
  EXPECT_TRUE(pushed.reports.empty());
  ExpectSameBucket(*w, c2_);

  // The reader cancels its first sync right after the first page.
  std::atomic<bool> cut{true};
  bool first_more = false;
  SyncClient* client = nullptr;
  SyncClientOptions options = slow;
  options.max_pages_per_transaction = 1;  // the cut comes right after the first page
  options.on_message = [&](const SyncServerMessage& m) {
    if (m.has_changes() && cut.exchange(false)) {
      first_more = m.changes().more();
      client->Cancel();
    }
  };
  auto r = NewDevice("tablet-r", reader.token, sync::SystemClock(), options);
  ASSERT_TRUE(r);
  client = r->client.get();
  absl::StatusOr<SyncResult> partial = r->client->SyncOnce();
  EXPECT_EQ(partial.status().code(), absl::StatusCode::kCancelled) << partial.status();
  const SyncResult first = r->client->last_result();
  EXPECT_EQ(first.download_batches, 1u);
  EXPECT_TRUE(first_more) << "the server's page held the whole bucket: nothing to resume";
  EXPECT_GT(first.received_changes, 0u);
  EXPECT_LT(first.received_changes, static_cast<size_t>(kRecords));
  EXPECT_EQ(first.applied_changes, first.received_changes);
  absl::StatusOr<BucketCheckpoint> midway = r->store->Checkpoint(c2_);
  ASSERT_TRUE(midway.ok()) << midway.status();
  EXPECT_EQ(midway->records(), first.received_changes);

  // The next sync finishes from the cursor.
  SyncResult rest = r->Sync();
  EXPECT_EQ(first.received_changes + rest.received_changes, static_cast<size_t>(kRecords));
  EXPECT_EQ(first.applied_changes + rest.applied_changes, static_cast<size_t>(kRecords));
  EXPECT_TRUE(rest.reset_buckets.empty());
  ExpectSameBucket(*r, c2_);
  absl::StatusOr<BucketCheckpoint> done = r->store->Checkpoint(c2_);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->records(), static_cast<uint64_t>(kRecords));
  for (size_t i = 0; i < ids.size(); i += 97) ExpectSameAsServer(*r, kFacilityType, ids[i]);
}

// A device with a download window gets several pages before it acknowledges any, each
// saying which cursor it continues from; when the device's acknowledgement shows it is
// elsewhere (it reset the bucket), the server continues from the device's cursor.
TEST_P(SyncStreamStoreTest, DownloadWindowSendsAheadAndFollowsTheDevice) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  SyncFacilities(collab, 20);
  server_->Shutdown(absl::Seconds(1));
  server::SyncServiceOptions small;
  small.page = {.max_changes = 5, .max_bytes = 1 << 20};
  StartServer(small);

  auto stub = SyncService::NewStub(channel_);
  auto ctx = As(collab.token);
  auto stream = stub->Sync(ctx.get());
  SyncClientMessage hello;
  hello.mutable_hello()->set_device_id("raw-window");
  hello.mutable_hello()->set_schema_version(kcnet::v1::SCHEMA_VERSION_1);
  hello.mutable_hello()->set_download_window(3);
  ASSERT_TRUE(stream->Write(hello));
  SyncServerMessage in;
  ASSERT_TRUE(stream->Read(&in));
  ASSERT_TRUE(in.has_welcome());
  // Three pages with no acknowledgement sent (a server waiting for one would block here
  // until the call's deadline).
  std::vector<ChangeBatch> pages;
  BucketCursor at;
  at.set_bucket(c1_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(stream->Read(&in)) << "page " << i;
    ASSERT_TRUE(in.has_changes()) << in.DebugString();
    const ChangeBatch& page = in.changes();
    EXPECT_EQ(page.changes_size(), 5);
    ASSERT_EQ(page.from_size(), 1);
    EXPECT_EQ(page.from(0).DebugString(), at.DebugString()) << "page " << i;
    ASSERT_EQ(page.cursors_size(), 1);
    sync::AdvanceCursor(page.cursors(0), &at);
    pages.push_back(page);
  }
  EXPECT_GT(at.op(), 0u);
  // The device acknowledges the first page from cursor 0 (it reset the bucket): the
  // next page starts again from 0, with the first page's first record.
  SyncClientMessage ack;
  BucketCursor* reset = ack.mutable_download_ack()->add_cursors();
  reset->set_bucket(c1_);
  ASSERT_TRUE(stream->Write(ack));
  ASSERT_TRUE(stream->Read(&in));
  ASSERT_TRUE(in.has_changes()) << in.DebugString();
  ASSERT_EQ(in.changes().from_size(), 1);
  EXPECT_EQ(in.changes().from(0).op(), 0u);
  EXPECT_EQ(in.changes().from(0).floor(), 0u);
  ASSERT_GT(in.changes().changes_size(), 0);
  EXPECT_EQ(in.changes().changes(0).id(), pages[0].changes(0).id());
  ctx->TryCancel();
  while (stream->Read(&in)) {
  }
  stream->Finish();

  // A SyncClient with the window takes the 20 records in pages of 5, stored in groups.
  auto fresh = NewDevice("tablet-fresh", collab.token);
  ASSERT_TRUE(fresh);
  SyncResult result = fresh->Sync();
  EXPECT_EQ(result.received_changes, 20u);
  EXPECT_GE(result.download_batches, 4u);
  ExpectSameBucket(*fresh, c1_);
}

// A device that asks for deflated pages gets each page as deflated_changes, which inflates
// to exactly the page a device without it gets; a SyncClient (which asks) stores them.
TEST_P(SyncStreamStoreTest, DeflatedPagesInflateToThePlainPages) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  SyncFacilities(collab, 30);
  auto stub = SyncService::NewStub(channel_);
  // The first page of each kind of stream (the same cursors, so the same changes).
  auto first_page = [&](bool deflate) -> SyncServerMessage {
    auto ctx = As(collab.token);
    auto stream = stub->Sync(ctx.get());
    SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(deflate ? "raw-deflate" : "raw-plain");
    hello.mutable_hello()->set_schema_version(kcnet::v1::SCHEMA_VERSION_1);
    hello.mutable_hello()->set_deflate_pages(deflate);
    SyncServerMessage welcome, page;
    EXPECT_TRUE(stream->Write(hello));
    EXPECT_TRUE(stream->Read(&welcome) && welcome.has_welcome());
    EXPECT_TRUE(stream->Read(&page));
    ctx->TryCancel();
    SyncServerMessage rest;
    while (stream->Read(&rest)) {
    }
    stream->Finish();
    return page;
  };
  const SyncServerMessage plain = first_page(false);
  const SyncServerMessage deflated = first_page(true);
  ASSERT_TRUE(plain.has_changes()) << plain.DebugString();
  ASSERT_TRUE(deflated.has_deflated_changes()) << deflated.ShortDebugString().substr(0, 200);
  EXPECT_LT(deflated.deflated_changes().size(), plain.changes().ByteSizeLong() / 2);
  ChangeBatch inflated;
  ASSERT_TRUE(sync::InflatePage(deflated.deflated_changes(), &inflated).ok());
  EXPECT_EQ(inflated.changes_size(), 30);
  // server_op may differ between the reads only if something committed in between.
  inflated.set_server_op(plain.changes().server_op());
  EXPECT_EQ(inflated.SerializeAsString(), plain.changes().SerializeAsString());

  auto fresh = NewDevice("tablet-fresh", collab.token);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->Sync().received_changes, 30u);
  ExpectSameBucket(*fresh, c1_);
}

// (d) A collaborator moved to another commune: its pending write for the old commune is
// pushed (and answered) before the old bucket is purged; the new bucket arrives.
TEST_P(SyncStreamStoreTest, ReassignedCollaboratorPushesThenPurgesTheOldCommune) {
  const Account mover = MakeUser("mover", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account local = MakeUser("local3", ROLE_COMMUNE_COLLABORATOR, c3_);
  auto other = NewDevice("tablet-o", local.token);
  ASSERT_TRUE(other);
  const std::string g = NewUuid();
  other->Write({NewFacility(g, c3_, local.id, "Hợp tác xã chè")});
  other->Sync();

  bool old_bucket_held_at_ack = false;
  int acks = 0;
  Device* m_ptr = nullptr;
  SyncClientOptions options;
  options.on_message = [&](const SyncServerMessage& msg) {
    if (msg.has_push_ack() && m_ptr != nullptr) {
      ++acks;
      old_bucket_held_at_ack = m_ptr->Buckets().contains(c1_);
    }
  };
  auto m = NewDevice("tablet-m", mover.token, sync::SystemClock(), options);
  ASSERT_TRUE(m);
  const std::string f = NewUuid();
  m->Write({NewFacility(f, c1_, mover.id, "Làng nghề gốm")});
  m->Sync();
  ExpectSameAsServer(*m, kFacilityType, f);

  // Offline edit, then the reassignment.
  m_ptr = m.get();
  acks = 0;
  const uint64_t seq = m->Write({Edit(kFacilityType, f, kNameField, Str("Sửa khi mất mạng"))});
  absl::StatusOr<User> moved =
      server_->directory()->AssignUser(mover.id, ROLE_COMMUNE_COLLABORATOR, {c3_});
  ASSERT_TRUE(moved.ok()) << moved.status();

  SyncResult result = m->Sync();
  EXPECT_THAT(result.welcome.buckets(), ElementsAre(c3_));
  EXPECT_THAT(result.welcome.removed(), ElementsAre(c1_));
  EXPECT_THAT(result.purged, ElementsAre(c1_));
  EXPECT_GE(result.pushed_mutations, 1u);
  EXPECT_EQ(acks, 1);
  EXPECT_TRUE(old_bucket_held_at_ack) << "the old bucket was purged before its push was answered";

  // The pending write got its answer: applied on the server, or refused with a report.
  bool answered = StringField(ServerRead(kFacilityType, f), kNameField) == "Sửa khi mất mạng";
  for (const sync::Report& report : result.reports) {
    if (report.mutation.seq() == seq) {
      answered = true;
      EXPECT_EQ(report.result.outcome(), MUTATION_OUTCOME_REFUSED);
      // The old commune is out of scope now: its records read as records that do not exist.
      EXPECT_EQ(report.result.code(), static_cast<int>(absl::StatusCode::kNotFound));
    }
  }
  EXPECT_TRUE(answered);
  EXPECT_EQ(m->Pending(), 0);
  EXPECT_EQ(m->Unconfirmed(), 0);

  // The old commune is gone from the device, the new one is there.
  EXPECT_THAT(m->Buckets(), ElementsAre(c3_));
  EXPECT_FALSE(m->Read(kFacilityType, f).has_value());
  EXPECT_FALSE(m->Read(kFacilityType, f, true).has_value());
  ExpectSameAsServer(*m, kFacilityType, g);
  ExpectSameBucket(*m, c3_);
}

// (e) Local damage behind the store's back: VerifyBuckets names the bucket, a reset and a
// sync repair it. A damaged running checksum is caught by the next checkpoint instead.
TEST_P(SyncStreamStoreTest, DamagedBucketIsRepaired) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto a = NewDevice("tablet-a", collab.token);
  ASSERT_TRUE(a);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(NewUuid());
    a->Write({NewFacility(ids.back(), c1_, collab.id, absl::StrCat("Cơ sở ", i))});
  }
  a->Sync();
  ExpectSameBucket(*a, c1_);

  {
    absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(dir_.File("tablet-a.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(
        (*db)
            ->Exec(absl::StrCat("UPDATE facility SET name = 'hỏng' WHERE id = '", ids[1], "'"))
            .ok());
    EXPECT_EQ((*db)->Changes(), 1);
  }
  EXPECT_EQ(StringField(a->Read(kFacilityType, ids[1]), kNameField), "hỏng");
  absl::StatusOr<std::vector<int64_t>> damaged = a->store->VerifyBuckets();
  ASSERT_TRUE(damaged.ok()) << damaged.status();
  ASSERT_THAT(*damaged, ElementsAre(c1_));
  ASSERT_TRUE(a->store->ResetBucket(c1_).ok());
  SyncResult repaired = a->Sync();
  EXPECT_EQ(repaired.received_changes, ids.size());
  EXPECT_EQ(StringField(a->Read(kFacilityType, ids[1]), kNameField), "Cơ sở 1");
  for (const std::string& id : ids) ExpectSameAsServer(*a, kFacilityType, id);
  ExpectSameBucket(*a, c1_);
  damaged = a->store->VerifyBuckets();
  ASSERT_TRUE(damaged.ok());
  EXPECT_TRUE(damaged->empty());

  // The running checksum itself damaged: the first checkpoint disagrees, the client
  // resets the bucket and the server sends it again from scratch.
  {
    absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(dir_.File("tablet-a.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(
        (*db)
            ->Exec(absl::StrCat("UPDATE _buckets SET checksum = checksum + 1 WHERE bucket = ", c1_))
            .ok());
    EXPECT_EQ((*db)->Changes(), 1);
  }
  SyncResult again = a->Sync();
  EXPECT_THAT(again.reset_buckets, ElementsAre(c1_));
  EXPECT_EQ(again.received_changes, ids.size());
  for (const std::string& id : ids) ExpectSameAsServer(*a, kFacilityType, id);
  ExpectSameBucket(*a, c1_);

  // Row damage again, repaired by the client's verify_buckets option this time.
  {
    absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(dir_.File("tablet-a.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(
        (*db)
            ->Exec(absl::StrCat("UPDATE facility SET name = 'hỏng nữa' WHERE id = '", ids[2], "'"))
            .ok());
  }
  SyncClientOptions verify;
  verify.token = collab.token;
  verify.verify_buckets = true;
  SyncClient verifying(channel_, a->store.get(), verify);
  absl::StatusOr<SyncResult> checked = verifying.SyncOnce();
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_THAT(checked->reset_buckets, ElementsAre(c1_));
  EXPECT_EQ(StringField(a->Read(kFacilityType, ids[2]), kNameField), "Cơ sở 2");
  ExpectSameBucket(*a, c1_);
}

// (f) A device holding its stream open receives another device's change as it is
// committed, without reconnecting.
TEST_P(SyncStreamStoreTest, LiveChangeReachesAnOpenStream) {
  const Account writer = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account watcher = MakeUser("coord1", ROLE_DISTRICT_COORDINATOR, d1_);
  auto a = NewDevice("tablet-a", writer.token);
  absl::Notification first_page;
  SyncClientOptions options;
  options.on_message = [&](const SyncServerMessage& m) {
    if (m.has_changes() && !first_page.HasBeenNotified()) first_page.Notify();
  };
  auto b = NewDevice("tablet-b", watcher.token, sync::SystemClock(), options);
  ASSERT_TRUE(a && b);

  const std::string f = NewUuid();
  absl::Status live;
  std::thread watching([&] {
    live = b->client->RunUntil(
        [&] {
          absl::StatusOr<std::optional<RecordChange>> r =
              b->store->Read(kFacilityType, Bytes(f), true);
          return r.ok() && r->has_value();
        },
        absl::Seconds(30));
  });
  // Only write once B is connected and has its first page: the record must come live.
  const bool connected = first_page.WaitForNotificationWithTimeout(absl::Seconds(20));
  EXPECT_TRUE(connected);
  if (connected) {
    a->Write({NewFacility(f, c1_, writer.id, "Cơ sở sơn mài")});
    a->Sync();
  }
  watching.join();
  ASSERT_TRUE(connected);
  EXPECT_TRUE(live.ok()) << live;
  const SyncResult& result = b->client->last_result();
  EXPECT_GE(result.download_batches, 2u);
  EXPECT_EQ(result.received_changes, 1u);
  EXPECT_TRUE(result.server_status.ok()) << result.server_status;
  ExpectSameAsServer(*b, kFacilityType, f);
  ExpectSameBucket(*b, c1_);
}

// (f, many instances) Two kcnet-server instances on one PostgreSQL database: a device
// holding its stream open on the second receives a change committed through the first
// (NOTIFY after commit, or the poll). Each instance has its own directory in its data dir
// (not shared yet), so the second gets the same org tree and its own account.
TEST_P(SyncStreamStoreTest, ACommitOnOneInstanceReachesAStreamOnAnother) {
  if (GetParam() == StoreKind::kSqlite) {
    GTEST_SKIP() << "two instances share a PostgreSQL store only";
  }
  server::ServerOptions options =
      kcnet::testing::TestServerOptions(dir_.File("server2"), "127.0.0.1:0");
  options.store = store_;
  absl::StatusOr<std::unique_ptr<server::KcnetServer>> second = server::KcnetServer::Start(options);
  ASSERT_TRUE(second.ok()) << second.status();
  server::Directory* d = (*second)->directory();
  // The directory is shared through the database too: the first server's tree is here.
  absl::StatusOr<OrgUnit> d1_on_second = d->FindByCode("901");
  ASSERT_TRUE(d1_on_second.ok()) << d1_on_second.status();
  const int64_t d1 = d1_on_second->id();
  ASSERT_EQ(d1, d1_);
  ASSERT_TRUE(
      d->CreateUser("coord2", "coord2", "password-123", ROLE_DISTRICT_COORDINATOR, {d1}).ok());
  absl::StatusOr<server::LoginResult> login = d->Login("coord2", "password-123");
  ASSERT_TRUE(login.ok()) << login.status();

  const Account writer = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto a = NewDevice("tablet-a", writer.token);
  ASSERT_TRUE(a);
  absl::Notification first_page;
  SyncClientOptions b_options;
  b_options.token = login->token;
  b_options.on_message = [&](const SyncServerMessage& m) {
    if (m.has_changes() && !first_page.HasBeenNotified()) first_page.Notify();
  };
  absl::StatusOr<std::unique_ptr<sync::DeviceStore>> b_store =
      sync::DeviceStore::Open(dir_.File("tablet-b.db"), &model::KcnetSchema(), "tablet-b",
                              sync::DeviceStoreOptions{.durable = false});
  ASSERT_TRUE(b_store.ok()) << b_store.status();
  SyncClient b(grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*second)->port()),
                                   grpc::InsecureChannelCredentials()),
               b_store->get(), b_options);

  const std::string f = NewUuid();
  absl::Status live;
  std::thread watching([&] {
    live = b.RunUntil(
        [&] {
          absl::StatusOr<std::optional<RecordChange>> r =
              (*b_store)->Read(kFacilityType, Bytes(f), true);
          return r.ok() && r->has_value();
        },
        absl::Seconds(30));
  });
  const bool connected = first_page.WaitForNotificationWithTimeout(absl::Seconds(20));
  EXPECT_TRUE(connected);
  if (connected) {
    a->Write({NewFacility(f, c1_, writer.id, "Cơ sở mây tre")});
    a->Sync();  // through the first instance
  }
  watching.join();
  (*second)->Shutdown(absl::Seconds(1));
  ASSERT_TRUE(connected);
  EXPECT_TRUE(live.ok()) << live;
  EXPECT_EQ(b.last_result().received_changes, 1u);
  absl::StatusOr<std::optional<RecordChange>> got = (*b_store)->Read(kFacilityType, Bytes(f), true);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((**got).DebugString(), ServerRead(kFacilityType, f)->DebugString());
}

// (d, live) A reassignment while the stream is open arrives as a ScopeChange: the new
// commune is subscribed and downloaded, the old one purged, without reconnecting.
TEST_P(SyncStreamStoreTest, LiveReassignmentArrivesAsScopeChange) {
  const Account mover = MakeUser("mover", ROLE_COMMUNE_COLLABORATOR, c1_);
  const Account local = MakeUser("local3", ROLE_COMMUNE_COLLABORATOR, c3_);
  auto other = NewDevice("tablet-o", local.token);
  ASSERT_TRUE(other);
  const std::string g = NewUuid();
  other->Write({NewFacility(g, c3_, local.id, "Hợp tác xã chè")});
  other->Sync();

  std::atomic<bool> watching_live{false};  // set once the first plain sync is over
  absl::Notification first_page;
  std::vector<ScopeChange> changes;  // syncing thread only until join
  SyncClientOptions options;
  options.on_message = [&](const SyncServerMessage& m) {
    if (!watching_live) return;
    if (m.has_changes() && !first_page.HasBeenNotified()) first_page.Notify();
    if (m.has_scope_change()) changes.push_back(m.scope_change());
  };
  auto m = NewDevice("tablet-m", mover.token, sync::SystemClock(), options);
  ASSERT_TRUE(m);
  const std::string f = NewUuid();
  m->Write({NewFacility(f, c1_, mover.id, "Làng nghề gốm")});
  m->Sync();

  const std::string h = NewUuid();
  absl::Status live;
  watching_live = true;
  std::thread watching([&] {
    live = m->client->RunUntil(
        [&] {
          absl::StatusOr<std::vector<BucketCursor>> cursors = m->store->Cursors();
          if (!cursors.ok() || cursors->size() != 1 || (*cursors)[0].bucket() != c3_) return false;
          absl::StatusOr<std::optional<RecordChange>> theirs =
              m->store->Read(kFacilityType, Bytes(g), true);
          absl::StatusOr<std::optional<RecordChange>> mine =
              m->store->Read(kFacilityType, Bytes(h), true);
          return theirs.ok() && theirs->has_value() && mine.ok() && mine->has_value();
        },
        absl::Seconds(30));
  });
  const bool connected = first_page.WaitForNotificationWithTimeout(absl::Seconds(20));
  EXPECT_TRUE(connected);
  if (connected) {
    ASSERT_TRUE(server_->directory()->AssignUser(mover.id, ROLE_COMMUNE_COLLABORATOR, {c3_}).ok());
    // A write for the new commune, pushed by the open stream (the server re-reads the
    // scope on every push, so the change does not wait for its periodic check).
    m->Write({NewFacility(h, c3_, mover.id, "Xưởng chè mới")});
  }
  watching.join();
  ASSERT_TRUE(connected);
  EXPECT_TRUE(live.ok()) << live;
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_THAT(changes[0].added(), ElementsAre(c3_));
  EXPECT_THAT(changes[0].removed(), ElementsAre(c1_));
  const SyncResult& result = m->client->last_result();
  EXPECT_THAT(result.purged, ElementsAre(c1_));
  EXPECT_TRUE(result.reports.empty());
  EXPECT_FALSE(m->Read(kFacilityType, f).has_value());
  ExpectSameAsServer(*m, kFacilityType, g);
  ExpectSameAsServer(*m, kFacilityType, h);
  ExpectSameBucket(*m, c3_);
  EXPECT_EQ(m->Pending(), 0);
  EXPECT_EQ(m->Unconfirmed(), 0);
}

// (g) Bad input: each ends the stream with its status, except a refused mutation, which is
// answered while the stream stays usable.
TEST_P(SyncStreamStoreTest, BadHelloEndsTheStream) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  Hello hello;
  hello.set_device_id("");
  hello.set_schema_version(SCHEMA_VERSION_1);
  grpc::Status s = RawHello(collab.token, hello);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("device_id"));

  hello.set_device_id(std::string(129, 'x'));
  s = RawHello(collab.token, hello);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  hello.set_device_id("tablet-x");
  hello.set_schema_version(static_cast<SchemaVersion>(99));
  s = RawHello(collab.token, hello);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  const std::string lower = absl::AsciiStrToLower(s.error_message());
  EXPECT_TRUE(absl::StrContains(lower, "upgrade") || absl::StrContains(lower, "update"))
      << s.error_message();

  // The same through the client's option.
  SyncClientOptions future;
  future.schema_version = static_cast<SchemaVersion>(99);
  auto a = NewDevice("tablet-a", collab.token, sync::SystemClock(), future);
  ASSERT_TRUE(a);
  absl::StatusOr<SyncResult> refused = a->client->SyncOnce();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
}

TEST_P(SyncStreamStoreTest, UnreachableServerIsUnavailable) {
  // A port nobody listens on: take a free one and close it again.
  int port = 0;
  {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    ASSERT_NE(server, nullptr);
    server->Shutdown();
  }
  absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store =
      sync::DeviceStore::Open(dir_.File("tablet-u.db"), &model::KcnetSchema(), "tablet-u",
                              sync::DeviceStoreOptions{.durable = false});
  ASSERT_TRUE(store.ok()) << store.status();
  SyncClientOptions options;
  options.token = "whatever";
  SyncClient client(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      store->get(), options);
  absl::StatusOr<SyncResult> result = client.SyncOnce();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
}

TEST_P(SyncStreamStoreTest, MissingOrBadTokenIsUnauthenticated) {
  auto nobody = NewDevice("tablet-n", "");
  ASSERT_TRUE(nobody);
  absl::StatusOr<SyncResult> result = nobody->client->SyncOnce();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated) << result.status();
  auto forged = NewDevice("tablet-f", "not-a-token");
  ASSERT_TRUE(forged);
  result = forged->client->SyncOnce();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated) << result.status();
  EXPECT_TRUE(forged->Buckets().empty());
}

TEST_P(SyncStreamStoreTest, OutOfScopeMutationIsRefusedAndTheStreamStaysUsable) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  SyncClientOptions one_by_one;
  one_by_one.max_push_mutations = 1;  // two pushes on the same stream
  auto a = NewDevice("tablet-a", collab.token, sync::SystemClock(), one_by_one);
  ASSERT_TRUE(a);
  const std::string outside = NewUuid();
  const std::string inside = NewUuid();
  const uint64_t seq_out = a->Write({NewFacility(outside, c3_, collab.id, "Ngoài phạm vi")});
  const uint64_t seq_in = a->Write({NewFacility(inside, c1_, collab.id, "Trong phạm vi")});

  SyncResult result = a->Sync();
  EXPECT_EQ(result.push_batches, 2u);
  ASSERT_EQ(result.reports.size(), 1u);
  EXPECT_EQ(result.reports[0].mutation.seq(), seq_out);
  EXPECT_EQ(result.reports[0].result.outcome(), MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(result.reports[0].result.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(result.reports[0].result.reason(), HasSubstr("commune_id"));
  EXPECT_FALSE(ServerRead(kFacilityType, outside).has_value());
  EXPECT_FALSE(a->Read(kFacilityType, outside).has_value());
  // The following push on the same stream was applied and came back.
  ASSERT_TRUE(ServerRead(kFacilityType, inside).has_value());
  ExpectSameAsServer(*a, kFacilityType, inside);
  ExpectSameBucket(*a, c1_);
  EXPECT_GT(seq_in, seq_out);
  EXPECT_EQ(a->Pending(), 0);
  EXPECT_EQ(a->Unconfirmed(), 0);
}

TEST_P(SyncStreamStoreTest, OversizedPushEndsTheStreamAndStoresNothing) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  SyncClientOptions huge;
  huge.max_push_mutations = 5000;
  huge.max_push_bytes = 64 << 20;
  auto a = NewDevice("tablet-a", collab.token, sync::SystemClock(), huge);
  ASSERT_TRUE(a);
  // More mutations than the server takes in one batch (ServerStoreOptions: 1,000).
  std::vector<std::string> ids;
  for (int i = 0; i < 1001; ++i) {
    ids.push_back(NewUuid());
    a->Write({NewFacility(ids.back(), c1_, collab.id, "Cơ sở")});
  }
  absl::StatusOr<SyncResult> result = a->client->SyncOnce();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_FALSE(ServerRead(kFacilityType, ids[0]).has_value());
  EXPECT_EQ(a->Pending(), 1001);
  // Within the limit, the same outbox goes through.
  SyncClientOptions normal;
  normal.token = collab.token;
  SyncClient client(channel_, a->store.get(), normal);
  absl::StatusOr<SyncResult> ok = client.SyncOnce();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->push_batches, 3u);
  EXPECT_EQ(a->Pending(), 0);
  ExpectSameBucket(*a, c1_);
}

TEST_P(SyncStreamStoreTest, TooManyStreamsPerUserIsResourceExhausted) {
  const Account collab = MakeUser("collab1", ROLE_COMMUNE_COLLABORATOR, c1_);
  auto stub = SyncService::NewStub(channel_);
  struct Open {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReaderWriter<SyncClientMessage, SyncServerMessage>> stream;
  };
  std::vector<Open> open;
  grpc::Status last;
  // Open streams until one is refused; each open one has been welcomed.
  for (int i = 0; i < 16; ++i) {
    Open o;
    o.ctx = As(collab.token);
    o.stream = stub->Sync(o.ctx.get());
    SyncClientMessage m;
    m.mutable_hello()->set_device_id(absl::StrCat("tablet-", i));
    m.mutable_hello()->set_schema_version(SCHEMA_VERSION_1);
    o.stream->Write(m);
    SyncServerMessage in;
    if (o.stream->Read(&in)) {
      EXPECT_TRUE(in.has_welcome());
      open.push_back(std::move(o));
      continue;
    }
    last = o.stream->Finish();
    break;
  }
  EXPECT_GE(open.size(), 1u);
  EXPECT_LT(open.size(), 16u);
  EXPECT_EQ(last.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << last.error_message();
  for (Open& o : open) {
    o.stream->WritesDone();
    SyncServerMessage in;
    while (o.stream->Read(&in)) {
    }
    grpc::Status s = o.stream->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, SyncStreamStoreTest,
                         ::testing::Values(StoreKind::kSqlite, StoreKind::kPostgres),
                         StoreKindName);

}  // namespace
}  // namespace kcnet::sdk
