#include "sync/model/rules.h"

#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"

namespace kcnet::model {
namespace {

using kcnet::v1::Attachment;
using kcnet::v1::Facility;
using kcnet::v1::RecordChange;
using kcnet::v1::RequestAction;
using kcnet::v1::RequestEvent;
using kcnet::v1::RequestStatus;
using kcnet::v1::Role;
using kcnet::v1::SupportRequest;
using kcnet::v1::Visit;

constexpr Role kCollaborator = kcnet::v1::ROLE_COMMUNE_COLLABORATOR;
constexpr Role kCoordinator = kcnet::v1::ROLE_DISTRICT_COORDINATOR;
constexpr Role kOfficer = kcnet::v1::ROLE_PROVINCE_OFFICER;

bool HasRole(const Actor& actor, std::initializer_list<Role> roles) {
  for (Role r : roles) {
    if (actor.role == r) return true;
  }
  return false;
}

std::string StatusName(RequestStatus s) {
  std::string name = kcnet::v1::RequestStatus_Name(s);
  return name.empty() ? absl::StrCat(static_cast<int>(s))
                      : name.substr(sizeof("REQUEST_STATUS_") - 1);
}

std::string RoleLabel(Role r) {
  std::string name = kcnet::v1::Role_Name(r);
  return name.empty() ? absl::StrCat(static_cast<int>(r)) : name.substr(sizeof("ROLE_") - 1);
}

// The field numbers a change sets to a value different from `before`.
std::vector<uint32_t> ChangedFields(const RecordChange& change,
                                    const std::optional<RecordChange>& before) {
  std::vector<uint32_t> out;
  for (const auto& f : change.fields()) {
    bool same = false;
    if (before.has_value()) {
      for (const auto& b : before->fields()) {
        if (b.field() == f.field()) {
          same = b.value().SerializeAsString() == f.value().SerializeAsString();
        }
      }
    }
    if (!same) out.push_back(f.field());
  }
  return out;
}

// Checks one mutation, change by change, with the records it touches laid over the store.
class MutationChecker {
 public:
  MutationChecker(const Actor& actor, const kcnet::v1::Mutation& m, sync::RecordReader& reader)
      : actor_(actor), m_(m), reader_(reader) {}

  absl::Status Check() {
    if (actor_.role == kcnet::v1::ROLE_ADMINISTRATOR ||
        actor_.role == kcnet::v1::ROLE_UNSPECIFIED) {
      return absl::PermissionDeniedError(
          "changes: administrators manage accounts and org units; records are written by "
          "collaborators, coordinators and officers");
    }
    for (int i = 0; i < m_.changes_size(); ++i) {
      path_ = absl::StrCat("changes[", i, "]");
      const RecordChange& change = m_.changes(i);
      absl::StatusOr<std::optional<RecordChange>> before = Current(change.type(), change.id());
      if (!before.ok()) return before.status();
      if (before->has_value() && (*before)->deleted()) {
        return Fail(absl::StatusCode::kFailedPrecondition, "id", "the record was deleted");
      }
      const std::optional<RecordChange> after = sync::LayOver(*before, change, 0);
      absl::Status status = CheckScope(change, *before);
      if (status.ok()) {
        switch (change.type()) {
          case kFacilityType:
            status = CheckFacility(change, *before, *after);
            break;
          case kVisitType:
            status = CheckVisit(change, *before, *after);
            break;
          case kSupportRequestType:
            status = CheckRequest(change, *before, *after);
            break;
          case kRequestEventType:
            status = CheckEvent(change, *before, *after);
            break;
          case kAttachmentType:
            status = CheckAttachment(change, *before, *after);
            break;
          default:
            status = Fail(absl::StatusCode::kInvalidArgument, "type", "not a kcnet record type");
        }
      }
      if (!status.ok()) return status;
      pending_[{change.type(), change.id()}] = *after;
    }
    return CheckTransitionsAreAudited();
  }

 private:
  absl::Status Fail(absl::StatusCode code, absl::string_view field, absl::string_view why) {
    return absl::Status(code, absl::StrCat(path_, ".", field, ": ", why));
  }

