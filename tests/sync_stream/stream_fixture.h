// The sync stream tests' shared fixture: a real KcnetServer on port 0 with a small org
// tree (province 90: district 901 with communes 90101 and 90102, district 902 with commune
// 90201), accounts, tablets (a DeviceStore file and a SyncClient), and helpers that build
// records and compare a device with the server.
//
// SyncStreamStoreTest runs the same tests on both record stores (value-parameterized):
// SQLite in the data dir, and PostgreSQL (its own server for the test suite, started by the
// first test, a new database per test; the tests skip with a message when the PostgreSQL
// binaries are absent).
//
// Thread-safety: a test fixture; one test thread.
#ifndef KCNET_TESTS_SYNC_STREAM_STREAM_FIXTURE_H_
#define KCNET_TESTS_SYNC_STREAM_STREAM_FIXTURE_H_

#include "client_sdk/sync_client.h"

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/cursor.h"
#include "sync/device_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/page_codec.h"
#include "sync/schema.h"
#include "sync/sqlite.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::sdk::testing_stream {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

using model::kFacilityType;
using model::kRequestEventType;
using model::kSupportRequestType;

constexpr uint32_t kNameField = Facility::kNameFieldNumber;
constexpr uint32_t kStatusField = SupportRequest::kStatusFieldNumber;

// A fresh random UUID in canonical text form.
inline std::string NewUuid() {
  static absl::BitGen* gen = new absl::BitGen();
  static absl::Mutex mu;
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%08x-%04x-4%03x-8%03x-%012x", absl::Uniform<uint32_t>(*gen),
                         absl::Uniform<uint32_t>(*gen, 0, 0x10000),
                         absl::Uniform<uint32_t>(*gen, 0, 0x1000),
                         absl::Uniform<uint32_t>(*gen, 0, 0x1000),
                         absl::Uniform<uint64_t>(*gen, 0, uint64_t{1} << 48));
}

inline std::string Bytes(const std::string& uuid_text) { return *sync::UuidFromText(uuid_text); }

inline int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

inline RecordChange Created(const google::protobuf::Message& message) {
  absl::StatusOr<RecordChange> change = model::ToChange(message);
  EXPECT_TRUE(change.ok()) << change.status();
  return change.ok() ? *change : RecordChange();
}

inline RecordChange NewFacility(const std::string& id, int64_t commune, int64_t author,
                                const std::string& name) {
  Facility f;
  f.set_id(id);
  f.set_commune_id(commune);
  f.set_name(name);
  f.set_owner_name("Nguyễn Văn A");
  f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
  f.set_latitude(21.0);
  f.set_longitude(105.8);
  f.set_created_by(author);
  f.set_created_ms(NowMs());
  return Created(f);
}

// A change setting one field of an existing record.
inline RecordChange Edit(uint32_t type, const std::string& id, uint32_t field, Value value) {
  RecordChange c;
  c.set_type(type);
  c.set_id(Bytes(id));
  FieldChange* f = c.add_fields();
  f->set_field(field);
  *f->mutable_value() = std::move(value);
  return c;
}

inline Value Str(const std::string& s) {
  Value v;
  v.set_string_value(s);
  return v;
}
inline Value Int(int64_t i) {
  Value v;
  v.set_int_value(i);
  return v;
}

inline RecordChange NewEvent(int64_t commune, const std::string& request_id, int64_t actor,
                             RequestAction action, RequestStatus from, RequestStatus to) {
  RequestEvent e;
  e.set_id(NewUuid());
  e.set_commune_id(commune);
  e.set_request_id(request_id);
  e.set_actor_id(actor);
  e.set_action(action);
  e.set_from_status(from);
  e.set_to_status(to);
  e.set_note("ghi chú");
  e.set_at_ms(NowMs());
  return Created(e);
}

// The string value of field `number` in a full-state change.
inline std::string StringField(const std::optional<RecordChange>& c, uint32_t number) {
  if (!c.has_value()) return "<absent>";
  return kcnet::testing::FieldOf(*c, number).string_value();
}
inline int64_t IntField(const std::optional<RecordChange>& c, uint32_t number) {
  if (!c.has_value()) return -1;
  return kcnet::testing::FieldOf(*c, number).int_value();
}

