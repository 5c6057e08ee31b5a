// SHA-256 (FIPS 180-4), the content address of an attachment's bytes: a small portable
// implementation, so that the SDK needs no crypto library of its own on Android and iOS.
// The chunks' CRC32C is sync/crc32c.h, shared with the server.
//
// Thread-safety: Sha256 is thread-compatible (one object per thread); the functions are
// thread-safe.
#ifndef KCNET_CLIENT_SDK_ATTACHMENT_DIGEST_H_
#define KCNET_CLIENT_SDK_ATTACHMENT_DIGEST_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kcnet::sdk {

// Incremental SHA-256: Update() with the bytes in order, then Finish() once.
class Sha256 {
 public:
  Sha256();
  void Update(absl::string_view data);
  // The 32-byte digest. The object is spent afterwards.
  std::string Finish();

 private:
  void Block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes so far
};

// The SHA-256 of `data` (32 bytes), and as 64 lower-case hex digits.
std::string Sha256Of(absl::string_view data);
std::string Sha256HexOf(absl::string_view data);

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_ATTACHMENT_DIGEST_H_
