// Attachments on the device (kcnet/attachments.h) end to end: a real KcnetServer on port 0
// (its AttachmentService), real stores and attachment folders in temp dirs. Added offline
// and uploaded by the sync after the records, byte-identical (SHA-256) and exactly once;
// a cut resumes at the server's committed offset (the re-sent bytes counted); bytes the
// province already holds cost no payload; the queue runs smallest first or in the app's
// order; eviction never drops bytes not yet uploaded; a coordinator's device downloads a
// collaborator's photo on demand; bad input is refused naming the field with nothing
// stored; bytes a crash left without their record are removed at the next open.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/attachment_digest.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::sdk {
namespace {

using ::testing::HasSubstr;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";
constexpr int64_t kMaxInFlight = (256 + 64) << 10;  // what a cut may cost (attachment_queue.h)

// Bytes that read as a JPEG (its magic number) followed by `size` - 4 random bytes.
std::string Jpeg(size_t size, uint64_t seed) {
  std::string out = "\xFF\xD8\xFF\xE0";
  std::mt19937_64 rng(seed);
  while (out.size() < size) out.push_back(static_cast<char>(rng() & 0xFF));
  out.resize(size);
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Files in the fan-out folders of an attachment folder (not its tmp/).
int CountBlobFiles(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& sub : std::filesystem::directory_iterator(dir, ec)) {
    if (!sub.is_directory() || sub.path().filename() == "tmp") continue;
    for (const auto& f : std::filesystem::directory_iterator(sub.path(), ec)) {
      (void)f;
      ++n;
    }
  }
  return n;
}

class AttachmentsTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  // (Re)starts the server on the data dir with `max_upload_streams` (the directory's
  // accounts are made on the first start only).
  void StartServer(int max_upload_streams = 64) {
    const bool first = server_ == nullptr;
    if (!first) {
      server_->Shutdown(absl::Seconds(1));
      server_.reset();
    }
    server::ServerOptions options =
        kcnet::testing::TestServerOptions(dir_.File("server"), "127.0.0.1:0");
    options.attachments.max_upload_streams = max_upload_streams;
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    if (!first) return;
    server::Directory* d = server_->directory();
    const int64_t p = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t district = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    commune_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    other_commune_ = d->CreateOrgUnit("90102", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    ASSERT_TRUE(
        d->CreateUser("ctv_an", "Nguyễn Văn An", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_})
            .ok());
    ASSERT_TRUE(
        d->CreateUser("ctv_binh", "Trần Thị Bình", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_})
            .ok());
    ASSERT_TRUE(d->CreateUser("ctv_hai", "Lê Văn Hai", kPassword, ROLE_COMMUNE_COLLABORATOR,
                              {other_commune_})
                    .ok());
    ASSERT_TRUE(d->CreateUser("dp_huyen", "Phạm Điều Phối", kPassword, ROLE_DISTRICT_COORDINATOR,
                              {district})
                    .ok());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  ClientOptions Options(const std::string& device) {
    ClientOptions o;
    o.path = dir_.File(device + ".db");
    o.device_id = device;
    o.server_address = address_;
    o.durable = false;
    o.sync_timeout = absl::Seconds(30);
    o.seed = 11;
    return o;
  }