struct Account {
  int64_t id = 0;
  std::string token;
};

// One tablet: its store file and its sync client.
struct Device {
  std::string name;
  std::unique_ptr<sync::DeviceStore> store;
  std::unique_ptr<SyncClient> client;

  uint64_t Write(std::vector<RecordChange> changes) {
    absl::StatusOr<uint64_t> seq = store->Write(std::move(changes));
    EXPECT_TRUE(seq.ok()) << name << ": " << seq.status();
    return seq.ok() ? *seq : 0;
  }
  std::optional<RecordChange> Read(uint32_t type, const std::string& id,
                                   bool confirmed_only = false) {
    absl::StatusOr<std::optional<RecordChange>> r = store->Read(type, Bytes(id), confirmed_only);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status();
    return r.ok() ? *r : std::nullopt;
  }
  std::set<int64_t> Buckets() {
    std::set<int64_t> out;
    absl::StatusOr<std::vector<BucketCursor>> cursors = store->Cursors();
    EXPECT_TRUE(cursors.ok()) << cursors.status();
    if (cursors.ok()) {
      for (const BucketCursor& c : *cursors) out.insert(c.bucket());
    }
    return out;
  }
  int64_t Pending() { return store->PendingCount().value_or(-1); }
  int64_t Unconfirmed() { return store->UnconfirmedCount().value_or(-1); }
  // SyncOnce, expected to succeed with a clean end of stream.
  SyncResult Sync() {
    absl::StatusOr<SyncResult> result = client->SyncOnce();
    EXPECT_TRUE(result.ok()) << name << ": " << result.status();
    if (!result.ok()) return client->last_result();
    EXPECT_TRUE(result->server_status.ok()) << name << ": " << result->server_status;
    return *result;
  }
};

class SyncStreamTest : public ::testing::Test {
 protected:
  // Where the server keeps its records: "" (SQLite in its data dir) or postgres:CONNINFO.
  virtual absl::StatusOr<std::string> StoreSpec() { return std::string(); }

