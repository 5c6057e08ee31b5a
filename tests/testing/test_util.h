// Helpers shared by kcnet tests: temporary directories, deterministic ids, a small
// domain-agnostic test schema, and builders for record changes.
//
// Thread-safety: TempDir is not thread-safe; the functions are pure.
#ifndef KCNET_TESTS_TESTING_TEST_UTIL_H_
#define KCNET_TESTS_TESTING_TEST_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "kcnet/v1/sync.pb.h"
#include "sync/schema.h"

namespace kcnet::testing {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kcnet-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A 16-byte record id derived from `n` (distinct for distinct n).
inline std::string Id(uint64_t n) {
  std::string id(16, '\0');
  for (int i = 0; i < 8; ++i) id[8 + i] = static_cast<char>(n >> (8 * (7 - i)));
  id[0] = 0x4b;  // never all-zero
  id[6] = 0x40;  // looks like a v4 UUID
  return id;
}

// A domain-agnostic schema for sync-core tests: type 1 "item" in bucket field 2, with
// an int, a double, a string, a bool and a bytes field; type 2 "note" with text only.
inline sync::Schema TestSchema() {
  sync::RecordTypeSpec item;
  item.type = 1;
  item.name = "item";
  item.bucket_field = 2;
  item.fields = {{.number = 2, .name = "unit", .type = sync::FieldType::kInt},
                 {.number = 3, .name = "count", .type = sync::FieldType::kInt, .min_int = 0},
                 {.number = 4,
                  .name = "ratio",
                  .type = sync::FieldType::kDouble,
                  .min_double = -90,
                  .max_double = 90},
                 {.number = 5, .name = "label", .type = sync::FieldType::kString, .max_bytes = 64},
                 {.number = 6, .name = "flag", .type = sync::FieldType::kBool},
                 {.number = 7, .name = "blob", .type = sync::FieldType::kBytes}};
  item.indexes = {{5}};
  sync::RecordTypeSpec note;
  note.type = 2;
  note.name = "note";
  note.bucket_field = 2;
  note.fields = {{.number = 2, .name = "unit", .type = sync::FieldType::kInt},
                 {.number = 3, .name = "text", .type = sync::FieldType::kString}};
  auto schema = sync::Schema::Create({item, note});
  if (!schema.ok()) std::abort();
  return *std::move(schema);
}

inline kcnet::v1::Value IntValue(int64_t v) {
  kcnet::v1::Value out;
  out.set_int_value(v);
  return out;
}
inline kcnet::v1::Value StringValue(const std::string& v) {
  kcnet::v1::Value out;
  out.set_string_value(v);
  return out;
}
inline kcnet::v1::Value DoubleValue(double v) {
  kcnet::v1::Value out;
  out.set_double_value(v);
  return out;
}

// A change of `type`/`id` setting the given (field, value) pairs.
inline kcnet::v1::RecordChange Change(
    uint32_t type, const std::string& id,
    const std::vector<std::pair<uint32_t, kcnet::v1::Value>>& fields) {
  kcnet::v1::RecordChange c;
  c.set_type(type);
  c.set_id(id);
  for (const auto& [number, value] : fields) {
    auto* f = c.add_fields();
    f->set_field(number);
    *f->mutable_value() = value;
  }
  return c;
}

inline kcnet::v1::RecordChange Deletion(uint32_t type, const std::string& id) {
  kcnet::v1::RecordChange c;
  c.set_type(type);
  c.set_id(id);
  c.set_deleted(true);
  return c;
}

// The value of field `number` in a full-state change, or a null Value.
inline kcnet::v1::Value FieldOf(const kcnet::v1::RecordChange& c, uint32_t number) {
  for (const auto& f : c.fields()) {
    if (f.field() == number) return f.value();
  }
  return {};
}

}  // namespace kcnet::testing

#endif  // KCNET_TESTS_TESTING_TEST_UTIL_H_
