#include "sync/schema.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kcnet::sync {
namespace {

bool IsIdentifier(absl::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '_') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return !(name[0] >= '0' && name[0] <= '9');
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::string_view FieldTypeName(FieldType type) {
  switch (type) {
    case FieldType::kInt:
      return "int";
    case FieldType::kDouble:
      return "double";
    case FieldType::kString:
      return "string";
    case FieldType::kBytes:
      return "bytes";
    case FieldType::kBool:
      return "bool";
  }
  return "?";
}

int RecordTypeSpec::IndexOf(uint32_t number) const {
  for (size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].number == number) return static_cast<int>(i);
  }
  return -1;
}

const FieldSpec* RecordTypeSpec::Field(uint32_t number) const {
  const int i = IndexOf(number);
  return i < 0 ? nullptr : &fields[i];
}

absl::StatusOr<Schema> Schema::Create(std::vector<RecordTypeSpec> types) {
  Schema schema;
  for (size_t i = 0; i < types.size(); ++i) {
    const RecordTypeSpec& t = types[i];
    if (t.type == 0) return absl::InvalidArgumentError(absl::StrCat(t.name, ": type id 0"));
    if (!IsIdentifier(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("type ", t.type, ": bad table name '", t.name, "'"));
    }
    if (!schema.by_type_.emplace(t.type, i).second || !schema.by_name_.emplace(t.name, i).second) {
      return absl::InvalidArgumentError(absl::StrCat(t.name, ": duplicate type id or name"));
    }
    absl::flat_hash_set<std::string> names;
    uint32_t previous = 1;
    for (const FieldSpec& f : t.fields) {
      if (f.number <= previous) {
        return absl::InvalidArgumentError(
            absl::StrCat(t.name, ".", f.name, ": field number ", f.number,
                         " is reserved (1 is the id), repeated or out of ascending order"));
      }
      previous = f.number;
      if (!IsIdentifier(f.name) || f.name == "id" || !names.insert(f.name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(t.name, ": bad or repeated field name '", f.name, "'"));
      }
    }
    const FieldSpec* bucket = t.Field(t.bucket_field);
    if (bucket == nullptr || bucket->type != FieldType::kInt) {
      return absl::InvalidArgumentError(
          absl::StrCat(t.name, ": bucket field ", t.bucket_field, " missing or not an int"));
    }
    for (const auto& index : t.indexes) {
      for (uint32_t n : index) {
        if (t.Field(n) == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat(t.name, ": index names unknown field ", n));
        }
      }
    }
  }
  schema.types_ = std::move(types);
  return schema;
}

const RecordTypeSpec* Schema::Find(uint32_t type) const {
  auto it = by_type_.find(type);
  return it == by_type_.end() ? nullptr : &types_[it->second];
}

const RecordTypeSpec* Schema::FindByName(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &types_[it->second];
}

namespace {

// Checks packed varints value by value: whatever a device packs here is synced to every
// tablet in the bucket and decoded into their enums, so an unknown number or a stray byte
// must stop at the server.
template <typename Where>
absl::Status ValidatePackedEnums(const FieldSpec& field, absl::string_view packed,
                                 const Where& where) {
  size_t i = 0;
  for (int index = 0; i < packed.size(); ++index) {
    uint64_t value = 0;
    int shift = 0;
    bool complete = false;
    while (i < packed.size() && shift < 64) {
      const auto byte = static_cast<unsigned char>(packed[i++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      shift += 7;
      if ((byte & 0x80) == 0) {
        complete = true;
        break;
      }
    }
    if (!complete) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "[", index, "]: not a packed list of enum values"));
    }
    const auto number = static_cast<int64_t>(value);
    if (number == 0 || !field.enum_values.contains(number)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "[", index, "]: unknown enum value ", number));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Schema::ValidateValue(const RecordTypeSpec& type, const FieldSpec& field,
                                   const kcnet::v1::Value& value) {
  using V = kcnet::v1::Value;
  if (value.kind_case() == V::KIND_NOT_SET) return absl::OkStatus();
  // Built only for an error: this runs for every field of every change.
  auto where = [&]() { return absl::StrCat(type.name, ".", field.name); };
  auto wrong_type = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": expected a value of type ", FieldTypeName(field.type)));
  };
  switch (field.type) {
    case FieldType::kInt: {
      if (value.kind_case() != V::kIntValue) return wrong_type();
      const int64_t v = value.int_value();
      if (!field.enum_values.empty() && !field.enum_values.contains(v)) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": unknown enum value ", v));
      }
      if (v < field.min_int || v > field.max_int) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": ", v, " is outside [",
                                                       field.min_int, ", ", field.max_int, "]"));
      }
      return absl::OkStatus();
    }
    case FieldType::kDouble: {
      if (value.kind_case() != V::kDoubleValue) return wrong_type();
      const double v = value.double_value();
      if (!std::isfinite(v) || v < field.min_double || v > field.max_double) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(), ": ", v, " is outside [", field.min_double, ", ", field.max_double, "]"));
      }
      return absl::OkStatus();
    }
    case FieldType::kString:
      if (value.kind_case() != V::kStringValue) return wrong_type();
      if (value.string_value().size() > field.max_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": ", value.string_value().size(),
                                                       " bytes, at most ", field.max_bytes));
      }
      if (!IsValidUtf8(value.string_value())) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": not valid UTF-8"));
      }
      return absl::OkStatus();
    case FieldType::kBytes:
      if (value.kind_case() != V::kBytesValue) return wrong_type();
      if (value.bytes_value().size() > field.max_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": ", value.bytes_value().size(),
                                                       " bytes, at most ", field.max_bytes));
      }
      if (field.repeated_enum) return ValidatePackedEnums(field, value.bytes_value(), where);
      return absl::OkStatus();
    case FieldType::kBool:
      if (value.kind_case() != V::kBoolValue) return wrong_type();
      return absl::OkStatus();
  }
  return wrong_type();
}