  std::unique_ptr<Client> SignedIn(ClientOptions options, const std::string& user) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    absl::Status status = (*client)->SignIn(user, kPassword);
    EXPECT_TRUE(status.ok()) << status;
    return *std::move(client);
  }

  // A facility and a visit of `client`'s commune, written offline; the visit's id.
  std::string NewVisit(Client& client, int64_t commune, const std::string& name) {
    Facility f;
    f.set_commune_id(commune);
    f.set_name(name);
    f.set_owner_name("Nguyễn Thị Cơ Sở");
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(SECTOR_HANDICRAFTS);
    f.set_latitude(21.03);
    f.set_longitude(105.85);
    f.set_workers(5);
    absl::StatusOr<Facility> facility = client.RegisterFacility(f);
    EXPECT_TRUE(facility.ok()) << facility.status();
    Visit v;
    v.set_facility_id(facility.ok() ? facility->id() : "");
    v.set_purpose(VISIT_PURPOSE_SURVEY);
    v.set_findings("Kiểm tra máy móc");
    absl::StatusOr<Visit> visit = client.RecordVisit(v);
    EXPECT_TRUE(visit.ok()) << visit.status();
    return visit.ok() ? visit->id() : "";
  }

  absl::StatusOr<AttachmentInfo> AddPhoto(Client& client, const std::string& visit,
                                          const std::string& bytes, int32_t priority = 0) {
    NewAttachment a;
    a.owner_type = model::kVisitType;
    a.owner_id = visit;
    a.bytes = bytes;
    a.caption = "Máy dệt mới";
    a.latitude = 21.0285;
    a.longitude = 105.8542;
    a.priority = priority;
    return client.AddAttachment(a);
  }

  // The server's copy of a blob, whole.
  std::string ServerBytes(const std::string& sha, int64_t size) {
    absl::StatusOr<std::string> bytes = server_->attachments()->ReadBlob(sha, 0, size);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    return bytes.ok() ? *bytes : "";
  }

  int ServerBlobCount() {
    int n = 0;
    absl::Status s = server_->attachments()->blobs().ForEach([&](const std::string&, int64_t) {
      ++n;
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return n;
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
  std::string address_;
  int64_t commune_ = 0, other_commune_ = 0;
};

TEST_F(AttachmentsTest, AddedOfflineThenSyncedReachTheServerByteIdenticalExactlyOnce) {
  ClientOptions options = Options("tab-an");
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở dệt Vạn Phúc");
  const std::string photo = Jpeg(700 * 1024 + 13, 1);
  // A file the app wrote (downscaled), read once at the call.
  const std::string file = dir_.File("IMG_0001.jpg");
  std::ofstream(file, std::ios::binary) << photo;
  NewAttachment a;
  a.owner_type = model::kVisitType;
  a.owner_id = visit;
  a.file_path = file;
  a.caption = "Xưởng dệt";
  absl::StatusOr<AttachmentInfo> added = an->AddAttachment(a);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->state, AttachmentState::kQueued);
  EXPECT_TRUE(added->local);
  EXPECT_EQ(added->sha256, Sha256HexOf(photo));
  EXPECT_EQ(added->size, static_cast<int64_t>(photo.size()));
  EXPECT_EQ(added->media_type, "image/jpeg");  // from the magic number
  EXPECT_EQ(added->owner_id, visit);
  // The bytes sit under their hash beside the store.
  const std::string blob =
      options.path + ".attachments/" + added->sha256.substr(0, 2) + "/" + added->sha256;
  EXPECT_EQ(ReadFile(blob), photo);
  // Nothing reached the server yet: the add is local.
  EXPECT_EQ(ServerBlobCount(), 0);
  std::vector<AttachmentInfo> listed = *an->AttachmentsOf(model::kVisitType, visit);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].caption, "Xưởng dệt");

  std::vector<AttachmentProgress> events;
  absl::Mutex mu;
  an->AddAttachmentListener([&](const AttachmentProgress& p) {
    absl::MutexLock lock(&mu);
    events.push_back(p);
  });
  absl::StatusOr<SyncSummary> sync = an->SyncNow();
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_TRUE(sync->attachments_error.ok()) << sync->attachments_error;
  EXPECT_EQ(sync->attachments.uploaded, 1);
  EXPECT_EQ(sync->attachments.payload_bytes, static_cast<int64_t>(photo.size()));  // once
  EXPECT_EQ(sync->attachments.remaining, 0);
  AttachmentInfo after = *an->GetAttachment(added->id);
  EXPECT_EQ(after.state, AttachmentState::kUploaded);
  EXPECT_EQ(after.bytes_sent, after.size);
  EXPECT_EQ(Sha256HexOf(ServerBytes(added->sha256, added->size)), Sha256HexOf(photo));
  EXPECT_EQ(ServerBlobCount(), 1);
  {
    // Byte-level progress, never going backwards, ending uploaded.
    absl::MutexLock lock(&mu);
    ASSERT_GE(events.size(), 3u);
    int64_t last_sent = 0;
    bool received_ahead = false;  // a received ack between two commits
    for (const AttachmentProgress& p : events) {
      EXPECT_EQ(p.id, added->id);
      EXPECT_GE(p.bytes_sent, last_sent);
      last_sent = p.bytes_sent;
      if (p.state != AttachmentState::kUploading) continue;
      // Committed <= received by the server <= handed to the stream.
      EXPECT_LE(p.bytes_done, p.bytes_received);
      EXPECT_LE(p.bytes_received, p.bytes_sent);
      received_ahead = received_ahead || p.bytes_received > p.bytes_done;
    }
    // The first chunks are small and ask for received acks (the link's rate is unknown).
    EXPECT_TRUE(received_ahead);
    EXPECT_EQ(events.back().state, AttachmentState::kUploaded);
    EXPECT_EQ(events.back().bytes_done, added->size);
  }
  // A second sync sends nothing again.
  sync = an->SyncNow();
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->attachments.payload_bytes, 0);
  EXPECT_EQ(sync->attachments.uploaded, 0);
}

