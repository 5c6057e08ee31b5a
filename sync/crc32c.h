// CRC32C (Castagnoli, the polynomial of iSCSI, ext4 and gRPC's own checks): the checksum
// of each chunk of an attachment upload or download (attachments.proto). Debian 12's
// abseil (20220623) has no absl/crc yet, so this is a small version of our own: the CPU's
// crc32 instruction on x86-64 with SSE4.2 (chosen at run time, 3-4 GB/s), else tables
// (slicing by 8, about 1-1.3 GB/s).
//
// Thread-safety: pure functions; the tables are built once, thread-safely.
#ifndef KCNET_SYNC_CRC32C_H_
#define KCNET_SYNC_CRC32C_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace kcnet::sync {

// The CRC32C of `data`, continuing from `crc` (the CRC32C of the bytes before it; 0 for
// none): Crc32c(b, Crc32c(a)) == Crc32c(a + b). Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

// The same with the tables only, whatever the CPU (tests compare the two).
uint32_t Crc32cPortable(absl::string_view data, uint32_t crc = 0);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_CRC32C_H_
