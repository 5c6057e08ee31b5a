// KcnetServer as stock gRPC tools see it (health checking, server reflection), its limits
// and options, its log, and its shutdown.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/attachments.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::Message;
using google::protobuf::MessageFactory;
using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using ::testing::Contains;
using ::testing::HasSubstr;

constexpr const char* kKcnetServices[] = {
    "kcnet.v1.AuthService",     "kcnet.v1.OrgUnitService", "kcnet.v1.UserService",
    "kcnet.v1.FacilityService", "kcnet.v1.VisitService",   "kcnet.v1.SupportRequestService",
};

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

std::chrono::system_clock::time_point Deadline() {
  return absl::ToChronoTime(absl::Now() + absl::Seconds(20));
}

// A unary call by method name with raw request bytes (no generated stub needed).
grpc::Status RawUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                      const std::string& request, std::string* response) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  auto call = stub.PrepareUnaryCall(&context, method, ToBuffer(request), &cq);
  call->StartCall();
  grpc::ByteBuffer reply;
  grpc::Status status;
  call->Finish(&reply, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  if (response != nullptr) *response = FromBuffer(reply);
  return status;
}

// A client of the standard reflection service (grpc.reflection.v1alpha), using the
// message types that gRPC's reflection library registers, over a generic stream.
class ReflectionClient {
 public:
  explicit ReflectionClient(std::shared_ptr<grpc::Channel> channel) : channel_(std::move(channel)) {
    const DescriptorPool* pool = DescriptorPool::generated_pool();
    request_type_ = pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
    response_type_ =
        pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  }
  bool ready() const { return request_type_ != nullptr && response_type_ != nullptr; }

  // Sends one request with the string field `field` set to `value`; the response.
  std::unique_ptr<Message> Ask(const std::string& field, const std::string& value) {
    std::unique_ptr<Message> request(
        MessageFactory::generated_factory()->GetPrototype(request_type_)->New());
    request->GetReflection()->SetString(request.get(), request_type_->FindFieldByName(field),
                                        value);
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto call = stub.PrepareCall(
        &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    grpc::ByteBuffer reply;
    grpc::Status status;
    call->StartCall(Tag(1));
    Next(&cq);
    call->Write(ToBuffer(request->SerializeAsString()), Tag(2));
    Next(&cq);
    call->Read(&reply, Tag(3));
    Next(&cq);
    call->WritesDone(Tag(4));
    Next(&cq);
    call->Finish(&status, Tag(5));
    Next(&cq);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::unique_ptr<Message> response(
        MessageFactory::generated_factory()->GetPrototype(response_type_)->New());
    EXPECT_TRUE(response->ParseFromString(FromBuffer(reply)));
    return response;
  }

  // The names list_services returns.
  std::set<std::string> ListServices() {
    std::unique_ptr<Message> response = Ask("list_services", "*");
    std::set<std::string> names;
    const Message& list = SubMessage(*response, "list_services_response");
    const auto* service_field = list.GetDescriptor()->FindFieldByName("service");
    for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field); ++i) {
      const Message& service = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
      names.insert(service.GetReflection()->GetString(
          service, service.GetDescriptor()->FindFieldByName("name")));
    }
    return names;
  }

  // The files file_containing_symbol returns, parsed; empty on an error response.
  std::vector<google::protobuf::FileDescriptorProto> FilesContaining(const std::string& symbol) {
    std::unique_ptr<Message> response = Ask("file_containing_symbol", symbol);
    std::vector<google::protobuf::FileDescriptorProto> files;
    const Message& found = SubMessage(*response, "file_descriptor_response");
    const auto* files_field = found.GetDescriptor()->FindFieldByName("file_descriptor_proto");
    for (int i = 0; i < found.GetReflection()->FieldSize(found, files_field); ++i) {
      google::protobuf::FileDescriptorProto file;
      EXPECT_TRUE(
          file.ParseFromString(found.GetReflection()->GetRepeatedString(found, files_field, i)));
      files.push_back(file);
    }
    return files;
  }

 private:
  static void* Tag(intptr_t n) { return reinterpret_cast<void*>(n); }
  static void Next(grpc::CompletionQueue* cq) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq->Next(&tag, &ok));
    EXPECT_TRUE(ok);
  }
  static const Message& SubMessage(const Message& message, const std::string& field) {
    return message.GetReflection()->GetMessage(message,
                                               message.GetDescriptor()->FindFieldByName(field));
  }

  std::shared_ptr<grpc::Channel> channel_;
  const Descriptor* request_type_ = nullptr;
  const Descriptor* response_type_ = nullptr;
};