absl::Status Schema::ValidateChange(const kcnet::v1::RecordChange& change, absl::string_view path,
                                    std::string* bad_path) const {
  return Validate(change, path, bad_path, /*allow_unknown=*/false);
}

absl::Status Schema::ValidateDownloaded(const kcnet::v1::RecordChange& change,
                                        absl::string_view path) const {
  return Validate(change, path, nullptr, /*allow_unknown=*/true);
}

absl::Status Schema::Validate(const kcnet::v1::RecordChange& change, absl::string_view path,
                              std::string* bad_path, bool allow_unknown) const {
  auto fail = [&](std::string where, absl::string_view why) {
    if (bad_path != nullptr) *bad_path = where;
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
  };
  // A type this schema does not know (allowed only in a download) is checked for its
  // shape: its fields' values are the newer schema's business.
  static const RecordTypeSpec kUnknownType{.name = "unknown record type"};
  const RecordTypeSpec* type = Find(change.type());
  if (type == nullptr && !allow_unknown) {
    return fail(absl::StrCat(path, ".type"), absl::StrCat("unknown record type ", change.type()));
  }
  if (type == nullptr) {
    if (change.type() == 0) return fail(absl::StrCat(path, ".type"), "record type 0");
    type = &kUnknownType;
  }
  if (change.id().size() != 16) {
    return fail(absl::StrCat(path, ".id"),
                absl::StrCat("expected a 16-byte UUID, got ", change.id().size(), " bytes"));
  }
  if (change.deleted() && change.fields_size() > 0) {
    return fail(absl::StrCat(path, ".fields"), "a deletion carries no fields");
  }
  // Field numbers seen so far; paths are built only for an error (this is a hot path).
  uint64_t seen_low = 0;
  absl::flat_hash_set<uint32_t> seen_high;
  for (int i = 0; i < change.fields_size(); ++i) {
    const kcnet::v1::FieldChange& fc = change.fields(i);
    auto where = [&]() { return absl::StrCat(path, ".fields[", i, "]"); };
    const FieldSpec* field = type->Field(fc.field());
    if (field == nullptr && !allow_unknown) {
      return fail(where(), absl::StrCat("unknown field ", fc.field(), " of ", type->name));
    }
    if (field == nullptr && fc.field() <= 1) {
      return fail(where(), absl::StrCat("field number ", fc.field(), " is reserved"));
    }
    const bool repeated = fc.field() < 64 ? (seen_low & (uint64_t{1} << fc.field())) != 0
                                          : !seen_high.insert(fc.field()).second;
    if (fc.field() < 64) seen_low |= uint64_t{1} << fc.field();
    if (repeated) {
      return fail(where(), absl::StrCat(type->name, ".",
                                        field != nullptr ? field->name : absl::StrCat(fc.field()),
                                        " appears twice"));
    }
    if (field == nullptr) continue;  // kept as downloaded
    absl::Status status = ValidateValue(*type, *field, fc.value());
    if (!status.ok()) return fail(where(), status.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> UuidToText(absl::string_view bytes16) {
  if (bytes16.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("record id: expected 16 bytes (a UUID), got ", bytes16.size()));
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    const auto b = static_cast<unsigned char>(bytes16[i]);
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

bool UuidTextToBytes(absl::string_view text, char* out) {
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' ||
      text[23] != '-') {
    return false;
  }
  // The positions of the 16 bytes' first hexadecimal digits in 8-4-4-4-12.
  static constexpr uint8_t kAt[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
  int bad = 0;
  for (int i = 0; i < 16; ++i) {
    const int hi = HexValue(text[kAt[i]]);
    const int lo = HexValue(text[kAt[i] + 1]);
    bad |= hi | lo;  // negative when either is not a digit
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return bad >= 0;
}

absl::StatusOr<std::string> UuidFromText(absl::string_view text) {
  std::string out(16, '\0');
  if (!UuidTextToBytes(text, out.data())) {
    return absl::InvalidArgumentError(
        absl::StrCat("record id: '", text.substr(0, 64),
                     "' is not a UUID (expected 8-4-4-4-12 hexadecimal digits)"));
  }
  return out;
}

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace kcnet::sync
