// Download pages in SyncServerMessage.deflated_changes: a serialized ChangeBatch in the
// zlib format (RFC 1950) at zlib's fastest level (docs/SYNC.md, "Page compression"); and
// SerializedPage, a page whose changes may come already serialized (a store that keeps
// each record as its serialized change splices the bytes in instead of parsing them).
//
// Thread-safety: the functions are thread-safe; a SerializedPage belongs to one thread.
#ifndef KCNET_SYNC_PAGE_CODEC_H_
#define KCNET_SYNC_PAGE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {

// A download page as the stream sends it: the serialization of `head` followed by
// `spliced`, further ChangeBatch.changes entries already in protobuf's wire format (each
// its tag, length and serialized RecordChange, AppendSplicedChange). Protobuf parses a
// repeated field's entries wherever they stand, so these bytes parse as one ChangeBatch:
// `head` with the spliced changes appended to its `changes`, in order.
struct SerializedPage {
  explicit SerializedPage(kcnet::v1::ChangeBatch* head) : head(head) {}
  int changes_size() const { return head->changes_size() + spliced_changes; }
  // The page's bytes: a serialized ChangeBatch.
  std::string Serialize() const;

  kcnet::v1::ChangeBatch* head;  // not owned: cursors, checkpoints, more, server_op, from
  std::string spliced;
  int spliced_changes = 0;
};

// Appends to `page->spliced` the change whose serialization is `change` followed by
// `extra` (more of its fields, e.g. its id: a parser merges them into the same message).
void AppendSplicedChange(absl::string_view change, absl::string_view extra, SerializedPage* page);

// Protobuf's base-128 varint of `value`, appended to `out`.
void AppendVarint(uint64_t value, std::string* out);

// The largest page a device inflates; more is refused as malformed (a page holds at most
// the server's page byte limit, 1 MiB by default, plus a few bytes per change).
inline constexpr size_t kMaxInflatedPageBytes = 64 << 20;

// Serializes and deflates `page`.
std::string DeflatePage(const kcnet::v1::ChangeBatch& page);
// Serializes (SerializedPage::Serialize) and deflates `page`.
std::string DeflatePage(const SerializedPage& page);
// Deflates the bytes of a serialized page.
std::string DeflateSerialized(absl::string_view raw);

// Inflates and parses `deflated` into `*page` (which may live on an arena). Fails with
// INVALID_ARGUMENT, naming `deflated_changes`, when the bytes are not zlib data, their
// checksum fails, they inflate past `max_bytes`, or the result is not a ChangeBatch.
absl::Status InflatePage(absl::string_view deflated, kcnet::v1::ChangeBatch* page,
                         size_t max_bytes = kMaxInflatedPageBytes);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_PAGE_CODEC_H_
