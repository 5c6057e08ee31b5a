// Attachments under faults (issue 17, "Reliability"; docs/RELIABILITY.md): tablets (real
// photo_device processes, each an SDK client) take photos and sync them while the test kills
// devices and the real kcnet-server with SIGKILL, and each device's own FaultProxy cuts,
// drops, delays and stalls its connections on a slowed link (1 MB/s, 10 ms RTT) and
// CutAll()s it now and then. Then the faults stop, every device syncs until its queue is
// empty, the server stops, and its garbage collector runs once. Checked:
//  - every photo whose AddAttachment returned (the device's log says so) is on the server
//    exactly once: one Attachment record with its SHA-256 and size, and a blob whose bytes
//    are the photo's (compared byte for byte, and re-hashed to its name);
//  - nothing else: every attachment record on the server is a photo some device began,
//    every blob is referenced by a record;
//  - no temp file is left (upload sessions' DATA_DIR/uploads, the blob store's temp folder)
//    after the collector's pass;
//  - re-sent bytes are bounded: what a device's proxy forwarded to the server, minus the
//    device's photos' bytes, is at most one re-send bound (256 KiB commit interval + one
//    64 KiB chunk = 320 KiB) per connection (every cut, kill or stall ends one connection,
//    and each ends at most one), plus 32 KiB per connection and 4 KiB per photo for what
//    is not payload (HTTP/2, protobuf framing, sign-in, record sync, Begin calls).
//
// Seeded: KCNET_FAULT_SEED (printed as seed=N). KCNET_FAULT_PHOTO_DEVICES (4),
// KCNET_FAULT_PHOTO_SECONDS (chaos phase, 15).
#include <sys/types.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/attachment_digest.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/attachments.h"
#include "kcnet/client.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/domain.pb.h"
#include "server/attachments/attachment_db.h"
#include "server/attachments/blob_gc.h"
#include "server/attachments/blob_store.h"
#include "server/attachments/references.h"
#include "sync/crc32c.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tests/fault/fault_proxy.h"
#include "tests/fault/fault_util.h"
#include "tests/fault/photo_util.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
#endif
#ifndef PHOTO_DEVICE_PATH
#error "PHOTO_DEVICE_PATH must name the photo_device binary"
#endif

namespace kcnet::fault {
namespace {

constexpr int64_t kResendBound = 320 * 1024;  // 256 KiB commit interval + one 64 KiB chunk
constexpr int64_t kOverheadPerConnection = 32 * 1024;
constexpr int64_t kOverheadPerPhoto = 4 * 1024;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// What a photo_device log says: photos whose AddAttachment returned (n -> id, sha256) and
// photos begun whose return is unknown.
struct PhotoLog {
  std::map<int64_t, std::pair<std::string, std::string>> acked;
  std::set<int64_t> begun;
  int64_t starts = 0, syncs_ok = 0, syncs_failed = 0;
};

PhotoLog ReadPhotoLog(const std::string& path) {
  PhotoLog log;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    int64_t n = 0;
    if (parts[0] == "start") ++log.starts;
    if (parts[0] == "S" && parts.size() >= 2)
      ++(parts[1] == "ok" ? log.syncs_ok : log.syncs_failed);
    if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &n)) continue;
    if (parts[0] == "I") log.begun.insert(n);
    if (parts[0] == "A" && parts.size() == 4) log.acked[n] = {parts[2], parts[3]};
  }
  return log;
}

// Files in `dir` and below (not folders); none when it does not exist.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code error;
  if (!std::filesystem::exists(dir, error)) return files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, error)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  return files;
}

// The last `n` bytes of `text`.
std::string Tail(const std::string& text, size_t n) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

class AttachmentsFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = FaultSeed();
    std::printf("seed=%llu (replay: KCNET_FAULT_SEED=%llu)\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_));
    std::fflush(stdout);
    rng_ = absl::BitGen(std::seed_seq{seed_});
    devices_ = EnvInt("KCNET_FAULT_PHOTO_DEVICES", 4);
    data_dir_ = tmp_.File("server");
    absl::StatusOr<std::vector<Account>> accounts =
        SetUpDirectory(data_dir_, devices_, /*coordinators=*/0);
    ASSERT_TRUE(accounts.ok()) << accounts.status();
    accounts_ = *std::move(accounts);
    server_ =
        std::make_unique<ServerProcess>(KCNET_SERVER_PATH, data_dir_, tmp_.File("server.log"));
    ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));
    for (int i = 0; i < devices_; ++i) {
      FaultProxyOptions options;
      options.seed = seed_ + static_cast<uint64_t>(i);
      options.cut = 0.002;
      options.drop = 0.001;
      options.stall = 0.002;
      options.max_stall = absl::Seconds(2);
      options.delay = 0.02;
      options.max_delay = absl::Milliseconds(20);
      options.link.bytes_per_second = 1'000'000;
      options.link.rtt = absl::Milliseconds(10);
      absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
          FaultProxy::Start(server_->port(), options);
      ASSERT_TRUE(proxy.ok()) << proxy.status();
      proxies_.push_back(*std::move(proxy));
    }
    procs_.resize(static_cast<size_t>(devices_));
  }

  void TearDown() override {
    for (auto& p : procs_) p.reset();
    for (auto& p : proxies_) p->Stop();
    if (server_ != nullptr) server_->Kill9();
    if (HasFailure()) {
      const std::string log = ReadFile(tmp_.File("server.log"));
      std::printf("seed=%llu failed; server log tail:\n%s\n",
                  static_cast<unsigned long long>(seed_),
                  log.substr(log.size() > 4000 ? log.size() - 4000 : 0).c_str());
    }
  }

  std::string Store(int i) const { return tmp_.File(absl::StrCat("device", i, ".db")); }
  std::string Log(int i) const { return tmp_.File(absl::StrCat("device", i, ".log")); }

  std::unique_ptr<Process> StartDevice(int i, const std::string& mode) {
    const Account& a = accounts_[static_cast<size_t>(i)];
    return std::make_unique<Process>(
        std::vector<std::string>{
            PHOTO_DEVICE_PATH, absl::StrCat("--mode=", mode), absl::StrCat("--device=", i),
            absl::StrCat("--store=", Store(i)), absl::StrCat("--log=", Log(i)),
            absl::StrCat("--stop_file=", tmp_.File("stop")),
            absl::StrCat("--server=127.0.0.1:", proxies_[static_cast<size_t>(i)]->port()),
            absl::StrCat("--user=", a.username), "--password=password-123",
            absl::StrCat("--commune=", a.commune), "--final_timeout_s=40"},
        tmp_.File(absl::StrCat("device", i, ".err")));
  }

  kcnet::testing::TempDir tmp_;
  uint64_t seed_ = 0;
  absl::BitGen rng_;
  int devices_ = 0;
  std::string data_dir_;
  std::vector<Account> accounts_;
  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<FaultProxy>> proxies_;
  std::vector<std::unique_ptr<Process>> procs_;
};