  absl::StatusOr<std::optional<RecordChange>> Current(uint32_t type, const std::string& id) {
    auto it = pending_.find({type, id});
    if (it != pending_.end()) return std::optional<RecordChange>(it->second);
    return reader_.Read(type, id);
  }

  template <typename T>
  absl::StatusOr<std::optional<T>> CurrentAs(uint32_t type, const std::string& id_text) {
    absl::StatusOr<std::string> id = sync::UuidFromText(id_text);
    if (!id.ok()) return std::optional<T>();
    absl::StatusOr<std::optional<RecordChange>> rec = Current(type, *id);
    if (!rec.ok()) return rec.status();
    if (!rec->has_value() || (*rec)->deleted()) return std::optional<T>();
    T out;
    absl::Status status = FromChange(**rec, &out);
    if (!status.ok()) return status;
    return std::optional<T>(out);
  }

  template <typename T>
  static T As(const RecordChange& change) {
    T out;
    FromChange(change, &out).IgnoreError();
    return out;
  }

  bool InScope(int64_t commune) const { return actor_.in_scope && actor_.in_scope(commune); }

  // A record the actor may not see reads exactly like one that does not exist: the same
  // code, field and words (the id is the caller's own), so a refusal never tells another
  // commune's record from a missing one.
  absl::Status NotFound(const RecordChange& change) {
    const sync::RecordTypeSpec* spec = KcnetSchema().Find(change.type());
    absl::StatusOr<std::string> id = sync::UuidToText(change.id());
    return Fail(absl::StatusCode::kNotFound, "id",
                absl::StrCat(spec != nullptr ? spec->name : "record", " ",
                             id.ok() ? *id : std::string("?"), " does not exist"));
  }

