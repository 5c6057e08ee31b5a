#include "server/rpc/paging.h"

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "sync/record_store.h"

namespace kcnet::server {
namespace {

constexpr char kTokenVersion = 1;
constexpr size_t kFingerprintBytes = 8;
// Far above any position a service stores; refuses absurd input before decoding it.
constexpr size_t kMaxTokenChars = 4096;

absl::Status BadToken(absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("page_token: ", reason));
}

}  // namespace

absl::StatusOr<int> PageSize(int32_t requested) {
  if (requested == 0) return kDefaultPageSize;
  if (requested < 0 || requested > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size: must be between 0 and ",
                                                   kMaxPageSize, " (0 means ", kDefaultPageSize,
                                                   "), got ", requested));
  }
  return requested;
}

uint64_t QueryFingerprint(const google::protobuf::Message& request, absl::string_view context) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  const google::protobuf::Descriptor* descriptor = copy->GetDescriptor();
  for (const char* name : {"page_token", "page_size"}) {
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByName(name);
    if (field != nullptr) copy->GetReflection()->ClearField(copy.get(), field);
  }
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    copy->SerializeToCodedStream(&out);
  }
  // The sync core's stable hash: the same across builds and processes (absl::Hash is
  // salted per process).
  return sync::StableHash64(absl::StrCat(descriptor->full_name(), absl::string_view("\0", 1),
                                         context, absl::string_view("\0", 1), bytes));
}

std::string EncodePageToken(uint64_t query_fingerprint, absl::string_view position) {
  std::string raw;
  raw.reserve(1 + kFingerprintBytes + position.size());
  raw.push_back(kTokenVersion);
  for (size_t i = 0; i < kFingerprintBytes; ++i) {
    raw.push_back(static_cast<char>((query_fingerprint >> (8 * i)) & 0xff));
  }
  raw.append(position.data(), position.size());
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view token, uint64_t query_fingerprint) {
  if (token.empty()) return std::string();
  if (token.size() > kMaxTokenChars) return BadToken("too long to be a page token");
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) || raw.size() < 1 + kFingerprintBytes ||
      raw[0] != kTokenVersion) {
    return BadToken("not a page token this server issued");
  }
  uint64_t fingerprint = 0;
  for (size_t i = 0; i < kFingerprintBytes; ++i) {
    fingerprint |= static_cast<uint64_t>(static_cast<unsigned char>(raw[1 + i])) << (8 * i);
  }
  if (fingerprint != query_fingerprint) {
    return BadToken("the token belongs to another query; repeat the request that made it");
  }
  return raw.substr(1 + kFingerprintBytes);
}

}  // namespace kcnet::server
