#include "server/http/connect_bridge.h"

#include <sys/socket.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/type_resolver_util.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "httplib.h"
#include "kcnet/v1/reports.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/rpc/logger.h"
#include "server/rpc/storage_rpc_runner.h"

namespace kcnet::server {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::Message;
using google::protobuf::MessageFactory;
using google::protobuf::MethodDescriptor;

constexpr char kTokenCookie[] = "kcnet_token";
constexpr char kUnaryType[] = "application/json";
constexpr char kStreamType[] = "application/connect+json";
// Connect's end-of-stream envelope flag.
constexpr uint8_t kEndStreamFlag = 0x02;

// Sent with every answer, files and calls alike: scripts and styles only from this origin
// (no inline script), no framing, no MIME sniffing, no referrer leaving the console.
// A build-named asset (console/scripts/build.mjs): "/assets/NAME-HASH.EXT", its content
// never changes under that name, so browsers may keep it for good.
bool IsHashedAsset(absl::string_view path) {
  if (!absl::ConsumePrefix(&path, "/assets/")) return false;
  const size_t dash = path.rfind('-');
  if (dash == absl::string_view::npos) return false;
  const absl::string_view hash = path.substr(dash + 1, path.find('.', dash) - dash - 1);
  return hash.size() >= 8 &&
         std::all_of(hash.begin(), hash.end(), [](char c) { return absl::ascii_isalnum(c); });
}

// What a static file's answer adds (httplib has read the file, from a path it checked):
// caching (hashed assets immutable, everything else revalidated, index.html first) and,
// for a client that accepts gzip, the build's gzipped copy (NAME.gz) in place of the file.
void ServeStaticFile(const std::string& console_dir, const httplib::Request& request,
                     httplib::Response& response) {
  response.set_header("Cache-Control", IsHashedAsset(request.path)
                                           ? "public, max-age=31536000, immutable"
                                           : "no-cache");
  if (!absl::StartsWith(request.path, "/assets/")) return;
  response.set_header("Vary", "Accept-Encoding");
  if (!absl::StrContains(request.get_header_value("Accept-Encoding"), "gzip")) return;
  std::ifstream file(absl::StrCat(console_dir, request.path, ".gz"), std::ios::binary);
  if (!file) return;
  auto gz = std::make_shared<std::string>(std::istreambuf_iterator<char>(file),
                                          std::istreambuf_iterator<char>());
  const std::string type = response.get_header_value("Content-Type");
  response.body.clear();
  response.headers.erase("Content-Type");  // set again by set_content_provider
  response.set_header("Content-Encoding", "gzip");
  // A provider of known length: httplib sends it as it is (it compresses bodies only).
  response.set_content_provider(gz->size(), type,
                                [gz](size_t offset, size_t length, httplib::DataSink& sink) {
                                  return sink.write(gz->data() + offset, length);
                                });
}

// A unary answer's JSON, gzipped by the bridge itself when the client accepts gzip. Left to
// httplib, an answer to a client that also accepts "br" (every browser does) is compressed
// with brotli at its default quality 11: about 1 MB/s, and 20-180 ms even for 1-24 KB, so
// a 20,000-point map page (3.4 MB of JSON) took 9-28 s to answer against 0.6 s gzipped
// (docs/BENCHMARKS.md, map16). zlib's fastest level costs about 10 ms per MB.
bool Gzip(const std::string& in, std::string* out) {
  z_stream z{};
  // 15 + 16: a gzip header and trailer, not zlib's.
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return false;
  }
  out->resize(deflateBound(&z, in.size()) + 32);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out->data());
  z.avail_out = static_cast<uInt>(out->size());
  const int result = deflate(&z, Z_FINISH);
  out->resize(z.total_out);
  deflateEnd(&z);
  return result == Z_STREAM_END;
}

void SetJsonAnswer(const httplib::Request& request, std::string json, const char* type,
                   httplib::Response& response) {
  if (absl::StrContains(request.get_header_value("Accept-Encoding"), "gzip")) {
    auto gz = std::make_shared<std::string>();
    if (Gzip(json, gz.get())) {
      response.set_header("Content-Encoding", "gzip");
      response.set_header("Vary", "Accept-Encoding");
      // A provider of known length: httplib sends it as it is (it compresses bodies only).
      response.set_content_provider(gz->size(), type,
                                    [gz](size_t offset, size_t length, httplib::DataSink& sink) {
                                      return sink.write(gz->data() + offset, length);
                                    });
      return;
    }
  }
  response.body = std::move(json);  // set_content() would copy it
  response.set_header("Content-Type", type);
}

constexpr char kContentSecurityPolicy[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

// ---------------------------------------------------------------------------------------
// Connect errors
// ---------------------------------------------------------------------------------------

struct ConnectCode {
  const char* name;
  int http_status;
};

// gRPC's codes as Connect names them, with Connect's HTTP status for each.
ConnectCode ToConnect(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
      return {"canceled", 499};
    case grpc::StatusCode::UNKNOWN:
      return {"unknown", 500};
    case grpc::StatusCode::INVALID_ARGUMENT:
      return {"invalid_argument", 400};
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return {"deadline_exceeded", 504};
    case grpc::StatusCode::NOT_FOUND:
      return {"not_found", 404};
    case grpc::StatusCode::ALREADY_EXISTS:
      return {"already_exists", 409};
    case grpc::StatusCode::PERMISSION_DENIED:
      return {"permission_denied", 403};
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return {"resource_exhausted", 429};
    case grpc::StatusCode::FAILED_PRECONDITION:
      return {"failed_precondition", 400};
    case grpc::StatusCode::ABORTED:
      return {"aborted", 409};
    case grpc::StatusCode::OUT_OF_RANGE:
      return {"out_of_range", 400};
    case grpc::StatusCode::UNIMPLEMENTED:
      return {"unimplemented", 501};
    case grpc::StatusCode::INTERNAL:
      return {"internal", 500};
    case grpc::StatusCode::UNAVAILABLE:
      return {"unavailable", 503};
    case grpc::StatusCode::DATA_LOSS:
      return {"data_loss", 500};
    case grpc::StatusCode::UNAUTHENTICATED:
      return {"unauthenticated", 401};
    default:
      return {"unknown", 500};
  }
}

