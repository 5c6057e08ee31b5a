#include "server/directory/secrets.h"

#include <sodium.h>

namespace kcnet::server::internal {

std::string Sha256(absl::string_view data) {
  std::string digest(crypto_hash_sha256_BYTES, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(digest.data()),
                     reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return digest;
}

std::string NewSecret() {
  constexpr size_t kBytes = 32;
  unsigned char raw[kBytes];
  randombytes_buf(raw, sizeof(raw));
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  char encoded[sodium_base64_ENCODED_LEN(kBytes, kVariant)];
  sodium_bin2base64(encoded, sizeof(encoded), raw, sizeof(raw), kVariant);
  sodium_memzero(raw, sizeof(raw));
  return std::string(encoded);
}

}  // namespace kcnet::server::internal
