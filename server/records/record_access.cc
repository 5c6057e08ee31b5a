#include "server/records/record_access.h"

#include <algorithm>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/paging.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/record_store.h"

namespace kcnet::server {
namespace {

using kcnet::v1::RecordChange;

}  // namespace

model::Actor ActorFor(Directory* directory, const Principal& caller) {
  model::Actor actor;
  actor.user_id = caller.user_id;
  actor.role = caller.role;
  // An Actor lives for one request or one pushed batch, whose mutations ask about the same
  // few communes again and again: each answer is asked of the directory once.
  struct Scope {
    Directory* directory;
    std::vector<int64_t> roots;
    absl::Mutex mu;
    absl::flat_hash_map<int64_t, bool> known ABSL_GUARDED_BY(mu);
  };
  auto scope = std::make_shared<Scope>();
  scope->directory = directory;
  scope->roots = caller.org_unit_ids;
  actor.in_scope = [scope](int64_t commune) {
    absl::MutexLock lock(&scope->mu);
    auto [it, inserted] = scope->known.try_emplace(commune, false);
    // Buckets are communes: a record filed under a district or province is in nobody's
    // sync scope, so it is refused like one outside the actor's subtrees.
    absl::StatusOr<kcnet::v1::OrgUnit> unit =
        inserted ? scope->directory->GetOrgUnit(commune) : absl::StatusOr<kcnet::v1::OrgUnit>();
    if (inserted && unit.ok() && unit->level() == kcnet::v1::ORG_UNIT_LEVEL_COMMUNE) {
      for (int64_t root : scope->roots) {
        if (scope->directory->IsWithin(commune, root)) {
          it->second = true;
          break;
        }
      }
    }
    return it->second;
  };
  return actor;
}

sync::MutationValidator GuardedValidator(Directory* directory, MutationGuard* guard,
                                         const Principal& caller, WriteContext context) {
  sync::MutationValidator rules = model::ValidatorFor(ActorFor(directory, caller));
  if (guard == nullptr) return rules;
  return [rules = std::move(rules), guard, caller, context = std::move(context)](
             const kcnet::v1::Mutation& mutation, sync::RecordReader& reader) -> absl::Status {
    absl::Status status = rules(mutation, reader);
    if (!status.ok()) return status;
    return guard->Check(caller, context, mutation, reader);
  };
}

bool RecordAccess::InScope(const Principal& caller, int64_t org_unit_id) {
  for (int64_t root : caller.org_unit_ids) {
    if (deps_.directory->IsWithin(org_unit_id, root)) return true;
  }
  return false;
}

absl::StatusOr<std::vector<int64_t>> RecordAccess::ListScope(const Principal& caller,
                                                             int64_t org_unit_id) {
  if (org_unit_id < 0) return absl::InvalidArgumentError("org_unit_id: must not be negative");
  if (org_unit_id == 0) return deps_.directory->Communes(caller.org_unit_ids);
  if (!InScope(caller, org_unit_id)) {
    return absl::NotFoundError(
        absl::StrCat("org_unit_id: org unit ", org_unit_id, " not found in your org units"));
  }
  return deps_.directory->Communes({org_unit_id});
}

absl::StatusOr<uint64_t> RecordAccess::Read(const Principal& caller, uint32_t type,
                                            const std::string& id, google::protobuf::Message* out) {
  absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("id: '", id.substr(0, 64), "' is not a UUID"));
  }
  absl::StatusOr<std::optional<RecordChange>> record = deps_.store->ReadRecord(type, *bytes);
  if (!record.ok()) return record.status();
  const std::string what = model::KcnetSchema().Find(type)->name;
  auto not_found = [&]() {
    return absl::NotFoundError(absl::StrCat("id: ", what, " ", id, " not found"));
  };
  if (!record->has_value() || (*record)->deleted()) return not_found();
  absl::Status status = model::FromChange(**record, out);
  if (!status.ok()) return status;
  if (!InScope(caller, (*record)->bucket())) return not_found();
  return (*record)->op();
}

absl::StatusOr<bool> RecordAccess::Exists(uint32_t type, const std::string& id) {
  absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
  if (!bytes.ok()) return false;
  absl::StatusOr<std::optional<RecordChange>> record = deps_.store->ReadRecord(type, *bytes);
  if (!record.ok()) return record.status();
  return record->has_value();
}