// A JSON string literal (the logger's escaping, server/rpc/logger.h).
std::string JsonString(absl::string_view text) {
  return absl::StrCat("\"", JsonEscape(text), "\"");
}

// Connect's error object: {"code":"...","message":"...","details":[{"type","value","debug"}]}.
// The details are those of the gRPC status (google.rpc.Status in the trailers), each as
// its type name, its bytes in unpadded base64, and its JSON as "debug" for people.
std::string ErrorJson(const grpc::Status& status) {
  std::string json = absl::StrCat("{\"code\":", JsonString(ToConnect(status.error_code()).name),
                                  ",\"message\":", JsonString(status.error_message()));
  google::rpc::Status rich;
  if (!status.error_details().empty() && rich.ParseFromString(status.error_details()) &&
      rich.details_size() > 0) {
    json += ",\"details\":[";
    for (int i = 0; i < rich.details_size(); ++i) {
      const google::protobuf::Any& any = rich.details(i);
      const std::string type = any.type_url().substr(any.type_url().rfind('/') + 1);
      std::string value = absl::Base64Escape(any.value());
      while (!value.empty() && value.back() == '=') value.pop_back();
      absl::StrAppend(&json, i > 0 ? "," : "", "{\"type\":", JsonString(type),
                      ",\"value\":", JsonString(value));
      const auto* descriptor = DescriptorPool::generated_pool()->FindMessageTypeByName(type);
      if (descriptor != nullptr) {
        std::unique_ptr<Message> message(
            MessageFactory::generated_factory()->GetPrototype(descriptor)->New());
        std::string debug;
        if (message->ParseFromString(any.value()) &&
            google::protobuf::util::MessageToJsonString(*message, &debug).ok()) {
          absl::StrAppend(&json, ",\"debug\":", debug);
        }
      }
      json += "}";
    }
    json += "]";
  }
  return json + "}";
}

grpc::Status Error(grpc::StatusCode code, std::string message) {
  return grpc::Status(code, std::move(message));
}

// A Connect envelope: flags, big-endian length, payload.
std::string Envelope(uint8_t flags, absl::string_view payload) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flags);
  const uint32_t size = static_cast<uint32_t>(payload.size());
  out[1] = static_cast<char>((size >> 24) & 0xff);
  out[2] = static_cast<char>((size >> 16) & 0xff);
  out[3] = static_cast<char>((size >> 8) & 0xff);
  out[4] = static_cast<char>(size & 0xff);
  out.append(payload.data(), payload.size());
  return out;
}

std::string EndStream(const grpc::Status& status) {
  return Envelope(kEndStreamFlag,
                  status.ok() ? "{}" : absl::StrCat("{\"error\":", ErrorJson(status), "}"));
}

void ReplyUnaryError(httplib::Response& response, const grpc::Status& status) {
  response.status = ToConnect(status.error_code()).http_status;
  response.set_content(ErrorJson(status), kUnaryType);
}

// A stream's error comes in its end-of-stream envelope, under HTTP 200 (Connect).
void ReplyStreamError(httplib::Response& response, const grpc::Status& status) {
  response.status = 200;
  response.set_content(EndStream(status), kStreamType);
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

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

// The media type of a Content-Type header, lower case, without its parameters.
std::string MediaType(const httplib::Request& request) {
  const std::string value = request.get_header_value("Content-Type");
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(value.substr(0, value.find(';'))));
}

// The token cookie's value; empty without one.
std::string CookieToken(const httplib::Request& request) {
  for (size_t i = 0; i < request.get_header_value_count("Cookie"); ++i) {
    for (absl::string_view pair :
         absl::StrSplit(request.get_header_value("Cookie", i), ';', absl::SkipWhitespace())) {
      pair = absl::StripAsciiWhitespace(pair);
      if (absl::ConsumePrefix(&pair, absl::StrCat(kTokenCookie, "="))) return std::string(pair);
    }
  }
  return "";
}

// Where the bearer token came from.
struct Credentials {
  std::string authorization;  // the "authorization" metadata to send; empty: none
  bool from_cookie = false;
};

Credentials CredentialsOf(const httplib::Request& request) {
  Credentials credentials;
  if (request.has_header("Authorization")) {
    credentials.authorization = request.get_header_value("Authorization");
  } else if (std::string token = CookieToken(request); !token.empty()) {
    credentials.authorization = absl::StrCat("Bearer ", token);
    credentials.from_cookie = true;
  }
  return credentials;
}