// Adds an org unit and a user with a known password; the user's name.
std::string AddOfficer(Directory& directory) {
  auto unit = directory.CreateOrgUnit("10", "Tỉnh Một", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
  EXPECT_TRUE(unit.ok()) << unit.status();
  auto user = directory.CreateUser("officer", "Officer", "officer-password",
                                   v1::ROLE_PROVINCE_OFFICER, {unit->id()});
  EXPECT_TRUE(user.ok()) << user.status();
  return "officer";
}

TEST(KcnetServerTest, ListensOnAPickedPort) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  EXPECT_GT(server.server().port(), 0);
  EXPECT_EQ(server.server().address(), absl::StrCat("127.0.0.1:", server.server().port()));
  EXPECT_TRUE(std::filesystem::exists(server.data_dir() + "/directory.db"));
  EXPECT_TRUE(std::filesystem::exists(server.data_dir() + "/kcnet.db"));
}

TEST(KcnetServerTest, HealthCheckIsServing) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  std::string reply;
  // grpc.health.v1.HealthCheckRequest{service: ""} is empty on the wire.
  const grpc::Status status =
      RawUnary(server.Channel(), "/grpc.health.v1.Health/Check", "", &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint.
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(reply.data()),
                                            static_cast<int>(reply.size()));
  EXPECT_EQ(in.ReadTag(), (1u << 3) | 0u);
  uint32_t serving = 0;
  EXPECT_TRUE(in.ReadVarint32(&serving));
  EXPECT_EQ(serving, 1u);
}

TEST(KcnetServerTest, ReflectionDescribesEveryKcnetService) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  ReflectionClient reflection(server.Channel());
  ASSERT_TRUE(reflection.ready()) << "gRPC's reflection messages are not linked in";
  const std::set<std::string> listed = reflection.ListServices();
  EXPECT_THAT(listed, Contains("grpc.health.v1.Health"));
  EXPECT_THAT(listed, Contains("grpc.reflection.v1alpha.ServerReflection"));
  for (const char* name :
       {"kcnet.v1.AuthService", "kcnet.v1.OrgUnitService", "kcnet.v1.UserService"}) {
    EXPECT_THAT(listed, Contains(name));
  }
  // The record services are listed exactly when the server answers them (they come from
  // MakeRecordServices): registered, a call without a token is UNAUTHENTICATED.
  const std::map<std::string, std::string> probe = {
      {"kcnet.v1.FacilityService", "GetFacility"},
      {"kcnet.v1.VisitService", "GetVisit"},
      {"kcnet.v1.SupportRequestService", "GetSupportRequest"},
      {"kcnet.v1.AuthService", "WhoAmI"},
  };
  for (const auto& [service, method] : probe) {
    const grpc::Status status =
        RawUnary(server.Channel(), absl::StrCat("/", service, "/", method), "", nullptr);
    const bool registered = status.error_code() != grpc::StatusCode::UNIMPLEMENTED;
    EXPECT_EQ(listed.count(service) == 1, registered) << service << ": " << status.error_message();
    if (registered) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << service;
    }
  }
  // Every kcnet service is described, with the file that defines it.
  for (const char* name : kKcnetServices) {
    const std::vector<google::protobuf::FileDescriptorProto> files =
        reflection.FilesContaining(name);
    ASSERT_FALSE(files.empty()) << name;
    bool defined = false;
    for (const auto& file : files) {
      for (const auto& service : file.service()) {
        if (absl::StrCat(file.package(), ".", service.name()) == name) defined = true;
      }
    }
    EXPECT_TRUE(defined) << name;
  }
}