  absl::Status CheckScope(const RecordChange& change, const std::optional<RecordChange>& before) {
    if (before.has_value()) {
      // A record only the device holds yet (its own pending creation) has no bucket set.
      int64_t commune = before->bucket();
      for (const auto& f : before->fields()) {
        if (commune == 0 && f.field() == 2) commune = f.value().int_value();
      }
      if (!InScope(commune)) return NotFound(change);
      return absl::OkStatus();
    }
    // A new record: its commune is the caller's own choice, so naming it leaks nothing. A
    // change without one is an edit of a record that does not exist.
    const kcnet::v1::FieldChange* commune = nullptr;
    for (const auto& f : change.fields()) {
      if (f.field() == 2) commune = &f;
    }
    if (commune == nullptr || change.deleted()) return NotFound(change);
    if (!InScope(commune->value().int_value())) {
      return Fail(absl::StatusCode::kPermissionDenied, "commune_id",
                  absl::StrCat(
                      "org unit ", commune->value().int_value(),
                      " is outside your communes (records belong to a commune in your org units)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckFacility(const RecordChange& change, const std::optional<RecordChange>& before,
                             const RecordChange& after) {
    if (change.deleted()) {
      if (!HasRole(actor_, {kCoordinator, kOfficer})) {
        return Fail(absl::StatusCode::kPermissionDenied, "deleted",
                    "only coordinators and officers delete facilities");
      }
      return absl::OkStatus();
    }
    if (!HasRole(actor_, {kCollaborator, kCoordinator, kOfficer})) {
      return Fail(absl::StatusCode::kPermissionDenied, "type", "your role may not edit facilities");
    }
    const Facility f = As<Facility>(after);
    if (f.name().empty()) return Fail(absl::StatusCode::kInvalidArgument, "name", "is required");
    if (!before.has_value()) {
      if (f.created_by() != actor_.user_id) {
        return Fail(absl::StatusCode::kInvalidArgument, "created_by", "must be you");
      }
      return absl::OkStatus();
    }
    for (uint32_t n : ChangedFields(change, before)) {
      if (n == Facility::kCreatedByFieldNumber || n == Facility::kCreatedMsFieldNumber) {
        return Fail(absl::StatusCode::kPermissionDenied,
                    n == Facility::kCreatedByFieldNumber ? "created_by" : "created_ms",
                    "may not change");
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckVisit(const RecordChange& change, const std::optional<RecordChange>& before,
                          const RecordChange& after) {
    const Visit v = As<Visit>(before.has_value() && change.deleted() ? *before : after);
    const bool own = v.collaborator_id() == actor_.user_id;
    if (change.deleted()) {
      if (!own && !HasRole(actor_, {kCoordinator})) {
        return Fail(absl::StatusCode::kPermissionDenied, "deleted",
                    "only the visit's collaborator or a coordinator deletes it");
      }
      return absl::OkStatus();
    }
    if (!HasRole(actor_, {kCollaborator, kCoordinator})) {
      return Fail(absl::StatusCode::kPermissionDenied, "type",
                  "visits are recorded by collaborators and coordinators");
    }
    if (!before.has_value()) {
      if (!own) return Fail(absl::StatusCode::kInvalidArgument, "collaborator_id", "must be you");
      return CheckFacilityRef(v.facility_id(), v.commune_id());
    }
    if (!own && !HasRole(actor_, {kCoordinator})) {
      return Fail(absl::StatusCode::kPermissionDenied, "collaborator_id",
                  "only the visit's collaborator or a coordinator edits it");
    }
    for (uint32_t n : ChangedFields(change, before)) {
      if (n == Visit::kCollaboratorIdFieldNumber || n == Visit::kFacilityIdFieldNumber) {
        return Fail(absl::StatusCode::kPermissionDenied,
                    n == Visit::kFacilityIdFieldNumber ? "facility_id" : "collaborator_id",
                    "may not change");
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckFacilityRef(const std::string& facility_id, int64_t commune_id) {
    absl::StatusOr<std::optional<Facility>> facility =
        CurrentAs<Facility>(kFacilityType, facility_id);
    if (!facility.ok()) return facility.status();
    if (!facility->has_value() || !InScope((*facility)->commune_id())) {
      return Fail(absl::StatusCode::kNotFound, "facility_id",
                  absl::StrCat("facility '", facility_id, "' does not exist"));
    }
    if ((*facility)->commune_id() != commune_id) {
      return Fail(absl::StatusCode::kInvalidArgument, "commune_id",
                  "must be the facility's commune");
    }
    return absl::OkStatus();
  }

  absl::Status CheckRequest(const RecordChange& change, const std::optional<RecordChange>& before,
                            const RecordChange& after) {
    if (change.deleted()) {
      return Fail(absl::StatusCode::kFailedPrecondition, "deleted",
                  "support requests are cancelled, not deleted");
    }
    const SupportRequest r = As<SupportRequest>(after);
    if (!before.has_value()) {
      if (!HasRole(actor_, {kCollaborator, kCoordinator})) {
        return Fail(absl::StatusCode::kPermissionDenied, "type",
                    "support requests are drafted by collaborators and coordinators");
      }
      if (r.status() != kcnet::v1::REQUEST_STATUS_DRAFT) {
        return Fail(absl::StatusCode::kInvalidArgument, "status", "a new request is a DRAFT");
      }
      if (r.author_id() != actor_.user_id) {
        return Fail(absl::StatusCode::kInvalidArgument, "author_id", "must be you");
      }
      if (r.approved_amount_vnd() != 0 ||
          r.approved_funding() != kcnet::v1::FUNDING_SOURCE_UNSPECIFIED ||
          !r.decision_note().empty()) {
        return Fail(absl::StatusCode::kInvalidArgument, "approved_amount_vnd",
                    "decisions are made by reviewers, not in a draft");
      }
      created_.insert(change.id());
      return CheckFacilityRef(r.facility_id(), r.commune_id());
    }
    const SupportRequest old = As<SupportRequest>(*before);
    const std::vector<uint32_t> changed = ChangedFields(change, before);
    if (old.status() == r.status()) {
      // A content edit: the author's, while the request is a draft or returned.
      if (old.author_id() != actor_.user_id) {
        return Fail(absl::StatusCode::kPermissionDenied, "author_id",
                    "only the request's author edits it");
      }
      if (old.status() != kcnet::v1::REQUEST_STATUS_DRAFT &&
          old.status() != kcnet::v1::REQUEST_STATUS_RETURNED) {
        return Fail(absl::StatusCode::kFailedPrecondition, "status",
                    absl::StrCat("a ", StatusName(old.status()),
                                 " request cannot be edited (only DRAFT or RETURNED)"));
      }
      for (uint32_t n : changed) {
        switch (n) {
          case SupportRequest::kCategoryFieldNumber:
          case SupportRequest::kDescriptionFieldNumber:
          case SupportRequest::kRequestedAmountVndFieldNumber:
          case SupportRequest::kOwnContributionVndFieldNumber:
          case SupportRequest::kProposedFundingFieldNumber:
          case SupportRequest::kUpdatedMsFieldNumber:
            break;
          default:
            return Fail(absl::StatusCode::kPermissionDenied,
                        SupportRequest::descriptor()->FindFieldByNumber(n)->name(),
                        "may not change in an edit");
        }
      }
      return absl::OkStatus();
    }
    const Transition* t = TransitionBetween(old.status(), r.status());
    if (t == nullptr) {
      return Fail(absl::StatusCode::kFailedPrecondition, "status",
                  absl::StrCat("a request cannot go from ", StatusName(old.status()), " to ",
                               StatusName(r.status())));
    }
    absl::StatusOr<const Transition*> allowed =
        FindTransition(t->action, old.status(), actor_, old.author_id());
    if (!allowed.ok()) return Fail(allowed.status().code(), "status", allowed.status().message());
    for (uint32_t n : changed) {
      const bool approve_field = n == SupportRequest::kApprovedAmountVndFieldNumber ||
                                 n == SupportRequest::kApprovedFundingFieldNumber;
      if (n == SupportRequest::kStatusFieldNumber ||
          n == SupportRequest::kDecisionNoteFieldNumber ||
          n == SupportRequest::kUpdatedMsFieldNumber ||
          (approve_field && t->action == kcnet::v1::REQUEST_ACTION_APPROVE)) {
        continue;
      }
      return Fail(absl::StatusCode::kPermissionDenied,
                  SupportRequest::descriptor()->FindFieldByNumber(n)->name(),
                  "may not change with a status transition");
    }
    if (t->action == kcnet::v1::REQUEST_ACTION_APPROVE) {
      if (r.approved_amount_vnd() <= 0 || r.approved_amount_vnd() > r.requested_amount_vnd()) {
        return Fail(absl::StatusCode::kInvalidArgument, "approved_amount_vnd",
                    absl::StrCat("must be above 0 and at most the requested ",
                                 r.requested_amount_vnd(), " VND"));
      }
      if (r.approved_funding() != kcnet::v1::FUNDING_SOURCE_LOCAL &&
          r.approved_funding() != kcnet::v1::FUNDING_SOURCE_NATIONAL) {
        return Fail(absl::StatusCode::kInvalidArgument, "approved_funding",
                    "must be LOCAL or NATIONAL");
      }
    }
    transitions_.push_back({change.id(), t, path_});
    return absl::OkStatus();
  }

  absl::Status CheckEvent(const RecordChange& change, const std::optional<RecordChange>& before,
                          const RecordChange& after) {
    if (before.has_value() || change.deleted()) {
      return Fail(absl::StatusCode::kFailedPrecondition, "id",
                  "request events are append-only: never changed or deleted");
    }
    const RequestEvent e = As<RequestEvent>(after);
    if (e.actor_id() != actor_.user_id) {
      return Fail(absl::StatusCode::kInvalidArgument, "actor_id", "must be you");
    }
    absl::StatusOr<std::optional<SupportRequest>> request =
        CurrentAs<SupportRequest>(kSupportRequestType, e.request_id());
    if (!request.ok()) return request.status();
    if (!request->has_value() || !InScope((*request)->commune_id())) {
      return Fail(absl::StatusCode::kNotFound, "request_id",
                  absl::StrCat("support request '", e.request_id(), "' does not exist"));
    }
    if ((*request)->commune_id() != e.commune_id()) {
      return Fail(absl::StatusCode::kInvalidArgument, "commune_id",
                  "must be the request's commune");
    }
    // An event tells what the request's own change did, so it says nothing the change
    // does not: a comment keeps the status, a creation comes with its draft, and every
    // other action with its transition (checked once the whole mutation is seen).
    const SupportRequest& r = **request;
    switch (e.action()) {
      case kcnet::v1::REQUEST_ACTION_COMMENT:
        if (e.from_status() != r.status() || e.to_status() != r.status()) {
          return Fail(absl::StatusCode::kInvalidArgument, "to_status",
                      "a comment keeps the request's status");
        }
        break;
      case kcnet::v1::REQUEST_ACTION_CREATE:
        if (!created_.contains(*sync::UuidFromText(e.request_id())) ||
            e.from_status() != kcnet::v1::REQUEST_STATUS_UNSPECIFIED ||
            e.to_status() != kcnet::v1::REQUEST_STATUS_DRAFT) {
          return Fail(absl::StatusCode::kInvalidArgument, "action",
                      "a CREATE event comes with the new draft, in the same mutation");
        }
        break;
      default:
        if (!kcnet::v1::RequestAction_IsValid(e.action()) ||
            e.action() == kcnet::v1::REQUEST_ACTION_UNSPECIFIED) {
          return Fail(absl::StatusCode::kInvalidArgument, "action", "not a request action");
        }
        break;
    }
    const int64_t amount =
        e.action() == kcnet::v1::REQUEST_ACTION_APPROVE ? r.approved_amount_vnd() : 0;
    if (e.amount_vnd() != amount) {
      return Fail(absl::StatusCode::kInvalidArgument, "amount_vnd",
                  e.action() == kcnet::v1::REQUEST_ACTION_APPROVE
                      ? "must be the approved amount"
                      : "only an APPROVE event carries an amount");
    }
    events_.push_back({e, path_});
    return absl::OkStatus();
  }

  // An attachment: made by its author for a visit, request or facility in scope (NOT_FOUND
  // naming owner_id otherwise, as for a missing one); its content fields never change;
  // its author or a coordinator deletes it.
  absl::Status CheckAttachment(const RecordChange& change,
                               const std::optional<RecordChange>& before,
                               const RecordChange& after) {
    const Attachment a = As<Attachment>(before.has_value() && change.deleted() ? *before : after);
    const bool own = a.author_id() == actor_.user_id;
    if (change.deleted()) {
      if (!own && !HasRole(actor_, {kCoordinator})) {
        return Fail(absl::StatusCode::kPermissionDenied, "deleted",
                    "only the attachment's author or a coordinator deletes it");
      }
      return absl::OkStatus();
    }
    if (!HasRole(actor_, {kCollaborator, kCoordinator, kOfficer})) {
      return Fail(absl::StatusCode::kPermissionDenied, "type", "your role may not add attachments");
    }
    if (before.has_value()) {
      if (!own && !HasRole(actor_, {kCoordinator})) {
        return Fail(absl::StatusCode::kPermissionDenied, "author_id",
                    "only the attachment's author or a coordinator edits it");
      }
      for (uint32_t n : ChangedFields(change, before)) {
        if (n != Attachment::kCaptionFieldNumber && n != Attachment::kTakenAtMsFieldNumber &&
            n != Attachment::kLatitudeFieldNumber && n != Attachment::kLongitudeFieldNumber) {
          return Fail(absl::StatusCode::kPermissionDenied,
                      Attachment::descriptor()->FindFieldByNumber(static_cast<int>(n))->name(),
                      "may not change (only caption, taken_at_ms, latitude, longitude)");
        }
      }
      return absl::OkStatus();
    }
    if (!own) return Fail(absl::StatusCode::kInvalidArgument, "author_id", "must be you");
    if (a.size_bytes() <= 0 || a.size_bytes() > kAttachmentMaxBytes) {
      return Fail(absl::StatusCode::kInvalidArgument, "size_bytes",
                  absl::StrCat("must be above 0 and at most ", kAttachmentMaxBytes, " bytes"));
    }
    const auto& types = AttachmentMediaTypes();
    if (std::find(types.begin(), types.end(), a.media_type()) == types.end()) {
      return Fail(absl::StatusCode::kInvalidArgument, "media_type",
                  "must be image/jpeg, image/png, image/webp or application/pdf");
    }
    bool hex = a.sha256().size() == 64;
    for (char c : a.sha256()) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!hex) {
      return Fail(absl::StatusCode::kInvalidArgument, "sha256",
                  "must be 64 lowercase hexadecimal characters (the SHA-256 of the bytes)");
    }
    int64_t owner_commune = -1;
    switch (a.owner_type()) {
      case kcnet::v1::ATTACHMENT_OWNER_TYPE_VISIT: {
        absl::StatusOr<std::optional<Visit>> v = CurrentAs<Visit>(kVisitType, a.owner_id());
        if (!v.ok()) return v.status();
        if (v->has_value()) owner_commune = (*v)->commune_id();
        break;
      }
      case kcnet::v1::ATTACHMENT_OWNER_TYPE_SUPPORT_REQUEST: {
        absl::StatusOr<std::optional<SupportRequest>> r =
            CurrentAs<SupportRequest>(kSupportRequestType, a.owner_id());
        if (!r.ok()) return r.status();
        if (r->has_value()) owner_commune = (*r)->commune_id();
        break;
      }
      case kcnet::v1::ATTACHMENT_OWNER_TYPE_FACILITY: {
        absl::StatusOr<std::optional<Facility>> f =
            CurrentAs<Facility>(kFacilityType, a.owner_id());
        if (!f.ok()) return f.status();
        if (f->has_value()) owner_commune = (*f)->commune_id();
        break;
      }
      default:
        return Fail(absl::StatusCode::kInvalidArgument, "owner_type",
                    "must be VISIT, SUPPORT_REQUEST or FACILITY");
    }
    if (owner_commune < 0 || !InScope(owner_commune)) {
      return Fail(absl::StatusCode::kNotFound, "owner_id",
                  absl::StrCat("record '", a.owner_id(), "' does not exist"));
    }
    if (owner_commune != a.commune_id()) {
      return Fail(absl::StatusCode::kInvalidArgument, "commune_id", "must be the owner's commune");
    }
    return absl::OkStatus();
  }

  // Every status transition in the mutation comes with its audit event, and every event
  // of a life-cycle action with the transition it describes.
  absl::Status CheckTransitionsAreAudited() {
    auto matches = [](const Pending& t, const RequestEvent& e) {
      absl::StatusOr<std::string> text = sync::UuidToText(t.request_id);
      return text.ok() && e.request_id() == *text && e.action() == t.transition->action &&
             e.from_status() == t.transition->from && e.to_status() == t.transition->to;
    };
    for (const Pending& t : transitions_) {
      bool found = false;
      for (const auto& [e, path] : events_) found = found || matches(t, e);
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat(
            t.path, ".status: a transition needs its request event (action ",
            kcnet::v1::RequestAction_Name(t.transition->action), ") in the same mutation"));
      }
    }
    for (const auto& [e, path] : events_) {
      if (e.action() == kcnet::v1::REQUEST_ACTION_COMMENT ||
          e.action() == kcnet::v1::REQUEST_ACTION_CREATE) {
        continue;
      }
      bool found = false;
      for (const Pending& t : transitions_) found = found || matches(t, e);
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ".action: a ", kcnet::v1::RequestAction_Name(e.action()),
                         " event is written with the request's transition, in the same mutation"));
      }
    }
    return absl::OkStatus();
  }

  const Actor& actor_;
  const kcnet::v1::Mutation& m_;
  sync::RecordReader& reader_;
  std::string path_;
  std::map<std::pair<uint32_t, std::string>, RecordChange> pending_;
  struct Pending {
    std::string request_id;
    const Transition* transition;
    std::string path;
  };
  std::vector<Pending> transitions_;
  std::vector<std::pair<RequestEvent, std::string>> events_;  // with their paths
  absl::flat_hash_set<std::string> created_;                  // requests this mutation creates
};

}  // namespace

const std::vector<std::string>& AttachmentMediaTypes() {
  static const std::vector<std::string>* types =
      new std::vector<std::string>{"image/jpeg", "image/png", "image/webp", "application/pdf"};
  return *types;
}

const std::vector<Transition>& RequestTransitions() {
  using namespace kcnet::v1;
  static const std::vector<Transition>* table = new std::vector<Transition>{
      {REQUEST_ACTION_SUBMIT,
       REQUEST_STATUS_DRAFT,
       REQUEST_STATUS_SUBMITTED,
       {kCollaborator, kCoordinator},
       /*author_only=*/true},
      {REQUEST_ACTION_SUBMIT,
       REQUEST_STATUS_RETURNED,
       REQUEST_STATUS_SUBMITTED,
       {kCollaborator, kCoordinator},
       true},
      {REQUEST_ACTION_ENDORSE,
       REQUEST_STATUS_SUBMITTED,
       REQUEST_STATUS_ENDORSED,
       {kCoordinator},
       false,
       /*not_author=*/true},
      {REQUEST_ACTION_RETURN, REQUEST_STATUS_SUBMITTED, REQUEST_STATUS_RETURNED, {kCoordinator}},
      {REQUEST_ACTION_REJECT, REQUEST_STATUS_SUBMITTED, REQUEST_STATUS_REJECTED, {kCoordinator}},
      {REQUEST_ACTION_APPROVE, REQUEST_STATUS_ENDORSED, REQUEST_STATUS_APPROVED, {kOfficer}},
      {REQUEST_ACTION_RETURN, REQUEST_STATUS_ENDORSED, REQUEST_STATUS_RETURNED, {kOfficer}},
      {REQUEST_ACTION_REJECT, REQUEST_STATUS_ENDORSED, REQUEST_STATUS_REJECTED, {kOfficer}},
      {REQUEST_ACTION_START,
       REQUEST_STATUS_APPROVED,
       REQUEST_STATUS_IN_PROGRESS,
       {kOfficer, kCoordinator}},
      {REQUEST_ACTION_COMPLETE, REQUEST_STATUS_IN_PROGRESS, REQUEST_STATUS_COMPLETED, {kOfficer}},
      {REQUEST_ACTION_CANCEL,
       REQUEST_STATUS_DRAFT,
       REQUEST_STATUS_CANCELLED,
       {kCollaborator, kCoordinator},
       true},
      {REQUEST_ACTION_CANCEL,
       REQUEST_STATUS_SUBMITTED,
       REQUEST_STATUS_CANCELLED,
       {kCollaborator, kCoordinator},
       true},
      {REQUEST_ACTION_CANCEL,
       REQUEST_STATUS_RETURNED,
       REQUEST_STATUS_CANCELLED,
       {kCollaborator, kCoordinator},
       true},
  };
  return *table;
}

const Transition* TransitionBetween(RequestStatus from, RequestStatus to) {
  for (const Transition& t : RequestTransitions()) {
    if (t.from == from && t.to == to) return &t;
  }
  return nullptr;
}

absl::StatusOr<const Transition*> FindTransition(RequestAction action, RequestStatus from,
                                                 const Actor& actor, int64_t author_id) {
  const Transition* match = nullptr;
  for (const Transition& t : RequestTransitions()) {
    if (t.action == action && t.from == from) match = &t;
  }
  const std::string action_name =
      kcnet::v1::RequestAction_Name(action).substr(sizeof("REQUEST_ACTION_") - 1);
  if (match == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot ", action_name, " a ", StatusName(from), " request"));
  }
  bool role_ok = false;
  for (Role r : match->roles) role_ok = role_ok || r == actor.role;
  if (!role_ok) {
    return absl::PermissionDeniedError(
        absl::StrCat("a ", RoleLabel(actor.role), " may not ", action_name, " a request"));
  }
  if (match->author_only && actor.user_id != author_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("only the request's author may ", action_name, " it"));
  }
  if (match->not_author && actor.user_id == author_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("the request's author may not ", action_name, " it"));
  }
  return match;
}

absl::Status CheckMutation(const Actor& actor, const kcnet::v1::Mutation& mutation,
                           sync::RecordReader& reader) {
  return MutationChecker(actor, mutation, reader).Check();
}

sync::MutationValidator ValidatorFor(Actor actor) {
  return [actor = std::move(actor)](const kcnet::v1::Mutation& m, sync::RecordReader& reader) {
    return CheckMutation(actor, m, reader);
  };
}

}  // namespace kcnet::model