// The CSRF defence for a request a browser may have been tricked into sending: the Connect
// header (which a cross-site form cannot send, and which a cross-site script cannot send
// without a CORS preflight this server never grants) and, when the browser names the
// origin, this very origin (its host:port equal to Host; the scheme is not compared so
// that a TLS proxy in front still matches).
grpc::Status CheckSameOrigin(const httplib::Request& request) {
  if (request.get_header_value("Connect-Protocol-Version") != "1") {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 "csrf: yêu cầu thiếu tiêu đề Connect-Protocol-Version: 1 / the request lacks "
                 "the header Connect-Protocol-Version: 1 (needed with the sign-in cookie)");
  }
  if (request.has_header("Origin")) {
    const std::string origin_header = request.get_header_value("Origin");
    absl::string_view origin = origin_header;
    const bool has_scheme =
        absl::ConsumePrefix(&origin, "https://") || absl::ConsumePrefix(&origin, "http://");
    if (!has_scheme || origin != request.get_header_value("Host")) {
      return Error(grpc::StatusCode::PERMISSION_DENIED,
                   absl::StrCat("csrf: yêu cầu từ nguồn khác / a request from another origin (",
                                request.get_header_value("Origin"), ", this server is ",
                                request.get_header_value("Host"), ") is refused"));
    }
  }
  const std::string site = request.get_header_value("Sec-Fetch-Site");
  if (site == "cross-site" || site == "same-site") {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 "csrf: yêu cầu từ trang khác / a cross-site request is refused");
  }
  return grpc::Status::OK;
}

// Names the browser's address to the services (their sign-in limits count per address);
// behind a trusted proxy, the address the proxy says it forwards for.
void AddForwardedPeer(const httplib::Request& request,
                      const std::vector<std::string>& trusted_proxies,
                      grpc::ClientContext* context) {
  const std::string address = ForwardedClientAddress(
      request.remote_addr, request.get_header_value("X-Forwarded-For"), trusted_proxies);
  if (address.empty()) return;
  context->AddMetadata(kForwardedPeerMetadata, absl::StrContains(address, ':')
                                                   ? absl::StrCat("ipv6:[", address, "]")
                                                   : absl::StrCat("ipv4:", address));
}

// The deadline from Connect-Timeout-Ms, else `fallback` from now (InfiniteDuration: none).
grpc::Status SetDeadline(const httplib::Request& request, absl::Duration fallback,
                         grpc::ClientContext* context) {
  absl::Duration timeout = fallback;
  if (request.has_header("Connect-Timeout-Ms")) {
    int64_t ms = 0;
    if (!absl::SimpleAtoi(request.get_header_value("Connect-Timeout-Ms"), &ms) || ms <= 0) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   "Connect-Timeout-Ms: must be a positive number of milliseconds");
    }
    timeout = absl::Milliseconds(ms);
  }
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  return grpc::Status::OK;
}

// Converts between JSON and protobuf bytes with no message in between, for the generated
// descriptor pool (built once; thread-safe).
google::protobuf::util::TypeResolver* Resolver() {
  static google::protobuf::util::TypeResolver* const resolver =
      google::protobuf::util::NewTypeResolverForDescriptorPool("type.googleapis.com",
                                                               DescriptorPool::generated_pool());
  return resolver;
}

std::string TypeUrl(const google::protobuf::Descriptor* type) {
  return absl::StrCat("type.googleapis.com/", type->full_name());
}

// JSON (protobuf's mapping) to the request message's bytes; INVALID_ARGUMENT naming the
// message and protobuf's reason (the field or the position).
grpc::Status JsonToBytes(const google::protobuf::Descriptor* type, absl::string_view json,
                         std::string* bytes) {
  const absl::string_view text = json.empty() ? absl::string_view("{}") : json;
  const auto parsed = google::protobuf::util::JsonToBinaryString(
      Resolver(), TypeUrl(type), google::protobuf::StringPiece(text.data(), text.size()), bytes);
  if (!parsed.ok()) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 absl::StrCat("request body: không đọc được JSON / not valid JSON for ",
                              type->full_name(), ": ", parsed.message().as_string()));
  }
  return grpc::Status::OK;
}

grpc::Status BytesToJson(const google::protobuf::Descriptor* type, const std::string& bytes,
                         std::string* json) {
  google::protobuf::util::JsonPrintOptions print;
  print.always_print_primitive_fields = false;
  const auto printed =
      google::protobuf::util::BinaryToJsonString(Resolver(), TypeUrl(type), bytes, json, print);
  if (!printed.ok()) {
    return Error(grpc::StatusCode::INTERNAL, printed.message().as_string());
  }
  return grpc::Status::OK;
}

// One unary call through the in-process channel.
grpc::Status CallUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                       const std::string& request, grpc::ClientContext* context,
                       std::string* reply) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(context, method, ToBuffer(request), &cq);
  call->StartCall();
  grpc::ByteBuffer buffer;
  grpc::Status status;
  call->Finish(&buffer, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (status.ok()) *reply = FromBuffer(buffer);
  return status;
}