TEST_F(AttachmentsFaultTest, PhotosLandOnceByteIdenticalThroughKillsCutsAndStalls) {
  for (int i = 0; i < devices_; ++i) procs_[static_cast<size_t>(i)] = StartDevice(i, "loop");

  // Chaos: kill a device now and then (restarted at once), the server twice, cut a link.
  const absl::Duration chaos = absl::Seconds(EnvInt("KCNET_FAULT_PHOTO_SECONDS", 15));
  const absl::Time end = absl::Now() + chaos;
  int device_kills = 0, server_kills = 0, cut_alls = 0;
  absl::Time next_server_kill = absl::Now() + chaos / 3;
  while (absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 300, 1200)));
    const int pick = absl::Uniform(rng_, 0, devices_);
    const int what = absl::Uniform(rng_, 0, 3);
    if (what == 0) {
      procs_[static_cast<size_t>(pick)]->Kill9();
      procs_[static_cast<size_t>(pick)] = StartDevice(pick, "loop");
      ++device_kills;
    } else if (what == 1) {
      cut_alls += proxies_[static_cast<size_t>(pick)]->CutAll();
    }
    if (absl::Now() >= next_server_kill && server_kills < 2) {
      server_->Kill9();
      ++server_kills;
      ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));
      next_server_kill = absl::Now() + chaos / 3;
    }
  }
  // Stop: the loop ends (or is killed), faults off, each device syncs its queue empty.
  { std::ofstream(tmp_.File("stop")) << "stop\n"; }
  for (auto& p : procs_) {
    if (!p->Wait(absl::Seconds(25)).has_value()) p->Kill9();
    p.reset();
  }
  for (auto& proxy : proxies_) proxy->SetFaultsEnabled(false);
  for (int i = 0; i < devices_; ++i) procs_[static_cast<size_t>(i)] = StartDevice(i, "final");
  for (int i = 0; i < devices_; ++i) {
    // The device gives up by itself (exit 3) after --final_timeout_s plus 3 s a photo of
    // its backlog, which drains at the link's 1 MB/s; this bound only catches a hang.
    const std::optional<int> code = procs_[static_cast<size_t>(i)]->Wait(absl::Seconds(300));
    EXPECT_EQ(code.value_or(-1000), 0)
        << "device " << i
        << " did not upload everything: " << ReadFile(tmp_.File(absl::StrCat("device", i, ".err")))
        << "; the end of its log:\n"
        << Tail(ReadFile(Log(i)), 1500);
  }
  for (auto& p : procs_) p.reset();
  ASSERT_TRUE(server_->Stop().ok());
  std::vector<FaultProxyStats> link_stats;
  for (auto& proxy : proxies_) {
    proxy->Stop();
    link_stats.push_back(proxy->stats());
  }

  // The server's attachment records, by sha256.
  std::map<std::string, std::vector<v1::Attachment>> records_by_sha;
  {
    absl::StatusOr<std::unique_ptr<sync::ServerStore>> store =
        sync::ServerStore::Open(data_dir_ + "/kcnet.db", &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<v1::BucketCursor> cursors;
    std::set<int64_t> buckets;
    for (const Account& a : accounts_) buckets.insert(a.commune);
    for (int64_t bucket : buckets) cursors.emplace_back().set_bucket(bucket);
    while (true) {
      absl::StatusOr<v1::ChangeBatch> batch =
          (*store)->ChangesSince(cursors, {.max_changes = 100000, .max_bytes = 1 << 30});
      ASSERT_TRUE(batch.ok()) << batch.status();
      for (const v1::RecordChange& change : batch->changes()) {
        if (change.type() != model::kAttachmentType || change.deleted()) continue;
        v1::Attachment a;
        ASSERT_TRUE(model::FromChange(change, &a).ok());
        records_by_sha[a.sha256()].push_back(a);
      }
      if (!batch->more()) break;
      cursors.assign(batch->cursors().begin(), batch->cursors().end());
    }
  }

  // The collector's pass (as kcnet-admin gc-blobs would run it), then the files.
  auto db = server::AttachmentDb::Open(data_dir_ + "/attachments.db");
  ASSERT_TRUE(db.ok()) << db.status();
  auto blobs = server::FileBlobStore::Open(data_dir_ + "/blobs");
  ASSERT_TRUE(blobs.ok()) << blobs.status();
  auto references = server::RecordReferences::Open(data_dir_ + "/kcnet.db");
  ASSERT_TRUE(references.ok()) << references.status();
  server::GcOptions gc;
  gc.now_ms = absl::ToUnixMillis(absl::Now());
  gc.uploads_dir = data_dir_ + "/uploads";
  absl::StatusOr<server::GcReport> report = server::CollectGarbage(**db, **blobs, **references, gc);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(FilesUnder(data_dir_ + "/uploads").empty())
      << "upload temp files left: " << FilesUnder(data_dir_ + "/uploads").size();
  EXPECT_TRUE(FilesUnder(data_dir_ + "/blobs/.tmp").empty()) << "blob temp files left";
  absl::StatusOr<std::vector<server::UploadSession>> sessions = (*db)->AllUploads();
  ASSERT_TRUE(sessions.ok()) << sessions.status();
  EXPECT_TRUE(sessions->empty()) << sessions->size() << " upload sessions left open";

  // Every acknowledged photo: once, byte-identical. Every record: a photo begun.
  std::set<std::string> known_shas;
  int64_t acked_photos = 0;
  for (int i = 0; i < devices_; ++i) {
    const PhotoLog log = ReadPhotoLog(Log(i));
    int64_t photo_bytes = 0;
    std::map<std::string, int64_t> begun_sha;  // sha -> n, for every photo begun
    for (int64_t n : log.begun) {
      const std::string photo = PhotoBytes(i, n);
      begun_sha[server::HexOf(server::Sha256Of(photo))] = n;
    }
    for (const auto& [n, acked] : log.acked) {
      ++acked_photos;
      const std::string photo = PhotoBytes(i, n);
      const std::string sha = server::HexOf(server::Sha256Of(photo));
      EXPECT_EQ(acked.second, sha) << "device " << i << " photo " << n;
      const auto it = records_by_sha.find(sha);
      ASSERT_TRUE(it != records_by_sha.end()) << "device " << i << " photo " << n << " lost";
      ASSERT_EQ(it->second.size(), 1u) << "device " << i << " photo " << n << " stored twice";
      EXPECT_EQ(it->second[0].id(), acked.first);
      EXPECT_EQ(it->second[0].size_bytes(), static_cast<int64_t>(photo.size()));
      absl::StatusOr<std::string> stored = (*blobs)->Read(sha, 0, it->second[0].size_bytes());
      ASSERT_TRUE(stored.ok()) << "device " << i << " photo " << n << ": " << stored.status();
      EXPECT_TRUE(*stored == photo) << "device " << i << " photo " << n << " differs";
      absl::StatusOr<std::string> rehash = (*blobs)->Rehash(sha);
      ASSERT_TRUE(rehash.ok()) << rehash.status();
      EXPECT_EQ(*rehash, sha);
    }
    for (const auto& [sha, n] : begun_sha) {
      const auto it = records_by_sha.find(sha);
      if (it == records_by_sha.end()) continue;  // a photo killed before its record
      EXPECT_EQ(it->second.size(), 1u) << "device " << i << " photo " << n << " stored twice";
      photo_bytes += it->second[0].size_bytes();
      known_shas.insert(sha);
    }
    // The re-send bound, per connection this device's link carried.
    const FaultProxyStats& s = link_stats[static_cast<size_t>(i)];
    const int64_t allowed = photo_bytes + s.connections * (kResendBound + kOverheadPerConnection) +
                            static_cast<int64_t>(log.begun.size()) * kOverheadPerPhoto;
    EXPECT_LE(s.bytes_up, allowed)
        << "device " << i << " sent " << s.bytes_up << " bytes for " << photo_bytes
        << " bytes of photos over " << s.connections << " connections";
    std::printf(
        "device %d: %zu photos acknowledged (%lld bytes), %lld starts, syncs %lld ok / "
        "%lld failed; link: %lld connections, %lld bytes up (%.1f%% over the photos), "
        "cut %lld, dropped %lld, stalled %lld, CutAll %lld\n",
        i, log.acked.size(), static_cast<long long>(photo_bytes),
        static_cast<long long>(log.starts), static_cast<long long>(log.syncs_ok),
        static_cast<long long>(log.syncs_failed), static_cast<long long>(s.connections),
        static_cast<long long>(s.bytes_up),
        photo_bytes > 0 ? 100.0 * static_cast<double>(s.bytes_up - photo_bytes) /
                              static_cast<double>(photo_bytes)
                        : 0.0,
        static_cast<long long>(s.cut), static_cast<long long>(s.dropped),
        static_cast<long long>(s.stalled), static_cast<long long>(s.cut_all));
  }
  for (const auto& [sha, records] : records_by_sha) {
    EXPECT_TRUE(known_shas.count(sha) > 0) << "a record no device began: " << sha;
  }
  // Every blob is some record's.
  int64_t blob_count = 0;
  ASSERT_TRUE((*blobs)
                  ->ForEach([&](const std::string& sha, int64_t) {
                    ++blob_count;
                    EXPECT_TRUE(records_by_sha.count(sha) > 0) << "a blob no record names: " << sha;
                    return absl::OkStatus();
                  })
                  .ok());
  EXPECT_GT(acked_photos, devices_) << "too few photos to mean anything";
  std::printf(
      "%lld photos acknowledged, %zu records, %lld blobs; %d device kills, %d server "
      "kills, %d connections cut by CutAll; gc: %lld temp files removed\n",
      static_cast<long long>(acked_photos), records_by_sha.size(),
      static_cast<long long>(blob_count), device_kills, server_kills, cut_alls,
      static_cast<long long>(report->temp_files_removed));
}

