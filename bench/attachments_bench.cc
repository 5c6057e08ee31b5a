// The attachments benchmark (issue 17; docs/BENCHMARKS.md, "attachments"). The real
// kcnet-server binary runs as a child process on a fresh data directory; tablets are
// kcnet::sdk::Client objects in this process, some of them behind the fault proxy of
// tests/fault shaping or cutting their link. Photos are random bytes behind a JPEG header
// (so the media-type checks by magic bytes pass), each different unless said otherwise.
//
// Figures (one JSON line each, bench "attachments"):
//  throughput_ratio_vs_plain_stream  `photos` photos of 2 MB uploaded by Client::
//    UploadAttachments over clean loopback (no proxy), against a plain gRPC client stream of
//    the same bytes in 64 KiB messages to a sink service in this process that only counts
//    them (no disk, no checksum, no commit): SDK bytes/s divided by plain bytes/s. The plain
//    stream runs before and after the SDK's upload; its mean is used. Goal >= 0.8.
//    Also, to tell where the time goes: sdk_upload_mb_per_s, plain_stream_mb_per_s, and
//    throughput_ratio_vs_fsynced_stream (the plain stream written to a file on the same
//    disk and fsynced every 256 KiB, like the server's commit interval).
//  known_blob_payload_bytes  a second tablet (same province) attaches bytes the server
//    already has: payload bytes its upload pass sent (AttachmentUploadSummary). Goal 0.
//  resent_bytes_per_cut  `cut_photos` photos of 2 MB through a proxy that cuts every
//    connection after 700 KB of client-to-server bytes (LinkShape::cut_after_bytes; not a
//    multiple of the 256 KiB commit interval). For each upload pass (UploadAttachments, which
//    stops at a cut): bytes the proxy forwarded to the server minus the growth of the
//    server-committed offsets (AttachmentInfo::bytes_sent), divided by the cuts in the pass;
//    the figure is the maximum over passes. It counts HTTP/2 and protobuf framing and the
//    Begin calls as re-sent too (an overestimate of about 0.1%). Goal <= 320 KiB. A pass
//    only sees the commits acknowledged to it: what the server committed when the cut
//    stream ended shows up in the next pass's Begin, so a pass's figure can move bytes to
//    its successor; resent_bytes_per_cut_mean (the whole phase's bytes forwarded minus
//    bytes committed, over its cuts) has no such shift.
//  shaped_link_max_progress_gap_s  a 2G-like link (50 kbit/s each way, 500 ms RTT, 2% loss
//    as LinkShaper models it: stalls of one retransmission timeout) carrying fewer, smaller
//    photos: `shaped_photos` of `shaped_kib` KiB (the 100 x 2 MB set would take almost nine
//    hours at 50 kbit/s; the unit says which photos). The longest time between two upload progress
//    events (from the start of the upload pass to its end), in seconds. Goal <= 2 s, and the
//    uploads complete (shaped_link_uploads_completed: 1 when they all did within the time allowed,
//    else 0). The SDK repeats the last numbers when a second passed without an ack
//    (kProgressHeartbeat); shaped_link_max_byte_progress_gap_s is the longest time without
//    new numbers (the link's longest stall as the device saw it).
//  rss_growth_mib  the server's resident memory (VmRSS of the kcnet-server process,
//    sampled every 20 ms) during 200 concurrent uploads of `rss_kib` KiB each (raw
//    AttachmentService streams over 20 connections, 10 streams each; see RunRss), minus its
//    value just before. Goal <= 16 MiB.
//
// With --store=postgres the server runs on a PostgreSQL of the bench's own (directory,
// records, attachment sessions and bytes in the database; docs/POSTGRES.md) and every
// figure's name starts with "pg_" (e.g. pg_sdk_upload_mb_per_s), to set beside the SQLite
// run's.
//
// Usage: attachments_bench [--quick] [--only=throughput,cuts,shaped,rss] [--store=postgres]
//   (--only: those
// phases; throughput includes the known blob) (--quick: 10 photos, 3 cut photos, 1 shaped photo of
// 32 KiB, 200 uploads of 256 KiB; the full run: 100, 10, 3 of 96 KiB, 200 of 2 MB).
// KCNET_SERVER_BIN names the server binary (set by CMake; the environment variable of that
// name overrides it, e.g. with a script that runs the server under a memory profiler).
#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "client_sdk/attachment_digest.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/attachments.h"
#include "kcnet/client.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/crc32c.h"
#include "sync/model/record_types.h"
#include "tests/fault/fault_proxy.h"
#include "tests/fault/fault_util.h"
#include "tests/fault/photo_util.h"
#include "tests/testing/pg_instance.h"