// RFC 5987's percent-encoding of a file name (UTF-8 bytes; letters, digits and .-_~ kept).
std::string PercentEncode(absl::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

// "HOST:PORT" (HOST may be [v6]) into its parts.
bool SplitHostPort(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  *host = listen.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::SimpleAtoi(listen.substr(colon + 1), port) && *port >= 0 && *port <= 65535;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// A server stream, driven by httplib's chunked content provider: one message per call.
// ---------------------------------------------------------------------------------------

class StreamCall {
 public:
  StreamCall(ConnectBridge* bridge, const MethodDescriptor* method, int64_t user_id)
      : bridge_(bridge), method_(method), user_id_(user_id) {}

  grpc::ClientContext* context() { return &context_; }

  // Starts the call and sends the one request message. False (with `status_`) when the
  // call could not start.
  bool Start(const std::string& request) {
    grpc::GenericStub stub(bridge_->channel_);
    call_ = stub.PrepareCall(
        &context_, absl::StrCat("/", method_->service()->full_name(), "/", method_->name()), &cq_);
    call_->StartCall(Tag());
    if (!Next()) return Finish();
    call_->Write(ToBuffer(request), Tag());
    if (!Next()) return Finish();
    call_->WritesDone(Tag());
    if (!Next()) return Finish();
    return true;
  }

  // The next message's bytes; false at the end of the stream (then status()).
  bool Read(std::string* bytes) {
    if (finished_) return false;
    grpc::ByteBuffer buffer;
    call_->Read(&buffer, Tag());
    if (Next()) {
      *bytes = FromBuffer(buffer);
      return true;
    }
    return Finish();
  }

  // Writes the next envelope to `sink`; ends with the end-of-stream envelope.
  bool Provide(httplib::DataSink& sink) {
    if (finished_) {
      sink.done();
      return true;
    }
    if (!read_pending_) {
      call_->Read(&buffer_, Tag());
      read_pending_ = true;
    }
    const absl::Duration heartbeat = bridge_->options_.stream_heartbeat;
    const absl::Duration check = bridge_->options_.stream_liveness_check;
    if ((heartbeat > absl::ZeroDuration() || check > absl::ZeroDuration()) &&
        method_->output_type() == v1::ChangeNotice::descriptor()) {
      // A watch stream may stay quiet for hours, and httplib only learns that the tab is
      // gone when a write fails. So while it waits for the next notice it looks at the
      // socket every `check` (DataSink::is_writable: httplib's is_socket_alive, a peek
      // that sees the peer's FIN), and a stream quiet for `heartbeat` writes a heartbeat
      // (the read stays pending; httplib calls back at once). A closed tab's stream is so
      // freed within `check`, not at its next heartbeat.
      const absl::Time beat_at =
          heartbeat > absl::ZeroDuration() ? absl::Now() + heartbeat : absl::InfiniteFuture();
      while (true) {
        const absl::Time wake =
            check > absl::ZeroDuration() ? std::min(beat_at, absl::Now() + check) : beat_at;
        void* tag = nullptr;
        bool ok = false;
        const grpc::CompletionQueue::NextStatus next =
            cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(wake));
        if (next != grpc::CompletionQueue::TIMEOUT) {
          read_pending_ = false;
          return Deliver(next == grpc::CompletionQueue::GOT_EVENT && ok, sink);
        }
        if (absl::Now() >= beat_at) {
          const std::string beat = Envelope(0, R"({"heartbeat":true})");
          return sink.write(beat.data(), beat.size());
        }
        // The browser went away: false ends the response, and Release() cancels the call.
        if (sink.is_writable && !sink.is_writable()) return false;
      }
    }
    read_pending_ = false;
    return Deliver(Next(), sink);
  }

  // Called once httplib is done with the response (also when the browser went away).
  void Release() {
    if (!finished_) {
      context_.TryCancel();
      if (read_pending_) Next();  // the cancelled read's completion, before Finish's
      read_pending_ = false;
      Finish();
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
    bridge_->ReleaseStream(user_id_);
    absl::MutexLock lock(&bridge_->mu_);
    auto& contexts = bridge_->stream_contexts_;
    contexts.erase(std::remove(contexts.begin(), contexts.end(), &context_), contexts.end());
  }

  const grpc::Status& status() const { return status_; }
  bool finished() const { return finished_; }

 private:
  // Writes the message just read (`read`: one was), else the end of the stream.
  bool Deliver(bool read, httplib::DataSink& sink) {
    if (read) {
      std::string json;
      const grpc::Status converted =
          BytesToJson(method_->output_type(), FromBuffer(buffer_), &json);
      if (!converted.ok()) {
        context_.TryCancel();
        Finish();
        const std::string end = EndStream(converted);
        sink.write(end.data(), end.size());
        sink.done();
        return true;
      }
      const std::string envelope = Envelope(0, json);
      return sink.write(envelope.data(), envelope.size());
    }
    Finish();
    const std::string end = EndStream(status_);
    sink.write(end.data(), end.size());
    sink.done();
    return true;
  }
  static void* Tag() { return reinterpret_cast<void*>(1); }
  bool Next() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }
  bool Finish() {
    if (finished_) return false;
    finished_ = true;
    call_->Finish(&status_, Tag());
    void* tag = nullptr;
    bool ok = false;
    cq_.Next(&tag, &ok);
    return false;
  }

  ConnectBridge* const bridge_;
  const MethodDescriptor* const method_;
  const int64_t user_id_;
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::Status status_;
  bool finished_ = false;
  grpc::ByteBuffer buffer_;    // the message a pending read fills
  bool read_pending_ = false;  // a Read() was started and its completion not yet taken
};

// ---------------------------------------------------------------------------------------
// ConnectBridge
// ---------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ConnectBridge>> ConnectBridge::Start(
    const ConnectBridgeOptions& options, std::shared_ptr<grpc::Channel> channel) {
  if (options.logger == nullptr) return absl::InvalidArgumentError("logger: required");
  if (channel == nullptr) return absl::InvalidArgumentError("channel: required");
  std::string host;
  int port = 0;
  if (!SplitHostPort(options.listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: '", options.listen, "' is not HOST:PORT"));
  }
  if (options.max_streams < 1 || options.max_streams_per_user < 1 || options.unary_threads < 1) {
    return absl::InvalidArgumentError(
        "http stream caps: max_streams, max_streams_per_user and unary_threads must be >= 1");
  }
  const bool has_cert = !options.tls_cert_file.empty();
  if (has_cert != !options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls: the HTTP bridge needs both a certificate and a key");
  }
  if (!options.console_dir.empty() && !std::filesystem::is_directory(options.console_dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("console_dir: ", options.console_dir, " is not a directory"));
  }

  std::unique_ptr<ConnectBridge> bridge(new ConnectBridge());
  bridge->options_ = options;
  bridge->channel_ = std::move(channel);
  bridge->tls_ = has_cert;
  if (has_cert) {
    for (const std::string* file : {&options.tls_cert_file, &options.tls_key_file}) {
      if (!std::ifstream(*file))
        return absl::NotFoundError(absl::StrCat("tls: cannot read ", *file));
    }
    auto https = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(),
                                                      options.tls_key_file.c_str());
    if (!https->is_valid()) {
      return absl::InvalidArgumentError("tls: the certificate or key does not load");
    }
    bridge->http_ = std::move(https);
  } else {
    bridge->http_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& http = *bridge->http_;
  // More threads than streams may be open: a stream holds its thread until it ends.
  const size_t threads = static_cast<size_t>(options.max_streams + options.unary_threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options.max_body_bytes);
  // SO_REUSEADDR but not SO_REUSEPORT: a second server on the port fails instead of
  // silently sharing its connections. TCP_NODELAY: an answer's headers and body go
  // out at once, not 40 ms apart (Nagle and delayed ACKs).
  http.set_socket_options([](int socket) {
    int yes = 1;
    setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.set_tcp_nodelay(true);
  // httplib closes a keep-alive connection after 5 requests by default, so a busy page
  // paid a new TCP connection every 5 calls. An idle connection still holds a pool thread
  // only for the keep-alive timeout (5 s), so more requests per connection cost no threads.
  http.set_keep_alive_max_count(100);
  if (options.on_request) {
    http.set_logger([on_request = options.on_request](const httplib::Request& request,
                                                      const httplib::Response& response) {
      on_request(request.method, request.path, response.status);
    });
  }
  http.set_post_routing_handler([](const httplib::Request& request, httplib::Response& response) {
    response.set_header("Content-Security-Policy", kContentSecurityPolicy);
    response.set_header("X-Content-Type-Options", "nosniff");
    response.set_header("Referrer-Policy", "no-referrer");
    response.set_header("X-Frame-Options", "DENY");
    if (request.method == "POST") {
      response.set_header("Cache-Control", "no-store");
      // nginx in front must pass streamed messages on as they come.
      response.set_header("X-Accel-Buffering", "no");
    }
  });
  // httplib's own refusals (a body over the cap, a bad request line) in Connect's shape.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& request, httplib::Response& response) {
        if (!response.body.empty() || response.has_header("Content-Type")) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        grpc::StatusCode code = grpc::StatusCode::NOT_FOUND;
        std::string message = "không tìm thấy / not found";
        if (response.status == 413) {
          code = grpc::StatusCode::RESOURCE_EXHAUSTED;
          message = "request body: quá lớn / too large";
        } else if (response.status != 404) {
          code = grpc::StatusCode::INVALID_ARGUMENT;
          message = absl::StrCat("HTTP ", response.status);
        }
        response.set_content(ErrorJson(grpc::Status(code, message)), kUnaryType);
        return httplib::Server::HandlerResponse::Handled;
      }));

  ConnectBridge* self = bridge.get();
  http.Post("/auth/sign-in", [self](const httplib::Request& request, httplib::Response& response) {
    self->HandleSignIn(request, response);
  });
  http.Post("/auth/sign-out", [self](const httplib::Request& request, httplib::Response& response) {
    self->HandleSignOut(request, response);
  });
  http.Post(R"(/download/([A-Za-z0-9_.]+)/([A-Za-z0-9_]+))",
            [self](const httplib::Request& request, httplib::Response& response) {
              self->HandleDownload(request, response);
            });
  http.Post(R"(/([A-Za-z0-9_.]+)/([A-Za-z0-9_]+))",
            [self](const httplib::Request& request, httplib::Response& response) {
              self->HandleRpc(request, response);
            });
  if (!options.console_dir.empty()) {
    http.set_file_extension_and_mimetype_mapping("js", "text/javascript");
    http.set_file_extension_and_mimetype_mapping("mjs", "text/javascript");
    http.set_file_extension_and_mimetype_mapping("map", "application/json");
    http.set_file_extension_and_mimetype_mapping("webmanifest", "application/manifest+json");
    http.set_file_extension_and_mimetype_mapping("woff2", "font/woff2");
    http.set_file_extension_and_mimetype_mapping("geojson", "application/geo+json");
    if (!http.set_mount_point("/", options.console_dir)) {
      return absl::InvalidArgumentError(
          absl::StrCat("console_dir: cannot serve ", options.console_dir));
    }
    http.set_file_request_handler(
        [console_dir = options.console_dir](const httplib::Request& request,
                                            httplib::Response& response) {
          ServeStaticFile(console_dir, request, response);
        });
  }

  if (port == 0) {
    bridge->port_ = http.bind_to_any_port(host);
  } else if (http.bind_to_port(host, port)) {
    bridge->port_ = port;
  }
  if (bridge->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("http_listen: cannot listen on '", options.listen, "' (address in use?)"));
  }
  auto listener_done = std::make_shared<std::atomic<bool>>(false);
  bridge->listener_ = std::thread([self, listener_done] {
    self->http_->listen_after_bind();
    listener_done->store(true);
  });
  // httplib's stop() does nothing to a server that is not running yet (its listener would
  // then never end): return only once it runs.
  while (!http.is_running() && !listener_done->load()) absl::SleepFor(absl::Milliseconds(1));
  options.logger->Info(absl::StrCat("console bridge on ", self->tls_ ? "https" : "http", "://",
                                    host, ":", bridge->port_,
                                    options.console_dir.empty() ? " (no console files)" : ""));
  return bridge;
}

