// Server addresses as the tools see them: the host of a "HOST:PORT" address, and whether
// that host is this machine's loopback (127.0.0.0/8, ::1, localhost), where plaintext
// never crosses a network. kcnet-server refuses plaintext off loopback unless told
// --insecure; the `kcnet` tool speaks TLS to any server that is not on loopback.
//
// Thread-safety: the functions are pure and thread-safe.
#ifndef KCNET_TOOLS_ADDRESS_H_
#define KCNET_TOOLS_ADDRESS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace kcnet::tools {

// The host of `address`: "HOST:PORT" -> "HOST", "[::1]:50051" -> "::1", a gRPC target's
// "dns:///" or "ipv4:" / "ipv6:" scheme dropped. Without a port, `address` itself.
std::string HostOf(absl::string_view address);

// True for "localhost" (and NAME.localhost), 127.0.0.0/8, ::1 and ::ffff:127.x.y.z, with or
// without brackets. False for everything else, the wildcard addresses 0.0.0.0 and :: too.
bool IsLoopbackHost(absl::string_view host);

// IsLoopbackHost(HostOf(address)); also true for a "unix:" socket path.
bool IsLoopbackAddress(absl::string_view address);

}  // namespace kcnet::tools

#endif  // KCNET_TOOLS_ADDRESS_H_
