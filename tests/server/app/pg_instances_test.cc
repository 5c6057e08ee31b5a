// Two real kcnet-server processes on one PostgreSQL database (--store=postgres:), as behind
// nginx: accounts made by `kcnet-admin --store=postgres:` serve both; a device signs in on
// instance A and syncs on instance B with that token, a second device syncs the record
// back from A; a sign-out on B is refused by A within 1 s. Starts its own PostgreSQL;
// skipped without the binaries.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/attachments/blob_store.h"
#include "server/pgstore/pg_attachments.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_plan_db.h"
#include "server/plans/plan_store.h"
#include "sync/crc32c.h"
#include "tests/sync_stream/stream_fixture.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
#endif
#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet::sdk::testing_stream {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A child process with stdout on a pipe and stderr in a file; SIGTERM then SIGKILL at
// destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& stderr_path) {
    // Prepared before fork(): the child only calls async-signal-safe functions.
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int out[2];
    if (err < 0 || pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    close(err);
    close(out[1]);
    out_ = out[0];
  }
  // kill -9: the process dies mid-work, as a crashed instance.
  void Kill() {
    if (pid_ <= 0 || exited_) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    exited_ = true;
  }

  ~Child() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGTERM);
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (waitpid(pid_, nullptr, WNOHANG) != pid_) {
        if (absl::Now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, nullptr, 0);
          break;
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
    if (out_ >= 0) close(out_);
  }

  // The whole stdout and the exit code (waits up to 60 s).
  int RunToEnd(std::string* out) {
    while (std::optional<std::string> line = ReadLine(absl::Seconds(60))) {
      absl::StrAppend(out, *line, "\n");
    }
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return -1;
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // The next line of stdout, or nullopt when none comes within `timeout`.
  std::optional<std::string> ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0 || out_ < 0) return std::nullopt;
      pollfd fd{out_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(left_ms)) <= 0) continue;
      char chunk[512];
      const ssize_t n = read(out_, chunk, sizeof(chunk));
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string buffer_;
};

class PgInstancesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = kcnet::testing::PgInstance::Start();
    if (absl::IsNotFound(pg.status())) GTEST_SKIP() << "no PostgreSQL binaries: " << pg.status();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    store_ = "--store=postgres:" + pg_->conninfo();
  }

  // kcnet-admin on the shared directory; its stdout. Fails the test on a non-zero exit.
  std::string Admin(std::vector<std::string> args) {
    args.insert(args.begin(), {KCNET_ADMIN_PATH, store_});
    Child admin(args, tmp_.File("admin.stderr"));
    std::string out;
    const int code = admin.RunToEnd(&out);
    EXPECT_EQ(code, 0) << ReadFile(tmp_.File("admin.stderr"));
    return out;
  }

  // Starts an instance with its own data dir; returns its port (0 on failure).
  int StartInstance(const std::string& name, std::unique_ptr<Child>* child,
                    const std::vector<std::string>& flags = {}) {
    std::vector<std::string> argv{KCNET_SERVER_PATH, "--data_dir=" + tmp_.File(name), store_,
                                  "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    *child = std::make_unique<Child>(argv, tmp_.File(name + ".stderr"));
    const std::optional<std::string> ready = (*child)->ReadLine(absl::Seconds(60));
    EXPECT_TRUE(ready.has_value()) << ReadFile(tmp_.File(name + ".stderr"));
    if (!ready.has_value()) return 0;
    const size_t colon = ready->rfind(':');
    int port = 0;
    EXPECT_TRUE(absl::StartsWith(*ready, "kcnet-server listening on ")) << *ready;
    EXPECT_TRUE(colon != std::string::npos && absl::SimpleAtoi(ready->substr(colon + 1), &port));
    return port;
  }

  std::unique_ptr<Device> NewDevice(const std::string& name, int port, const std::string& token) {
    auto device = std::make_unique<Device>();
    device->name = name;
    auto store = sync::DeviceStore::Open(tmp_.File(name + ".db"), &model::KcnetSchema(), name,
                                         sync::DeviceStoreOptions{.durable = false});
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    device->store = *std::move(store);
    SyncClientOptions options;
    options.token = token;
    device->client = std::make_unique<SyncClient>(Channel(port), device->store.get(), options);
    return device;
  }

  static std::shared_ptr<grpc::Channel> Channel(int port) {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                               grpc::InsecureChannelCredentials());
  }

  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    return context;
  }

  kcnet::testing::TempDir tmp_;
  std::unique_ptr<kcnet::testing::PgInstance> pg_;
  std::string store_;
};