#ifndef KCNET_SERVER_BIN
#error "KCNET_SERVER_BIN must name the kcnet-server binary"
#endif

namespace kcnet::bench {
namespace {

constexpr char kBench[] = "attachments";
constexpr char kPassword[] = "password-123";  // fault::SetUpDirectory's
constexpr int64_t kPhotoBytes = 2'000'000;
constexpr int64_t kChunkBytes = 64 * 1024;
constexpr int kConcurrentUploads = 200;

// "pg_" before every figure's name when the server runs on PostgreSQL (--store=postgres).
bool on_postgres = false;
std::string MetricName(const char* name) { return absl::StrCat(on_postgres ? "pg_" : "", name); }

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "attachments_bench: " << what << "\n";
  std::exit(1);
}
template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(absl::StrCat(what, ": ", v.status().ToString()));
  return *std::move(v);
}
void Must(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.ToString()));
}

struct Sizes {
  int photos = 100;
  int cut_photos = 10;
  int shaped_photos = 3;
  int64_t shaped_bytes = 96 * 1024;
  int64_t rss_bytes = kPhotoBytes;
  absl::Duration shaped_deadline = absl::Minutes(10);
};

std::string MakePhoto(int64_t size, uint64_t seed) { return fault::MakeJpeg(size, seed); }

// VmRSS of process `pid`, in KiB (-1 when unreadable).
int64_t RssKib(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    for (absl::string_view part : absl::StrSplit(line.substr(6), ' ', absl::SkipEmpty())) {
      int64_t kib = 0;
      if (absl::SimpleAtoi(part, &kib)) return kib;
    }
  }
  return -1;
}

// One tablet: an SDK client signed in as `account`, with one facility to attach photos to.
struct Tablet {
  std::unique_ptr<sdk::Client> client;
  std::string facility_id;
};

Tablet OpenTablet(const std::string& dir, const std::string& name, const std::string& address,
                  const fault::Account& account) {
  sdk::ClientOptions o;
  o.path = absl::StrCat(dir, "/", name, ".db");
  o.device_id = absl::StrCat("bench-", name);
  o.server_address = address;
  o.durable = true;
  o.sync_timeout = absl::Minutes(15);
  o.upload_attachments_in_sync = false;  // the bench runs the upload passes itself
  o.initial_backoff = absl::Milliseconds(10);
  o.max_backoff = absl::Milliseconds(100);
  o.max_upload_attempts = 1'000'000;  // cuts are the point here, not a reason to give up
  o.attachment_budget_bytes = int64_t{4} << 30;
  Tablet t;
  t.client = Must(sdk::Client::Open(o), absl::StrCat("open ", name));
  Must(t.client->SignIn(account.username, kPassword), absl::StrCat("sign in ", name));
  v1::Facility f;
  f.set_commune_id(account.commune);
  f.set_name(absl::StrCat("Cơ sở mây tre đan ", name));
  f.set_latitude(20.9);
  f.set_longitude(105.6);
  t.facility_id = Must(t.client->RegisterFacility(f), "register facility").id();
  return t;
}