// --reflection=false: the reflection service is gone, for this server only (another
// server in the same process keeps it).
TEST(KcnetServerTest, ReflectionCanBeTurnedOff) {
  TestServer without([](ServerOptions& options) { options.reflection = false; });
  ASSERT_TRUE(without.ok());
  TestServer with;
  ASSERT_TRUE(with.ok());
  const grpc::Status off =
      RawUnary(without.Channel(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
               "", nullptr);
  EXPECT_EQ(off.error_code(), grpc::StatusCode::UNIMPLEMENTED) << off.error_message();
  ReflectionClient reflection(with.Channel());
  ASSERT_TRUE(reflection.ready());
  EXPECT_THAT(reflection.ListServices(), Contains("kcnet.v1.AuthService"));
  // Health checking stays.
  EXPECT_TRUE(RawUnary(without.Channel(), "/grpc.health.v1.Health/Check", "", nullptr).ok());
}

// HealthCheckRequest{service: name}: field 1, length-delimited.
std::string HealthRequest(const std::string& service) {
  return absl::StrCat(std::string(1, '\x0a'), std::string(1, static_cast<char>(service.size())),
                      service);
}

// Off loopback, plaintext needs `insecure`; the server then warns in its log and answers
// the health check of the service "kcnet.insecure" with SERVING (NOT_FOUND otherwise).
TEST(KcnetServerTest, OffLoopbackPlaintextNeedsInsecure) {
  kcnet::testing::TempDir dir;
  for (const char* listen : {"0.0.0.0:0", "[::]:0", "192.0.2.7:0", "kcnet.example.vn:0"}) {
    ServerOptions options;
    options.listen = listen;
    options.data_dir = dir.File("refused");
    absl::StatusOr<std::unique_ptr<KcnetServer>> refused = KcnetServer::Start(options);
    ASSERT_FALSE(refused.ok()) << listen;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.status().message(), HasSubstr("is not a loopback address")) << listen;
  }
  for (const char* listen : {"127.0.0.1:0", "127.8.9.10:0", "localhost:0", "[::1]:0"}) {
    ServerOptions options;
    options.listen = listen;
    options.data_dir = dir.File("loopback");
    options.log_sink = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<KcnetServer>> server = KcnetServer::Start(options);
    // [::1] fails on a machine without IPv6; then it fails to listen, not to be allowed.
    if (!server.ok()) {
      EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable) << listen;
      continue;
    }
    const grpc::Status status =
        RawUnary(grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()),
                 "/grpc.health.v1.Health/Check", HealthRequest("kcnet.insecure"), nullptr);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << listen;
    EXPECT_FALSE((*server)->insecure());
  }
  TestServer insecure([](ServerOptions& options) {
    options.listen = "0.0.0.0:0";
    options.insecure = true;
  });
  ASSERT_TRUE(insecure.ok());
  EXPECT_TRUE(insecure.server().insecure());
  std::string reply;
  const grpc::Status status = RawUnary(insecure.Channel(), "/grpc.health.v1.Health/Check",
                                       HealthRequest("kcnet.insecure"), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply, std::string("\x08\x01", 2));  // status: SERVING
  bool warned = false;
  for (const std::string& line : insecure.LogLines()) {
    warned = warned || absl::StrContains(line, "--insecure: plaintext on 0.0.0.0:");
  }
  EXPECT_TRUE(warned);
}