// The commits of an upload follow its stream (on files, one as soon as 64 KiB wait; the
// disk starts writing each chunk at once): a server killed with SIGKILL in the middle of a
// fast upload, with commits running, still has every byte it acknowledged as committed.
// After its restart, Begin answers at least the highest acknowledged offset, the client
// re-sends at most the re-send bound, and the blob's SHA-256 check passes. Three kills, at
// different points of a 2 MB photo, on clean loopback (no proxy).
TEST_F(AttachmentsFaultTest, AServerKilledMidStreamKeepsEveryAcknowledgedByte) {
  const Account& account = accounts_.back();  // a commune collaborator
  sdk::ClientOptions options;
  options.path = tmp_.File("kill_mid_stream.db");
  options.device_id = "kill-mid-stream";
  options.server_address = server_->target();
  options.upload_attachments_in_sync = false;  // the test streams the bytes itself
  std::unique_ptr<sdk::Client> client = sdk::Client::Open(options).value();
  ASSERT_TRUE(client->SignIn(account.username, "password-123").ok());
  v1::Facility facility;
  facility.set_commune_id(account.commune);
  facility.set_name("Xưởng gốm Bát Tràng");
  const std::string facility_id = client->RegisterFacility(facility).value().id();

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string photo = MakeJpeg(2'000'000, 9000 + static_cast<uint64_t>(round));
    sdk::NewAttachment add;
    add.owner_type = model::kFacilityType;
    add.owner_id = facility_id;
    add.bytes = photo;
    add.media_type = "image/jpeg";
    const std::string attachment_id = client->AddAttachment(std::move(add)).value().id;
    ASSERT_TRUE(client->SyncNow().ok());  // the record first: Begin needs it

    auto begin = [&](v1::BeginUploadResponse* resp) {
      auto stub = v1::AttachmentService::NewStub(
          grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
      grpc::ClientContext context;
      context.AddMetadata("authorization", absl::StrCat("Bearer ", account.token));
      v1::BeginUploadRequest req;
      req.set_sha256(sdk::Sha256Of(photo));
      req.set_size(static_cast<int64_t>(photo.size()));
      req.set_media_type("image/jpeg");
      req.set_attachment_id(attachment_id);
      return stub->Begin(&context, req, resp);
    };
    // Streams from `from` with at most 320 KiB past the acknowledged offset, as the SDK
    // does; with `kill_at`, the server is killed once that many bytes went out and a commit
    // was acknowledged. Returns the highest committed offset acknowledged and the bytes sent.
    struct Streamed {
      int64_t acked = 0;
      int64_t sent_to = 0;
      bool complete = false;
    };
    auto stream_from = [&](const std::string& upload_id, int64_t from, int64_t kill_at) {
      auto stub = v1::AttachmentService::NewStub(
          grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
      grpc::ClientContext context;
      context.AddMetadata("authorization", absl::StrCat("Bearer ", account.token));
      auto stream = stub->Upload(&context);
      absl::Mutex mu;
      Streamed out{.acked = from, .sent_to = from};
      bool ended = false;
      std::thread reader([&] {
        v1::UploadAck ack;
        while (stream->Read(&ack)) {
          absl::MutexLock lock(&mu);
          out.acked = std::max(out.acked, ack.committed_offset());
          out.complete = out.complete || ack.complete();
        }
        absl::MutexLock lock(&mu);
        ended = true;
      });
      int64_t position = from;
      while (position < static_cast<int64_t>(photo.size())) {
        {
          absl::MutexLock lock(&mu);
          auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
            return ended || position - out.acked < kResendBound;
          };
          mu.Await(absl::Condition(&room));
          if (ended) break;
          if (kill_at > 0 && position >= kill_at && out.acked > from) {
            server_->Kill9();  // commits may be running: the acked ones must stay
            break;
          }
        }
        v1::UploadChunk chunk;
        chunk.set_upload_id(upload_id);
        chunk.set_offset(position);
        chunk.set_data(photo.substr(static_cast<size_t>(position), 64 * 1024));
        chunk.set_crc32c(sync::Crc32c(chunk.data()));
        if (!stream->Write(chunk)) break;
        position += static_cast<int64_t>(chunk.data().size());
        absl::MutexLock lock(&mu);
        out.sent_to = position;
      }
      stream->WritesDone();
      reader.join();
      stream->Finish().ok();  // the status of a killed server's stream does not matter
      absl::MutexLock lock(&mu);
      return out;
    };

    v1::BeginUploadResponse first;
    ASSERT_TRUE(begin(&first).ok());
    ASSERT_FALSE(first.already_have());
    const Streamed killed =
        stream_from(first.upload_id(), 0, /*kill_at=*/(round + 1) * 512 * 1024 + 64 * 1024);
    EXPECT_GT(killed.acked, 0);
    ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));
    v1::BeginUploadResponse resumed;
    ASSERT_TRUE(begin(&resumed).ok());
    ASSERT_FALSE(resumed.already_have());
    EXPECT_EQ(resumed.upload_id(), first.upload_id());
    // Nothing acknowledged is lost; what is re-sent stays within the bound.
    EXPECT_GE(resumed.committed_offset(), killed.acked);
    EXPECT_LE(killed.sent_to - resumed.committed_offset(), kResendBound);
    const Streamed rest = stream_from(resumed.upload_id(), resumed.committed_offset(), 0);
    EXPECT_TRUE(rest.complete);  // every byte, and the SHA-256 matched
    v1::BeginUploadResponse after;
    ASSERT_TRUE(begin(&after).ok());
    EXPECT_TRUE(after.already_have());
  }
  ASSERT_TRUE(client->Close().ok());
}

}  // namespace
}  // namespace kcnet::fault