TEST_F(AttachmentsTest, ACutResumesAtTheCommittedOffsetAfterARestart) {
  ClientOptions options = Options("tab-an");
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở mây tre");
  const std::string photo = Jpeg(3 * 1024 * 1024 + 77, 2);
  absl::StatusOr<AttachmentInfo> added = AddPhoto(*an, visit, photo);
  ASSERT_TRUE(added.ok()) << added.status();
  // The link is cut once the server has committed a megabyte.
  std::atomic<bool> cut{false};
  Client* raw = an.get();
  an->AddAttachmentListener([&cut, raw](const AttachmentProgress& p) {
    if (p.bytes_done >= (1 << 20) && !cut.exchange(true)) raw->CancelSync();
  });
  absl::StatusOr<SyncSummary> first = an->SyncNow();
  ASSERT_TRUE(first.ok()) << first.status();  // the records synced; the photo did not
  EXPECT_TRUE(absl::IsCancelled(first->attachments_error)) << first->attachments_error;
  ASSERT_TRUE(cut.load());
  AttachmentInfo midway = *an->GetAttachment(added->id);
  EXPECT_EQ(midway.state, AttachmentState::kUploading);
  EXPECT_GE(midway.bytes_sent, 1 << 20);
  EXPECT_LT(midway.bytes_sent, midway.size);
  const int64_t sent_before_cut = first->attachments.payload_bytes;
  // The app restarts: the queue resumes from the store.
  ASSERT_TRUE(an->Close().ok());
  an.reset();
  an = Client::Open(options).value();
  absl::StatusOr<SyncSummary> second = an->SyncNow();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->attachments_error.ok()) << second->attachments_error;
  EXPECT_EQ(second->attachments.uploaded, 1);
  const int64_t resent =
      sent_before_cut + second->attachments.payload_bytes - static_cast<int64_t>(photo.size());
  std::printf("re-sent after one cut: %lld bytes (committed at the cut: %lld)\n",
              static_cast<long long>(resent), static_cast<long long>(midway.bytes_sent));
  EXPECT_GE(resent, 0);
  EXPECT_LE(resent, kMaxInFlight) << "re-sent bytes after one cut";
  EXPECT_EQ(an->GetAttachment(added->id)->state, AttachmentState::kUploaded);
  EXPECT_EQ(Sha256HexOf(ServerBytes(added->sha256, added->size)), Sha256HexOf(photo));
}

