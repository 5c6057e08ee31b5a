// Paging helpers shared by every List RPC: the page size rule and opaque page tokens bound
// to the query that made them.
//
// A page token is the base64url (no padding) of: one version byte, the 64-bit fingerprint
// of the query (little-endian), then the position (whatever the service needs to resume,
// e.g. the sort key of the last item returned). A token presented with another query, or
// one that does not decode, is refused with INVALID_ARGUMENT naming page_token. Tokens are
// not secret and not signed: the position only says where to resume, and every page is
// filtered by the caller's scope anyway.
//
// Thread-safety: pure functions, safe from any thread.
#ifndef KCNET_SERVER_RPC_PAGING_H_
#define KCNET_SERVER_RPC_PAGING_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace kcnet::server {

inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 500;

// The page size to use for a request's `page_size`: 0 gives kDefaultPageSize, 1 to
// kMaxPageSize as asked; anything else is INVALID_ARGUMENT naming page_size.
absl::StatusOr<int> PageSize(int32_t requested);

// A stable 64-bit fingerprint of `request` without its paging fields: the message type,
// `context` (e.g. the caller's user id, so that a token is bound to its caller too) and
// the deterministic serialization of a copy with the fields named page_token and page_size
// cleared. The same across processes and restarts.
uint64_t QueryFingerprint(const google::protobuf::Message& request, absl::string_view context = "");

// The token that resumes the query `query_fingerprint` at `position`.
std::string EncodePageToken(uint64_t query_fingerprint, absl::string_view position);

// The position in `token`. An empty token is the first page and gives an empty position.
// Fails with INVALID_ARGUMENT "page_token: ..." when the token is malformed or was made
// for another query.
absl::StatusOr<std::string> DecodePageToken(absl::string_view token, uint64_t query_fingerprint);

// One page of an in-memory list: the items of `sorted` (ascending by `key(item)`, keys
// unique) whose key is above `position` (all of them when it is empty), at most
// `page_size`. Sets `*next_position` to the key of the last item returned when more items
// follow, and clears it otherwise.
template <typename T, typename KeyFn>
std::vector<T> TakePage(std::vector<T> sorted, absl::string_view position, int page_size, KeyFn key,
                        std::string* next_position) {
  std::vector<T> page;
  std::string next;  // `position` may point into *next_position
  for (T& item : sorted) {
    if (!position.empty() && !(absl::string_view(key(item)) > position)) continue;
    if (static_cast<int>(page.size()) == page_size) {
      next = std::string(key(page.back()));
      break;
    }
    page.push_back(std::move(item));
  }
  *next_position = std::move(next);
  return page;
}

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_PAGING_H_
