// Attachment bytes end to end: a real kcnet-server on port 0 with its files in a temp dir
// (attachments_test), or on a PostgreSQL of its own (attachments_pg_test: sessions, blobs
// and bytes in the database; the tests that handle files skip), real gRPC streams, the records
// written through the same rules and merge as tablet sync, and the real kcnet-admin binary for
// verify-blobs. The server's clock is a FakeClock so that expiry (7 days) and the collector's grace
// can be crossed.
#include <stdio.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "server/attachments/blob_store.h"
#include "server/records/record_access.h"
#include "sync/crc32c.h"
#include "sync/model/record_types.h"
#include "tests/testing/test_server.h"
#if KCNET_ATTACHMENTS_TEST_PG
#include "tests/testing/pg_instance.h"
#endif
#include "tests/testing/test_util.h"

#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr int64_t kKiB = 1024;
constexpr int64_t kDay = 24 * 3600 * 1000LL;

// `n` bytes that start like a JPEG, the rest pseudo-random from `seed`.
std::string Jpeg(size_t n, uint32_t seed) {
  std::string out = "\xFF\xD8\xFF\xE0";
  std::mt19937 rng(seed);
  while (out.size() < n) out.push_back(static_cast<char>(rng() & 0xFF));
  out.resize(n);
  return out;
}

std::string Sha(const std::string& bytes) { return Sha256Of(bytes); }

// What an Upload stream did.
struct Sent {
  grpc::Status status;
  std::vector<UploadAck> acks;
  int64_t bytes = 0;  // payload bytes written to the stream
  std::string committed_trailer;
};

enum class StoreKind { kSqlite, kPostgres };