ConnectBridge::~ConnectBridge() { Stop(); }

void ConnectBridge::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    for (grpc::ClientContext* context : stream_contexts_) context->TryCancel();
  }
  if (http_ != nullptr) http_->stop();
  if (listener_.joinable()) listener_.join();
}

bool ConnectBridge::AcquireStream(int64_t user_id) {
  absl::MutexLock lock(&mu_);
  if (stopped_ || open_streams_ >= options_.max_streams ||
      (user_id != kNoUser && streams_by_user_[user_id] >= options_.max_streams_per_user)) {
    return false;
  }
  ++open_streams_;
  if (user_id != kNoUser) ++streams_by_user_[user_id];
  return true;
}

void ConnectBridge::ReleaseStream(int64_t user_id) {
  absl::MutexLock lock(&mu_);
  --open_streams_;
  if (user_id != kNoUser && --streams_by_user_[user_id] <= 0) streams_by_user_.erase(user_id);
}

void ConnectBridge::HandleRpc(const httplib::Request& request, httplib::Response& response) {
  const std::string service_name = request.matches[1];
  const std::string method_name = request.matches[2];
  const std::string media_type = MediaType(request);
  const bool streaming_request = media_type == kStreamType;
  auto fail = [&](const grpc::Status& status) {
    if (streaming_request) {
      ReplyStreamError(response, status);
    } else {
      ReplyUnaryError(response, status);
    }
  };

  // Only the console's services; anything else is as absent as a method that does not exist.
  const MethodDescriptor* method = nullptr;
  if (std::find(options_.services.begin(), options_.services.end(), service_name) !=
      options_.services.end()) {
    const auto* service = DescriptorPool::generated_pool()->FindServiceByName(service_name);
    if (service != nullptr) method = service->FindMethodByName(method_name);
  }
  if (method == nullptr || method->client_streaming()) {
    ReplyUnaryError(response, Error(grpc::StatusCode::UNIMPLEMENTED,
                                    absl::StrCat("không có phương thức / no such method: /",
                                                 service_name, "/", method_name)));
    response.status = 404;
    return;
  }
  const bool server_streaming = method->server_streaming();
  if (media_type != (server_streaming ? kStreamType : kUnaryType)) {
    response.status = 415;
    response.set_content(
        ErrorJson(Error(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("Content-Type: ", method->full_name(), " takes ",
                                     server_streaming ? kStreamType : kUnaryType, ", got '",
                                     request.get_header_value("Content-Type"), "'"))),
        kUnaryType);
    return;
  }

  const Credentials credentials = CredentialsOf(request);
  if (credentials.from_cookie) {
    if (grpc::Status csrf = CheckSameOrigin(request); !csrf.ok()) return fail(csrf);
  }

  // The request message.
  absl::string_view json = request.body;
  if (server_streaming) {
    if (json.size() < 5 || static_cast<uint8_t>(json[0]) != 0) {
      return fail(Error(grpc::StatusCode::INVALID_ARGUMENT,
                        "request body: a stream's request must be one uncompressed Connect "
                        "envelope"));
    }
    const uint32_t size = (static_cast<uint32_t>(static_cast<uint8_t>(json[1])) << 24) |
                          (static_cast<uint32_t>(static_cast<uint8_t>(json[2])) << 16) |
                          (static_cast<uint32_t>(static_cast<uint8_t>(json[3])) << 8) |
                          static_cast<uint32_t>(static_cast<uint8_t>(json[4]));
    if (json.size() - 5 != size) {
      return fail(Error(grpc::StatusCode::INVALID_ARGUMENT,
                        "request body: the envelope's length does not match the body"));
    }
    json.remove_prefix(5);
  }
  std::string request_bytes;
  if (grpc::Status parsed = JsonToBytes(method->input_type(), json, &request_bytes); !parsed.ok()) {
    return fail(parsed);
  }
  const std::string path = absl::StrCat("/", service_name, "/", method_name);

  if (!server_streaming) {
    grpc::ClientContext context;
    if (grpc::Status deadline = SetDeadline(request, options_.default_unary_deadline, &context);
        !deadline.ok()) {
      return fail(deadline);
    }
    if (!credentials.authorization.empty()) {
      context.AddMetadata("authorization", credentials.authorization);
    }
    AddForwardedPeer(request, options_.trusted_proxies, &context);
    std::string reply_bytes;
    grpc::Status status = CallUnary(channel_, path, request_bytes, &context, &reply_bytes);
    std::string reply_json;
    if (status.ok()) status = BytesToJson(method->output_type(), reply_bytes, &reply_json);
    if (!status.ok()) return fail(status);
    response.status = 200;
    SetJsonAnswer(request, std::move(reply_json), kUnaryType, response);
    return;
  }

  // A stream is a signed-in user's (the cap counts per user): who is asking?
  int64_t user_id = 0;
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    if (!credentials.authorization.empty()) {
      context.AddMetadata("authorization", credentials.authorization);
    }
    std::string reply;
    const grpc::Status who = CallUnary(channel_, "/kcnet.v1.AuthService/WhoAmI",
                                       v1::WhoAmIRequest().SerializeAsString(), &context, &reply);
    if (!who.ok()) return fail(who);
    v1::WhoAmIResponse whoami;
    whoami.ParseFromString(reply);
    user_id = whoami.user().id();
  }
  if (!AcquireStream(user_id)) {
    return fail(
        Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
              absl::StrCat("streams: quá nhiều luồng đang mở / too many open streams "
                           "(at most ",
                           options_.max_streams_per_user, " per user); close a tab or a watch")));
  }
  auto call = std::make_shared<StreamCall>(this, method, user_id);
  {
    absl::MutexLock lock(&mu_);
    stream_contexts_.push_back(call->context());
    if (stopped_) call->context()->TryCancel();
  }
  if (grpc::Status deadline = SetDeadline(request, absl::InfiniteDuration(), call->context());
      !deadline.ok()) {
    call->Release();
    return fail(deadline);
  }
  if (!credentials.authorization.empty()) {
    call->context()->AddMetadata("authorization", credentials.authorization);
  }
  AddForwardedPeer(request, options_.trusted_proxies, call->context());
  if (!call->Start(request_bytes)) {
    const grpc::Status status = call->status();
    call->Release();
    return fail(status);
  }
  response.status = 200;
  response.set_chunked_content_provider(
      kStreamType, [call](size_t, httplib::DataSink& sink) { return call->Provide(sink); },
      [call](bool) { call->Release(); });
}