TEST_F(PgInstancesTest, DeviceSignsInOnOneInstanceAndSyncsOnAnother) {
  WriteFile(tmp_.File("units.csv"),
            "code,name,level,parent_code\n"
            "01,Thành phố Hà Nội,province,\n"
            "001,Quận Ba Đình,district,01\n"
            "00001,Phường Phúc Xá,commune,001\n");
  Admin({"import-org-units", tmp_.File("units.csv")});
  WriteFile(tmp_.File("password"), "mat-khau-123\n");
  Admin({"create-user", "--username=lan", "--display_name=Nguyễn Thị Lan",
         "--role=commune_collaborator", "--org_units=00001",
         "--password-file=" + tmp_.File("password")});
  EXPECT_TRUE(absl::StrContains(Admin({"list-users"}), "lan"));

  std::unique_ptr<Child> a;
  std::unique_ptr<Child> b;
  const int port_a = StartInstance("a", &a);
  const int port_b = StartInstance("b", &b);
  ASSERT_NE(port_a, 0);
  ASSERT_NE(port_b, 0);

  // Sign in on A.
  auto auth_a = v1::AuthService::NewStub(Channel(port_a));
  v1::LoginRequest login;
  login.set_username("lan");
  login.set_password("mat-khau-123");
  v1::LoginResponse signed_in;
  grpc::Status status = auth_a->Login(As("").get(), login, &signed_in);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::string token = signed_in.token();
  const int64_t user_id = signed_in.user().id();
  const int64_t commune = signed_in.user().org_unit_ids(0);

  // Sync on B with A's token: the record reaches the shared store.
  auto tablet = NewDevice("tablet-1", port_b, token);
  ASSERT_NE(tablet, nullptr);
  const std::string id = NewUuid();
  tablet->Write({NewFacility(id, commune, user_id, "Cơ sở Phúc Xá")});
  tablet->Sync();
  EXPECT_EQ(tablet->Pending(), 0);

  // Another tablet of the same account syncs on A and receives it.
  auto other = NewDevice("tablet-2", port_a, token);
  ASSERT_NE(other, nullptr);
  other->Sync();
  EXPECT_EQ(StringField(other->Read(model::kFacilityType, id), kNameField), "Cơ sở Phúc Xá");

  // Signed out on B: A refuses the token within 1 s.
  auto auth_b = v1::AuthService::NewStub(Channel(port_b));
  v1::LogoutResponse logged_out;
  status = auth_b->Logout(As(token).get(), v1::LogoutRequest(), &logged_out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const absl::Time start = absl::Now();
  grpc::StatusCode code = grpc::StatusCode::OK;
  while (absl::Now() - start < absl::Seconds(3)) {
    v1::WhoAmIResponse who;
    code = auth_a->WhoAmI(As(token).get(), v1::WhoAmIRequest(), &who).error_code();
    if (code == grpc::StatusCode::UNAUTHENTICATED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_LE(absl::Now() - start, absl::Seconds(1));
  // Nothing of the directory, nor of the plans, is written under the data dirs.
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("a") + "/directory.db"));
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("a") + "/plans.db"));
}