// A shared tablet: the visit's record reached the server but its photo did not (the link
// was cut). Signing out, or another user signing in, must not purge the photo's bytes: the
// device refuses as for pending record writes, until the photo is uploaded or the app
// chooses to discard it.
TEST_F(AttachmentsTest, APhotoNotYetUploadedBlocksSignOutAndASwitchOfUser) {
  std::unique_ptr<Client> an = SignedIn(Options("tab-shared"), "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở gốm");
  const std::string photo = Jpeg(2 * 1024 * 1024, 5);
  absl::StatusOr<AttachmentInfo> added = AddPhoto(*an, visit, photo);
  ASSERT_TRUE(added.ok()) << added.status();
  std::atomic<bool> cut{false};
  Client* raw = an.get();
  an->AddAttachmentListener([&cut, raw](const AttachmentProgress& p) {
    if (p.bytes_sent > 0 && !cut.exchange(true)) raw->CancelSync();
  });
  absl::StatusOr<SyncSummary> first = an->SyncNow();
  ASSERT_TRUE(first.ok()) << first.status();  // the records synced; the photo did not
  ASSERT_EQ(an->Status().pending_uploads, 0) << "no record write is pending";
  ASSERT_NE(an->GetAttachment(added->id)->state, AttachmentState::kUploaded);

  absl::Status out = an->SignOut();
  EXPECT_TRUE(absl::IsFailedPrecondition(out)) << out;
  absl::Status other = an->SignIn("ctv_binh", kPassword);
  EXPECT_TRUE(absl::IsFailedPrecondition(other)) << other;
  ASSERT_TRUE(an->GetAttachment(added->id).ok()) << "the photo is still on the device";

  // Once uploaded, the user may go; the server holds the bytes.
  absl::StatusOr<SyncSummary> second = an->SyncNow();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(an->GetAttachment(added->id)->state, AttachmentState::kUploaded);
  EXPECT_TRUE(an->SignOut().ok());
  EXPECT_EQ(Sha256HexOf(ServerBytes(added->sha256, added->size)), Sha256HexOf(photo));
}

TEST_F(AttachmentsTest, BytesTheProvinceAlreadyHoldsCostNoPayload) {
  std::unique_ptr<Client> an = SignedIn(Options("tab-an"), "ctv_an");
  std::unique_ptr<Client> binh = SignedIn(Options("tab-binh"), "ctv_binh");
  ASSERT_NE(an, nullptr);
  ASSERT_NE(binh, nullptr);
  const std::string photo = Jpeg(400 * 1024, 3);
  ASSERT_TRUE(AddPhoto(*an, NewVisit(*an, commune_, "Cơ sở A"), photo).ok());
  absl::StatusOr<SyncSummary> s = an->SyncNow();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->attachments.uploaded, 1);
  // Another collaborator photographs the same document: the same bytes.
  absl::StatusOr<AttachmentInfo> again =
      AddPhoto(*binh, NewVisit(*binh, commune_, "Cơ sở B"), photo);
  ASSERT_TRUE(again.ok()) << again.status();
  s = binh->SyncNow();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->attachments.uploaded, 1);
  EXPECT_EQ(s->attachments.payload_bytes, 0);
  EXPECT_EQ(binh->GetAttachment(again->id)->state, AttachmentState::kUploaded);
  EXPECT_EQ(ServerBlobCount(), 1);
}

