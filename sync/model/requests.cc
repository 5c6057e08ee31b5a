#include "sync/model/requests.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"

namespace kcnet::model {

using kcnet::v1::RecordChange;
using kcnet::v1::RequestAction;
using kcnet::v1::RequestEvent;
using kcnet::v1::SupportRequest;

std::string NewRecordIdBytes(absl::Time now) {
  const auto ms = static_cast<uint64_t>(std::max<int64_t>(absl::ToUnixMillis(now), 0));
  std::string bytes(16, '\0');
  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<char>(ms >> (8 * (5 - i)));
  // The 74 random bits come from the system's CSPRNG (glibc 2.36+, Android's bionic and
  // Apple's libc all have arc4random_buf): an id seen once must not let anyone guess the
  // ids made after it.
  arc4random_buf(bytes.data() + 6, 10);
  bytes[6] = static_cast<char>((bytes[6] & 0x0f) | 0x70);  // version 7
  bytes[8] = static_cast<char>((bytes[8] & 0x3f) | 0x80);  // RFC 9562 variant
  return bytes;
}

std::string NewRecordId() { return *sync::UuidToText(NewRecordIdBytes()); }

kcnet::v1::Value IntValue(int64_t v) {
  kcnet::v1::Value out;
  out.set_int_value(v);
  return out;
}

kcnet::v1::Value TextValue(const std::string& v) {
  kcnet::v1::Value out;
  out.set_string_value(v);
  return out;
}

void SetField(RecordChange* change, uint32_t number, const kcnet::v1::Value& value) {
  for (auto& f : *change->mutable_fields()) {
    if (f.field() == number) {
      *f.mutable_value() = value;
      return;
    }
  }
  auto* f = change->add_fields();
  f->set_field(number);
  *f->mutable_value() = value;
}

RequestEvent NewRequestEvent(const SupportRequest& request, int64_t actor_id, RequestAction action,
                             kcnet::v1::RequestStatus to, const std::string& note,
                             int64_t amount_vnd, int64_t now_ms) {
  RequestEvent e;
  e.set_id(NewRecordId());
  e.set_commune_id(request.commune_id());
  e.set_request_id(request.id());
  e.set_actor_id(actor_id);
  e.set_action(action);
  e.set_from_status(action == kcnet::v1::REQUEST_ACTION_CREATE
                        ? kcnet::v1::REQUEST_STATUS_UNSPECIFIED
                        : request.status());
  e.set_to_status(to);
  e.set_note(note);
  e.set_at_ms(now_ms);
  e.set_amount_vnd(amount_vnd);
  return e;
}

absl::StatusOr<std::vector<RecordChange>> RequestActionChanges(const SupportRequest& current,
                                                               uint64_t base_op, const Actor& actor,
                                                               const RequestActionInput& input,
                                                               int64_t now_ms) {
  std::vector<RecordChange> out;
  if (input.action == kcnet::v1::REQUEST_ACTION_COMMENT) {
    if (input.note.empty()) return absl::InvalidArgumentError("note: a comment needs text");
    absl::StatusOr<RecordChange> event = ToChange(NewRequestEvent(
        current, actor.user_id, input.action, current.status(), input.note, 0, now_ms));
    if (!event.ok()) return event.status();
    out.push_back(*std::move(event));
    return out;
  }
  absl::StatusOr<const Transition*> t =
      FindTransition(input.action, current.status(), actor, current.author_id());
  if (!t.ok())
    return absl::Status(t.status().code(), absl::StrCat("status: ", t.status().message()));
  if (input.action == kcnet::v1::REQUEST_ACTION_APPROVE) {
    if (input.approved_amount_vnd <= 0 ||
        input.approved_amount_vnd > current.requested_amount_vnd()) {
      return absl::InvalidArgumentError(
          absl::StrCat("approved_amount_vnd: must be above 0 and at most the requested ",
                       current.requested_amount_vnd(), " VND"));
    }
    if (input.funding != kcnet::v1::FUNDING_SOURCE_LOCAL &&
        input.funding != kcnet::v1::FUNDING_SOURCE_NATIONAL) {
      return absl::InvalidArgumentError("funding: must be LOCAL or NATIONAL");
    }
  }
  SupportRequest id_only;
  id_only.set_id(current.id());
  absl::StatusOr<RecordChange> change = ToChange(id_only);
  if (!change.ok()) return change.status();
  change->clear_fields();
  change->set_base_op(base_op);
  SetField(&*change, SupportRequest::kStatusFieldNumber, IntValue((*t)->to));
  SetField(&*change, SupportRequest::kUpdatedMsFieldNumber, IntValue(now_ms));
  if (input.action != kcnet::v1::REQUEST_ACTION_SUBMIT &&
      input.action != kcnet::v1::REQUEST_ACTION_CANCEL) {
    SetField(&*change, SupportRequest::kDecisionNoteFieldNumber, TextValue(input.note));
  }
  const int64_t amount =
      input.action == kcnet::v1::REQUEST_ACTION_APPROVE ? input.approved_amount_vnd : 0;
  if (input.action == kcnet::v1::REQUEST_ACTION_APPROVE) {
    SetField(&*change, SupportRequest::kApprovedAmountVndFieldNumber, IntValue(amount));
    SetField(&*change, SupportRequest::kApprovedFundingFieldNumber, IntValue(input.funding));
  }
  absl::StatusOr<RecordChange> event = ToChange(
      NewRequestEvent(current, actor.user_id, input.action, (*t)->to, input.note, amount, now_ms));
  if (!event.ok()) return event.status();
  out.push_back(*std::move(change));
  out.push_back(*std::move(event));
  return out;
}

absl::StatusOr<RecordChange> MaskedChange(const google::protobuf::Message& message,
                                          const std::vector<std::string>& paths,
                                          const std::vector<std::string>& read_only,
                                          absl::string_view paths_name) {
  absl::StatusOr<RecordChange> full = ToChange(message);
  if (!full.ok()) return full.status();
  if (paths.empty()) return full;
  RecordChange out = *full;
  out.clear_fields();
  const google::protobuf::Descriptor* d = message.GetDescriptor();
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& path = paths[i];
    const google::protobuf::FieldDescriptor* fd = d->FindFieldByName(path);
    if (fd == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(paths_name, "[", i, "]: '", path, "' is not a field of ", d->name()));
    }
    for (const std::string& ro : read_only) {
      if (ro == path) {
        return absl::InvalidArgumentError(
            absl::StrCat(paths_name, "[", i, "]: ", path, " cannot be changed here"));
      }
    }
    for (const auto& f : full->fields()) {
      if (static_cast<int>(f.field()) == fd->number()) *out.add_fields() = f;
    }
  }
  return out;
}

std::string RecordFieldMessage(const kcnet::v1::Mutation& m, absl::string_view reason) {
  if (!absl::StartsWith(reason, "changes[")) return std::string(reason);
  const size_t close = reason.find(']');
  int index = 0;
  if (close == absl::string_view::npos || !absl::SimpleAtoi(reason.substr(8, close - 8), &index) ||
      index < 0 || index >= m.changes_size()) {
    return std::string(reason);
  }
  absl::string_view rest = reason.substr(close + 1);
  if (absl::StartsWith(rest, ".fields[")) {
    const size_t colon = rest.find(": ");
    if (colon != absl::string_view::npos) return std::string(rest.substr(colon + 2));
  }
  const sync::RecordTypeSpec* type = KcnetSchema().Find(m.changes(index).type());
  if (absl::StartsWith(rest, ".") && type != nullptr) return absl::StrCat(type->name, rest);
  return std::string(reason);
}

}  // namespace kcnet::model
