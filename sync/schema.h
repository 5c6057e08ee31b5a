// The record types the sync core stores, described once as data: a type id, a table
// name, the bucket field and the typed fields with their constraints. The rules library
// (sync/model) builds this table from the proto descriptors of domain.proto; tests may
// build their own. Nothing in the sync core is written per record type.
//
// Thread-safety: a Schema is immutable after Create() and safe to share.
#ifndef KCNET_SYNC_SCHEMA_H_
#define KCNET_SYNC_SCHEMA_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {

enum class FieldType { kInt, kDouble, kString, kBytes, kBool };

absl::string_view FieldTypeName(FieldType type);

struct FieldSpec {
  uint32_t number = 0;  // the proto field number; the wire's field id
  std::string name;     // the column name
  FieldType type = FieldType::kInt;
  // Constraints checked on every incoming value (null is always allowed).
  int64_t min_int = std::numeric_limits<int64_t>::min();
  int64_t max_int = std::numeric_limits<int64_t>::max();
  double min_double = -std::numeric_limits<double>::max();
  double max_double = std::numeric_limits<double>::max();
  size_t max_bytes = 64 * 1024;              // strings and bytes
  absl::flat_hash_set<int64_t> enum_values;  // when non-empty, the only ints allowed
  // A guarded field (a life-cycle state) is never merged field by field. A change that
  // sets it to a new value is checked against the state its writer had seen: if another
  // writer changed the field since (op above the change's base_op), the server refuses
  // the change; otherwise the change is causally later and is applied whole, whatever the
  // clocks say. So the state the business rules checked is the state that is stored.
  bool guarded = false;
  // The server writes this field itself when it stores a new record: its clock's Unix ms,
  // whatever the writer sent (an audit time must not be the tablet's).
  bool server_time = false;
  // A repeated enum: kBytes holding the values as packed varints (the proto wire form),
  // each of which must be one of `enum_values` other than 0 (unspecified).
  bool repeated_enum = false;
};

struct RecordTypeSpec {
  uint32_t type = 0;              // the wire's record type id, 1..
  std::string name;               // the table name, e.g. "visit"
  uint32_t bucket_field = 0;      // the field holding the bucket (org unit id); kInt
  std::vector<FieldSpec> fields;  // every field but the id, in column order
  // Secondary indexes the domain needs, as lists of field numbers. The store always adds
  // (bucket, op), which also serves queries by bucket.
  std::vector<std::vector<uint32_t>> indexes;

  // Position of field `number` in `fields`, or -1.
  int IndexOf(uint32_t number) const;
  const FieldSpec* Field(uint32_t number) const;
  int bucket_index() const { return IndexOf(bucket_field); }
};

class Schema {
 public:
  // Checks the specs (unique ids and names, identifiers, field numbers ascending, the
  // bucket field exists and is an integer) and builds the lookup tables. INVALID_ARGUMENT
  // names the problem. Fields are listed in ascending number order: a row's checksum
  // hashes them in that order, so that a device that keeps fields its schema does not know
  // (docs/SYNC.md, "Upgrades") hashes them where the server's schema has them; a new field
  // takes a new, higher number and goes last.
  static absl::StatusOr<Schema> Create(std::vector<RecordTypeSpec> types);

  // nullptr for an unknown type.
  const RecordTypeSpec* Find(uint32_t type) const;
  const RecordTypeSpec* FindByName(absl::string_view name) const;
  const std::vector<RecordTypeSpec>& types() const { return types_; }

  // Checks `value` against `field`'s type and constraints. INVALID_ARGUMENT names the
  // field and the reason.
  static absl::Status ValidateValue(const RecordTypeSpec& type, const FieldSpec& field,
                                    const kcnet::v1::Value& value);

  // Checks a change's shape and values: a known type, a 16-byte id, known fields named
  // once each (never the id), valid values, no fields on a tombstone. INVALID_ARGUMENT
  // starts with `path` (e.g. "changes[2]") and names the field and the reason; on failure
  // `*bad_path` (if given) receives the offending path.
  absl::Status ValidateChange(const kcnet::v1::RecordChange& change, absl::string_view path,
                              std::string* bad_path = nullptr) const;

  // The same for a change a device downloads from a server whose schema may be newer than
  // its own: a record type or a field this schema does not know is not an error (the
  // device keeps it: docs/SYNC.md, "Upgrades"); its id, shape and known fields are checked
  // as above.
  absl::Status ValidateDownloaded(const kcnet::v1::RecordChange& change,
                                  absl::string_view path) const;

 private:
  absl::Status Validate(const kcnet::v1::RecordChange& change, absl::string_view path,
                        std::string* bad_path, bool allow_unknown) const;

  std::vector<RecordTypeSpec> types_;
  absl::flat_hash_map<uint32_t, size_t> by_type_;
  absl::flat_hash_map<std::string, size_t> by_name_;
};

// Record ids are UUIDs: 16 bytes on the wire, canonical lowercase text in the store and
// the APIs ("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f").
absl::StatusOr<std::string> UuidToText(absl::string_view bytes16);
absl::StatusOr<std::string> UuidFromText(absl::string_view text);
// The same into `out` (16 bytes), without allocating: false when `text` is not a UUID.
bool UuidTextToBytes(absl::string_view text, char* out);

// True when `text` is valid UTF-8 (no overlongs, no surrogates).
bool IsValidUtf8(absl::string_view text);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_SCHEMA_H_