// A server serving as many upload streams as it allows answers one more RESOURCE_EXHAUSTED
// with a retry-after; the device waits as told and uploads when a stream ends, in the same
// pass, without counting a failed attempt.
TEST_F(AttachmentsTest, ABusyServersRetryAfterIsHonouredWithoutAFailedAttempt) {
  StartServer(/*max_upload_streams=*/1);
  ClientOptions options = Options("tab-an");
  options.upload_attachments_in_sync = false;
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string photo = Jpeg(300 * 1024, 21);
  absl::StatusOr<AttachmentInfo> added = AddPhoto(*an, NewVisit(*an, commune_, "Cơ sở A"), photo);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(an->SyncNow().ok());  // the records

  // Another tablet holds the server's only upload stream (admitted, sending nothing yet).
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  LoginResponse login;
  {
    grpc::ClientContext ctx;
    LoginRequest req;
    req.set_username("ctv_binh");
    req.set_password(kPassword);
    ASSERT_TRUE(AuthService::NewStub(channel)->Login(&ctx, req, &login).ok());
  }
  auto stub = AttachmentService::NewStub(channel);
  // The holder is admitted once the server reads it: then a stream of our own is refused.
  // The server may read a probe first (each stream is handled on its own); the probe then
  // takes the free stream and the holder is the one refused (seen under ASan in CI). So a
  // holder whose probes keep passing is ended and started again.
  std::unique_ptr<grpc::ClientContext> holder_ctx;
  decltype(stub->Upload(holder_ctx.get())) holder;
  grpc::Status refused;
  for (int attempt = 0; attempt < 20; ++attempt) {
    if (holder != nullptr) {
      holder->WritesDone();
      holder->Finish().IgnoreError();
    }
    holder_ctx = std::make_unique<grpc::ClientContext>();
    holder_ctx->AddMetadata("authorization", "Bearer " + login.token());
    holder = stub->Upload(holder_ctx.get());
    absl::SleepFor(absl::Milliseconds(100));
    for (int i = 0; i < 10; ++i) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + login.token());
      auto probe = stub->Upload(&ctx);
      probe->WritesDone();
      refused = probe->Finish();
      if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        auto it = ctx.GetServerTrailingMetadata().find("kcnet-retry-after-ms");
        ASSERT_NE(it, ctx.GetServerTrailingMetadata().end());
        EXPECT_EQ(std::string(it->second.data(), it->second.size()), "1000");
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("uploads"));

  std::thread release([&] {
    absl::SleepFor(absl::Milliseconds(1500));
    holder->WritesDone();
    holder->Finish().IgnoreError();
  });
  absl::StatusOr<AttachmentUploadSummary> pass = an->UploadAttachments();
  release.join();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->uploaded, 1);
  EXPECT_EQ(pass->failed, 0);
  EXPECT_GE(pass->busy_waits, 1);
  absl::StatusOr<AttachmentInfo> info = an->GetAttachment(added->id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, AttachmentState::kUploaded);
  EXPECT_EQ(info->attempts, 0);
  EXPECT_EQ(ServerBlobCount(), 1);
}

TEST_F(AttachmentsTest, TheQueueRunsSmallestFirstUnlessTheAppOrdersIt) {
  std::unique_ptr<Client> an = SignedIn(Options("tab-an"), "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở gốm");
  const std::string big = AddPhoto(*an, visit, Jpeg(300 * 1024, 4))->id;
  const std::string small = AddPhoto(*an, visit, Jpeg(100 * 1024, 5))->id;
  const std::string middle = AddPhoto(*an, visit, Jpeg(200 * 1024, 6))->id;
  const std::string urgent = AddPhoto(*an, visit, Jpeg(500 * 1024, 7))->id;
  ASSERT_TRUE(an->SetAttachmentPriority(urgent, 10).ok());
  std::vector<AttachmentInfo> queue = *an->ListAttachments();
  ASSERT_EQ(queue.size(), 4u);
  EXPECT_EQ(queue[0].id, urgent);
  EXPECT_EQ(queue[1].id, small);
  EXPECT_EQ(queue[2].id, middle);
  EXPECT_EQ(queue[3].id, big);
  std::vector<std::string> order;
  absl::Mutex mu;
  an->AddAttachmentListener([&](const AttachmentProgress& p) {
    absl::MutexLock lock(&mu);
    // The order uploads start in (two overlap at their ends: the next begins once every
    // byte of the previous is committed, so their events interleave).
    if (std::find(order.begin(), order.end(), p.id) == order.end()) order.push_back(p.id);
  });
  absl::StatusOr<SyncSummary> s = an->SyncNow();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->attachments.uploaded, 4);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<std::string>{urgent, small, middle, big}));
}