void ConnectBridge::HandleDownload(const httplib::Request& request, httplib::Response& response) {
  const std::string service_name = request.matches[1];
  const std::string method_name = request.matches[2];
  // Only the console's services, and only their streams of file chunks.
  const MethodDescriptor* method = nullptr;
  if (std::find(options_.services.begin(), options_.services.end(), service_name) !=
      options_.services.end()) {
    const auto* service = DescriptorPool::generated_pool()->FindServiceByName(service_name);
    if (service != nullptr) method = service->FindMethodByName(method_name);
  }
  if (method == nullptr || method->client_streaming() || !method->server_streaming() ||
      method->output_type() != v1::ExportChunk::descriptor()) {
    ReplyUnaryError(response, Error(grpc::StatusCode::UNIMPLEMENTED,
                                    absl::StrCat("không có tệp để tải / no such download: /",
                                                 service_name, "/", method_name)));
    response.status = 404;
    return;
  }
  if (MediaType(request) != kUnaryType) {
    response.status = 415;
    response.set_content(
        ErrorJson(Error(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("Content-Type: a download of ", method->full_name(), " takes ", kUnaryType,
                         ", got '", request.get_header_value("Content-Type"), "'"))),
        kUnaryType);
    return;
  }
  const Credentials credentials = CredentialsOf(request);
  if (credentials.from_cookie) {
    if (grpc::Status csrf = CheckSameOrigin(request); !csrf.ok()) {
      return ReplyUnaryError(response, csrf);
    }
  }
  std::string request_bytes;
  if (grpc::Status parsed = JsonToBytes(method->input_type(), request.body, &request_bytes);
      !parsed.ok()) {
    return ReplyUnaryError(response, parsed);
  }
  if (!AcquireStream(kNoUser)) {
    return ReplyUnaryError(response,
                           Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "streams: máy chủ đang bận / too many open streams; try again"));
  }
  // The very call a Connect client makes: token, scope checks and RPC log are the service's.
  auto call = std::make_shared<StreamCall>(this, method, kNoUser);
  {
    absl::MutexLock lock(&mu_);
    stream_contexts_.push_back(call->context());
    if (stopped_) call->context()->TryCancel();
  }
  if (grpc::Status deadline = SetDeadline(request, absl::InfiniteDuration(), call->context());
      !deadline.ok()) {
    call->Release();
    return ReplyUnaryError(response, deadline);
  }
  if (!credentials.authorization.empty()) {
    call->context()->AddMetadata("authorization", credentials.authorization);
  }
  AddForwardedPeer(request, options_.trusted_proxies, call->context());
  // The first chunk names the file and its size: read before any header is sent, so that
  // a refusal (no token, out of scope, bad filter) is an ordinary error answer.
  std::string first;
  v1::ExportChunk chunk;
  if (!call->Start(request_bytes) || !call->Read(&first) || !chunk.ParseFromString(first)) {
    grpc::Status status = call->status();
    if (status.ok()) {
      status = Error(grpc::StatusCode::INTERNAL, "download: the stream sent no file");
    }
    call->Release();
    return ReplyUnaryError(response, status);
  }
  const std::string name = chunk.file_name().empty() ? "kcnet-export" : chunk.file_name();
  const std::string type = absl::EndsWith(name, ".csv") ? "text/csv; charset=utf-8"
                           : absl::EndsWith(name, ".xlsx")
                               ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                               : "application/octet-stream";
  std::string ascii_name;  // the plain filename= for old clients; filename*= has the UTF-8
  for (char c : name)
    ascii_name += (absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_') ? c : '_';
  response.status = 200;
  response.set_header("Content-Disposition",
                      absl::StrCat("attachment; filename=\"", ascii_name, "\"; filename*=UTF-8''",
                                   PercentEncode(name)));
  // The bytes not yet written, and how many were (httplib asks for the next ones by offset).
  struct Pending {
    std::string data;
    size_t sent = 0;
  };
  auto pending = std::make_shared<Pending>();
  pending->data = std::move(*chunk.mutable_data());
  // Writes what is pending, else the next chunk's data; false (the connection is cut: the
  // download fails) when the stream failed or does not match the announced size.
  auto next = [call, pending](size_t offset, httplib::DataSink& sink, bool* done) {
    *done = false;
    if (offset != pending->sent) return false;  // only sequential reads (no ranges)
    std::string bytes;
    v1::ExportChunk next_chunk;
    while (pending->data.empty()) {
      if (!call->Read(&bytes)) {
        *done = call->status().ok();
        return *done;
      }
      if (!next_chunk.ParseFromString(bytes)) return false;
      pending->data = std::move(*next_chunk.mutable_data());
    }
    if (!sink.write(pending->data.data(), pending->data.size())) return false;
    pending->sent += pending->data.size();
    pending->data.clear();
    return true;
  };
  const int64_t total = chunk.total_bytes();
  if (total > 0) {
    response.set_content_provider(
        static_cast<size_t>(total), type,
        [call, next, total, pending](size_t offset, size_t, httplib::DataSink& sink) {
          bool done = false;
          if (!next(offset, sink, &done) || done) return false;          // ended early: cut
          if (pending->sent > static_cast<size_t>(total)) return false;  // more than announced
          if (pending->sent == static_cast<size_t>(total)) {
            std::string rest;  // the end of the stream, for its status (the RPC log's OK)
            while (call->Read(&rest)) {
            }
          }
          return true;
        },
        [call](bool) { call->Release(); });
  } else {
    response.set_chunked_content_provider(
        type,
        [next](size_t offset, httplib::DataSink& sink) {
          bool done = false;
          if (!next(offset, sink, &done)) return false;
          if (done) sink.done();
          return true;
        },
        [call](bool) { call->Release(); });
  }
}