  void SetUp() override {
    absl::StatusOr<std::string> store = StoreSpec();
    if (absl::IsNotFound(store.status())) GTEST_SKIP() << store.status();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *store;
    StartServer({});
    server::Directory* d = server_->directory();
    // Province 90: district 901 (communes 90101, 90102), district 902 (commune 90201).
    p_ = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t p = p_;
    d1_ = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    d2_ = d->CreateOrgUnit("902", "Huyện Hai", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    c1_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, d1_)->id();
    c2_ = d->CreateOrgUnit("90102", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, d1_)->id();
    c3_ = d->CreateOrgUnit("90201", "Xã Ba", ORG_UNIT_LEVEL_COMMUNE, d2_)->id();
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  // Starts the server on the fixture's data dir (again, after a Shutdown: the same data,
  // a new port) with these sync options, and points channel_ at it.
  void StartServer(server::SyncServiceOptions sync) {
    server::ServerOptions options =
        kcnet::testing::TestServerOptions(dir_.File("server"), "127.0.0.1:0");
    options.store = store_;
    options.sync = sync;
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
  }

  Account MakeUser(const std::string& name, Role role, int64_t unit) {
    server::Directory* d = server_->directory();
    absl::StatusOr<User> user = d->CreateUser(name, name, "password-123", role, {unit});
    EXPECT_TRUE(user.ok()) << user.status();
    absl::StatusOr<server::LoginResult> login = d->Login(name, "password-123");
    EXPECT_TRUE(login.ok()) << login.status();
    if (!user.ok() || !login.ok()) return {};
    return {user->id(), login->token};
  }

  std::unique_ptr<Device> NewDevice(const std::string& name, const std::string& token,
                                    sync::Clock* clock = sync::SystemClock(),
                                    SyncClientOptions options = {}) {
    auto device = std::make_unique<Device>();
    device->name = name;
    absl::StatusOr<std::unique_ptr<sync::DeviceStore>> store =
        sync::DeviceStore::Open(dir_.File(name + ".db"), &model::KcnetSchema(), name,
                                sync::DeviceStoreOptions{.clock = clock, .durable = false});
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    device->store = *std::move(store);
    options.token = token;
    device->client = std::make_unique<SyncClient>(channel_, device->store.get(), options);
    return device;
  }

  // `count` facilities in commune c1_, written and synced by a device of `author`.
  void SyncFacilities(const Account& author, int count) {
    auto writer = NewDevice("tablet-w", author.token);
    ASSERT_TRUE(writer);
    for (int i = 0; i < count; ++i) {
      writer->Write({NewFacility(NewUuid(), c1_, author.id, absl::StrCat("Cơ sở ", i))});
    }
    writer->Sync();
  }

  std::optional<RecordChange> ServerRead(uint32_t type, const std::string& id) {
    absl::StatusOr<std::optional<RecordChange>> r = server_->store()->ReadRecord(type, Bytes(id));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }

  // The device holds exactly the server's version of the record, confirmed and with its
  // (empty) overlay.
  void ExpectSameAsServer(Device& device, uint32_t type, const std::string& id) {
    SCOPED_TRACE(absl::StrCat(device.name, " record ", id));
    const std::optional<RecordChange> server = ServerRead(type, id);
    ASSERT_TRUE(server.has_value());
    const std::optional<RecordChange> confirmed = device.Read(type, id, true);
    ASSERT_TRUE(confirmed.has_value());
    EXPECT_EQ(confirmed->DebugString(), server->DebugString());
    const std::optional<RecordChange> shown = device.Read(type, id);
    ASSERT_TRUE(shown.has_value());
    EXPECT_EQ(shown->DebugString(), server->DebugString());
  }

  // The device's bucket has the server's checksum and record count, by the running sum
  // and recomputed from its rows.
  void ExpectSameBucket(Device& device, int64_t bucket) {
    SCOPED_TRACE(absl::StrCat(device.name, " bucket ", bucket));
    absl::StatusOr<BucketCheckpoint> server = server_->store()->Checkpoint(bucket);
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<BucketCheckpoint> running = device.store->Checkpoint(bucket);
    ASSERT_TRUE(running.ok()) << running.status();
    absl::StatusOr<BucketCheckpoint> recomputed = device.store->RecomputeCheckpoint(bucket);
    ASSERT_TRUE(recomputed.ok()) << recomputed.status();
    EXPECT_EQ(running->checksum(), server->checksum());
    EXPECT_EQ(running->records(), server->records());
    EXPECT_EQ(recomputed->checksum(), server->checksum());
    EXPECT_EQ(recomputed->records(), server->records());
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return ctx;
  }

  // Opens a raw stream, sends `hello`, reads until the end, returns the final status.
  grpc::Status RawHello(const std::string& token, const Hello& hello) {
    auto stub = SyncService::NewStub(channel_);
    auto ctx = As(token);
    auto stream = stub->Sync(ctx.get());
    SyncClientMessage m;
    *m.mutable_hello() = hello;
    stream->Write(m);
    SyncServerMessage in;
    while (stream->Read(&in)) {
    }
    return stream->Finish();
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  int64_t p_ = 0, d1_ = 0, d2_ = 0, c1_ = 0, c2_ = 0, c3_ = 0;
  std::string store_;
};

enum class StoreKind { kSqlite, kPostgres };

class SyncStreamStoreTest : public SyncStreamTest, public ::testing::WithParamInterface<StoreKind> {
 protected:
  static void TearDownTestSuite() { pg_.reset(); }

  absl::StatusOr<std::string> StoreSpec() override {
    if (GetParam() == StoreKind::kSqlite) return std::string();
    if (pg_ == nullptr) {
      absl::StatusOr<std::unique_ptr<kcnet::testing::PgInstance>> pg =
          kcnet::testing::PgInstance::Start();
      if (!pg.ok()) return pg.status();
      pg_ = *std::move(pg);
    }
    static int databases = 0;
    const std::string name = absl::StrCat("test", ++databases);
    absl::Status status = pg_->CreateDatabase(name);
    if (!status.ok()) return status;
    return "postgres:" + pg_->conninfo(name);
  }

  static inline std::unique_ptr<kcnet::testing::PgInstance> pg_;
};

inline std::string StoreKindName(const ::testing::TestParamInfo<StoreKind>& info) {
  return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

}  // namespace kcnet::sdk::testing_stream

#endif  // KCNET_TESTS_SYNC_STREAM_STREAM_FIXTURE_H_