TEST_F(AttachmentsTest, EvictionKeepsBytesNotYetUploadedAndOpenDownloadsThemAgain) {
  ClientOptions options = Options("tab-an");
  options.attachment_budget_bytes = 250 * 1024;
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở rèn");
  std::vector<std::string> photos = {Jpeg(200 * 1024, 8), Jpeg(200 * 1024, 9),
                                     Jpeg(200 * 1024, 10)};
  std::vector<std::string> ids;
  for (const std::string& p : photos) ids.push_back(AddPhoto(*an, visit, p)->id);
  // Three times the budget, none uploaded: every byte stays.
  Client::AttachmentStorage use = *an->AttachmentStorageUse();
  EXPECT_EQ(use.total_bytes, 600 * 1024);
  EXPECT_EQ(use.evictable_bytes, 0);
  for (const std::string& id : ids) EXPECT_TRUE(an->GetAttachment(id)->local);
  EXPECT_EQ(CountBlobFiles(options.path + ".attachments"), 3);
  absl::StatusOr<SyncSummary> s = an->SyncNow();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->attachments.uploaded, 3);
  // Uploaded now: evicted down to the budget.
  use = *an->AttachmentStorageUse();
  EXPECT_LE(use.total_bytes, options.attachment_budget_bytes);
  int local = 0;
  for (const std::string& id : ids) local += an->GetAttachment(id)->local ? 1 : 0;
  EXPECT_EQ(local, 1);
  EXPECT_EQ(CountBlobFiles(options.path + ".attachments"), 1);
  // An evicted one comes back from the server, byte-identical.
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<std::string> path = an->OpenAttachment(ids[i]);
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_EQ(Sha256HexOf(ReadFile(*path)), Sha256HexOf(photos[i]));
  }
}