std::vector<sdk::AttachmentInfo> AddPhotos(Tablet& t, int count, int64_t size, uint64_t seed) {
  std::vector<sdk::AttachmentInfo> added;
  for (int i = 0; i < count; ++i) {
    sdk::NewAttachment a;
    a.owner_type = model::kFacilityType;
    a.owner_id = t.facility_id;
    a.bytes = MakePhoto(size, seed + static_cast<uint64_t>(i));
    a.media_type = "image/jpeg";
    a.caption = absl::StrCat("Ảnh nhà xưởng ", i + 1);
    added.push_back(Must(t.client->AddAttachment(std::move(a)), "add attachment"));
  }
  // The records first (Begin needs the Attachment record on the server).
  Must(t.client->SyncNow().status(), "sync the attachment records");
  return added;
}

// Committed bytes of all this tablet's attachments (== size once uploaded).
int64_t CommittedBytes(sdk::Client& client) {
  int64_t total = 0;
  for (const sdk::AttachmentInfo& a : Must(client.ListAttachments(), "list attachments")) {
    total += a.state == sdk::AttachmentState::kUploaded ? a.size : a.bytes_sent;
  }
  return total;
}

// A pass that a cut or a stall ended (the SDK retries these itself, attachment_queue.cc).
bool Transient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s);
}

