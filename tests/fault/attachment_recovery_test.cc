// Attachments that survive the worst (issue 17, docs/RELIABILITY.md "Attachments"): a real
// KcnetServer on port 0 with real SDK clients, real stores and attachment folders in temp
// dirs, and the fault proxy (fault_proxy.h) between the coordinator's device and the server.
//   - A download cut mid-way continues after the app restarts (the store closed and opened
//     again) from the length of its partial file with a ranged Download, and is verified by
//     its SHA-256 at the end; a damaged partial file (DATA_LOSS) is discarded and the
//     download starts again from 0; a sign-out removes partial downloads.
//   - A server whose disk is lost and which is restored from a backup lacks the photos
//     uploaded after the backup (their records come back as hand-backs); the device that
//     still holds their bytes uploads them again at its next sync (the others cost no
//     payload), and `kcnet-admin verify-blobs` reports nothing missing.
//   - An upload over a link that stalls still tells its listeners at least once a second.
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client_sdk/attachment_digest.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"
#include "tests/fault/fault_proxy.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants
using sdk::AttachmentProgress;
using sdk::Client;
using sdk::ClientOptions;

constexpr char kPassword[] = "password-123";

// Bytes that read as a JPEG (its magic number) followed by random bytes.
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

class AttachmentRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartServer();
    server::Directory* d = server_->directory();
    const int64_t p = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t district = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    commune_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    ASSERT_TRUE(
        d->CreateUser("ctv_an", "Nguyễn Văn An", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_})
            .ok());
    ASSERT_TRUE(d->CreateUser("dp_huyen", "Phạm Điều Phối", kPassword, ROLE_DISTRICT_COORDINATOR,
                              {district})
                    .ok());
  }

  void TearDown() override {
    if (proxy_ != nullptr) proxy_->Stop();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  // (Re)starts the server on `data_dir` (under the temp dir), on a new port.
  void StartServer(const std::string& data_dir = "server") {
    server::ServerOptions options =
        kcnet::testing::TestServerOptions(dir_.File(data_dir), "127.0.0.1:0");
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // Runs the real kcnet-admin on `data_dir` (under the temp dir) with `args`; its output
  // (stdout and stderr) in *out; returns its exit status.
  int Admin(const std::string& data_dir, const std::string& args, std::string* out) {
    const std::string cmd =
        absl::StrCat(KCNET_ADMIN_PATH, " --data_dir=", dir_.File(data_dir), " ", args, " 2>&1");
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return -1;
    out->clear();
    char buffer[4096];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, p)) > 0) out->append(buffer, n);
    const int status = ::pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // The server's copy of a blob, whole ("" when it has none).
  std::string ServerBytes(const std::string& sha, int64_t size) {
    absl::StatusOr<std::string> bytes = server_->attachments()->ReadBlob(sha, 0, size);
    return bytes.ok() ? *bytes : "";
  }

  std::string Direct() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  ClientOptions Options(const std::string& device, const std::string& address) {
    ClientOptions o;
    o.path = dir_.File(device + ".db");
    o.device_id = device;
    o.server_address = address;
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

  // A facility, a visit and a photo of it, written on `client` (not synced); the photo.
  absl::StatusOr<sdk::AttachmentInfo> VisitWithPhoto(Client& client, const std::string& bytes) {
    Facility f;
    f.set_commune_id(commune_);
    f.set_name("Cơ sở dệt thổ cẩm");
    f.set_owner_name("Hà Thị Dệt");
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(SECTOR_HANDICRAFTS);
    f.set_workers(4);
    absl::StatusOr<Facility> facility = client.RegisterFacility(f);
    if (!facility.ok()) return facility.status();
    Visit v;
    v.set_facility_id(facility->id());
    v.set_purpose(VISIT_PURPOSE_SURVEY);
    absl::StatusOr<Visit> visit = client.RecordVisit(v);
    if (!visit.ok()) return visit.status();
    sdk::NewAttachment a;
    a.owner_type = model::kVisitType;
    a.owner_id = visit->id();
    a.bytes = bytes;
    a.caption = "Khung dệt mới mua";
    return client.AddAttachment(a);
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
  std::unique_ptr<fault::FaultProxy> proxy_;
  int64_t commune_ = 0;
};

// The coordinator's device opens a collaborator's 3 MiB photo over a slow link that is cut
// after 1 MiB; the app is closed and opened again; the download continues from where the
// partial file ends. Then, a damaged partial file is discarded and downloaded again whole.
TEST_F(AttachmentRecoveryTest, ADownloadCutMidwayContinuesAfterARestartFromItsPartialFile) {
  const std::string photo = Jpeg(3 * 1024 * 1024 + 123, 7);
  std::unique_ptr<Client> an = SignedIn(Options("tab-an", Direct()), "ctv_an");
  ASSERT_NE(an, nullptr);
  absl::StatusOr<sdk::AttachmentInfo> added = VisitWithPhoto(*an, photo);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_EQ(an->GetAttachment(added->id)->state, sdk::AttachmentState::kUploaded);

  fault::FaultProxyOptions po;
  po.link.bytes_per_second = 2 << 20;  // slow enough that the cut lands mid-way
  absl::StatusOr<std::unique_ptr<fault::FaultProxy>> proxy =
      fault::FaultProxy::Start(server_->port(), po);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  proxy_ = *std::move(proxy);
  const ClientOptions options = Options("tab-huyen", absl::StrCat("127.0.0.1:", proxy_->port()));
  std::unique_ptr<Client> coordinator = SignedIn(options, "dp_huyen");
  ASSERT_NE(coordinator, nullptr);
  ASSERT_TRUE(coordinator->SyncNow().ok());

  // First run: cut once a megabyte has arrived.
  std::atomic<int64_t> arrived{0};
  fault::FaultProxy* link = proxy_.get();
  coordinator->AddAttachmentListener([&arrived, link](const AttachmentProgress& p) {
    if (!p.download) return;
    arrived = p.bytes_done;
    if (p.bytes_done >= (1 << 20)) link->CutAll();
  });
  absl::StatusOr<std::string> path = coordinator->OpenAttachment(added->id);
  ASSERT_FALSE(path.ok()) << "the cut did not land";
  EXPECT_TRUE(absl::IsUnavailable(path.status())) << path.status();
  const int64_t before_restart = arrived.load();
  ASSERT_GE(before_restart, 1 << 20);
  ASSERT_LT(before_restart, static_cast<int64_t>(photo.size()));

  // The app restarts.
  ASSERT_TRUE(coordinator->Close().ok());
  coordinator.reset();
  coordinator = Client::Open(options).value();
  std::atomic<int64_t> first_event{-1};
  coordinator->AddAttachmentListener([&first_event](const AttachmentProgress& p) {
    int64_t none = -1;
    if (p.download) first_event.compare_exchange_strong(none, p.bytes_done);
  });
  const int64_t down_before = proxy_->stats().bytes_down;
  path = coordinator->OpenAttachment(added->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(sdk::Sha256HexOf(ReadFile(*path)), sdk::Sha256HexOf(photo));
  const int64_t down = proxy_->stats().bytes_down - down_before;
  const int64_t rest = static_cast<int64_t>(photo.size()) - before_restart;
  std::printf("after the restart: %lld bytes came down for the %lld missing\n",
              static_cast<long long>(down), static_cast<long long>(rest));
  EXPECT_GT(first_event.load(), before_restart - (64 << 10))
      << "the download started again from 0 instead of the partial file's end";
  // The rest and the protocol's framing (chunk headers, CRCs, HTTP/2), far from the whole.
  EXPECT_LT(down, rest + (128 << 10));

  // A damaged partial file: cut again, flip a byte of the part, restart: DATA_LOSS at the
  // end discards it and the download starts again from 0, and the bytes are right.
  const std::string sha = added->sha256;
  ASSERT_TRUE(coordinator->Close().ok());
  coordinator.reset();
  std::filesystem::remove(std::filesystem::path(options.path + ".attachments") / sha.substr(0, 2) /
                          sha);
  {
    // Forget the blob too, as an eviction would: its row goes at the next open (no file).
    coordinator = Client::Open(options).value();
  }
  arrived = 0;
  coordinator->AddAttachmentListener([&arrived, link](const AttachmentProgress& p) {
    if (!p.download) return;
    arrived = p.bytes_done;
    if (p.bytes_done >= (1 << 20)) link->CutAll();
  });
  ASSERT_FALSE(coordinator->OpenAttachment(added->id).ok());
  ASSERT_TRUE(coordinator->Close().ok());
  coordinator.reset();
  const std::string part = options.path + ".attachments/tmp/" + sha + ".part";
  {
    std::fstream f(part, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << "the partial file was kept at close: " << part;
    f.seekp(4096);
    f.put('\x5A');
  }
  coordinator = Client::Open(options).value();
  const int64_t down_before_damaged = proxy_->stats().bytes_down;
  path = coordinator->OpenAttachment(added->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(sdk::Sha256HexOf(ReadFile(*path)), sdk::Sha256HexOf(photo));
  EXPECT_GE(proxy_->stats().bytes_down - down_before_damaged, static_cast<int64_t>(photo.size()))
      << "after DATA_LOSS the whole file comes again";
  EXPECT_FALSE(std::filesystem::exists(part));

  // A sign-out takes the user's data off the device, partial downloads included.
  const std::string other_part =
      options.path + ".attachments/tmp/" + std::string(64, 'a') + ".part";
  std::ofstream(other_part, std::ios::binary) << "\xFF\xD8\xFF partial";
  ASSERT_TRUE(coordinator->SignOut().ok());
  EXPECT_FALSE(std::filesystem::exists(other_part));
}

// The server's disk is lost after a backup; it is restored from the backup into a new data
// dir. The photo uploaded before the backup is there; the one uploaded after is not (nor
// its record, which the device hands back). The device still holds both photos' bytes.
TEST_F(AttachmentRecoveryTest, ADeviceUploadsAgainTheBytesARestoredServerLacks) {
  const ClientOptions before = Options("tab-an", Direct());
  std::unique_ptr<Client> an = SignedIn(before, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string kept = Jpeg(700 * 1024 + 9, 21);
  absl::StatusOr<sdk::AttachmentInfo> a = VisitWithPhoto(*an, kept);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_EQ(an->GetAttachment(a->id)->state, sdk::AttachmentState::kUploaded);

  std::string out;
  ASSERT_EQ(Admin("server", "backup --to=" + dir_.File("backup"), &out), 0) << out;

  const std::string lost = Jpeg(1536 * 1024 + 3, 22);
  absl::StatusOr<sdk::AttachmentInfo> b = VisitWithPhoto(*an, lost);
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<sdk::SyncSummary> synced = an->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  ASSERT_EQ(synced->attachments.uploaded, 1);
  ASSERT_EQ(an->GetAttachment(b->id)->state, sdk::AttachmentState::kUploaded);
  ASSERT_EQ(ServerBytes(b->sha256, b->size), lost);

  // The disk is lost: the server stops and a new data dir is restored from the backup.
  ASSERT_TRUE(an->Close().ok());
  an.reset();
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  ASSERT_EQ(Admin("restored", "restore --from=" + dir_.File("backup"), &out), 0) << out;
  StartServer("restored");
  ASSERT_EQ(ServerBytes(b->sha256, b->size), "") << "the backup did not hold the later photo";
  ASSERT_EQ(ServerBytes(a->sha256, a->size), kept);

  // The device comes back (the server has a new address).
  an = Client::Open(Options("tab-an", Direct())).value();
  synced = an->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_TRUE(synced->attachments_error.ok()) << synced->attachments_error;
  EXPECT_EQ(synced->attachments.uploaded, 2);  // both checked again
  // The kept photo cost nothing ("already have it"); the lost one came whole, once.
  EXPECT_EQ(synced->attachments.payload_bytes, static_cast<int64_t>(lost.size()));
  EXPECT_EQ(an->GetAttachment(a->id)->state, sdk::AttachmentState::kUploaded);
  EXPECT_EQ(an->GetAttachment(b->id)->state, sdk::AttachmentState::kUploaded);
  EXPECT_EQ(sdk::Sha256HexOf(ServerBytes(b->sha256, b->size)), sdk::Sha256HexOf(lost));
  EXPECT_EQ(sdk::Sha256HexOf(ServerBytes(a->sha256, a->size)), sdk::Sha256HexOf(kept));
  // Nothing more to do at the next sync.
  synced = an->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_EQ(synced->attachments.payload_bytes, 0);

  ASSERT_EQ(Admin("restored", "verify-blobs", &out), 0) << out;
  EXPECT_NE(out.find("0 damaged, 0 missing"), std::string::npos) << out;

  // A coordinator's device sees the photo the restore had lost.
  std::unique_ptr<Client> coordinator = SignedIn(Options("tab-huyen", Direct()), "dp_huyen");
  ASSERT_NE(coordinator, nullptr);
  ASSERT_TRUE(coordinator->SyncNow().ok());
  absl::StatusOr<std::string> path = coordinator->OpenAttachment(b->id);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(ReadFile(*path), lost);
}

// A 2G link stalls: a lost segment waits for its retransmission, and every byte and ack
// behind it too. Here the link holds every byte for 1.5 s each way (a 3 s round trip): no
// ack can come for 3 s after the upload's stream opens. The app must still hear from the
// upload at least once a second (kProgressHeartbeat: the same numbers again), so that it
// can show "waiting for the network" rather than look frozen; the photo arrives whole.
TEST_F(AttachmentRecoveryTest, AStalledUploadStillTellsItsListenersEverySecond) {
  absl::StatusOr<std::unique_ptr<fault::FaultProxy>> proxy =
      fault::FaultProxy::Start(server_->port(), fault::FaultProxyOptions{});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  proxy_ = *std::move(proxy);
  ClientOptions options = Options("tab-an", absl::StrCat("127.0.0.1:", proxy_->port()));
  options.upload_attachments_in_sync = false;
  options.initial_backoff = absl::Milliseconds(10);  // a retried pass need not wait
  options.max_backoff = absl::Milliseconds(100);
  std::unique_ptr<Client> an = SignedIn(options, "ctv_an");
  ASSERT_NE(an, nullptr);
  const std::string photo = Jpeg(200 * 1024 + 17, 9);
  absl::StatusOr<sdk::AttachmentInfo> added = VisitWithPhoto(*an, photo);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(an->SyncNow().ok());  // the records, at full speed
  ASSERT_EQ(an->GetAttachment(added->id)->state, sdk::AttachmentState::kQueued);

  // From now on the link is slow to answer; the open connection is cut, so the upload
  // goes over a new, shaped one.
  fault::LinkShape stalled;
  stalled.rtt = absl::Seconds(3);
  proxy_->SetLinkShape(stalled);
  proxy_->CutAll();
  struct Event {
    absl::Time at;
    int64_t done = 0, received = 0;
  };
  absl::Mutex mu;
  std::vector<Event> events;
  an->AddAttachmentListener([&](const AttachmentProgress& p) {
    if (p.download || p.id != added->id) return;
    absl::MutexLock lock(&mu);
    events.push_back({absl::Now(), p.bytes_done, p.bytes_received});
  });
  // The first call may still meet the connection cut above (UNAVAILABLE) before the
  // channel has noticed it: a pass is tried again, and the events are those of the last.
  absl::StatusOr<sdk::AttachmentUploadSummary> pass;
  for (int i = 0; i < 40; ++i) {
    {
      absl::MutexLock lock(&mu);
      events.clear();
    }
    pass = an->UploadAttachments();
    if (pass.ok() && pass->remaining == 0) break;
    if (!pass.ok() && !absl::IsUnavailable(pass.status())) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(pass.ok()) << pass.status();
  ASSERT_EQ(pass->remaining, 0);
  EXPECT_EQ(an->GetAttachment(added->id)->state, sdk::AttachmentState::kUploaded);
  EXPECT_EQ(sdk::Sha256HexOf(ServerBytes(added->sha256, added->size)), sdk::Sha256HexOf(photo));

  absl::MutexLock lock(&mu);
  ASSERT_FALSE(events.empty());
  // Before the first ack (received 0) the stream was open about 3 s: the heartbeat told
  // the listener the same numbers about once a second.
  int before_first_ack = 0;
  for (const Event& e : events) before_first_ack += e.received == 0 ? 1 : 0;
  EXPECT_GE(before_first_ack, 2) << "no progress event while the link stalled";
  absl::Duration longest;
  for (size_t i = 1; i < events.size(); ++i) {
    longest = std::max(longest, events[i].at - events[i - 1].at);
  }
  std::printf("%zu progress events, %d before the first ack, the longest gap %s\n", events.size(),
              before_first_ack, absl::FormatDuration(longest).c_str());
  EXPECT_LE(longest, absl::Milliseconds(1800)) << "the listener heard nothing for too long";
}

}  // namespace
}  // namespace kcnet