absl::Status RecordAccess::Write(const Principal& caller, std::vector<RecordChange> changes,
                                 WriteContext context) {
  kcnet::v1::MutationBatch batch;
  kcnet::v1::Mutation* m = batch.add_mutations();
  const uint64_t hlc = deps_.store->clock().Now();
  for (RecordChange& c : changes) {
    c.set_hlc(hlc);
    *m->add_changes() = std::move(c);
  }
  const sync::Writer writer{"", sync::NodeIdFor(absl::StrCat("user:", caller.user_id))};
  absl::StatusOr<kcnet::v1::PushAck> ack = deps_.store->Apply(
      writer, batch, GuardedValidator(deps_.directory, deps_.guard, caller, std::move(context)));
  if (!ack.ok()) return ack.status();
  const kcnet::v1::MutationResult& result = ack->results(0);
  if (result.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED) {
    const auto code = static_cast<absl::StatusCode>(result.code() != 0 ? result.code() : 3);
    return absl::Status(code, model::RecordFieldMessage(*m, result.reason()));
  }
  return absl::OkStatus();
}

absl::StatusOr<RecordChange> RecordAccess::MaskedChange(const google::protobuf::Message& message,
                                                        const google::protobuf::FieldMask& mask,
                                                        const std::vector<std::string>& read_only) {
  return model::MaskedChange(message,
                             std::vector<std::string>(mask.paths().begin(), mask.paths().end()),
                             read_only, "update_mask.paths");
}

std::string RecordAccess::NewId() { return model::NewRecordId(); }

absl::StatusOr<std::vector<RecordChange>> RecordAccess::List(
    sync::ListQuery query, int32_t page_size, const std::string& page_token, uint64_t fingerprint,
    std::string* next_token, const std::function<bool(const RecordChange&)>& keep) {
  absl::StatusOr<int> size = PageSize(page_size);
  if (!size.ok()) return size.status();
  const size_t page_limit = static_cast<size_t>(*size);
  query.limit = page_limit;
  absl::StatusOr<std::string> position = DecodePageToken(page_token, fingerprint);
  if (!position.ok()) return position.status();
  if (!position->empty() && !absl::SimpleAtoi(*position, &query.after)) {
    return absl::InvalidArgumentError("page_token: not a position of this list");
  }
  next_token->clear();
  if (!keep) {
    absl::StatusOr<std::vector<RecordChange>> page = deps_.store->List(query);
    if (!page.ok()) return page.status();
    if (page->size() == query.limit) {
      *next_token = EncodePageToken(fingerprint, absl::StrCat(page->back().op()));
    }
    return page;
  }
  // Filtered: read chunks in the list's order and keep what `keep` accepts; the position
  // of the next page is the op of the last record read, kept or not.
  std::vector<RecordChange> out;
  size_t scanned = 0;
  query.limit = std::max<size_t>(page_limit, 500);
  while (true) {
    absl::StatusOr<std::vector<RecordChange>> chunk = deps_.store->List(query);
    if (!chunk.ok()) return chunk.status();
    for (RecordChange& r : *chunk) {
      query.after = r.op();
      ++scanned;
      if (keep(r)) out.push_back(std::move(r));
      if (out.size() == page_limit || scanned >= kMaxFilteredScan) {
        *next_token = EncodePageToken(fingerprint, absl::StrCat(query.after));
        return out;
      }
    }
    if (chunk->size() < query.limit) return out;  // the end of the list
  }
}

absl::StatusOr<int64_t> RecordAccess::Count(sync::ListQuery query,
                                            const std::function<bool(const RecordChange&)>& keep) {
  query.after = 0;
  query.limit = 1000;
  int64_t count = 0;
  while (true) {
    absl::StatusOr<std::vector<RecordChange>> chunk = deps_.store->List(query);
    if (!chunk.ok()) return chunk.status();
    for (const RecordChange& r : *chunk) {
      if (!keep || keep(r)) ++count;
    }
    if (chunk->size() < query.limit) return count;
    query.after = chunk->back().op();
  }
}

absl::StatusOr<uint64_t> RecordAccess::Scan(sync::ListQuery query,
                                            const std::function<bool(const RecordChange&)>& visit,
                                            bool* at_end) {
  query.limit = 1000;
  *at_end = false;
  while (true) {
    absl::StatusOr<std::vector<RecordChange>> chunk = deps_.store->List(query);
    if (!chunk.ok()) return chunk.status();
    for (const RecordChange& r : *chunk) {
      query.after = r.op();
      if (!visit(r)) return query.after;
    }
    if (chunk->size() < query.limit) {
      *at_end = true;
      return query.after;
    }
  }
}

absl::StatusOr<kcnet::v1::ChangeBatch> RecordAccess::ChangesSince(
    const std::vector<int64_t>& buckets, uint64_t after, size_t max_changes) {
  std::vector<kcnet::v1::BucketCursor> cursors;
  cursors.reserve(buckets.size());
  for (int64_t bucket : buckets) {
    kcnet::v1::BucketCursor& cursor = cursors.emplace_back();
    cursor.set_bucket(bucket);
    cursor.set_op(after);
    cursor.set_floor(0);  // whole records, not only the fields changed after `after`
  }
  return deps_.store->ChangesSince(cursors, {.max_changes = max_changes, .max_bytes = 16 << 20});
}

}  // namespace kcnet::server