TEST_F(AttachmentsTest, ACoordinatorOpensACollaboratorsPhotoOnDemand) {
  std::unique_ptr<Client> an = SignedIn(Options("tab-an"), "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở chế biến chè");
  const std::string photo = Jpeg(900 * 1024 + 5, 12);
  absl::StatusOr<AttachmentInfo> added = AddPhoto(*an, visit, photo);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_EQ(an->GetAttachment(added->id)->state, AttachmentState::kUploaded);

  ClientOptions options = Options("tab-huyen");
  std::unique_ptr<Client> coordinator = SignedIn(options, "dp_huyen");
  ASSERT_NE(coordinator, nullptr);
  ASSERT_TRUE(coordinator->SyncNow().ok());
  // The metadata arrived with the records; the bytes did not.
  std::vector<AttachmentInfo> of_visit = *coordinator->AttachmentsOf(model::kVisitType, visit);
  ASSERT_EQ(of_visit.size(), 1u);
  EXPECT_EQ(of_visit[0].state, AttachmentState::kRemote);
  EXPECT_FALSE(of_visit[0].local);
  EXPECT_EQ(of_visit[0].caption, "Máy dệt mới");
  ASSERT_TRUE(of_visit[0].latitude.has_value());
  EXPECT_DOUBLE_EQ(*of_visit[0].latitude, 21.0285);
  std::atomic<int64_t> downloaded{0};
  coordinator->AddAttachmentListener([&](const AttachmentProgress& p) {
    if (p.download) downloaded = p.bytes_done;
  });
  absl::StatusOr<std::string> path = coordinator->OpenAttachment(added->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(Sha256HexOf(ReadFile(*path)), Sha256HexOf(photo));
  EXPECT_EQ(downloaded.load(), static_cast<int64_t>(photo.size()));
  EXPECT_TRUE(coordinator->GetAttachment(added->id)->local);
  // Cached: opened again with the server gone.
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  path = coordinator->OpenAttachment(added->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(ReadFile(*path), photo);
}

TEST_F(AttachmentsTest, BadInputNamesTheFieldAndStoresNothing) {
  ClientOptions options = Options("tab-an");
  options.max_attachment_bytes = 64 * 1024;
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở in");
  // A visit of a commune outside the user's scope (another collaborator's).
  std::unique_ptr<Client> hai = SignedIn(Options("tab-hai"), "ctv_hai");
  ASSERT_NE(hai, nullptr);
  const std::string foreign = NewVisit(*hai, other_commune_, "Cơ sở xã khác");
  ASSERT_TRUE(hai->SyncNow().ok());
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_TRUE(an->AddAttachmentListener([](const AttachmentProgress&) {}) > 0);
  const int64_t pending = static_cast<int64_t>(an->PendingUploads()->size());
  struct Case {
    std::string bytes;
    std::string media_type;
    std::string owner;
    absl::StatusCode code;
    std::string field;
  };
  const std::string random_visit = "0f8fad5b-d9cb-469f-a165-70867728950e";
  const std::vector<Case> cases = {
      {"GIF89a not an accepted type", "", visit, absl::StatusCode::kInvalidArgument,
       "attachment.media_type"},
      // A JPEG named a PNG: the bytes decide.
      {Jpeg(1000, 13), "image/png", visit, absl::StatusCode::kInvalidArgument,
       "attachment.media_type"},
      {Jpeg(64 * 1024 + 1, 14), "", visit, absl::StatusCode::kInvalidArgument, "attachment.bytes"},
      {"", "", visit, absl::StatusCode::kInvalidArgument, "attachment.bytes"},
      {Jpeg(1000, 15), "", random_visit, absl::StatusCode::kNotFound, "attachment.owner_id"},
  };
  for (const Case& c : cases) {
    NewAttachment a;
    a.owner_type = model::kVisitType;
    a.owner_id = c.owner;
    a.bytes = c.bytes;
    a.media_type = c.media_type;
    absl::StatusOr<AttachmentInfo> added = an->AddAttachment(a);
    ASSERT_FALSE(added.ok()) << c.field;
    EXPECT_EQ(added.status().code(), c.code) << added.status();
    EXPECT_THAT(added.status().message(), HasSubstr(c.field));
  }
  // A visit of a commune outside the user's scope reads as one that does not exist.
  absl::StatusOr<AttachmentInfo> out_of_scope = AddPhoto(*an, foreign, Jpeg(1000, 16));
  ASSERT_FALSE(out_of_scope.ok());
  EXPECT_EQ(out_of_scope.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(out_of_scope.status().message(), HasSubstr("attachment.owner_id"));
  // Latitude without longitude.
  NewAttachment half;
  half.owner_type = model::kVisitType;
  half.owner_id = visit;
  half.bytes = Jpeg(1000, 17);
  half.latitude = 21.0;
  absl::StatusOr<AttachmentInfo> refused = an->AddAttachment(half);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("attachment.latitude"));
  // Nothing stored: no attachment, no write queued, no bytes in the folder.
  EXPECT_TRUE(an->ListAttachments()->empty());
  EXPECT_EQ(static_cast<int64_t>(an->PendingUploads()->size()), pending);
  EXPECT_EQ(CountBlobFiles(options.path + ".attachments"), 0);
  EXPECT_EQ(an->AttachmentStorageUse()->total_bytes, 0);
}

TEST_F(AttachmentsTest, BytesACrashLeftWithoutTheirRecordAreRemovedAtOpen) {
  ClientOptions options = Options("tab-an");
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string visit = NewVisit(*an, commune_, "Cơ sở sơn mài");
  const std::string kept = Jpeg(5000, 18);
  absl::StatusOr<AttachmentInfo> added = AddPhoto(*an, visit, kept);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(an->Close().ok());
  an.reset();
  // What a crash after the bytes were made durable, before the record committed, leaves:
  // a blob file nobody references, and a temp file of an add in progress.
  const std::string dir = options.path + ".attachments";
  const std::string orphan = Jpeg(6000, 19);
  const std::string sha = Sha256HexOf(orphan);
  std::filesystem::create_directories(dir + "/" + sha.substr(0, 2));
  std::ofstream(dir + "/" + sha.substr(0, 2) + "/" + sha, std::ios::binary) << orphan;
  std::ofstream(dir + "/tmp/0123.adding", std::ios::binary) << orphan;
  ASSERT_EQ(CountBlobFiles(dir), 2);
  an = Client::Open(options).value();
  EXPECT_EQ(CountBlobFiles(dir), 1);
  EXPECT_FALSE(std::filesystem::exists(dir + "/tmp/0123.adding"));
  absl::StatusOr<std::string> path = an->OpenAttachment(added->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(ReadFile(*path), kept);
  EXPECT_EQ(an->GetAttachment(added->id)->state, AttachmentState::kQueued);
}

}  // namespace
}  // namespace kcnet::sdk