void ConnectBridge::HandleSignIn(const httplib::Request& request, httplib::Response& response) {
  if (grpc::Status csrf = CheckSameOrigin(request); !csrf.ok()) {
    return ReplyUnaryError(response, csrf);
  }
  if (MediaType(request) != kUnaryType) {
    response.status = 415;
    response.set_content(ErrorJson(Error(grpc::StatusCode::INVALID_ARGUMENT,
                                         "Content-Type: sign-in takes application/json")),
                         kUnaryType);
    return;
  }
  std::string request_bytes;
  if (grpc::Status parsed =
          JsonToBytes(v1::LoginRequest::descriptor(), request.body, &request_bytes);
      !parsed.ok()) {
    return ReplyUnaryError(response, parsed);
  }
  v1::LoginRequest login;
  login.ParseFromString(request_bytes);
  login.clear_device_id();  // a browser is no device: no device credential
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.default_unary_deadline));
  AddForwardedPeer(request, options_.trusted_proxies, &context);
  std::string reply;
  const grpc::Status status = CallUnary(channel_, "/kcnet.v1.AuthService/Login",
                                        login.SerializeAsString(), &context, &reply);
  if (!status.ok()) return ReplyUnaryError(response, status);
  v1::LoginResponse signed_in;
  signed_in.ParseFromString(reply);
  // A session cookie (gone with the browser); the server still enforces the token's expiry.
  response.set_header("Set-Cookie", absl::StrCat(kTokenCookie, "=", signed_in.token(),
                                                 "; Path=/; HttpOnly; Secure; SameSite=Strict"));
  signed_in.clear_token();  // the page never holds it
  std::string json;
  if (grpc::Status printed =
          BytesToJson(v1::LoginResponse::descriptor(), signed_in.SerializeAsString(), &json);
      !printed.ok()) {
    return ReplyUnaryError(response, printed);
  }
  response.status = 200;
  response.set_content(json, kUnaryType);
}

void ConnectBridge::HandleSignOut(const httplib::Request& request, httplib::Response& response) {
  if (grpc::Status csrf = CheckSameOrigin(request); !csrf.ok()) {
    return ReplyUnaryError(response, csrf);
  }
  // The cookie goes whatever Logout answers.
  response.set_header("Set-Cookie", absl::StrCat(kTokenCookie,
                                                 "=; Path=/; Max-Age=0; HttpOnly; Secure; "
                                                 "SameSite=Strict"));
  const Credentials credentials = CredentialsOf(request);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.default_unary_deadline));
  if (!credentials.authorization.empty()) {
    context.AddMetadata("authorization", credentials.authorization);
  }
  std::string reply;
  const grpc::Status status = CallUnary(channel_, "/kcnet.v1.AuthService/Logout",
                                        v1::LogoutRequest().SerializeAsString(), &context, &reply);
  if (!status.ok()) return ReplyUnaryError(response, status);
  response.status = 200;
  response.set_content("{}", kUnaryType);
}

}  // namespace kcnet::server
