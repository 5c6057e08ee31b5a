// Download pages in SyncServerMessage.deflated_changes: a serialized ChangeBatch in the
// zlib format (RFC 1950) at zlib's fastest level (docs/SYNC.md, "Page compression").
//
// Thread-safety: the functions are thread-safe.
#ifndef KCNET_SYNC_PAGE_CODEC_H_
#define KCNET_SYNC_PAGE_CODEC_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {

// The largest page a device inflates; more is refused as malformed (a page holds at most
// the server's page byte limit, 1 MiB by default, plus a few bytes per change).
inline constexpr size_t kMaxInflatedPageBytes = 64 << 20;

// Serializes and deflates `page`.
std::string DeflatePage(const kcnet::v1::ChangeBatch& page);

// Inflates and parses `deflated` into `*page` (which may live on an arena). Fails with
// INVALID_ARGUMENT, naming `deflated_changes`, when the bytes are not zlib data, their
// checksum fails, they inflate past `max_bytes`, or the result is not a ChangeBatch.
absl::Status InflatePage(absl::string_view deflated, kcnet::v1::ChangeBatch* page,
                         size_t max_bytes = kMaxInflatedPageBytes);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_PAGE_CODEC_H_
