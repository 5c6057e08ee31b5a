// Helpers of the C ABI: errors, string and protobuf argument checks, owned buffers.
//
// Thread-safety: stateless functions; thread-safe.
#include "client_sdk/c_api/c_util.h"

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"

namespace kcnet::capi {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Whether a field of type `field` may arrive with wire type `type`.
bool WireTypeFits(const FieldDescriptor& field, UnknownField::Type type) {
  switch (field.type()) {
    case FieldDescriptor::TYPE_STRING:
    case FieldDescriptor::TYPE_BYTES:
    case FieldDescriptor::TYPE_MESSAGE:
      return type == UnknownField::TYPE_LENGTH_DELIMITED;
    case FieldDescriptor::TYPE_GROUP:
      return type == UnknownField::TYPE_GROUP;
    default:
      break;
  }
  // Scalars: their own wire type, or packed (length-delimited) when repeated.
  if (field.is_repeated() && type == UnknownField::TYPE_LENGTH_DELIMITED) return true;
  switch (field.type()) {
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      return type == UnknownField::TYPE_FIXED64;
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      return type == UnknownField::TYPE_FIXED32;
    default:
      return type == UnknownField::TYPE_VARINT;
  }
}

// Checks the wire fields of `fields` against `descriptor` (see ParseMessage).
absl::Status CheckWireFields(const UnknownFieldSet& fields, const Descriptor& descriptor,
                             absl::string_view name) {
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& wire = fields.field(i);
    const FieldDescriptor* field = descriptor.FindFieldByNumber(wire.number());
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": field number ", wire.number(), " is not a field of ",
                       descriptor.full_name(), " (another message type, or a newer schema?)"));
    }
    if (!WireTypeFits(*field, wire.type())) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ".", field->name(), ": wrong wire type for a ", field->type_name(),
                       " field; not a serialized ", descriptor.full_name()));
    }
    if (field->type() == FieldDescriptor::TYPE_STRING && !IsValidUtf8(wire.length_delimited())) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ".", field->name(), ": not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

// Checks that every enum field of `message` holds a value its enum defines.
absl::Status CheckEnums(const Message& message, absl::string_view name) {
  const Descriptor& descriptor = *message.GetDescriptor();
  const Reflection& reflection = *message.GetReflection();
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor& field = *descriptor.field(i);
    if (field.type() != FieldDescriptor::TYPE_ENUM) continue;
    const int count = field.is_repeated() ? reflection.FieldSize(message, &field) : 1;
    for (int j = 0; j < count; ++j) {
      const int value = field.is_repeated() ? reflection.GetRepeatedEnumValue(message, &field, j)
                                            : reflection.GetEnumValue(message, &field);
      if (field.enum_type()->FindValueByNumber(value) != nullptr) continue;
      const std::string path = field.is_repeated()
                                   ? absl::StrCat(name, ".", field.name(), "[", j, "]")
                                   : absl::StrCat(name, ".", field.name());
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", value, " is not a ", field.enum_type()->full_name(), " value"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void SetError(kcnet_error* error, absl::StatusCode code, absl::string_view message) noexcept {
  if (error == nullptr) return;
  error->code = static_cast<int>(code);
  size_t size = message.size();
  if (size > KCNET_ERROR_MESSAGE_SIZE - 1) {
    size = KCNET_ERROR_MESSAGE_SIZE - 1;
    // Do not cut a UTF-8 sequence: back up over continuation bytes to a lead byte.
    while (size > 0 && (static_cast<unsigned char>(message[size]) & 0xC0) == 0x80) --size;
  }
  if (size > 0) std::memcpy(error->message, message.data(), size);
  error->message[size] = '\0';
}

void SetError(kcnet_error* error, const absl::Status& status) noexcept {
  SetError(error, status.code(), status.message());
}

void SetOk(kcnet_error* error) noexcept {
  if (error == nullptr) return;
  error->code = 0;
  error->message[0] = '\0';
}

bool IsValidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code_point;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
      code_point = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      code_point = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      code_point = c & 0x07;
    } else {
      return false;  // a continuation byte, an overlong lead (C0, C1) or above F4
    }
    if (n - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (s[i + k] & 0x3F);
    }
    if ((length == 3 && code_point < 0x800) || (length == 4 && code_point < 0x10000) ||
        (code_point >= 0xD800 && code_point <= 0xDFFF) || code_point > 0x10FFFF) {
      return false;
    }
    i += length;
  }
  return true;
}

absl::Status CheckString(const char* value, absl::string_view name, bool nullable, bool non_empty) {
  if (value == nullptr) {
    if (nullable) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, ": must not be NULL"));
  }
  const absl::string_view text(value);
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid UTF-8"));
  }
  if (non_empty && text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must not be empty"));
  }
  return absl::OkStatus();
}

absl::Status ParseMessage(kcnet_bytes bytes, absl::string_view name, Message* out) {
  const std::string& type = out->GetDescriptor()->full_name();
  if (bytes.data == nullptr && bytes.size > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": data is NULL but size is ", bytes.size));
  }
  if (bytes.size > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", bytes.size, " bytes is too large for a ", type));
  }
  const int size = static_cast<int>(bytes.size);
  // First as bare wire data, to tell precisely what is wrong (and to keep protobuf from
  // logging about invalid UTF-8 on stderr).
  UnknownFieldSet wire;
  if (size > 0 && !wire.ParseFromArray(bytes.data, size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": not a serialized ", type, " (malformed protobuf wire data, ", size, " bytes)"));
  }
  absl::Status status = CheckWireFields(wire, *out->GetDescriptor(), name);
  if (!status.ok()) return status;
  out->Clear();
  if (size > 0 && !out->ParseFromArray(bytes.data, size)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a serialized ", type));
  }
  return CheckEnums(*out, name);
}

absl::Status PutMessage(const Message& message, kcnet_buffer* out) {
  if (out == nullptr) return absl::OkStatus();
  const size_t size = message.ByteSizeLong();
  if (size > static_cast<size_t>(INT_MAX)) {
    return absl::InternalError(absl::StrCat("result of ", size, " bytes is too large"));
  }
  auto* data = static_cast<uint8_t*>(std::malloc(size == 0 ? 1 : size));
  if (data == nullptr) return absl::ResourceExhaustedError("out of memory");
  message.SerializeWithCachedSizesToArray(data);
  *out = kcnet_buffer{data, size};
  return absl::OkStatus();
}

}  // namespace kcnet::capi