std::string StoreName(const ::testing::TestParamInfo<StoreKind>& info) {
  return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

class AttachmentsTest : public ::testing::TestWithParam<StoreKind> {
 protected:
#if KCNET_ATTACHMENTS_TEST_PG
  static void SetUpTestSuite() {
    auto pg = kcnet::testing::PgInstance::Start();
    if (!pg.ok()) {
      pg_status_ = new absl::Status(pg.status());
      return;
    }
    pg_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static inline kcnet::testing::PgInstance* pg_ = nullptr;
  static inline absl::Status* pg_status_ = nullptr;
  static inline int databases_ = 0;
#endif

  bool on_files() const { return GetParam() == StoreKind::kSqlite; }

  void SetUp() override {
#if KCNET_ATTACHMENTS_TEST_PG
    if (GetParam() == StoreKind::kPostgres) {
      if (pg_ == nullptr && pg_status_ != nullptr && absl::IsNotFound(*pg_status_)) {
        GTEST_SKIP() << "no PostgreSQL binaries: " << *pg_status_;
      }
      ASSERT_NE(pg_, nullptr) << (pg_status_ ? *pg_status_ : absl::UnknownError("no server"));
      const std::string name = "attachments" + std::to_string(++databases_);
      ASSERT_TRUE(pg_->CreateDatabase(name).ok());
      store_ = "postgres:" + pg_->conninfo(name);
    }
#endif
    Directory* d = nullptr;
    StartServer();
    d = server_->directory();
    p_ = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t d1 = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p_)->id();
    c1_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, d1)->id();
    q_ = d->CreateOrgUnit("91", "Tỉnh Khác", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t d9 = d->CreateOrgUnit("911", "Huyện Chín", ORG_UNIT_LEVEL_DISTRICT, q_)->id();
    c9_ = d->CreateOrgUnit("91101", "Xã Chín", ORG_UNIT_LEVEL_COMMUNE, d9)->id();
    struct U {
      const char* name;
      Role role;
      int64_t unit;
    };
    for (const U& u :
         {U{"collab1", ROLE_COMMUNE_COLLABORATOR, c1_}, U{"coord1", ROLE_DISTRICT_COORDINATOR, d1},
          U{"collab9", ROLE_COMMUNE_COLLABORATOR, c9_}}) {
      auto user = d->CreateUser(u.name, u.name, "password-123", u.role, {u.unit});
      ASSERT_TRUE(user.ok()) << user.status();
    }
    SignIn();
    facility1_ = CreateFacility("collab1", c1_);
    facility9_ = CreateFacility("collab9", c9_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  void StartServer() {
    ServerOptions options = kcnet::testing::TestServerOptions(dir_.path());
    options.clock = &clock_;
    options.attachments.max_bytes = 1024 * kKiB;
    options.attachments.user_quota_bytes = 1500 * kKiB;
    options.attachments.gc_interval = absl::ZeroDuration();  // the tests run it
    options.attachments.gc_grace = absl::Hours(24);
    options.attachments.max_upload_streams = max_upload_streams_;
    options.store = store_;
    auto server = KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = AttachmentService::NewStub(channel_);
  }

  void RestartServer() {
    server_->Shutdown(absl::Seconds(2));
    server_.reset();
    StartServer();
  }

  void SignIn() {
    auto auth = AuthService::NewStub(channel_);
    for (const char* name : {"collab1", "coord1", "collab9"}) {
      grpc::ClientContext ctx;
      LoginRequest req;
      req.set_username(name);
      req.set_password("password-123");
      LoginResponse resp;
      grpc::Status s = auth->Login(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
      tokens_[name] = resp.token();
    }
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + tokens_[user]);
    return ctx;
  }

  Principal Caller(const std::string& user) {
    absl::StatusOr<Principal> p = server_->directory()->Authenticate(tokens_[user]);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : Principal{};
  }

  RecordAccess Access() {
    return RecordAccess(RecordServiceDeps{
        .directory = server_->directory(), .store = server_->store(), .clock = &clock_});
  }

  std::string CreateFacility(const std::string& user, int64_t commune) {
    auto facilities = FacilityService::NewStub(channel_);
    CreateFacilityRequest req;
    req.mutable_facility()->set_commune_id(commune);
    req.mutable_facility()->set_name("Cơ sở mây tre đan");
    Facility f;
    grpc::Status s = facilities->CreateFacility(As(user).get(), req, &f);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return f.id();
  }

  // Writes an Attachment record (as a tablet's sync would) and returns its id, or the
  // refusal.
  absl::StatusOr<std::string> WriteAttachment(const std::string& user, const std::string& owner,
                                              int64_t commune, const std::string& bytes,
                                              const std::string& media_type = "image/jpeg",
                                              int64_t size = -1) {
    Attachment a;
    a.set_id(RecordAccess::NewId());
    a.set_commune_id(commune);
    a.set_owner_type(ATTACHMENT_OWNER_TYPE_FACILITY);
    a.set_owner_id(owner);
    a.set_sha256(HexOf(Sha(bytes)));
    a.set_size_bytes(size >= 0 ? size : static_cast<int64_t>(bytes.size()));
    a.set_media_type(media_type);
    a.set_caption("Xưởng sản xuất");
    a.set_author_id(Caller(user).user_id);
    a.set_latitude(21.03);
    a.set_longitude(105.85);
    absl::StatusOr<RecordChange> change = model::ToChange(a);
    if (!change.ok()) return change.status();
    absl::Status s = Access().Write(Caller(user), {*change});
    if (!s.ok()) return s;
    return a.id();
  }

  std::string Attach(const std::string& user, const std::string& owner, int64_t commune,
                     const std::string& bytes) {
    absl::StatusOr<std::string> id = WriteAttachment(user, owner, commune, bytes);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : "";
  }

  grpc::Status Begin(const std::string& user, const std::string& attachment_id,
                     const std::string& bytes, BeginUploadResponse* resp,
                     const std::string& media_type = "image/jpeg", int64_t size = -1) {
    BeginUploadRequest req;
    req.set_sha256(Sha(bytes));
    req.set_size(size >= 0 ? size : static_cast<int64_t>(bytes.size()));
    req.set_media_type(media_type);
    req.set_attachment_id(attachment_id);
    return stub_->Begin(As(user).get(), req, resp);
  }

  // Sends bytes [from, to) of `bytes` in 64 KiB chunks; `cut` cancels the call after the
  // first ack past `from` instead of finishing (a connection cut). `mangle` changes a
  // chunk before it goes.
  Sent Send(const std::string& user, const std::string& upload_id, const std::string& bytes,
            int64_t from, int64_t to, bool cut = false,
            const std::function<void(UploadChunk*)>& mangle = nullptr) {
    Sent sent;
    auto ctx = As(user);
    auto stream = stub_->Upload(ctx.get());
    bool broken = false;
    for (int64_t off = from; off < to && !broken; off += 64 * kKiB) {
      UploadChunk chunk;
      chunk.set_upload_id(upload_id);
      chunk.set_offset(off);
      chunk.set_data(bytes.substr(off, std::min<int64_t>(64 * kKiB, to - off)));
      chunk.set_crc32c(sync::Crc32c(chunk.data()));
      if (mangle) mangle(&chunk);
      if (!stream->Write(chunk)) broken = true;
      if (!broken) sent.bytes += static_cast<int64_t>(chunk.data().size());
    }
    if (cut) {
      UploadAck ack;
      if (stream->Read(&ack)) sent.acks.push_back(ack);
      ctx->TryCancel();
      sent.status = stream->Finish();
      return sent;
    }
    stream->WritesDone();
    UploadAck ack;
    while (stream->Read(&ack)) sent.acks.push_back(ack);
    sent.status = stream->Finish();
    auto trailer = ctx->GetServerTrailingMetadata().find(kCommittedOffsetMetadata);
    if (trailer != ctx->GetServerTrailingMetadata().end()) {
      sent.committed_trailer = std::string(trailer->second.data(), trailer->second.size());
    }
    return sent;
  }

  // Begin, then send from the committed offset to the end; returns the payload bytes
  // sent, or -1 on failure.
  int64_t UploadAll(const std::string& user, const std::string& attachment_id,
                    const std::string& bytes) {
    int64_t total = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {
      BeginUploadResponse begin;
      grpc::Status s = Begin(user, attachment_id, bytes, &begin);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) return -1;
      if (begin.already_have()) return total;
      Sent sent = Send(user, begin.upload_id(), bytes, begin.committed_offset(),
                       static_cast<int64_t>(bytes.size()));
      total += sent.bytes;
      if (sent.status.ok() && !sent.acks.empty() && sent.acks.back().complete()) return total;
      if (sent.status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
        ADD_FAILURE() << sent.status.error_message();
        return -1;
      }
    }
    return -1;
  }

  grpc::Status Download(const std::string& user, const std::string& bytes, int64_t offset,
                        int64_t length, std::string* out) {
    DownloadRequest req;
    req.set_sha256(Sha(bytes));
    req.set_offset(offset);
    req.set_length(length);
    auto ctx = As(user);
    auto reader = stub_->Download(ctx.get(), req);
    DownloadChunk chunk;
    out->clear();
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.offset(), offset + static_cast<int64_t>(out->size()));
      EXPECT_EQ(chunk.crc32c(), sync::Crc32c(chunk.data()));
      EXPECT_EQ(chunk.total_size(), static_cast<int64_t>(bytes.size()));
      *out += chunk.data();
    }
    return reader->Finish();
  }

  // Whether the server stores the blob of `bytes` (a file, or a row in PostgreSQL).
  bool HasBlob(const std::string& bytes) {
    return server_->attachments()->blobs().Size(HexOf(Sha(bytes))).ok();
  }
  // Whether an upload session has bytes staged (its temp file, or chunk rows).
  bool HasStaged(const std::string& upload_id) {
    absl::StatusOr<int64_t> size = server_->attachments()->staging().StagedSize(upload_id);
    return size.ok() && *size > 0;
  }

  std::string BlobPath(const std::string& bytes) {
    const std::string hex = HexOf(Sha(bytes));
    return (fs::path(dir_.path()) / "blobs" / hex.substr(0, 2) / hex.substr(2, 2) / hex).string();
  }

  std::string store_;  // ServerOptions::store: empty (files in the data dir) or postgres:
  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_{absl::ToUnixMillis(absl::Now())};
  std::unique_ptr<KcnetServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<AttachmentService::Stub> stub_;
  std::map<std::string, std::string> tokens_;
  int max_upload_streams_ = 64;
  int64_t p_ = 0, q_ = 0, c1_ = 0, c9_ = 0;
  std::string facility1_, facility9_;
};

