// What directory.cc and device_credentials.cc share: the random secrets they hand out
// (tokens and device credentials) and the hash they store instead. Internal to
// kcnet_directory.
//
// Thread-safety: the functions are thread-safe (libsodium is initialised by
// Directory::Open).
#ifndef KCNET_SERVER_DIRECTORY_SECRETS_H_
#define KCNET_SERVER_DIRECTORY_SECRETS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace kcnet::server::internal {

// SHA-256 of `data`, 32 raw bytes: what the directory stores of a token or credential.
std::string Sha256(absl::string_view data);

// 32 random bytes from libsodium, base64url without padding (43 characters).
std::string NewSecret();

}  // namespace kcnet::server::internal

#endif  // KCNET_SERVER_DIRECTORY_SECRETS_H_
