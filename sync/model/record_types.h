// The kcnet record types as the sync core sees them, derived from the descriptors of
// proto/kcnet/v1/domain.proto: one table (kRecordTypes) says which messages sync, under
// which type id, and which extra indexes and value constraints they need; everything else
// (fields, column types, enum values) comes from the descriptors.
//
// Thread-safety: KcnetSchema() builds once and returns a shared immutable Schema.
#ifndef KCNET_SYNC_MODEL_RECORD_TYPES_H_
#define KCNET_SYNC_MODEL_RECORD_TYPES_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/schema.h"

namespace kcnet::model {

// Wire type ids of the synced record types. Never renumber.
inline constexpr uint32_t kFacilityType = 1;
inline constexpr uint32_t kVisitType = 2;
inline constexpr uint32_t kSupportRequestType = 3;
inline constexpr uint32_t kRequestEventType = 4;
inline constexpr uint32_t kAttachmentType = 5;  // metadata only; bytes: attachments.proto

// The schema of every synced kcnet record type. Never fails for the built-in table (a
// failure is a programming error and aborts).
const sync::Schema& KcnetSchema();

// Today's schema without the record `types` and the (type, field number) `fields` listed:
// what an older app knew. Only a type's last fields may be left out if the store is to be
// upgraded later (new fields go at the end; DeviceStore::Open refuses a store whose
// columns are not the schema's first fields). INVALID_ARGUMENT for an unknown type or field.
absl::StatusOr<sync::Schema> KcnetSchemaWithout(
    const std::vector<uint32_t>& types, const std::vector<std::pair<uint32_t, uint32_t>>& fields);

// kcnet's schema one release behind (schema N-1), simulated for upgrade tests: today's
// without the RequestEvent type (4) and without Facility.created_ms (field 15, the last of
// Facility). A store or SDK client opened with it keeps those as unknown (docs/SYNC.md,
// "Upgrades"); reopened with KcnetSchema() it has them in its columns.
const sync::Schema& PreviousKcnetSchema();

// Builds a record-type spec from a message descriptor that follows domain.proto's rules
// (field 1 string id, field 2 int64 commune_id, scalar/enum/repeated-enum fields).
absl::StatusOr<sync::RecordTypeSpec> SpecFromDescriptor(
    uint32_t type_id, const google::protobuf::Descriptor& descriptor);

// Converts between a domain message (Facility, Visit, ...) and a record change carrying
// all its fields. ToChange fails on a malformed id (INVALID_ARGUMENT naming "id").
absl::StatusOr<kcnet::v1::RecordChange> ToChange(const google::protobuf::Message& message);
absl::Status FromChange(const kcnet::v1::RecordChange& change, google::protobuf::Message* out);

}  // namespace kcnet::model

#endif  // KCNET_SYNC_MODEL_RECORD_TYPES_H_