// seed-demo --store=postgres: puts the demo plan into the database (no plans.db), where
// every instance reads it.
TEST_F(PgInstancesTest, SeedDemoPutsThePlanIntoTheDatabase) {
  const std::string data = tmp_.File("seeded");
  Admin({"seed-demo", "--data_dir=" + data});
  EXPECT_FALSE(std::filesystem::exists(data + "/plans.db"));
  auto db = kcnet::pgstore::OpenPgPlanDb(pg_->conninfo());
  ASSERT_TRUE(db.ok()) << db.status();
  auto plans = kcnet::server::PlanStore::Open(*std::move(db));
  ASSERT_TRUE(plans.ok()) << plans.status();
  auto all = (*plans)->ListPlans({}, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 1u);
  ASSERT_GT((*all)[0].lines_size(), 0);
  EXPECT_EQ((*all)[0].lines(0).planned_amount_vnd(), 500'000'000);
}

// `n` bytes that start like a JPEG, the rest pseudo-random from `seed`.
std::string Jpeg(size_t n, uint32_t seed) {
  std::string out = "\xFF\xD8\xFF\xE0";
  uint32_t x = seed * 2654435761u + 1;
  while (out.size() < n) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out.push_back(static_cast<char>(x & 0xFF));
  }
  out.resize(n);
  return out;
}

// An Attachment record of `bytes` on a facility, as a tablet writes it.
RecordChange NewAttachment(const std::string& facility, int64_t commune, int64_t author,
                           const std::string& bytes) {
  v1::Attachment a;
  a.set_id(NewUuid());
  a.set_commune_id(commune);
  a.set_owner_type(v1::ATTACHMENT_OWNER_TYPE_FACILITY);
  a.set_owner_id(facility);
  a.set_sha256(server::HexOf(server::Sha256Of(bytes)));
  a.set_size_bytes(static_cast<int64_t>(bytes.size()));
  a.set_media_type("image/jpeg");
  a.set_caption("Xưởng sản xuất");
  a.set_author_id(author);
  a.set_created_ms(NowMs());
  return Created(a);
}

// The upload protocol spoken by hand against one instance.
struct Uploader {
  std::unique_ptr<v1::AttachmentService::Stub> stub;
  std::string token;

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    return context;
  }

  grpc::Status Begin(const std::string& attachment_id, const std::string& bytes,
                     v1::BeginUploadResponse* resp) {
    v1::BeginUploadRequest req;
    req.set_sha256(server::Sha256Of(bytes));
    req.set_size(static_cast<int64_t>(bytes.size()));
    req.set_media_type("image/jpeg");
    req.set_attachment_id(attachment_id);
    return stub->Begin(Context().get(), req, resp);
  }

  // Sends [from, to) in 64 KiB chunks. `cut`: cancels after the first ack (a connection
  // cut) instead of finishing. Returns the status; *payload counts the bytes sent, *acks
  // the committed offsets acknowledged, *complete whether the blob was stored.
  grpc::Status Send(const std::string& upload_id, const std::string& bytes, int64_t from,
                    int64_t to, bool cut, int64_t* payload, std::vector<int64_t>* acks,
                    bool* complete) {
    auto ctx = Context();
    auto stream = stub->Upload(ctx.get());
    for (int64_t off = from; off < to; off += 64 * 1024) {
      v1::UploadChunk chunk;
      chunk.set_upload_id(upload_id);
      chunk.set_offset(off);
      chunk.set_data(bytes.substr(off, std::min<int64_t>(64 * 1024, to - off)));
      chunk.set_crc32c(sync::Crc32c(chunk.data()));
      if (!stream->Write(chunk)) break;
      *payload += static_cast<int64_t>(chunk.data().size());
    }
    v1::UploadAck ack;
    *complete = false;
    if (cut) {
      if (stream->Read(&ack)) acks->push_back(ack.committed_offset());
      ctx->TryCancel();
      return stream->Finish();
    }
    stream->WritesDone();
    while (stream->Read(&ack)) {
      acks->push_back(ack.committed_offset());
      if (ack.complete()) *complete = true;
    }
    return stream->Finish();
  }

  // The whole blob (or a range) as this instance serves it.
  grpc::Status Download(const std::string& bytes, int64_t offset, int64_t length,
                        std::string* out) {
    v1::DownloadRequest req;
    req.set_sha256(server::Sha256Of(bytes));
    req.set_offset(offset);
    req.set_length(length);
    auto ctx = Context();
    auto reader = stub->Download(ctx.get(), req);
    v1::DownloadChunk chunk;
    out->clear();
    while (reader->Read(&chunk)) *out += chunk.data();
    return reader->Finish();
  }
};

