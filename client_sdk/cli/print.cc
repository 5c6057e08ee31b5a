// How the `kcnet` field tool prints records (print.h).
#include "client_sdk/cli/print.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "client_sdk/cli/args.h"

namespace kcnet::cli {
namespace {

namespace v1 = ::kcnet::v1;

const google::protobuf::Descriptor* RecordDescriptor(uint32_t type) {
  switch (type) {  // sync/model/record_types.h
    case 1:
      return v1::Facility::descriptor();
    case 2:
      return v1::Visit::descriptor();
    case 3:
      return v1::SupportRequest::descriptor();
    case 4:
      return v1::RequestEvent::descriptor();
    default:
      return nullptr;
  }
}

std::string TypeName(uint32_t type) {
  switch (type) {
    case 1:
      return "facility";
    case 2:
      return "visit";
    case 3:
      return "request";
    case 4:
      return "request event";
    default:
      return absl::StrCat("record type ", type);
  }
}

std::string Category(v1::SupportCategory c) {
  return EnumName(v1::SupportCategory_descriptor(), "SUPPORT_CATEGORY_", c);
}

std::string Funding(v1::FundingSource f) {
  return EnumName(v1::FundingSource_descriptor(), "FUNDING_SOURCE_", f);
}

// A field's value for a person: enums by name.
std::string ValueText(const google::protobuf::FieldDescriptor* field, const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kIntValue:
      if (field != nullptr && field->enum_type() != nullptr) {
        absl::string_view prefix = "";
        const google::protobuf::EnumValueDescriptor* zero = field->enum_type()->value(0);
        const std::string zero_name = zero->name();
        const size_t underscore = zero_name.rfind('_');
        std::string p = underscore == std::string::npos ? "" : zero_name.substr(0, underscore + 1);
        prefix = p;
        return EnumName(field->enum_type(), prefix, static_cast<int>(value.int_value()));
      }
      return absl::StrCat(value.int_value());
    case v1::Value::kDoubleValue:
      return absl::StrCat(value.double_value());
    case v1::Value::kStringValue:
      return absl::StrCat("\"", OneLine(value.string_value()), "\"");
    case v1::Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case v1::Value::kBytesValue:
      return absl::StrCat("(", value.bytes_value().size(), " bytes)");
    default:
      return "(empty)";
  }
}

}  // namespace

std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\r", " "}, {"\n", " "}, {"\t", " "}});
}

std::string TimeText(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", time, absl::LocalTimeZone());
}

std::string TimeMsText(int64_t unix_ms) {
  return unix_ms == 0 ? "-" : TimeText(absl::FromUnixMillis(unix_ms));
}

std::string Vnd(int64_t amount) {
  std::string digits = absl::StrCat(amount < 0 ? -amount : amount);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back('.');
    out.push_back(digits[i]);
  }
  return absl::StrCat(amount < 0 ? "-" : "", out, " VND");
}