TEST(KcnetServerTest, OversizedRequestsAreRefused) {
  TestServer server([](ServerOptions& options) { options.max_receive_bytes = 64 << 10; });
  ASSERT_TRUE(server.ok());
  auto stub = v1::AuthService::NewStub(server.Channel());
  v1::LoginRequest request;
  request.set_username("someone");
  request.set_password(std::string(100 << 10, 'x'));
  v1::LoginResponse response;
  grpc::ClientContext big;
  EXPECT_EQ(stub->Login(&big, request, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Below the limit the same call reaches the service (which refuses the long password).
  request.set_password(std::string(32 << 10, 'x'));
  grpc::ClientContext small;
  const grpc::Status status = stub->Login(&small, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("password: "));
}

// Streams are RPCs too: each writes its line when it ends, with its caller and status, as
// a unary call does (before, only unary calls and SyncService.Sync had a line).
TEST(KcnetServerTest, EveryStreamWritesItsLogLine) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  const std::string username = AddOfficer(server.directory());
  const std::string token = SignIn(server.Channel(), username, "officer-password");
  auto attachments = v1::AttachmentService::NewStub(server.Channel());
  {  // a download of bytes no record names
    grpc::ClientContext context;
    Authorize(&context, token);
    v1::DownloadRequest request;
    request.set_sha256(std::string(32, 'x'));
    auto reader = attachments->Download(&context, request);
    v1::DownloadChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {  // an upload stream with no token
    grpc::ClientContext context;
    auto stream = attachments->Upload(&context);
    stream->WritesDone();
    v1::UploadAck ack;
    while (stream->Read(&ack)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {  // a watch stream its client ends
    auto watch = v1::WatchService::NewStub(server.Channel());
    grpc::ClientContext context;
    Authorize(&context, token);
    auto reader = watch->WatchChanges(&context, {});
    v1::ChangeNotice notice;
    ASSERT_TRUE(reader->Read(&notice));
    context.TryCancel();
    while (reader->Read(&notice)) {
    }
    reader->Finish();
  }
  const std::vector<std::string> expected = {
      absl::StrCat("rpc method=/kcnet.v1.AttachmentService/Download caller=", username,
                   " status=NOT_FOUND"),
      "rpc method=/kcnet.v1.AttachmentService/Upload caller=- status=UNAUTHENTICATED",
      absl::StrCat("rpc method=/kcnet.v1.WatchService/WatchChanges caller=", username,
                   " status=CANCELLED")};
  // The server writes a stream's line when it is done with the call, which may be just
  // after the client has its status.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::vector<std::string> lines;
  auto all_found = [&] {
    lines = server.LogLines();
    for (const std::string& want : expected) {
      bool found = false;
      for (const std::string& line : lines) found = found || absl::StrContains(line, want);
      if (!found) return false;
    }
    return true;
  };
  while (!all_found() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  for (const std::string& want : expected) {
    EXPECT_THAT(lines, Contains(HasSubstr(want)));
  }
}

TEST(KcnetServerTest, JsonLogHasOneObjectPerRpc) {
  TestServer server([](ServerOptions& options) { options.log_format = "json"; });
  ASSERT_TRUE(server.ok());
  const std::string username = AddOfficer(server.directory());
  const std::string token = SignIn(server.Channel(), username, "officer-password");
  auto stub = v1::AuthService::NewStub(server.Channel());
  grpc::ClientContext context;
  Authorize(&context, token);
  v1::WhoAmIResponse who;
  ASSERT_TRUE(stub->WhoAmI(&context, {}, &who).ok());
  grpc::ClientContext no_token;
  ASSERT_FALSE(stub->WhoAmI(&no_token, {}, &who).ok());

  const std::vector<std::string> lines = server.LogLines();
  ASSERT_EQ(lines.size(), 3u);
  // Each line parsed as JSON into a message with the log's fields, built at run time (not
  // google.protobuf.Struct: its map breaks under ThreadSanitizer, whose build of this test
  // lays protobuf's MapFieldBase out differently from Debian's libprotobuf).
  google::protobuf::FileDescriptorProto file;
  file.set_name("log_line_test.proto");
  file.set_syntax("proto3");
  google::protobuf::DescriptorProto* type = file.add_message_type();
  type->set_name("LogLine");
  int number = 0;
  for (const char* name : {"ts", "event", "method", "caller", "status", "error"}) {
    auto* f = type->add_field();
    f->set_name(name);
    f->set_number(++number);
    f->set_type(google::protobuf::FieldDescriptorProto::TYPE_STRING);
    f->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  }
  auto* latency = type->add_field();
  latency->set_name("latency_ms");
  latency->set_number(++number);
  latency->set_type(google::protobuf::FieldDescriptorProto::TYPE_DOUBLE);
  latency->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
  DescriptorPool pool;
  ASSERT_NE(pool.BuildFile(file), nullptr);
  const Descriptor* log_line = pool.FindMessageTypeByName("LogLine");
  google::protobuf::DynamicMessageFactory factory(&pool);
  std::vector<std::unique_ptr<Message>> objects;
  for (const std::string& line : lines) {
    std::unique_ptr<Message> object(factory.GetPrototype(log_line)->New());
    // Unknown fields are an error: a line holds the log's fields and nothing else.
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, object.get()).ok()) << line;
    objects.push_back(std::move(object));
  }
  auto field = [&](const Message& o, const std::string& name) {
    return o.GetReflection()->GetString(o, log_line->FindFieldByName(name));
  };
  EXPECT_EQ(field(*objects[0], "method"), "/kcnet.v1.AuthService/Login");
  EXPECT_EQ(field(*objects[0], "caller"), "-");
  EXPECT_EQ(field(*objects[0], "status"), "OK");
  EXPECT_EQ(field(*objects[1], "method"), "/kcnet.v1.AuthService/WhoAmI");
  EXPECT_EQ(field(*objects[1], "caller"), "officer");
  EXPECT_EQ(field(*objects[2], "status"), "UNAUTHENTICATED");
  for (const auto& object : objects) {
    EXPECT_NE(field(*object, "ts"), "");
    EXPECT_EQ(field(*object, "event"), "rpc");
    const google::protobuf::FieldDescriptor* ms = log_line->FindFieldByName("latency_ms");
    EXPECT_GE(object->GetReflection()->GetDouble(*object, ms), 0);
  }
  for (const std::string& line : lines) {
    EXPECT_THAT(line, ::testing::Not(HasSubstr(token)));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("officer-password")));
  }
}

TEST(KcnetServerTest, ShutdownRefusesNewCallsAndCheckpointsTheLogs) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  const std::string username = AddOfficer(server.directory());
  auto channel = server.Channel();
  ASSERT_FALSE(SignIn(channel, username, "officer-password").empty());
  server.server().Shutdown(absl::Seconds(5));
  server.server().Shutdown(absl::Seconds(5));  // idempotent
  server.server().Wait();

  auto stub = v1::AuthService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  v1::LoginRequest request;
  v1::LoginResponse response;
  EXPECT_EQ(stub->Login(&context, request, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  for (const char* file : {"/directory.db-wal", "/kcnet.db-wal"}) {
    std::error_code error;
    const auto size = std::filesystem::file_size(server.data_dir() + file, error);
    EXPECT_TRUE(error || size == 0) << file << " still holds " << size << " bytes";
  }
  // The data is in the main files: a fresh directory finds the user.
  auto directory = Directory::Open(server.data_dir() + "/directory.db");
  ASSERT_TRUE(directory.ok()) << directory.status();
  EXPECT_TRUE((*directory)->FindUser("officer").ok());
}

TEST(KcnetServerTest, ServesTls) {
  kcnet::testing::TempDir dir;
  const std::string cert = dir.File("cert.pem");
  const std::string key = dir.File("key.pem");
  const std::string command = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost -keyout ",
      key, " -out ", cert, " >/dev/null 2>&1");
  if (std::system(command.c_str()) != 0) GTEST_SKIP() << "no openssl to make a certificate";
  TestServer server([&](ServerOptions& options) {
    options.listen = "localhost:0";
    options.tls_cert_file = cert;
    options.tls_key_file = key;
  });
  ASSERT_TRUE(server.ok());
  std::ifstream in(cert);
  std::stringstream pem;
  pem << in.rdbuf();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = pem.str();
  const std::string target = absl::StrCat("localhost:", server.server().port());
  auto secure = v1::AuthService::NewStub(grpc::CreateChannel(target, grpc::SslCredentials(ssl)));
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  v1::LoginRequest request;
  request.set_username("nobody");
  request.set_password("wrong-password");
  v1::LoginResponse response;
  // Reaching the service over TLS: the sign-in itself fails.
  EXPECT_EQ(secure->Login(&context, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A plaintext client cannot talk to it.
  auto plain =
      v1::AuthService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_context;
  plain_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  EXPECT_EQ(plain->Login(&plain_context, request, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(KcnetServerTest, StartRefusesBadOptions) {
  kcnet::testing::TempDir dir;
  auto start = [&](const std::function<void(ServerOptions&)>& change) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir.File("data");
    change(options);
    return KcnetServer::Start(options).status();
  };
  absl::Status status = start([](ServerOptions& o) { o.data_dir.clear(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("data_dir"));
  status = start([](ServerOptions& o) { o.log_format = "xml"; });
  EXPECT_THAT(std::string(status.message()), HasSubstr("log_format"));
  status = start([](ServerOptions& o) { o.storage_threads = 0; });
  EXPECT_THAT(std::string(status.message()), HasSubstr("storage_threads"));
  status = start([&](ServerOptions& o) { o.tls_cert_file = dir.File("cert.pem"); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tls_key_file"));
  status = start([&](ServerOptions& o) {
    o.tls_cert_file = dir.File("missing-cert.pem");
    o.tls_key_file = dir.File("missing-key.pem");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  status = start([](ServerOptions& o) {
    o.listen = "not an address";
    o.insecure = true;  // else refused before listening: it is not loopback
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);

  // A port already taken.
  TestServer first;
  ASSERT_TRUE(first.ok());
  status = start([&](ServerOptions& o) { o.listen = first.server().address(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

// --store: the records where it says, bad specs refused naming the option, and nothing
// created for a refused spec.
TEST(KcnetServerTest, StoreOptionPlacesTheRecordStore) {
  kcnet::testing::TempDir dir;
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.File("data");
  options.store = "sqlite:" + dir.File("records");
  {
    auto server = KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    (*server)->Shutdown(absl::Seconds(1));
  }
  EXPECT_TRUE(std::filesystem::exists(dir.File("records") + "/kcnet.db"));
  EXPECT_FALSE(std::filesystem::exists(dir.File("data") + "/kcnet.db"));
  EXPECT_TRUE(std::filesystem::exists(dir.File("data") + "/directory.db"));

  for (const char* bad : {"mysql:x", "sqlite:", "postgres:", "nonsense"}) {
    options.store = bad;
    options.data_dir = dir.File("never");
    absl::Status status = KcnetServer::Start(options).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("store")) << bad;
    EXPECT_FALSE(std::filesystem::exists(dir.File("never"))) << bad;
  }
}

}  // namespace
}  // namespace kcnet::server