// Upload passes until the queue is empty or `deadline`; true when it emptied.
bool UploadAll(sdk::Client& client, absl::Time deadline) {
  while (absl::Now() < deadline) {
    absl::StatusOr<sdk::AttachmentUploadSummary> pass = client.UploadAttachments();
    if (pass.ok() && pass->remaining == 0 && pass->failed == 0) return true;
    if (!pass.ok() && !Transient(pass.status())) {
      Die(absl::StrCat("upload pass: ", pass.status().ToString()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

// ---- A plain gRPC client stream: the yardstick of throughput ----------------------------

// Counts the bytes of an Upload stream and answers one ack at the end: no CRC, no
// session, no hash. With a `durable_dir`, it also writes each stream to a file there and
// fsyncs it every 256 KiB and at the end (the server's commit interval, without the
// commit's database write): the yardstick that tells the cost of durability from the rest.
class SinkService final : public v1::AttachmentService::Service {
 public:
  explicit SinkService(std::string durable_dir = "") : durable_dir_(std::move(durable_dir)) {}

  grpc::Status Upload(grpc::ServerContext*,
                      grpc::ServerReaderWriter<v1::UploadAck, v1::UploadChunk>* stream) override {
    v1::UploadChunk chunk;
    int64_t bytes = 0, synced = 0;
    int fd = -1;
    if (!durable_dir_.empty()) {
      const std::string path = absl::StrCat(durable_dir_, "/", files_.fetch_add(1), ".part");
      fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return grpc::Status(grpc::StatusCode::INTERNAL, "sink: open");
    }
    while (stream->Read(&chunk)) {
      bytes += static_cast<int64_t>(chunk.data().size());
      if (fd < 0) continue;
      if (write(fd, chunk.data().data(), chunk.data().size()) !=
          static_cast<ssize_t>(chunk.data().size())) {
        close(fd);
        return grpc::Status(grpc::StatusCode::INTERNAL, "sink: write");
      }
      if (bytes - synced >= 256 * 1024) {
        fsync(fd);
        synced = bytes;
      }
    }
    if (fd >= 0) {
      fsync(fd);
      close(fd);
    }
    v1::UploadAck ack;
    ack.set_committed_offset(bytes);
    ack.set_complete(true);
    stream->Write(ack);
    return grpc::Status::OK;
  }

 private:
  const std::string durable_dir_;
  std::atomic<int64_t> files_{0};
};

// Seconds to send `photos` through one Upload stream each, in 64 KiB messages.
double PlainStreamSeconds(const std::vector<std::string>& photos, const std::string& target) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = v1::AttachmentService::NewStub(channel);
  Timer timer;
  for (const std::string& photo : photos) {
    grpc::ClientContext context;
    auto stream = stub->Upload(&context);
    v1::UploadChunk chunk;
    chunk.set_upload_id("plain");
    for (size_t offset = 0; offset < photo.size(); offset += kChunkBytes) {
      chunk.set_offset(static_cast<int64_t>(offset));
      chunk.set_data(photo.substr(offset, kChunkBytes));
      if (!stream->Write(chunk)) Die("plain stream: write failed");
    }
    stream->WritesDone();
    v1::UploadAck ack;
    if (!stream->Read(&ack) || ack.committed_offset() != static_cast<int64_t>(photo.size())) {
      Die("plain stream: no ack");
    }
    const grpc::Status finish = stream->Finish();
    if (!finish.ok()) Die(absl::StrCat("plain stream: ", finish.error_message()));
  }
  return timer.Seconds();
}

// ---- The figures ------------------------------------------------------------------------

void RunThroughput(const std::string& dir, const std::string& address,
                   const fault::Account& account, const Sizes& sizes) {
  Tablet t = OpenTablet(dir, "clean", address, account);
  std::vector<std::string> photos;
  for (int i = 0; i < sizes.photos; ++i) photos.push_back(MakePhoto(kPhotoBytes, 1000 + i));
  AddPhotos(t, sizes.photos, kPhotoBytes, 1000);

  SinkService sink;
  int sink_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &sink_port);
  builder.RegisterService(&sink);
  builder.SetMaxReceiveMessageSize(4 << 20);
  std::unique_ptr<grpc::Server> sink_server = builder.BuildAndStart();
  if (!sink_server) Die("sink server");
  const std::string sink_target = absl::StrCat("127.0.0.1:", sink_port);
  // The same on the bench's disk, fsynced every 256 KiB.
  const std::string durable_dir = dir + "/durable_sink";
  std::filesystem::create_directories(durable_dir);
  SinkService durable_sink(durable_dir);
  int durable_port = 0;
  grpc::ServerBuilder durable_builder;
  durable_builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &durable_port);
  durable_builder.RegisterService(&durable_sink);
  durable_builder.SetMaxReceiveMessageSize(4 << 20);
  std::unique_ptr<grpc::Server> durable_server = durable_builder.BuildAndStart();
  if (!durable_server) Die("durable sink server");
  const std::string durable_target = absl::StrCat("127.0.0.1:", durable_port);

  PlainStreamSeconds({photos[0]}, sink_target);  // warm-up: connection, TCP slow start
  const double plain_before = PlainStreamSeconds(photos, sink_target);
  Timer timer;
  if (!UploadAll(*t.client, absl::Now() + absl::Minutes(30))) Die("clean upload incomplete");
  const double sdk_s = timer.Seconds();
  const double plain_after = PlainStreamSeconds(photos, sink_target);
  const double durable_s = PlainStreamSeconds(photos, durable_target);
  sink_server->Shutdown();
  durable_server->Shutdown();
  const double plain_s = (plain_before + plain_after) / 2;
  const double mb = static_cast<double>(kPhotoBytes) * sizes.photos / 1e6;
  std::cerr << "throughput: " << sizes.photos << " x 2 MB: SDK " << sdk_s << " s (" << mb / sdk_s
            << " MB/s), plain stream " << plain_before << " / " << plain_after << " s ("
            << mb / plain_s << " MB/s), plain stream fsynced every 256 KiB " << durable_s << " s ("
            << mb / durable_s << " MB/s)\n";
  Emit(kBench, MetricName("throughput_ratio_vs_plain_stream"), plain_s / sdk_s, "ratio");
  Emit(kBench, MetricName("sdk_upload_mb_per_s"), mb / sdk_s, "MB/s");
  Emit(kBench, MetricName("plain_stream_mb_per_s"), mb / plain_s, "MB/s");
  Emit(kBench, MetricName("throughput_ratio_vs_fsynced_stream"), durable_s / sdk_s, "ratio");
  Must(t.client->Close(), "close");
}

void RunKnownBlob(const std::string& dir, const std::string& address,
                  const fault::Account& account) {
  // Photo 1000 was uploaded by the "clean" tablet (same province): the server has it.
  Tablet t = OpenTablet(dir, "dup", address, account);
  AddPhotos(t, 1, kPhotoBytes, 1000);
  sdk::AttachmentUploadSummary pass = Must(t.client->UploadAttachments(), "known blob upload");
  const std::vector<sdk::AttachmentInfo> all = Must(t.client->ListAttachments(), "list");
  if (all.size() != 1 || all[0].state != sdk::AttachmentState::kUploaded) {
    Die("known blob: the attachment is not uploaded after one pass");
  }
  std::cerr << "known blob: uploaded " << pass.uploaded << ", payload " << pass.payload_bytes
            << " bytes\n";
  Emit(kBench, MetricName("known_blob_payload_bytes"), static_cast<double>(pass.payload_bytes),
       "bytes");
  Must(t.client->Close(), "close");
}

void RunCuts(const std::string& dir, int server_port, const fault::Account& account,
             const Sizes& sizes) {
  auto proxy = Must(fault::FaultProxy::Start(server_port, fault::FaultProxyOptions{}), "proxy");
  Tablet t = OpenTablet(dir, "cut", absl::StrCat("127.0.0.1:", proxy->port()), account);
  AddPhotos(t, sizes.cut_photos, kPhotoBytes, 2000);
  fault::LinkShape cut;
  cut.cut_after_bytes = 700'000;
  proxy->SetLinkShape(cut);
  proxy->CutAll();  // the tablet's next connection is cut after 700 KB
  double max_resent = 0;
  int64_t cuts = 0, passes = 0;
  const int64_t phase_up_before = proxy->stats().bytes_up;
  const int64_t phase_committed_before = CommittedBytes(*t.client);
  const absl::Time deadline = absl::Now() + absl::Minutes(20);
  while (absl::Now() < deadline) {
    const fault::FaultProxyStats before = proxy->stats();
    const int64_t committed_before = CommittedBytes(*t.client);
    absl::StatusOr<sdk::AttachmentUploadSummary> pass = t.client->UploadAttachments();
    const fault::FaultProxyStats after = proxy->stats();
    const int64_t committed = CommittedBytes(*t.client) - committed_before;
    const int64_t pass_cuts = after.cut_after_bytes - before.cut_after_bytes;
    ++passes;
    if (pass_cuts > 0) {
      cuts += pass_cuts;
      const int64_t sent = after.bytes_up - before.bytes_up;
      max_resent = std::max(max_resent, static_cast<double>(sent - committed) / pass_cuts);
    }
    if (pass.ok() && pass->remaining == 0 && pass->failed == 0) break;
    if (!pass.ok() && !Transient(pass.status())) {
      Die(absl::StrCat("cut upload pass: ", pass.status().ToString()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (CommittedBytes(*t.client) != kPhotoBytes * sizes.cut_photos) Die("cut uploads incomplete");
  if (cuts == 0) Die("no cut happened");
  const double mean_resent =
      static_cast<double>((proxy->stats().bytes_up - phase_up_before) -
                          (CommittedBytes(*t.client) - phase_committed_before)) /
      static_cast<double>(cuts);
  std::cerr << "cuts: " << sizes.cut_photos << " x 2 MB, " << cuts << " cuts in " << passes
            << " passes, re-sent per cut: max " << max_resent << ", mean " << mean_resent
            << " bytes\n";
  Emit(kBench, MetricName("resent_bytes_per_cut"), max_resent, "bytes");
  Emit(kBench, MetricName("resent_bytes_per_cut_mean"), mean_resent, "bytes");
  Must(t.client->Close(), "close");
  proxy->Stop();
}

void RunShaped(const std::string& dir, int server_port, const fault::Account& account,
               const Sizes& sizes) {
  auto proxy = Must(fault::FaultProxy::Start(server_port, fault::FaultProxyOptions{}), "proxy");
  fault::LinkShape two_g;
  two_g.bytes_per_second = 50'000 / 8;
  two_g.rtt = absl::Milliseconds(500);
  two_g.loss = 0.02;
  proxy->SetLinkShape(two_g);
  Tablet t = OpenTablet(dir, "slow", absl::StrCat("127.0.0.1:", proxy->port()), account);
  AddPhotos(t, sizes.shaped_photos, sizes.shaped_bytes, 3000);
  absl::Mutex mu;
  std::vector<absl::Time> events;
  std::vector<std::string> what;  // each event, to tell where the largest gap was
  // The events whose bytes moved (or whose upload or state changed): the heartbeat repeats
  // the last numbers on a stalled link, these show how long the link stalled.
  std::vector<absl::Time> moved;
  std::string last_numbers;
  const int handle = t.client->AddAttachmentListener([&](const sdk::AttachmentProgress& p) {
    if (p.download) return;
    absl::MutexLock lock(&mu);
    const std::string numbers = absl::StrCat(p.id, " ", static_cast<int>(p.state), " ",
                                             p.bytes_done, " ", p.bytes_received);
    if (numbers != last_numbers) moved.push_back(absl::Now());
    last_numbers = numbers;
    events.push_back(absl::Now());
    what.push_back(absl::StrCat(p.id.substr(0, 8), " ", sdk::AttachmentStateName(p.state), " ",
                                p.bytes_done, "/", p.bytes_received, "/", p.bytes_sent));
  });
  const absl::Time start = absl::Now();
  const bool done = UploadAll(*t.client, start + sizes.shaped_deadline);
  const absl::Time end = absl::Now();
  t.client->RemoveAttachmentListener(handle);
  absl::Duration gap;
  absl::Time previous = start;
  std::string where = "the start";
  {
    absl::MutexLock lock(&mu);
    events.push_back(end);
    what.push_back("the end");
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i] - previous > gap) {
        gap = events[i] - previous;
        where = absl::StrCat(i == 0 ? "the start" : what[i - 1], " -> ", what[i]);
      }
      previous = events[i];
    }
  }
  absl::Duration byte_gap;
  {
    absl::MutexLock lock(&mu);
    moved.push_back(end);
    absl::Time before = start;
    for (absl::Time at : moved) {
      byte_gap = std::max(byte_gap, at - before);
      before = at;
    }
  }
  std::cerr << "shaped: the largest gap, " << absl::FormatDuration(gap) << ", between " << where
            << " (done/received/sent bytes); the largest without bytes moving "
            << absl::FormatDuration(byte_gap) << "\n";
  const fault::FaultProxyStats stats = proxy->stats();
  std::cerr << "shaped: " << sizes.shaped_photos << " x " << sizes.shaped_bytes / 1024
            << " KiB at 50 kbit/s, 500 ms RTT, 2% loss: " << (done ? "done" : "NOT done") << " in "
            << absl::FormatDuration(end - start) << ", " << events.size() - 1
            << " progress events, " << stats.losses << " losses\n";
  const std::string photos =
      absl::StrCat(sizes.shaped_photos, " photos of ", sizes.shaped_bytes / 1024, " KiB");
  Emit(kBench, MetricName("shaped_link_max_progress_gap_s"), absl::ToDoubleSeconds(gap),
       absl::StrCat("s (", photos, ")"));
  Emit(kBench, MetricName("shaped_link_max_byte_progress_gap_s"), absl::ToDoubleSeconds(byte_gap),
       absl::StrCat("s (", photos, ")"));
  Emit(kBench, MetricName("shaped_link_uploads_completed"), done ? 1 : 0,
       absl::StrCat("bool (", photos, ")"));
  Must(t.client->Close(), "close");
  proxy->Stop();
}

// 200 uploads at once, straight to the server with the protocol (one SDK tablet uploads one
// attachment at a time): each stream sends its first chunk, waits for all the others to
// have done so, then the rest; the server's VmRSS is sampled all along.
void RunRss(const std::string& dir, const std::string& address, pid_t server_pid,
            const fault::Account& account, const Sizes& sizes) {
  Tablet t = OpenTablet(dir, "rss", address, account);
  const std::vector<sdk::AttachmentInfo> infos =
      AddPhotos(t, kConcurrentUploads, sizes.rss_bytes, 4000);
  constexpr int kChannels = 20;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < kChannels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection each
    args.SetInt("kcnet.bench.channel", i);
    channels.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  absl::SleepFor(absl::Seconds(1));  // let the server settle after the records' sync
  const int64_t baseline_kib = RssKib(server_pid);
  std::atomic<int64_t> peak_kib{baseline_kib};
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling.load()) {
      const int64_t kib = RssKib(server_pid);
      int64_t seen = peak_kib.load();
      while (kib > seen && !peak_kib.compare_exchange_weak(seen, kib)) {
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  absl::Barrier* first_chunks = new absl::Barrier(kConcurrentUploads);
  std::atomic<int> failed{0};
  std::atomic<int> busy{0};  // streams the server refused (too many at once) and retried
  const absl::Time phase_start = absl::Now();
  std::vector<std::thread> uploads;
  for (int i = 0; i < kConcurrentUploads; ++i) {
    uploads.emplace_back([&, i] {
      const std::string photo = MakePhoto(sizes.rss_bytes, 4000 + static_cast<uint64_t>(i));
      auto stub = v1::AttachmentService::NewStub(channels[static_cast<size_t>(i % kChannels)]);
      bool ok = true;
      bool waited = false;
      // A busy server (more than --attachment_max_upload_streams at once) answers the
      // stream RESOURCE_EXHAUSTED with kcnet-retry-after-ms: Begin again after that, as the
      // SDK does.
      for (int attempt = 0; attempt < 1000; ++attempt) {
        grpc::ClientContext begin_context;
        begin_context.AddMetadata("authorization", absl::StrCat("Bearer ", account.token));
        v1::BeginUploadRequest begin;
        begin.set_sha256(sdk::Sha256Of(photo));
        begin.set_size(static_cast<int64_t>(photo.size()));
        begin.set_media_type("image/jpeg");
        begin.set_attachment_id(infos[static_cast<size_t>(i)].id);
        v1::BeginUploadResponse session;
        ok = stub->Begin(&begin_context, begin, &session).ok() && !session.already_have();
        grpc::ClientContext context;
        context.AddMetadata("authorization", absl::StrCat("Bearer ", account.token));
        std::unique_ptr<grpc::ClientReaderWriter<v1::UploadChunk, v1::UploadAck>> stream;
        if (ok) stream = stub->Upload(&context);
        int64_t offset = session.committed_offset();
        while (ok && offset < static_cast<int64_t>(photo.size())) {
          v1::UploadChunk chunk;
          chunk.set_upload_id(session.upload_id());
          chunk.set_offset(offset);
          chunk.set_data(photo.substr(static_cast<size_t>(offset), kChunkBytes));
          chunk.set_crc32c(sync::Crc32c(chunk.data()));
          ok = stream->Write(chunk);
          offset += static_cast<int64_t>(chunk.data().size());
          if (!waited) {
            if (first_chunks->Block()) delete first_chunks;  // the last one out deletes it
            waited = true;
          }
        }
        if (!waited && first_chunks->Block()) delete first_chunks;
        waited = true;
        if (stream == nullptr) break;
        stream->WritesDone();
        v1::UploadAck ack;
        bool complete = false;
        while (stream->Read(&ack)) complete = complete || ack.complete();
        const grpc::Status finish = stream->Finish();
        const auto& trailers = context.GetServerTrailingMetadata();
        const auto retry = trailers.find("kcnet-retry-after-ms");
        int64_t retry_ms = 0;
        if (finish.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
            retry != trailers.end() &&
            absl::SimpleAtoi(absl::string_view(retry->second.data(), retry->second.size()),
                             &retry_ms)) {
          busy.fetch_add(1);
          ok = true;
          absl::SleepFor(absl::Milliseconds(retry_ms + (retry_ms * (i % 10)) / 20));
          continue;
        }
        ok = finish.ok() && complete && ok;
        break;
      }
      if (!ok) failed.fetch_add(1);
    });
  }
  for (std::thread& u : uploads) u.join();
  sampling.store(false);
  sampler.join();
  if (failed.load() > 0) Die(absl::StrCat(failed.load(), " of the 200 uploads failed"));
  const double growth = static_cast<double>(peak_kib.load() - baseline_kib) / 1024.0;
  std::cerr << "rss: " << kConcurrentUploads << " concurrent uploads of " << sizes.rss_bytes / 1024
            << " KiB: server VmRSS " << baseline_kib / 1024 << " MiB before, peak "
            << peak_kib.load() / 1024 << " MiB; " << busy.load()
            << " streams told to retry (busy), all done in "
            << absl::FormatDuration(absl::Now() - phase_start) << "\n";
  Emit(kBench, MetricName("rss_growth_mib"), growth,
       absl::StrCat("MiB (", kConcurrentUploads, " uploads of ", sizes.rss_bytes / 1024, " KiB)"));
  Must(t.client->Close(), "close");
}

int Run(bool quick, const std::string& only) {
  Sizes sizes;
  if (quick) {
    sizes.photos = 10;
    sizes.cut_photos = 3;
    sizes.shaped_photos = 1;
    sizes.shaped_bytes = 32 * 1024;
    sizes.rss_bytes = 256 * 1024;
    sizes.shaped_deadline = absl::Minutes(3);
  }
  const std::string dir = Must(
      []() -> absl::StatusOr<std::string> {
        char tmpl[] = "/tmp/kcnet_attachments_bench_XXXXXX";
        if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
        return std::string(tmpl);
      }(),
      "temp dir");
  // Five tablets' accounts: commune collaborators of one province (dedup is per province).
  // --store=postgres: a PostgreSQL of its own (tests/testing/pg_instance.h) holds the
  // directory, the records and the attachments (sessions, blobs and their bytes).
  std::unique_ptr<kcnet::testing::PgInstance> pg;
  if (on_postgres) pg = Must(kcnet::testing::PgInstance::Start(), "start PostgreSQL");
  const std::vector<fault::Account> accounts =
      Must(fault::SetUpDirectory(dir + "/server", 5, 0, pg != nullptr ? pg->conninfo() : ""),
           "set up the directory");
  const char* server_bin = std::getenv("KCNET_SERVER_BIN");
  fault::ServerProcess server(server_bin != nullptr ? server_bin : KCNET_SERVER_BIN,
                              dir + "/server", dir + "/server.log");
  if (pg != nullptr) server.set_extra_args({"--store=postgres:" + pg->conninfo()});
  Must(server.Start(), "start kcnet-server");
  std::cerr << "attachments_bench: data in " << dir << (quick ? " (quick)" : "") << "\n";

  auto wanted = [&only](absl::string_view part) {
    return only.empty() || absl::StrContains(only, part);
  };
  if (wanted("throughput")) RunThroughput(dir, server.target(), accounts[0], sizes);
  if (wanted("throughput")) RunKnownBlob(dir, server.target(), accounts[1]);
  if (wanted("cuts")) RunCuts(dir, server.port(), accounts[2], sizes);
  if (wanted("shaped")) RunShaped(dir, server.port(), accounts[3], sizes);
  if (wanted("rss")) RunRss(dir, server.target(), server.pid(), accounts[4], sizes);

  Must(server.Stop(), "stop kcnet-server");
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return 0;
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  bool quick = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg.rfind("--only=", 0) == 0) {
      only = arg.substr(7);
    } else if (arg == "--store=postgres") {
      kcnet::bench::on_postgres = true;
    } else {
      std::cerr << "usage: attachments_bench [--quick] [--only=throughput,cuts,shaped,rss] "
                   "[--store=postgres]\n";
      return 2;
    }
  }
  return kcnet::bench::Run(quick, only);
}
