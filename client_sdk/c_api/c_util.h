// Helpers of the C ABI (kcnet_c.h) that do not need the SDK: filling a kcnet_error from an
// absl::Status, validating C strings (UTF-8) and serialized protobuf arguments so that a
// bad argument is refused with an error naming it, and copying messages into owned
// kcnet_buffers.
//
// Thread-safety: stateless functions; thread-safe.
#ifndef KCNET_CLIENT_SDK_C_API_C_UTIL_H_
#define KCNET_CLIENT_SDK_C_API_C_UTIL_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "kcnet_c.h"

namespace kcnet::capi {

// Sets *error (when not NULL) to `status`: its canonical code and its message, cut at a
// UTF-8 character boundary to fit. Never allocates, never throws.
void SetError(kcnet_error* error, const absl::Status& status) noexcept;
void SetError(kcnet_error* error, absl::StatusCode code, absl::string_view message) noexcept;
// Sets *error (when not NULL) to code 0 and an empty message.
void SetOk(kcnet_error* error) noexcept;

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// Checks a C string argument called `name`: not NULL (unless `nullable`), valid UTF-8,
// and, when `non_empty`, not "". INVALID_ARGUMENT naming `name` otherwise.
absl::Status CheckString(const char* value, absl::string_view name, bool nullable = false,
                         bool non_empty = false);

// Parses `bytes` as the message type of `out` (argument `name`). INVALID_ARGUMENT naming
// the argument when the bytes are not its wire format ("facility: not a serialized
// kcnet.v1.Facility ..."), carry a field the message does not have or with the wrong wire
// type, a string field that is not valid UTF-8 ("facility.name: not valid UTF-8") or an
// enum value the enum does not define ("facility.kind: 99 is not a kcnet.v1.FacilityKind").
// Looks at one level of fields: nested messages are parsed but not inspected field by
// field.
absl::Status ParseMessage(kcnet_bytes bytes, absl::string_view name,
                          google::protobuf::Message* out);

// Serializes `message` into a new buffer owned by the caller (freed with
// kcnet_buffer_free); `data` is never NULL on success. `out` NULL: nothing to do.
// RESOURCE_EXHAUSTED when memory runs out, INTERNAL when the message is too large.
absl::Status PutMessage(const google::protobuf::Message& message, kcnet_buffer* out);

// Sets *out (when not NULL) to an empty buffer.
inline void ClearBuffer(kcnet_buffer* out) {
  if (out != nullptr) *out = kcnet_buffer{nullptr, 0};
}

}  // namespace kcnet::capi

#endif  // KCNET_CLIENT_SDK_C_API_C_UTIL_H_