// Issue 18 point 3 with issue 17: attachment bytes are shared by every instance on one
// PostgreSQL. A photo uploaded through A: B's Begin of the same hash answers "already have
// it" (0 payload bytes) and B serves the same bytes. An upload cut half way on A, then A
// killed: the device goes on through B from the committed offset. The user's quota counts
// what was stored through either instance.
TEST_F(PgInstancesTest, AttachmentBytesAreSharedByEveryInstance) {
  WriteFile(tmp_.File("units.csv"),
            "code,name,level,parent_code\n"
            "01,Thành phố Hà Nội,province,\n"
            "001,Quận Ba Đình,district,01\n"
            "00001,Phường Phúc Xá,commune,001\n");
  Admin({"import-org-units", tmp_.File("units.csv")});
  WriteFile(tmp_.File("password"), "mat-khau-123\n");
  Admin({"create-user", "--username=lan", "--display_name=Nguyễn Thị Lan",
         "--role=commune_collaborator", "--org_units=00001",
         "--password-file=" + tmp_.File("password")});

  // A quota of 2 MiB per user: 600 KiB + 800 KiB stored, a 700 KiB third is refused.
  const std::vector<std::string> flags = {"--attachment_user_quota_bytes=2097152"};
  std::unique_ptr<Child> a;
  std::unique_ptr<Child> b;
  const int port_a = StartInstance("a", &a, flags);
  const int port_b = StartInstance("b", &b, flags);
  ASSERT_NE(port_a, 0);
  ASSERT_NE(port_b, 0);

  auto auth = v1::AuthService::NewStub(Channel(port_a));
  v1::LoginRequest login;
  login.set_username("lan");
  login.set_password("mat-khau-123");
  v1::LoginResponse signed_in;
  grpc::Status status = auth->Login(As("").get(), login, &signed_in);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::string token = signed_in.token();
  const int64_t user_id = signed_in.user().id();
  const int64_t commune = signed_in.user().org_unit_ids(0);

  // The records: a facility and three photos' metadata (two of the same bytes).
  const std::string photo = Jpeg(600 * 1024 + 123, 1);
  const std::string resumed = Jpeg(800 * 1024, 2);
  const std::string third = Jpeg(700 * 1024, 3);
  const std::string facility = NewUuid();
  RecordChange first_record = NewAttachment(facility, commune, user_id, photo);
  RecordChange again_record = NewAttachment(facility, commune, user_id, photo);
  RecordChange resumed_record = NewAttachment(facility, commune, user_id, resumed);
  RecordChange third_record = NewAttachment(facility, commune, user_id, third);
  auto tablet = NewDevice("tablet-1", port_a, token);
  ASSERT_NE(tablet, nullptr);
  tablet->Write({NewFacility(facility, commune, user_id, "Cơ sở Phúc Xá"), first_record,
                 again_record, resumed_record, third_record});
  tablet->Sync();
  ASSERT_EQ(tablet->Pending(), 0);
  auto id_of = [](const RecordChange& c) { return *sync::UuidToText(c.id()); };

  Uploader via_a{v1::AttachmentService::NewStub(Channel(port_a)), token};
  Uploader via_b{v1::AttachmentService::NewStub(Channel(port_b)), token};

  // Through A, whole.
  v1::BeginUploadResponse begin;
  ASSERT_TRUE(via_a.Begin(id_of(first_record), photo, &begin).ok());
  ASSERT_FALSE(begin.already_have());
  int64_t payload = 0;
  std::vector<int64_t> acks;
  bool complete = false;
  status = via_a.Send(begin.upload_id(), photo, 0, static_cast<int64_t>(photo.size()),
                      /*cut=*/false, &payload, &acks, &complete);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(complete);

  // B has it: nothing to send, and B serves the same bytes, whole and as a range.
  v1::BeginUploadResponse on_b;
  status = via_b.Begin(id_of(again_record), photo, &on_b);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(on_b.already_have());
  EXPECT_TRUE(on_b.upload_id().empty());
  std::string got;
  status = via_b.Download(photo, 0, 0, &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(got == photo) << "B served " << got.size() << " bytes of " << photo.size();
  status = via_b.Download(photo, 300000, 70000, &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(got == photo.substr(300000, 70000));

  // Through A, cut after 576 KiB; then A dies.
  ASSERT_TRUE(via_a.Begin(id_of(resumed_record), resumed, &begin).ok());
  ASSERT_FALSE(begin.already_have());
  payload = 0;
  acks.clear();
  via_a.Send(begin.upload_id(), resumed, 0, 576 * 1024, /*cut=*/true, &payload, &acks, &complete)
      .IgnoreError();
  ASSERT_FALSE(acks.empty());
  const int64_t acknowledged = acks.back();
  ASSERT_GE(acknowledged, 256 * 1024);
  a->Kill();

  // The device reconnects to B: the same session, from the committed offset.
  status = via_b.Begin(id_of(resumed_record), resumed, &on_b);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(on_b.already_have());
  EXPECT_EQ(on_b.upload_id(), begin.upload_id());
  EXPECT_GE(on_b.committed_offset(), acknowledged);
  payload = 0;
  acks.clear();
  status =
      via_b.Send(on_b.upload_id(), resumed, on_b.committed_offset(),
                 static_cast<int64_t>(resumed.size()), /*cut=*/false, &payload, &acks, &complete);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(complete);
  EXPECT_LE(payload, static_cast<int64_t>(resumed.size()) - 256 * 1024);
  status = via_b.Download(resumed, 0, 0, &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(got == resumed) << "B served " << got.size() << " bytes of " << resumed.size();

  // The quota counts both: 1,400 KiB stored, 700 KiB more is past 2 MiB.
  status = via_b.Begin(id_of(third_record), third, &on_b);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  // Nothing of the attachments is written under the data dirs.
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("b") + "/attachments.db"));
}

// A device moved from A to B while A still holds its old stream open (a half-open
// connection): B's stream takes the session over, and the stale stream's next commit on A
// is ABORTED instead of writing over B's bytes; the photo ends byte-identical.
TEST_F(PgInstancesTest, AStaleStreamOnAnotherInstanceCannotWriteOverTheOneThatTookOver) {
  WriteFile(tmp_.File("units.csv"),
            "code,name,level,parent_code\n"
            "01,Thành phố Hà Nội,province,\n"
            "001,Quận Ba Đình,district,01\n"
            "00001,Phường Phúc Xá,commune,001\n");
  Admin({"import-org-units", tmp_.File("units.csv")});
  WriteFile(tmp_.File("password"), "mat-khau-123\n");
  Admin({"create-user", "--username=lan", "--display_name=Nguyễn Thị Lan",
         "--role=commune_collaborator", "--org_units=00001",
         "--password-file=" + tmp_.File("password")});
  std::unique_ptr<Child> a;
  std::unique_ptr<Child> b;
  const int port_a = StartInstance("a", &a);
  const int port_b = StartInstance("b", &b);
  ASSERT_NE(port_a, 0);
  ASSERT_NE(port_b, 0);
  auto auth = v1::AuthService::NewStub(Channel(port_a));
  v1::LoginRequest login;
  login.set_username("lan");
  login.set_password("mat-khau-123");
  v1::LoginResponse signed_in;
  grpc::Status status = auth->Login(As("").get(), login, &signed_in);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const int64_t user = signed_in.user().id();
  const int64_t commune = signed_in.user().org_unit_ids(0);
  const std::string photo = Jpeg(768 * 1024, 11);
  const std::string other = Jpeg(768 * 1024, 12);  // what the stale stream sends on
  const std::string facility = NewUuid();
  RecordChange record = NewAttachment(facility, commune, user, photo);
  auto tablet = NewDevice("tablet-1", port_a, signed_in.token());
  ASSERT_NE(tablet, nullptr);
  tablet->Write({NewFacility(facility, commune, user, "Cơ sở"), record});
  tablet->Sync();
  const std::string id = *sync::UuidToText(record.id());
  Uploader via_a{v1::AttachmentService::NewStub(Channel(port_a)), signed_in.token()};
  Uploader via_b{v1::AttachmentService::NewStub(Channel(port_b)), signed_in.token()};

  auto chunk_of = [](const std::string& upload_id, const std::string& bytes, int64_t offset) {
    v1::UploadChunk chunk;
    chunk.set_upload_id(upload_id);
    chunk.set_offset(offset);
    chunk.set_data(bytes.substr(offset, 64 * 1024));
    chunk.set_crc32c(sync::Crc32c(chunk.data()));
    return chunk;
  };
  // A's stream: the first 256 KiB, committed and acknowledged; the stream stays open.
  v1::BeginUploadResponse begin;
  ASSERT_TRUE(via_a.Begin(id, photo, &begin).ok());
  auto stale_ctx = via_a.Context();
  auto stale = via_a.stub->Upload(stale_ctx.get());
  for (int64_t off = 0; off < 256 * 1024; off += 64 * 1024) {
    ASSERT_TRUE(stale->Write(chunk_of(begin.upload_id(), photo, off)));
  }
  v1::UploadAck ack;
  ASSERT_TRUE(stale->Read(&ack));
  ASSERT_EQ(ack.committed_offset(), 256 * 1024);

  // The device, now through B, takes the session over and commits the next 256 KiB.
  v1::BeginUploadResponse on_b;
  ASSERT_TRUE(via_b.Begin(id, photo, &on_b).ok());
  ASSERT_EQ(on_b.upload_id(), begin.upload_id());
  ASSERT_EQ(on_b.committed_offset(), 256 * 1024);
  auto fresh_ctx = via_b.Context();
  auto fresh = via_b.stub->Upload(fresh_ctx.get());
  for (int64_t off = 256 * 1024; off < 512 * 1024; off += 64 * 1024) {
    ASSERT_TRUE(fresh->Write(chunk_of(begin.upload_id(), photo, off)));
  }
  ASSERT_TRUE(fresh->Read(&ack));
  ASSERT_EQ(ack.committed_offset(), 512 * 1024);

  // The stale stream on A sends other bytes for the same range: its commit is refused.
  for (int64_t off = 256 * 1024; off < 512 * 1024; off += 64 * 1024) {
    if (!stale->Write(chunk_of(begin.upload_id(), other, off))) break;
  }
  stale->WritesDone();
  while (stale->Read(&ack)) {
  }
  status = stale->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << status.error_message();

  // B's stream finishes the photo: byte-identical, through either instance.
  for (int64_t off = 512 * 1024; off < static_cast<int64_t>(photo.size()); off += 64 * 1024) {
    ASSERT_TRUE(fresh->Write(chunk_of(begin.upload_id(), photo, off)));
  }
  fresh->WritesDone();
  bool complete = false;
  while (fresh->Read(&ack)) complete = complete || ack.complete();
  status = fresh->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(complete);
  std::string got;
  ASSERT_TRUE(via_a.Download(photo, 0, 0, &got).ok());
  EXPECT_TRUE(got == photo);
}

// The collector and verify-blobs on PostgreSQL (kcnet-admin --store=postgres:): a blob no
// record names is removed after the grace, a referenced one never; a byte flipped in the
// database is reported as damage.
TEST_F(PgInstancesTest, GcAndVerifyBlobsWorkOnTheSharedBlobs) {
  WriteFile(tmp_.File("units.csv"),
            "code,name,level,parent_code\n"
            "01,Thành phố Hà Nội,province,\n"
            "001,Quận Ba Đình,district,01\n"
            "00001,Phường Phúc Xá,commune,001\n");
  Admin({"import-org-units", tmp_.File("units.csv")});
  WriteFile(tmp_.File("password"), "mat-khau-123\n");
  Admin({"create-user", "--username=lan", "--display_name=Nguyễn Thị Lan",
         "--role=commune_collaborator", "--org_units=00001",
         "--password-file=" + tmp_.File("password")});
  std::unique_ptr<Child> a;
  const int port = StartInstance("a", &a);
  ASSERT_NE(port, 0);
  auto auth = v1::AuthService::NewStub(Channel(port));
  v1::LoginRequest login;
  login.set_username("lan");
  login.set_password("mat-khau-123");
  v1::LoginResponse signed_in;
  grpc::Status status = auth->Login(As("").get(), login, &signed_in);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const int64_t commune = signed_in.user().org_unit_ids(0);

  // A referenced photo, uploaded through the instance.
  const std::string photo = Jpeg(300 * 1024, 7);
  const std::string facility = NewUuid();
  RecordChange record = NewAttachment(facility, commune, signed_in.user().id(), photo);
  auto tablet = NewDevice("tablet-1", port, signed_in.token());
  ASSERT_NE(tablet, nullptr);
  tablet->Write({NewFacility(facility, commune, signed_in.user().id(), "Cơ sở"), record});
  tablet->Sync();
  Uploader uploader{v1::AttachmentService::NewStub(Channel(port)), signed_in.token()};
  v1::BeginUploadResponse begin;
  ASSERT_TRUE(uploader.Begin(*sync::UuidToText(record.id()), photo, &begin).ok());
  int64_t payload = 0;
  std::vector<int64_t> acks;
  bool complete = false;
  status = uploader.Send(begin.upload_id(), photo, 0, static_cast<int64_t>(photo.size()),
                         /*cut=*/false, &payload, &acks, &complete);
  ASSERT_TRUE(status.ok() && complete) << status.error_message();
  // A blob no record names (as one whose record was deleted).
  auto storage = kcnet::pgstore::OpenPgBlobStorage(pg_->conninfo());
  ASSERT_TRUE(storage.ok()) << storage.status();
  absl::StatusOr<std::string> orphan = storage->blobs->Put(Jpeg(100 * 1024, 8));
  ASSERT_TRUE(orphan.ok()) << orphan.status();
  const std::string photo_sha = server::HexOf(server::Sha256Of(photo));

  auto run = [&](std::vector<std::string> args, std::string* out) {
    args.insert(args.begin(), {KCNET_ADMIN_PATH, store_, "--data_dir=" + tmp_.File("admin")});
    Child admin(args, tmp_.File("admin.stderr"));
    const int code = admin.RunToEnd(out);
    *out += ReadFile(tmp_.File("admin.stderr"));
    return code;
  };
  std::string out;
  EXPECT_EQ(run({"gc-blobs", "--grace=0s"}, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "removed 1 blobs")) << out;
  EXPECT_TRUE(absl::IsNotFound(storage->blobs->Size(*orphan).status()));
  EXPECT_TRUE(storage->blobs->Size(photo_sha).ok());  // referenced: never collected
  std::string got;
  ASSERT_TRUE(uploader.Download(photo, 0, 0, &got).ok());
  EXPECT_TRUE(got == photo);

  out.clear();
  EXPECT_EQ(run({"verify-blobs"}, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "verified 1 blobs")) << out;
  {
    auto conn = kcnet::pgstore::PgConn::Connect(pg_->conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status();
    auto flipped = (*conn)->Query(
        "UPDATE kcnet_attachments.chunks SET data = set_byte(data, 5000, "
        "get_byte(data, 5000) # 1) WHERE key = $1 AND n = 0",
        {kcnet::pgstore::PgParam::Text(photo_sha)});
    ASSERT_TRUE(flipped.ok()) << flipped.status();
    ASSERT_EQ(flipped->affected(), 1);
  }
  out.clear();
  EXPECT_NE(run({"verify-blobs"}, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "damaged " + photo_sha)) << out;
}

}  // namespace
}  // namespace kcnet::sdk::testing_stream
