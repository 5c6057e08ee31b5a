#include "sync/page_codec.h"

#include <zlib.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kcnet::sync {

std::string SerializedPage::Serialize() const {
  std::string out;
  head->AppendToString(&out);
  out += spliced;
  return out;
}

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void AppendSplicedChange(absl::string_view change, absl::string_view extra, SerializedPage* page) {
  constexpr char kChangesTag = (1 << 3) | 2;  // ChangeBatch.changes, length-delimited
  std::string& out = page->spliced;
  out.push_back(kChangesTag);
  AppendVarint(change.size() + extra.size(), &out);
  out.append(change.data(), change.size());
  out.append(extra.data(), extra.size());
  ++page->spliced_changes;
}

std::string DeflatePage(const kcnet::v1::ChangeBatch& page) {
  return DeflateSerialized(page.SerializeAsString());
}

std::string DeflatePage(const SerializedPage& page) { return DeflateSerialized(page.Serialize()); }

std::string DeflateSerialized(absl::string_view raw) {
  // A window no larger than the page (zlib's default is 32 KiB, with 256 KiB of state to
  // allocate and clear): a live page of a few changes costs a few kilobytes of state.
  int window_bits = 9;
  while (window_bits < 15 && (size_t{1} << window_bits) < raw.size()) ++window_bits;
  const int mem_level = std::min(8, window_bits - 6);
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, window_bits, mem_level, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return std::string();
  }
  std::string out(deflateBound(&zs, static_cast<uLong>(raw.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  // With deflateBound's room, Z_FINISH ends the stream in one call.
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return rc == Z_STREAM_END ? out : std::string();
}

absl::Status InflatePage(absl::string_view deflated, kcnet::v1::ChangeBatch* page,
                         size_t max_bytes) {
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return absl::ResourceExhaustedError("deflated_changes: no memory");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(deflated.data()));
  zs.avail_in = static_cast<uInt>(deflated.size());
  std::string raw;
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (raw.size() >= max_bytes) break;
    const size_t used = raw.size();
    raw.resize(std::min(max_bytes, std::max<size_t>(used * 2, deflated.size() * 6 + 1024)));
    zs.next_out = reinterpret_cast<Bytef*>(raw.data() + used);
    zs.avail_out = static_cast<uInt>(raw.size() - used);
    rc = inflate(&zs, Z_NO_FLUSH);
    raw.resize(raw.size() - zs.avail_out);
    if (rc == Z_BUF_ERROR && zs.avail_in > 0) rc = Z_OK;  // needs more room
  }
  const bool too_big = rc == Z_OK && raw.size() >= max_bytes;
  const bool trailing = rc == Z_STREAM_END && zs.avail_in != 0;
  const char* message = zs.msg;
  inflateEnd(&zs);
  if (too_big) {
    return absl::InvalidArgumentError(
        absl::StrCat("deflated_changes: inflates past ", max_bytes, " bytes"));
  }
  if (rc != Z_STREAM_END) {
    return absl::InvalidArgumentError(absl::StrCat("deflated_changes: not complete zlib data (",
                                                   message != nullptr ? message : "truncated",
                                                   ")"));
  }
  if (trailing) return absl::InvalidArgumentError("deflated_changes: bytes after the zlib data");
  if (!page->ParseFromString(raw)) {
    return absl::InvalidArgumentError("deflated_changes: does not parse as a ChangeBatch");
  }
  return absl::OkStatus();
}

}  // namespace kcnet::sync