TEST_P(AttachmentsTest, UploadsAcksEvery256KiBThenAlreadyHasItAndDownloads) {
  const std::string photo = Jpeg(600 * kKiB + 123, 1);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  EXPECT_FALSE(begin.already_have());
  EXPECT_EQ(begin.committed_offset(), 0);
  EXPECT_EQ(begin.max_chunk_bytes(), 64 * kKiB);
  EXPECT_EQ(begin.commit_interval_bytes(), 256 * kKiB);
  EXPECT_GT(begin.expires_ms(), clock_.NowMs() + 6 * kDay);
  Sent sent = Send("collab1", begin.upload_id(), photo, 0, static_cast<int64_t>(photo.size()));
  ASSERT_TRUE(sent.status.ok()) << sent.status.error_message();
  ASSERT_GE(sent.acks.size(), 3u);  // 256 KiB, 512 KiB, the end
  int64_t previous = 0;
  for (const UploadAck& ack : sent.acks) {
    // The last (complete) ack may repeat the size: the ack of the last commit comes
    // before the SHA-256 check.
    if (ack.complete()) {
      EXPECT_GE(ack.committed_offset(), previous);
    } else {
      EXPECT_GT(ack.committed_offset(), previous);
    }
    // Durable at least every 256 KiB: the stream waits when its bytes would run two
    // intervals past the committed offset. Acks of commits may merge (a newer one
    // replaces one not yet sent), so two acks are at most two intervals apart.
    EXPECT_LE(ack.committed_offset() - previous, 2 * 256 * kKiB);
    previous = ack.committed_offset();
  }
  EXPECT_TRUE(sent.acks.back().complete());
  EXPECT_EQ(sent.acks.back().committed_offset(), static_cast<int64_t>(photo.size()));
  EXPECT_TRUE(HasBlob(photo));

  // The same photo attached again in the province: nothing to send.
  const std::string again = Attach("coord1", facility1_, c1_, photo);
  BeginUploadResponse second;
  ASSERT_TRUE(Begin("coord1", again, photo, &second).ok());
  EXPECT_TRUE(second.already_have());
  EXPECT_TRUE(second.upload_id().empty());

  // The console lists the facility's attachments, then fetches the photo.
  ListAttachmentsRequest list;
  list.set_owner_type(ATTACHMENT_OWNER_TYPE_FACILITY);
  list.set_owner_id(facility1_);
  ListAttachmentsResponse listed;
  ASSERT_TRUE(stub_->ListAttachments(As("coord1").get(), list, &listed).ok());
  ASSERT_EQ(listed.attachments_size(), 2);
  EXPECT_EQ(listed.attachments(0).id(), id);
  EXPECT_EQ(listed.attachments(0).sha256(), HexOf(Sha(photo)));
  EXPECT_EQ(listed.attachments(0).caption(), "Xưởng sản xuất");
  EXPECT_EQ(stub_->ListAttachments(As("collab9").get(), list, &listed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::string got;
  ASSERT_TRUE(Download("coord1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
  // A range, as a resumed download asks.
  ASSERT_TRUE(Download("coord1", photo, 100000, 70000, &got).ok());
  EXPECT_EQ(got, photo.substr(100000, 70000));
}

// Past --attachment_max_upload_streams, a new Upload stream is answered at once
// RESOURCE_EXHAUSTED with the trailer kcnet-retry-after-ms, and none of its bytes is kept;
// once an admitted stream ends, the refused upload goes through.
TEST_P(AttachmentsTest, UploadStreamsPastTheLimitAreToldToRetryAfter) {
  max_upload_streams_ = 2;
  RestartServer();
  std::vector<std::string> photos, ids, uploads;
  for (uint32_t i = 0; i < 3; ++i) {
    photos.push_back(Jpeg(300 * kKiB, 40 + i));
    ids.push_back(Attach("collab1", facility1_, c1_, photos.back()));
    BeginUploadResponse begin;
    ASSERT_TRUE(Begin("collab1", ids.back(), photos.back(), &begin).ok());
    uploads.push_back(begin.upload_id());
  }
  // Two streams admitted, each with its first chunk received (a received ack says so).
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<UploadChunk, UploadAck>>> open;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(As("collab1"));
    open.push_back(stub_->Upload(contexts.back().get()));
    UploadChunk chunk;
    chunk.set_upload_id(uploads[i]);
    chunk.set_offset(0);
    chunk.set_data(photos[i].substr(0, 64 * kKiB));
    chunk.set_crc32c(sync::Crc32c(chunk.data()));
    chunk.set_ack_received(true);
    ASSERT_TRUE(open.back()->Write(chunk));
    UploadAck ack;
    ASSERT_TRUE(open.back()->Read(&ack));
    EXPECT_EQ(ack.received_offset(), 64 * kKiB);
  }
  // The third is refused, with when to come back, and nothing of it is stored.
  auto ctx = As("collab1");
  auto refused = stub_->Upload(ctx.get());
  UploadChunk chunk;
  chunk.set_upload_id(uploads[2]);
  chunk.set_offset(0);
  chunk.set_data(photos[2].substr(0, 64 * kKiB));
  chunk.set_crc32c(sync::Crc32c(chunk.data()));
  refused->Write(chunk);
  refused->WritesDone();
  UploadAck ack;
  EXPECT_FALSE(refused->Read(&ack));
  grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("uploads"));
  EXPECT_THAT(status.error_message(), HasSubstr("retry after 1000 ms"));
  auto trailer = ctx->GetServerTrailingMetadata().find(kRetryAfterMetadata);
  ASSERT_NE(trailer, ctx->GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(trailer->second.data(), trailer->second.size()), "1000");
  BeginUploadResponse again;
  ASSERT_TRUE(Begin("collab1", ids[2], photos[2], &again).ok());
  EXPECT_EQ(again.upload_id(), uploads[2]);
  EXPECT_EQ(again.committed_offset(), 0);

  // The first admitted stream ends: the refused upload now goes through (the slot frees
  // when the server has ended the stream, just after the client hears of it).
  open[0]->WritesDone();
  while (open[0]->Read(&ack)) {
  }
  EXPECT_TRUE(open[0]->Finish().ok());
  Sent sent;
  for (int attempt = 0; attempt < 100; ++attempt) {
    sent = Send("collab1", uploads[2], photos[2], 0, static_cast<int64_t>(photos[2].size()));
    if (sent.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(sent.status.ok()) << sent.status.error_message();
  ASSERT_FALSE(sent.acks.empty());
  EXPECT_TRUE(sent.acks.back().complete());
  EXPECT_TRUE(HasBlob(photos[2]));
  open[1]->WritesDone();
  while (open[1]->Read(&ack)) {
  }
  EXPECT_TRUE(open[1]->Finish().ok());

  // The limit is checked like every option.
  AttachmentOptions bad;
  bad.max_upload_streams = -1;
  absl::Status checked = CheckAttachmentOptions(bad);
  EXPECT_EQ(checked.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(checked.message()), HasSubstr("attachment_max_upload_streams"));
}

TEST_P(AttachmentsTest, ResumesAfterACutAtTheCommittedOffset) {
  const std::string photo = Jpeg(700 * kKiB, 2);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  // 320 KiB go out, the first ack (a commit of 64 KiB or more) comes back, then the
  // connection is cut.
  Sent cut = Send("collab1", begin.upload_id(), photo, 0, 320 * kKiB, /*cut=*/true);
  ASSERT_FALSE(cut.acks.empty());
  const int64_t acked = cut.acks[0].committed_offset();
  EXPECT_GE(acked, 64 * kKiB);
  EXPECT_LE(acked, 320 * kKiB);
  BeginUploadResponse resumed;
  ASSERT_TRUE(Begin("collab1", id, photo, &resumed).ok());
  EXPECT_EQ(resumed.upload_id(), begin.upload_id());
  EXPECT_GE(resumed.committed_offset(), acked);
  EXPECT_LE(resumed.committed_offset(), 320 * kKiB);
  const int64_t rest = UploadAll("collab1", id, photo);
  ASSERT_GE(rest, 0);
  // Re-sent after the cut: at most what was past the committed offset (<= 320 KiB).
  EXPECT_LE(cut.bytes + rest - static_cast<int64_t>(photo.size()), 320 * kKiB);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

// Issue 17, progress on slow links: a chunk that asks (ack_received) gets an ack of the
// bytes received, ahead of the committed offset, which moves at least every 256 KiB
// (commits follow the stream in groups of 64 KiB or more, two at once on files).
// Pipelined: all the chunks go out before any ack is read, then the connection is cut
// mid-upload; the upload resumes from the committed offset and ends byte-identical.
TEST_P(AttachmentsTest, ReceivedAcksRunAheadOfCommitsAndACutResumesFromTheCommit) {
  const std::string photo = Jpeg(400 * kKiB + 7, 11);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  auto ctx = As("collab1");
  auto stream = stub_->Upload(ctx.get());
  constexpr int64_t kSmall = 16 * kKiB;
  constexpr int kChunks = 20;  // 320 KiB: commits follow in groups of 64 KiB or more
  for (int i = 0; i < kChunks; ++i) {
    UploadChunk chunk;
    chunk.set_upload_id(begin.upload_id());
    chunk.set_offset(i * kSmall);
    chunk.set_data(photo.substr(static_cast<size_t>(i * kSmall), kSmall));
    chunk.set_crc32c(sync::Crc32c(chunk.data()));
    chunk.set_ack_received(true);
    ASSERT_TRUE(stream->Write(chunk));
  }
  // Acks come in order and may be merged (a newer one replaces one not yet sent); read
  // until the last chunk's and a commit of at least 256 KiB (commits run beside the
  // stream, acknowledged when durable: they may come after the received acks of later
  // chunks).
  std::vector<UploadAck> acks;
  UploadAck ack;
  while (stream->Read(&ack)) {
    acks.push_back(ack);
    if (ack.received_offset() == kChunks * kSmall && ack.committed_offset() >= 256 * kKiB) break;
  }
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().received_offset(), kChunks * kSmall);
  bool ahead = false;
  int64_t previous = 0, previous_committed = 0;
  for (const UploadAck& a : acks) {
    EXPECT_GE(a.received_offset(), previous);
    previous = a.received_offset();
    EXPECT_FALSE(a.complete());
    EXPECT_LE(a.committed_offset(), a.received_offset());
    // Committed only grows, by whole chunks (a commit covers what was written when it
    // began); acks may merge, so by at most two commit intervals from one to the next.
    EXPECT_GE(a.committed_offset(), previous_committed);
    EXPECT_LE(a.committed_offset() - previous_committed, 2 * 256 * kKiB);
    EXPECT_EQ(a.committed_offset() % kSmall, 0) << a.committed_offset();
    previous_committed = a.committed_offset();
    ahead = ahead || a.received_offset() > a.committed_offset();
  }
  EXPECT_TRUE(ahead);
  EXPECT_GE(acks.back().committed_offset(), 256 * kKiB);
  // GetUpload says the committed offset (at least what was acknowledged), never more
  // than was received.
  GetUploadRequest get;
  get.set_upload_id(begin.upload_id());
  UploadState state;
  ASSERT_TRUE(stub_->GetUpload(As("collab1").get(), get, &state).ok());
  EXPECT_GE(state.committed_offset(), acks.back().committed_offset());
  EXPECT_LE(state.committed_offset(), kChunks * kSmall);
  // The cut.
  ctx->TryCancel();
  stream->Finish();
  BeginUploadResponse resumed;
  for (int i = 0; i < 100; ++i) {  // the server sees the cut on its own time
    ASSERT_TRUE(Begin("collab1", id, photo, &resumed).ok());
    if (resumed.committed_offset() == kChunks * kSmall) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  // The stream's end committed what it had received; the rest goes from there.
  EXPECT_EQ(resumed.committed_offset(), kChunks * kSmall);
  const int64_t rest = UploadAll("collab1", id, photo);
  EXPECT_EQ(rest, static_cast<int64_t>(photo.size()) - kChunks * kSmall);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

TEST_P(AttachmentsTest, AWrongOffsetAnswersTheCommittedOffset) {
  const std::string photo = Jpeg(300 * kKiB, 3);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  Sent sent = Send("collab1", begin.upload_id(), photo, 64 * kKiB, 128 * kKiB);
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(sent.status.error_message(), HasSubstr("committed_offset=0"));
  EXPECT_EQ(sent.committed_trailer, "0");
  // After one good chunk, a skipped one names 64 KiB.
  Sent first = Send("collab1", begin.upload_id(), photo, 0, 64 * kKiB);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  Sent skip = Send("collab1", begin.upload_id(), photo, 128 * kKiB, 192 * kKiB);
  EXPECT_EQ(skip.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(skip.committed_trailer, absl::StrCat(64 * kKiB));
}

TEST_P(AttachmentsTest, ABadCrcIsRefusedAndNotStored) {
  const std::string photo = Jpeg(200 * kKiB, 4);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  Sent sent = Send("collab1", begin.upload_id(), photo, 0, 192 * kKiB, false, [](UploadChunk* c) {
    if (c->offset() == 64 * kKiB) c->set_crc32c(c->crc32c() ^ 1);
  });
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(sent.status.error_message(), HasSubstr("crc32c"));
  GetUploadRequest req;
  req.set_upload_id(begin.upload_id());
  UploadState state;
  ASSERT_TRUE(stub_->GetUpload(As("collab1").get(), req, &state).ok());
  EXPECT_EQ(state.committed_offset(), 64 * kKiB);  // the good chunk before it, not the bad
  EXPECT_GE(UploadAll("collab1", id, photo), 0);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

TEST_P(AttachmentsTest, AShaMismatchIsDataLossAndRestartsAtZero) {
  const std::string photo = Jpeg(100 * kKiB, 5);
  const std::string other = Jpeg(100 * kKiB, 6);  // same size, other bytes
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  Sent sent = Send("collab1", begin.upload_id(), other, 0, static_cast<int64_t>(other.size()));
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(sent.status.error_message(), HasSubstr("sha256"));
  BeginUploadResponse again;
  ASSERT_TRUE(Begin("collab1", id, photo, &again).ok());
  EXPECT_FALSE(again.already_have());
  EXPECT_EQ(again.committed_offset(), 0);
  EXPECT_FALSE(HasBlob(photo));
  EXPECT_FALSE(HasBlob(other));
}

TEST_P(AttachmentsTest, AnotherProvinceCannotProbeOrDownloadByHash) {
  const std::string photo = Jpeg(90 * kKiB, 7);
  ASSERT_GE(UploadAll("collab1", Attach("collab1", facility1_, c1_, photo), photo), 0);
  // Province 91 names the same hash in a record of its own: it must upload the bytes.
  const std::string theirs = Attach("collab9", facility9_, c9_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab9", theirs, photo, &begin).ok());
  EXPECT_FALSE(begin.already_have());
  EXPECT_FALSE(begin.upload_id().empty());
  std::string got;
  grpc::Status s = Download("collab9", photo, 0, 0, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(got.empty());
  // Once it has uploaded them, it may.
  ASSERT_GE(UploadAll("collab9", theirs, photo), 0);
  ASSERT_TRUE(Download("collab9", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

TEST_P(AttachmentsTest, ARecordOutsideScopeIsNotFound) {
  const std::string photo = Jpeg(50 * kKiB, 8);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  grpc::Status theirs = Begin("collab9", id, photo, &begin);
  EXPECT_EQ(theirs.error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string missing = RecordAccess::NewId();
  grpc::Status none = Begin("collab9", missing, photo, &begin);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::NOT_FOUND);
  // The same words, but for the id the caller gave.
  std::string theirs_text = theirs.error_message();
  theirs_text.replace(theirs_text.find(id), id.size(), missing);
  EXPECT_EQ(theirs_text, none.error_message());
  // A record for a facility outside the caller's scope is refused naming owner_id.
  absl::StatusOr<std::string> refused = WriteAttachment("collab9", facility1_, c1_, photo);
  EXPECT_FALSE(refused.ok());
  absl::StatusOr<std::string> refused_in_own = WriteAttachment("collab9", facility1_, c9_, photo);
  EXPECT_EQ(refused_in_own.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(refused_in_own.status().message(), HasSubstr("owner_id"));
  // And the bytes cannot be fetched by one who may not see the record.
  ASSERT_GE(UploadAll("collab1", id, photo), 0);
  std::string got;
  EXPECT_EQ(Download("collab9", photo, 0, 0, &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_P(AttachmentsTest, MediaTypeIsCheckedByMagicBytes) {
  std::string gif = "GIF89a";
  gif += Jpeg(20 * kKiB, 9).substr(6);
  absl::StatusOr<std::string> as_gif =
      WriteAttachment("collab1", facility1_, c1_, gif, "image/gif");
  EXPECT_EQ(as_gif.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(as_gif.status().message(), HasSubstr("media_type"));
  // Announced as PNG: the first bytes say otherwise.
  absl::StatusOr<std::string> id = WriteAttachment("collab1", facility1_, c1_, gif, "image/png");
  ASSERT_TRUE(id.ok()) << id.status();
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", *id, gif, &begin, "image/png").ok());
  Sent sent = Send("collab1", begin.upload_id(), gif, 0, static_cast<int64_t>(gif.size()));
  EXPECT_EQ(sent.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(sent.status.error_message(), HasSubstr("media_type"));
  EXPECT_FALSE(HasBlob(gif));
  // A real PNG header passes.
  std::string png = std::string("\x89PNG\r\n\x1A\n", 8) + Jpeg(10 * kKiB, 10).substr(8);
  absl::StatusOr<std::string> png_id =
      WriteAttachment("collab1", facility1_, c1_, png, "image/png");
  ASSERT_TRUE(png_id.ok()) << png_id.status();
  ASSERT_TRUE(Begin("collab1", *png_id, png, &begin, "image/png").ok());
  Sent ok = Send("collab1", begin.upload_id(), png, 0, static_cast<int64_t>(png.size()));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_TRUE(HasBlob(png));
}

TEST_P(AttachmentsTest, SizeLimitAndQuotaAreResourceExhausted) {
  // The record allows 25 MiB; this server takes 1 MiB.
  const std::string big = Jpeg(1100 * kKiB, 11);
  const std::string big_id = Attach("collab1", facility1_, c1_, big);
  BeginUploadResponse begin;
  grpc::Status s = Begin("collab1", big_id, big, &begin);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("size"));
  // collab1's quota is 1500 KiB: 700 + 700 fit, a third does not.
  const std::string a = Jpeg(700 * kKiB, 12);
  const std::string b = Jpeg(700 * kKiB, 13);
  const std::string c = Jpeg(700 * kKiB, 14);
  ASSERT_GE(UploadAll("collab1", Attach("collab1", facility1_, c1_, a), a), 0);
  ASSERT_TRUE(Begin("collab1", Attach("collab1", facility1_, c1_, b), b, &begin).ok());
  s = Begin("collab1", Attach("collab1", facility1_, c1_, c), c, &begin);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("quota per user"));
  // Another user of the province has a quota of their own.
  EXPECT_TRUE(Begin("coord1", Attach("coord1", facility1_, c1_, c), c, &begin).ok());
}

TEST_P(AttachmentsTest, GcRemovesUnreferencedBlobsAndStaleUploadsAfterGraceOnly) {
  const std::string kept = Jpeg(80 * kKiB, 15);
  const std::string dropped = Jpeg(80 * kKiB, 16);
  ASSERT_GE(UploadAll("collab1", Attach("collab1", facility1_, c1_, kept), kept), 0);
  const std::string dropped_id = Attach("collab1", facility1_, c1_, dropped);
  ASSERT_GE(UploadAll("collab1", dropped_id, dropped), 0);
  // A half-done upload, and a stray temp file no session owns.
  const std::string partial = Jpeg(300 * kKiB, 17);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", Attach("collab1", facility1_, c1_, partial), partial, &begin).ok());
  ASSERT_TRUE(Send("collab1", begin.upload_id(), partial, 0, 64 * kKiB).status.ok());
  // (On PostgreSQL no stray file: chunk rows are written only by a session's commit.)
  const std::string stray = (fs::path(dir_.path()) / "uploads" / "0123abcd.part");
  if (on_files()) std::ofstream(stray) << "left by a crash";
  ASSERT_TRUE(HasStaged(begin.upload_id()));

  // The record of `dropped` is deleted: its blob is unreferenced from now.
  v1::Attachment record;
  absl::StatusOr<uint64_t> op =
      Access().Read(Caller("collab1"), model::kAttachmentType, dropped_id, &record);
  ASSERT_TRUE(op.ok()) << op.status();
  RecordChange deletion;
  deletion.set_type(model::kAttachmentType);
  deletion.set_id(*sync::UuidFromText(dropped_id));
  deletion.set_deleted(true);
  deletion.set_base_op(*op);
  ASSERT_TRUE(Access().Write(Caller("collab1"), {deletion}).ok());

  absl::StatusOr<GcReport> first = server_->attachments()->CollectGarbage();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->blobs_removed, 0);
  EXPECT_EQ(first->blobs_marked, 1);
  EXPECT_EQ(first->temp_files_removed, on_files() ? 1 : 0);  // the stray one only
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_TRUE(HasStaged(begin.upload_id()));
  EXPECT_TRUE(HasBlob(dropped));

  clock_.Advance(23 * 3600 * 1000LL);  // within the grace
  ASSERT_TRUE(server_->attachments()->CollectGarbage().ok());
  EXPECT_TRUE(HasBlob(dropped));

  clock_.Advance(2 * 3600 * 1000LL);  // past it
  absl::StatusOr<GcReport> later = server_->attachments()->CollectGarbage();
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->blobs_removed, 1);
  EXPECT_FALSE(HasBlob(dropped));
  EXPECT_TRUE(HasBlob(kept));                 // referenced: never
  EXPECT_TRUE(HasStaged(begin.upload_id()));  // the session has 6 days left

  clock_.Advance(7 * kDay);
  absl::StatusOr<GcReport> expired = server_->attachments()->CollectGarbage();
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_EQ(expired->sessions_expired, 1);
  EXPECT_FALSE(HasStaged(begin.upload_id()));
  EXPECT_TRUE(HasBlob(kept));
  GetUploadRequest req;
  req.set_upload_id(begin.upload_id());
  UploadState state;
  EXPECT_EQ(stub_->GetUpload(As("collab1").get(), req, &state).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_P(AttachmentsTest, VerifyBlobsFindsAFlippedByte) {
  if (!on_files()) GTEST_SKIP() << "handles the files of the data dir";
  const std::string photo = Jpeg(70 * kKiB, 18);
  const std::string other = Jpeg(70 * kKiB, 19);
  ASSERT_GE(UploadAll("collab1", Attach("collab1", facility1_, c1_, photo), photo), 0);
  ASSERT_GE(UploadAll("collab1", Attach("collab1", facility1_, c1_, other), other), 0);
  auto run = [&](int* code) {
    const std::string command =
        absl::StrCat(KCNET_ADMIN_PATH, " verify-blobs --data_dir=", dir_.path(), " 2>&1");
    FILE* pipe = popen(command.c_str(), "r");
    std::string out;
    char buffer[512];
    while (pipe != nullptr && fgets(buffer, sizeof(buffer), pipe) != nullptr) out += buffer;
    const int status = pipe == nullptr ? -1 : pclose(pipe);
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  };
  int code = -1;
  std::string out = run(&code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("verified 2 blobs"));
  {
    std::fstream f(BlobPath(photo), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put(static_cast<char>(photo[5000] ^ 0x01));
  }
  out = run(&code);
  EXPECT_NE(code, 0) << out;
  EXPECT_THAT(out, HasSubstr(HexOf(Sha(photo))));
  EXPECT_THAT(out, ::testing::Not(HasSubstr(HexOf(Sha(other)))));
}

TEST_P(AttachmentsTest, AServerRestartMidUploadResumesAtTheCommittedOffset) {
  const std::string photo = Jpeg(800 * kKiB, 20);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  Sent cut = Send("collab1", begin.upload_id(), photo, 0, 576 * kKiB, /*cut=*/true);
  ASSERT_FALSE(cut.acks.empty());
  RestartServer();
  BeginUploadResponse resumed;
  ASSERT_TRUE(Begin("collab1", id, photo, &resumed).ok());
  EXPECT_EQ(resumed.upload_id(), begin.upload_id());
  EXPECT_GE(resumed.committed_offset(), 256 * kKiB);
  const int64_t rest = UploadAll("collab1", id, photo);
  ASSERT_GE(rest, 0);
  EXPECT_LE(rest, static_cast<int64_t>(photo.size()) - 256 * kKiB);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

// Commits run beside the stream (the fsync on a committer thread): an ack of a committed
// offset comes only once that offset's row is written (after its fsync), and a cut with
// commits still running, then a restart, keeps every acknowledged byte.
TEST_P(AttachmentsTest, ACutWhileACommitRunsLosesNothingAcknowledged) {
  const std::string photo = Jpeg(1024 * kKiB, 24);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  auto ctx = As("collab1");
  auto stream = stub_->Upload(ctx.get());
  absl::Mutex mu;
  int64_t acked = 0;           // the largest committed offset acknowledged
  int64_t row_below_ack = -1;  // a committed offset acknowledged before its row was written
  std::thread reader([&] {
    UploadAck ack;
    while (stream->Read(&ack)) {
      absl::StatusOr<std::optional<UploadSession>> row =
          server_->attachments()->db().GetUpload(begin.upload_id());
      absl::MutexLock lock(&mu);
      if (row.ok() && row->has_value() && (*row)->committed < ack.committed_offset()) {
        row_below_ack = ack.committed_offset();
      }
      acked = std::max(acked, ack.committed_offset());
    }
  });
  // 896 KiB without waiting for acks (the server holds the stream when its bytes run two
  // commit intervals ahead), then a cut as soon as a commit was acknowledged.
  constexpr int64_t kSent = 896 * kKiB;
  for (int64_t off = 0; off < kSent; off += 64 * kKiB) {
    UploadChunk chunk;
    chunk.set_upload_id(begin.upload_id());
    chunk.set_offset(off);
    chunk.set_data(photo.substr(static_cast<size_t>(off), 64 * kKiB));
    chunk.set_crc32c(sync::Crc32c(chunk.data()));
    chunk.set_ack_received(true);
    if (!stream->Write(chunk)) break;
  }
  {
    absl::MutexLock lock(&mu);
    auto some = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return acked > 0; };
    mu.AwaitWithTimeout(absl::Condition(&some), absl::Seconds(30));
  }
  ctx->TryCancel();
  reader.join();
  stream->Finish();
  RestartServer();
  int64_t acknowledged = 0;
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(row_below_ack, -1) << "acknowledged before its row was written";
    acknowledged = acked;
  }
  EXPECT_GE(acknowledged, 256 * kKiB);
  BeginUploadResponse resumed;
  ASSERT_TRUE(Begin("collab1", id, photo, &resumed).ok());
  EXPECT_EQ(resumed.upload_id(), begin.upload_id());
  EXPECT_GE(resumed.committed_offset(), acknowledged);
  EXPECT_LE(resumed.committed_offset(), kSent);
  const int64_t rest = UploadAll("collab1", id, photo);
  ASSERT_GE(rest, 0);
  EXPECT_LE(rest, static_cast<int64_t>(photo.size()) - acknowledged);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

TEST_P(AttachmentsTest, ASessionCommittedToTheEndBeforeACrashIsFinishedByBegin) {
  if (!on_files()) GTEST_SKIP() << "handles the files of the data dir";
  const std::string photo = Jpeg(100 * kKiB, 21);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  // What a server that stopped after its last commit but before the hash check leaves:
  // every byte in the temp file, the committed offset at the size.
  RestartServer();
  std::ofstream(fs::path(dir_.path()) / "uploads" / (begin.upload_id() + ".part"),
                std::ios::binary | std::ios::trunc)
      << photo;
  ASSERT_TRUE(server_->attachments()
                  ->db()
                  .SetCommitted(begin.upload_id(), static_cast<int64_t>(photo.size()))
                  .ok());
  BeginUploadResponse again;
  ASSERT_TRUE(Begin("collab1", id, photo, &again).ok());
  EXPECT_TRUE(again.already_have());
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

// A data dir restored from a backup has the session's row (committed offset and all) but
// not its temp file (a backup holds none): the session starts again at 0 instead of
// finishing with a hole, failing its SHA-256.
TEST_P(AttachmentsTest, ASessionWhoseTempFileARestoreLostStartsAgainAtZero) {
  if (!on_files()) GTEST_SKIP() << "handles the files of the data dir";
  const std::string photo = Jpeg(800 * kKiB, 23);
  const std::string id = Attach("collab1", facility1_, c1_, photo);
  BeginUploadResponse begin;
  ASSERT_TRUE(Begin("collab1", id, photo, &begin).ok());
  Sent cut = Send("collab1", begin.upload_id(), photo, 0, 576 * kKiB, /*cut=*/true);
  ASSERT_FALSE(cut.acks.empty());
  RestartServer();
  fs::remove(fs::path(dir_.path()) / "uploads" / (begin.upload_id() + ".part"));
  BeginUploadResponse again;
  ASSERT_TRUE(Begin("collab1", id, photo, &again).ok());
  EXPECT_EQ(again.upload_id(), begin.upload_id());
  EXPECT_EQ(again.committed_offset(), 0);
  ASSERT_GE(UploadAll("collab1", id, photo), 0);
  std::string got;
  ASSERT_TRUE(Download("collab1", photo, 0, 0, &got).ok());
  EXPECT_EQ(got, photo);
}

#if KCNET_ATTACHMENTS_TEST_PG
INSTANTIATE_TEST_SUITE_P(Stores, AttachmentsTest, ::testing::Values(StoreKind::kPostgres),
                         StoreName);
#else
INSTANTIATE_TEST_SUITE_P(Stores, AttachmentsTest, ::testing::Values(StoreKind::kSqlite), StoreName);
#endif

}  // namespace
}  // namespace kcnet::server
