#include "sync/model/record_types.h"

#include <algorithm>

#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/reflection.h"
#include "kcnet/v1/domain.pb.h"

namespace kcnet::model {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using kcnet::v1::RecordChange;
using kcnet::v1::Value;
using sync::FieldSpec;
using sync::FieldType;
using sync::RecordTypeSpec;

// The one table of synced types: id, message, extra indexes (by field name).
struct TypeEntry {
  uint32_t type;
  const Descriptor* descriptor;
  std::vector<std::vector<std::string>> indexes;
};

std::vector<TypeEntry> Entries() {
  return {
      {kFacilityType, kcnet::v1::Facility::descriptor(), {}},
      {kVisitType, kcnet::v1::Visit::descriptor(), {{"facility_id"}}},
      {kSupportRequestType, kcnet::v1::SupportRequest::descriptor(), {{"facility_id"}}},
      {kRequestEventType, kcnet::v1::RequestEvent::descriptor(), {{"request_id"}}},
      {kAttachmentType, kcnet::v1::Attachment::descriptor(), {{"owner_id"}, {"sha256"}}},
  };
}

// Value constraints that the descriptors cannot say, by field-name pattern.
void ApplyConstraints(FieldSpec* f) {
  const std::string& n = f->name;
  if (n == "latitude") {
    f->min_double = -90;
    f->max_double = 90;
  } else if (n == "longitude") {
    f->min_double = -180;
    f->max_double = 180;
  } else if (n == "workers" || n.ends_with("_vnd") || n.ends_with("_ms") || n.ends_with("_id") ||
             n == "created_by") {
    if (f->type == FieldType::kInt) f->min_int = 0;
  }
  if (f->type == FieldType::kString)
    f->max_bytes = (n == "description" || n == "findings" || n == "note" || n == "decision_note")
                       ? 16 * 1024
                       : 1024;
}

std::string TableName(const Descriptor& d) {
  std::string out;
  for (char c : d.name()) {
    if (c >= 'A' && c <= 'Z') {
      if (!out.empty()) out.push_back('_');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<RecordTypeSpec> SpecFromDescriptor(uint32_t type_id, const Descriptor& d) {
  RecordTypeSpec spec;
  spec.type = type_id;
  spec.name = TableName(d);
  const FieldDescriptor* id = d.FindFieldByNumber(1);
  const FieldDescriptor* bucket = d.FindFieldByNumber(2);
  if (id == nullptr || id->name() != "id" || id->type() != FieldDescriptor::TYPE_STRING ||
      bucket == nullptr || bucket->name() != "commune_id" ||
      bucket->type() != FieldDescriptor::TYPE_INT64) {
    return absl::InvalidArgumentError(
        absl::StrCat(d.full_name(), ": field 1 must be string id and 2 int64 commune_id"));
  }
  spec.bucket_field = 2;
  for (int i = 0; i < d.field_count(); ++i) {
    const FieldDescriptor* fd = d.field(i);
    if (fd->number() == 1) continue;
    FieldSpec f;
    f.number = static_cast<uint32_t>(fd->number());
    f.name = fd->name();
    if (fd->is_repeated()) {
      if (fd->cpp_type() != FieldDescriptor::CPPTYPE_ENUM) {
        return absl::InvalidArgumentError(
            absl::StrCat(fd->full_name(), ": only repeated enums are supported"));
      }
      f.type = FieldType::kBytes;
      f.max_bytes = 1024;
      f.repeated_enum = true;
      for (int v = 0; v < fd->enum_type()->value_count(); ++v) {
        f.enum_values.insert(fd->enum_type()->value(v)->number());
      }
    } else {
      switch (fd->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
        case FieldDescriptor::CPPTYPE_INT64:
        case FieldDescriptor::CPPTYPE_UINT32:
        case FieldDescriptor::CPPTYPE_UINT64:
          f.type = FieldType::kInt;
          break;
        case FieldDescriptor::CPPTYPE_ENUM:
          f.type = FieldType::kInt;
          for (int v = 0; v < fd->enum_type()->value_count(); ++v) {
            f.enum_values.insert(fd->enum_type()->value(v)->number());
          }
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
        case FieldDescriptor::CPPTYPE_FLOAT:
          f.type = FieldType::kDouble;
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          f.type = FieldType::kBool;
          break;
        case FieldDescriptor::CPPTYPE_STRING:
          f.type =
              fd->type() == FieldDescriptor::TYPE_BYTES ? FieldType::kBytes : FieldType::kString;
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat(fd->full_name(), ": message fields are not supported in records"));
      }
    }
    ApplyConstraints(&f);
    spec.fields.push_back(std::move(f));
  }
  return spec;
}

const sync::Schema& KcnetSchema() {
  static const sync::Schema* schema = [] {
    std::vector<RecordTypeSpec> specs;
    for (const TypeEntry& e : Entries()) {
      absl::StatusOr<RecordTypeSpec> spec = SpecFromDescriptor(e.type, *e.descriptor);
      if (!spec.ok()) {
        std::cerr << "kcnet schema: " << spec.status() << "\n";
        std::abort();
      }
      for (const auto& names : e.indexes) {
        std::vector<uint32_t> numbers;
        for (const std::string& n : names) {
          numbers.push_back(static_cast<uint32_t>(e.descriptor->FindFieldByName(n)->number()));
        }
        spec->indexes.push_back(numbers);
      }
      // A request's status moves only by life-cycle transitions, each checked against the
      // status its maker saw; an audit event's time is the server's.
      for (FieldSpec& f : spec->fields) {
        if (e.descriptor == kcnet::v1::SupportRequest::descriptor() &&
            f.number == kcnet::v1::SupportRequest::kStatusFieldNumber) {
          f.guarded = true;
        }
        if (e.descriptor == kcnet::v1::RequestEvent::descriptor() &&
            f.number == kcnet::v1::RequestEvent::kAtMsFieldNumber) {
          f.server_time = true;
        }
      }
      specs.push_back(std::move(*spec));
    }
    absl::StatusOr<sync::Schema> built = sync::Schema::Create(std::move(specs));
    if (!built.ok()) {
      std::cerr << "kcnet schema: " << built.status() << "\n";
      std::abort();
    }
    return new sync::Schema(std::move(*built));
  }();
  return *schema;
}

absl::StatusOr<sync::Schema> KcnetSchemaWithout(
    const std::vector<uint32_t>& types, const std::vector<std::pair<uint32_t, uint32_t>>& fields) {
  for (uint32_t t : types) {
    if (KcnetSchema().Find(t) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown record type ", t));
    }
  }
  std::vector<RecordTypeSpec> specs;
  for (const RecordTypeSpec& t : KcnetSchema().types()) {
    if (std::find(types.begin(), types.end(), t.type) != types.end()) continue;
    specs.push_back(t);
  }
  for (const auto& [type, number] : fields) {
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [type = type](const RecordTypeSpec& s) { return s.type == type; });
    if (spec == specs.end() || spec->IndexOf(number) < 0 || number == spec->bucket_field) {
      return absl::InvalidArgumentError(
          absl::StrCat("no field ", number, " of record type ", type, " to leave out"));
    }
    spec->fields.erase(spec->fields.begin() + spec->IndexOf(number));
    // Indexes naming it go with it.
    std::erase_if(spec->indexes, [number = number](const std::vector<uint32_t>& index) {
      return std::find(index.begin(), index.end(), number) != index.end();
    });
  }
  return sync::Schema::Create(std::move(specs));
}

const sync::Schema& PreviousKcnetSchema() {
  static const sync::Schema* schema = [] {
    absl::StatusOr<sync::Schema> previous = KcnetSchemaWithout(
        {kRequestEventType}, {{kFacilityType, kcnet::v1::Facility::kCreatedMsFieldNumber}});
    if (!previous.ok()) {
      std::cerr << "kcnet previous schema: " << previous.status() << "\n";
      std::abort();
    }
    return new sync::Schema(*std::move(previous));
  }();
  return *schema;
}

absl::StatusOr<RecordChange> ToChange(const Message& message) {
  const Descriptor* d = message.GetDescriptor();
  const sync::RecordTypeSpec* spec = nullptr;
  for (const auto& t : KcnetSchema().types()) {
    if (t.name == TableName(*d)) spec = &t;
  }
  if (spec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(d->full_name(), " is not a synced record"));
  }
  const Reflection* r = message.GetReflection();
  RecordChange change;
  change.set_type(spec->type);
  absl::StatusOr<std::string> id = sync::UuidFromText(r->GetString(message, d->field(0)));
  if (!id.ok()) return absl::InvalidArgumentError(absl::StrCat("id: ", id.status().message()));
  change.set_id(*id);
  for (const FieldSpec& f : spec->fields) {
    const FieldDescriptor* fd = d->FindFieldByNumber(static_cast<int>(f.number));
    auto* fc = change.add_fields();
    fc->set_field(f.number);
    Value* v = fc->mutable_value();
    if (fd->is_repeated()) {
      std::string packed;
      {
        google::protobuf::io::StringOutputStream stream(&packed);
        google::protobuf::io::CodedOutputStream out(&stream);
        for (int i = 0; i < r->FieldSize(message, fd); ++i) {
          out.WriteVarint64(static_cast<uint64_t>(r->GetRepeatedEnumValue(message, fd, i)));
        }
      }
      v->set_bytes_value(packed);
      continue;
    }
    switch (fd->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        v->set_int_value(r->GetInt32(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        v->set_int_value(r->GetInt64(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        v->set_int_value(r->GetUInt32(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        v->set_int_value(static_cast<int64_t>(r->GetUInt64(message, fd)));
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        v->set_int_value(r->GetEnumValue(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        v->set_double_value(r->GetDouble(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        v->set_double_value(r->GetFloat(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        v->set_bool_value(r->GetBool(message, fd));
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        if (fd->type() == FieldDescriptor::TYPE_BYTES) {
          v->set_bytes_value(r->GetString(message, fd));
        } else {
          v->set_string_value(r->GetString(message, fd));
        }
        break;
      default:
        break;
    }
  }
  return change;
}

absl::Status FromChange(const RecordChange& change, Message* out) {
  const Descriptor* d = out->GetDescriptor();
  const sync::RecordTypeSpec* spec = KcnetSchema().Find(change.type());
  if (spec == nullptr || spec->name != TableName(*d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("type: change of type ", change.type(), " is not a ", d->full_name()));
  }
  const Reflection* r = out->GetReflection();
  absl::StatusOr<std::string> id = sync::UuidToText(change.id());
  if (!id.ok()) return id.status();
  r->SetString(out, d->field(0), *id);
  for (const auto& fc : change.fields()) {
    const FieldDescriptor* fd = d->FindFieldByNumber(static_cast<int>(fc.field()));
    if (fd == nullptr) continue;  // a newer server's field: kept in the store, not here
    const Value& v = fc.value();
    if (fd->is_repeated()) {
      r->ClearField(out, fd);
      google::protobuf::io::CodedInputStream in(
          reinterpret_cast<const uint8_t*>(v.bytes_value().data()),
          static_cast<int>(v.bytes_value().size()));
      uint64_t e;
      while (in.ReadVarint64(&e)) r->AddEnumValue(out, fd, static_cast<int>(e));
      continue;
    }
    if (v.kind_case() == Value::KIND_NOT_SET) {
      r->ClearField(out, fd);
      continue;
    }
    switch (fd->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(out, fd, static_cast<int32_t>(v.int_value()));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(out, fd, v.int_value());
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(out, fd, static_cast<uint32_t>(v.int_value()));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(out, fd, static_cast<uint64_t>(v.int_value()));
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnumValue(out, fd, static_cast<int>(v.int_value()));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(out, fd, v.double_value());
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(out, fd, static_cast<float>(v.double_value()));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(out, fd, v.bool_value());
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        r->SetString(
            out, fd,
            fd->type() == FieldDescriptor::TYPE_BYTES ? v.bytes_value() : v.string_value());
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace kcnet::model