std::string UuidText(absl::string_view bytes) {
  std::string hex;
  for (unsigned char c : bytes) absl::StrAppendFormat(&hex, "%02x", c);
  if (bytes.size() != 16) return hex;
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

std::string Names::Unit(int64_t id, absl::string_view kind) const {
  if (client_ != nullptr) {
    absl::StatusOr<v1::OrgUnit> unit = client_->GetOrgUnit(id);
    if (unit.ok()) return absl::StrCat(OneLine(unit->name()), " (", unit->code(), ")");
  }
  return kind.empty() ? absl::StrCat(id) : absl::StrCat(kind, " ", id);
}

std::string Names::Person(int64_t id, absl::string_view kind) const {
  if (client_ != nullptr) {
    absl::StatusOr<v1::User> user = client_->GetDirectoryUser(id);
    if (user.ok() && !user->display_name().empty()) return OneLine(user->display_name());
  }
  return kind.empty() ? absl::StrCat(id) : absl::StrCat(kind, " ", id);
}

std::string UserLine(const v1::User& user, const Names& names) {
  std::vector<std::string> units;
  for (int64_t id : user.org_unit_ids()) units.push_back(names.Unit(id));
  return absl::StrCat(user.username(), " (", user.display_name(), "), ",
                      EnumName(v1::Role_descriptor(), "ROLE_", user.role()), " at ",
                      absl::StrJoin(units, ", "), ", user id ", user.id());
}

std::string FacilityLine(const v1::Facility& f, const Names& names) {
  std::string line = absl::StrCat(f.id(), "  ", OneLine(f.name()), "  (", OneLine(f.owner_name()),
                                  ")  ", names.Unit(f.commune_id(), "commune"));
  if (f.workers() > 0) absl::StrAppend(&line, ", ", f.workers(), " workers");
  if (!f.main_products().empty()) absl::StrAppend(&line, ", ", OneLine(f.main_products()));
  return line;
}

std::string FacilityDetails(const v1::Facility& f, const Names& names) {
  std::string out;
  auto line = [&](absl::string_view key, absl::string_view value) {
    if (!value.empty()) absl::StrAppend(&out, "  ", key, ": ", OneLine(value), "\n");
  };
  line("name", f.name());
  line("owner", f.owner_name());
  line("commune", names.Unit(f.commune_id(), ""));
  line("kind", EnumName(v1::FacilityKind_descriptor(), "FACILITY_KIND_", f.kind()));
  if (f.sector() != v1::SECTOR_UNSPECIFIED) {
    line("sector", EnumName(v1::Sector_descriptor(), "SECTOR_", f.sector()));
  }
  line("address", f.address());
  if (f.latitude() != 0 || f.longitude() != 0) {
    line("gps", absl::StrCat(f.latitude(), ", ", f.longitude()));
  }
  line("workers", absl::StrCat(f.workers()));
  line("products", f.main_products());
  if (f.recognition() != v1::RECOGNITION_LEVEL_NONE) {
    line("recognition",
         EnumName(v1::RecognitionLevel_descriptor(), "RECOGNITION_LEVEL_", f.recognition()));
  }
  line("phone", f.contact_phone());
  line("registered", TimeMsText(f.created_ms()));
  return out;
}

std::string VisitLine(const v1::Visit& v, const Names& names) {
  std::vector<std::string> needs;
  for (int need : v.needs()) needs.push_back(Category(static_cast<v1::SupportCategory>(need)));
  std::string line =
      absl::StrCat(v.id(), "  ", TimeMsText(v.visited_ms()), "  ",
                   EnumName(v1::VisitPurpose_descriptor(), "VISIT_PURPOSE_", v.purpose()), "  by ",
                   names.Person(v.collaborator_id()));
  if (!needs.empty()) absl::StrAppend(&line, "  needs: ", absl::StrJoin(needs, ","));
  if (v.workers() > 0) {
    absl::StrAppend(&line, "  workers ", v.workers(), ", product lines ", v.product_lines(),
                    ", output ", Vnd(v.annual_output_vnd()));
  }
  if (!v.findings().empty()) absl::StrAppend(&line, "  \"", OneLine(v.findings()), "\"");
  return line;
}

std::string StatusName(v1::RequestStatus status) {
  return EnumName(v1::RequestStatus_descriptor(), "REQUEST_STATUS_", status);
}

std::string RequestLine(const v1::SupportRequest& r) {
  std::string line =
      absl::StrCat(r.id(), "  ", StatusName(r.status()), "  ", Category(r.category()), "  ",
                   Vnd(r.requested_amount_vnd()), "  facility ", r.facility_id(), "  \"",
                   OneLine(r.description()), "\"");
  if (r.status() == v1::REQUEST_STATUS_APPROVED || r.approved_amount_vnd() > 0) {
    absl::StrAppend(&line, "  approved ", Vnd(r.approved_amount_vnd()), " (",
                    Funding(r.approved_funding()), ")");
  }
  if (!r.decision_note().empty()) absl::StrAppend(&line, "  note: ", OneLine(r.decision_note()));
  return line;
}

std::string RequestDetails(const v1::SupportRequest& r, const Names& names) {
  std::string out;
  auto line = [&](absl::string_view key, absl::string_view value) {
    if (!value.empty()) absl::StrAppend(&out, "  ", key, ": ", OneLine(value), "\n");
  };
  line("status", StatusName(r.status()));
  line("facility", r.facility_id());
  line("commune", names.Unit(r.commune_id(), ""));
  line("author", names.Person(r.author_id()));
  line("category", Category(r.category()));
  line("description", r.description());
  line("requested", Vnd(r.requested_amount_vnd()));
  if (r.own_contribution_vnd() > 0) line("own contribution", Vnd(r.own_contribution_vnd()));
  line("proposed funding", Funding(r.proposed_funding()));
  if (r.approved_amount_vnd() > 0) {
    line("approved",
         absl::StrCat(Vnd(r.approved_amount_vnd()), " (", Funding(r.approved_funding()), ")"));
  }
  line("decision note", r.decision_note());
  line("created", TimeMsText(r.created_ms()));
  line("updated", TimeMsText(r.updated_ms()));
  return out;
}

std::string EventLine(const v1::RequestEvent& e, const Names& names) {
  std::string line =
      absl::StrCat(TimeMsText(e.at_ms()), "  ", names.Person(e.actor_id()), "  ",
                   EnumName(v1::RequestAction_descriptor(), "REQUEST_ACTION_", e.action()));
  if (e.from_status() == v1::REQUEST_STATUS_UNSPECIFIED) {
    absl::StrAppend(&line, "  -> ", StatusName(e.to_status()));
  } else if (e.from_status() != e.to_status()) {
    absl::StrAppend(&line, "  ", StatusName(e.from_status()), " -> ", StatusName(e.to_status()));
  }
  if (e.amount_vnd() > 0) absl::StrAppend(&line, "  ", Vnd(e.amount_vnd()));
  if (!e.note().empty()) absl::StrAppend(&line, "  \"", OneLine(e.note()), "\"");
  return line;
}

std::string RecordsText(const std::vector<sdk::RecordRef>& records) {
  std::vector<std::string> parts;
  for (const sdk::RecordRef& r : records)
    parts.push_back(absl::StrCat(TypeName(r.type), " ", r.id));
  return absl::StrJoin(parts, ", ");
}

std::string ReportLine(sdk::Client& client, const sdk::Report& report) {
  std::string what = RecordsText(report.records);
  for (const sdk::RecordRef& r : report.records) {
    if (r.type != 1) continue;
    absl::StatusOr<v1::Facility> f = client.GetFacility(r.id);
    if (f.ok()) absl::StrAppend(&what, " \"", OneLine(f->name()), "\"");
    break;
  }
  return absl::StrCat(report.refused ? "refused" : "conflict", " #", report.seq, " ", what, ": ",
                      OneLine(report.reason));
}

std::string ConflictLine(const v1::Conflict& c) {
  const google::protobuf::Descriptor* d = RecordDescriptor(c.type());
  const google::protobuf::FieldDescriptor* field =
      d == nullptr ? nullptr : d->FindFieldByNumber(static_cast<int>(c.field()));
  const std::string name = absl::StrCat(TypeName(c.type()), " ", UuidText(c.record_id()), " ",
                                        field != nullptr ? field->name() : "(deleted)");
  std::string loser = ValueText(field, c.loser_value());
  if (c.has_loser_mutation()) {
    absl::StrAppend(&loser, " from device ", c.loser_mutation().device_id(), " #",
                    c.loser_mutation().seq());
  }
  return absl::StrCat(name, ": kept ", ValueText(field, c.winner_value()), ", overwritten ", loser,
                      c.resolved() ? " (resolved)" : "");
}

}  // namespace kcnet::cli
