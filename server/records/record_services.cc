#include "server/records/record_services.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/records/record_access.h"
#include "server/records/request_filter.h"
#include "server/rpc/paging.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/schema.h"
#include "sync/text_fold.h"

namespace kcnet::server {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;
using kcnet::v1::Facility;
using kcnet::v1::RecordChange;
using kcnet::v1::RequestEvent;
using kcnet::v1::SupportRequest;
using kcnet::v1::Visit;

using model::IntValue;
using model::SetField;
using model::TextValue;

// A new record of a known type: its change with base_op 0.
absl::StatusOr<RecordChange> NewRecord(const google::protobuf::Message& message) {
  return model::ToChange(message);
}

// Whether a facility matches a search, as the SDK's search matches (sync/device_store.cc):
// folded (sync/text_fold), every word of the query is a whole word of the facility's name,
// owner, address or main products, the last one possibly a prefix (search as you type).
bool FacilityMatches(const Facility& f, const std::vector<std::string>& words) {
  const std::vector<std::string> tokens = sync::SearchWords(
      absl::StrCat(f.name(), "\n", f.owner_name(), "\n", f.address(), "\n", f.main_products()));
  for (size_t w = 0; w < words.size(); ++w) {
    const bool last = w + 1 == words.size();
    const bool found = std::any_of(tokens.begin(), tokens.end(), [&](const std::string& t) {
      return t == words[w] || (last && absl::StartsWith(t, words[w]));
    });
    if (!found) return false;
  }
  return true;
}
bool FacilityMatches(const RecordChange& record, const std::vector<std::string>& words) {
  Facility f;
  if (!model::FromChange(record, &f).ok()) return false;
  return FacilityMatches(f, words);
}

// ---------------------------------------------------------------------------------------

class FacilityServiceImpl : public kcnet::v1::FacilityService::CallbackService {
 public:
  FacilityServiceImpl(RecordAccess* access, RpcRunner* runner) : access_(access), runner_(runner) {}

  ServerUnaryReactor* GetFacility(CallbackServerContext* ctx, const v1::GetRecordRequest* req,
                                  Facility* resp) override {
    return runner_->Run(ctx, "kcnet.v1.FacilityService/GetFacility", [=, this](const Principal* p) {
      return access_->Read(*p, model::kFacilityType, req->id(), resp).status();
    });
  }

  ServerUnaryReactor* ListFacilities(CallbackServerContext* ctx,
                                     const v1::ListFacilitiesRequest* req,
                                     v1::ListFacilitiesResponse* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.FacilityService/ListFacilities",
        [=, this](const Principal* p) -> absl::Status {
          absl::StatusOr<std::vector<int64_t>> scope = access_->ListScope(*p, req->org_unit_id());
          if (!scope.ok()) return scope.status();
          if (req->query().size() > 200) {
            return absl::InvalidArgumentError(
                "query: at most 200 bytes / từ khoá tìm kiếm tối đa 200 byte");
          }
          if (req->ids_size() > 0) return ListByIds(*p, *req, *scope, resp);
          const std::vector<std::string> words = sync::SearchWords(req->query());
          if (!words.empty() && access_->search() != nullptr) {
            absl::Status searched = Search(*p, *req, *scope, words, resp);
            if (searched.code() != absl::StatusCode::kUnavailable) return searched;
            resp->Clear();  // the index is behind: scan the records, as without one
          }
          sync::ListQuery q{.type = model::kFacilityType, .buckets = *scope};
          std::function<bool(const RecordChange&)> keep;
          if (!words.empty())
            keep = [&words](const RecordChange& r) { return FacilityMatches(r, words); };
          absl::StatusOr<std::vector<RecordChange>> page =
              access_->List(q, req->page_size(), req->page_token(),
                            QueryFingerprint(*req, absl::StrCat(p->user_id)),
                            resp->mutable_next_page_token(), keep);
          if (!page.ok()) return page.status();
          for (const RecordChange& r : *page) {
            absl::Status s = model::FromChange(r, resp->add_facilities());
            if (!s.ok()) return s;
          }
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* ListMapPoints(CallbackServerContext* ctx, const v1::ListMapPointsRequest* req,
                                    v1::ListMapPointsResponse* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.FacilityService/ListMapPoints",
        [=, this](const Principal* p) -> absl::Status { return MapPoints(*p, *req, resp); });
  }

  ServerUnaryReactor* CreateFacility(CallbackServerContext* ctx,
                                     const v1::CreateFacilityRequest* req,
                                     Facility* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.FacilityService/CreateFacility",
        [=, this](const Principal* p) -> absl::Status {
          Facility f = req->facility();
          if (f.id().empty()) f.set_id(RecordAccess::NewId());
          if (f.commune_id() <= 0) {
            return absl::InvalidArgumentError("facility.commune_id: required");
          }
          absl::StatusOr<kcnet::v1::OrgUnit> unit = access_->directory().GetOrgUnit(f.commune_id());
          if (!unit.ok() || !access_->InScope(*p, f.commune_id())) {
            return absl::NotFoundError(absl::StrCat(
                "facility.commune_id: org unit ", f.commune_id(), " not found in your org units"));
          }
          if (unit->level() != kcnet::v1::ORG_UNIT_LEVEL_COMMUNE) {
            return absl::InvalidArgumentError("facility.commune_id: must be a commune");
          }
          f.set_created_by(p->user_id);
          // A client that names the id may be retrying a create whose answer it lost: the
          // same content again answers the stored facility; other content under that id
          // is another facility, refused (for a facility the caller may not see as well,
          // word for word).
          const auto taken = [&]() {
            return absl::AlreadyExistsError(
                absl::StrCat("facility.id: a facility with id ", f.id(), " already exists"));
          };
          const bool named_id = !req->facility().id().empty();
          if (named_id) {
            Facility stored;
            absl::StatusOr<uint64_t> op = access_->Read(*p, model::kFacilityType, f.id(), &stored);
            if (op.ok()) {
              Facility retried = f;
              retried.set_created_ms(stored.created_ms());
              if (retried.SerializeAsString() != stored.SerializeAsString()) return taken();
              *resp = std::move(stored);
              return absl::OkStatus();
            }
            if (op.status().code() != absl::StatusCode::kNotFound) return op.status();
          }
          f.set_created_ms(access_->NowMs());
          absl::StatusOr<RecordChange> change = NewRecord(f);
          if (!change.ok()) {
            return absl::InvalidArgumentError(absl::StrCat("facility.", change.status().message()));
          }
          absl::Status s = access_->Write(*p, {*change});
          if (!s.ok()) {
            absl::StatusOr<bool> exists = access_->Exists(model::kFacilityType, f.id());
            if (named_id && exists.ok() && *exists) return taken();
            return s;
          }
          return access_->Read(*p, model::kFacilityType, f.id(), resp).status();
        });
  }

  ServerUnaryReactor* UpdateFacility(CallbackServerContext* ctx,
                                     const v1::UpdateFacilityRequest* req,
                                     Facility* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.FacilityService/UpdateFacility",
        [=, this](const Principal* p) -> absl::Status {
          Facility current;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kFacilityType, req->facility().id(), &current);
          if (!op.ok()) return op.status();
          if (req->update_mask().paths_size() == 0) {
            return absl::InvalidArgumentError("update_mask: name the fields to change");
          }
          Facility next = req->facility();
          next.set_commune_id(current.commune_id());
          absl::StatusOr<RecordChange> change = RecordAccess::MaskedChange(
              next, req->update_mask(), {"id", "commune_id", "created_by", "created_ms"});
          if (!change.ok()) return change.status();
          change->set_base_op(*op);
          absl::Status s = access_->Write(*p, {*change});
          if (!s.ok()) return s;
          return access_->Read(*p, model::kFacilityType, current.id(), resp).status();
        });
  }

 private:
  static constexpr int32_t kMaxMapPage = 20000;
  static constexpr int32_t kDefaultMapPage = 10000;

  static constexpr size_t kMaxMapChanges = 5000;

  // The map's filter (ListMapPointsRequest) as predicates on a facility and a visit.
  struct MapFilter {
    const v1::ListMapPointsRequest& req;
    const std::vector<std::string>& words;
    const std::optional<FacilityIds>& with_requests;
    int64_t author;

    bool Keeps(const Facility& f) const {
      if (req.kind() != 0 && f.kind() != req.kind()) return false;
      if (req.sector() != 0 && f.sector() != req.sector()) return false;
      if (!words.empty() && !FacilityMatches(f, words)) return false;
      return !with_requests.has_value() || with_requests->contains(f.id());
    }
    // A visit of the scope (its facility's own filter aside: the client keeps the visits of
    // the facilities it has).
    bool Keeps(const Visit& v) const {
      const int64_t from = req.visited_from_ms(), to = req.visited_to_ms();
      if (v.visited_ms() < from || (to != 0 && v.visited_ms() >= to)) return false;
      if (with_requests.has_value() && !with_requests->contains(v.facility_id())) return false;
      return author == 0 || v.collaborator_id() == author;
    }
  };

  static void AddPoint(const Facility& f, kcnet::v1::MapPoint* point) {
    point->set_id(f.id());
    point->set_type(kcnet::v1::MAP_POINT_TYPE_FACILITY);
    point->set_latitude(f.latitude());
    point->set_longitude(f.longitude());
    point->set_name(f.name());
  }
  static void AddPoint(const Visit& v, kcnet::v1::MapPoint* point) {
    point->set_id(v.id());
    point->set_type(kcnet::v1::MAP_POINT_TYPE_VISIT);
    point->set_latitude(v.latitude());
    point->set_longitude(v.longitude());
    point->set_facility_id(v.facility_id());
    point->set_visited_ms(v.visited_ms());
  }

  // A checkpoint belongs to its caller and filter (not to a page).
  static uint64_t CheckpointFingerprint(const Principal& p, const v1::ListMapPointsRequest& req) {
    v1::ListMapPointsRequest filter = req;
    filter.clear_changed_since();
    return QueryFingerprint(filter, absl::StrCat(p.user_id, "/map-checkpoint"));
  }
  // A checkpoint's text: the op, and the communes it was made for ("OP/HASH"). When the
  // caller's area changed since (a coordinator's review area shrank), a patch cannot take
  // the points of the communes gone off the map: the answer is `reload`.
  static std::string CheckpointText(uint64_t op, const std::vector<int64_t>& scope) {
    std::vector<int64_t> sorted = scope;
    std::sort(sorted.begin(), sorted.end());
    uint64_t hash = 14695981039346656037ull;  // FNV-1a: the same in every process
    for (int64_t id : sorted) {
      for (int i = 0; i < 8; ++i) {
        hash ^= static_cast<uint64_t>(id >> (8 * i)) & 0xFF;
        hash *= 1099511628211ull;
      }
    }
    return absl::StrCat(op, "/", hash);
  }

  // ListMapPoints with changed_since: `batch`, the store's changes of the scope since the
  // checkpoint (ServerStore::ChangesSince, whose cost is the changes, not the scope's
  // records), each turned into a point or a removal by the same filter as a full read.
  absl::Status MapChanges(const Principal& p, const v1::ListMapPointsRequest& req,
                          const std::vector<int64_t>& scope, const MapFilter& filter,
                          const kcnet::v1::ChangeBatch& batch, v1::ListMapPointsResponse* resp) {
    // Facilities to send with their visits (created, changed, or whose requests changed
    // under the queue's filter), in the order first met; visits sent, by id.
    std::vector<std::string> facilities;
    absl::flat_hash_set<std::string> facility_seen, visits_sent;
    auto removed = [resp](const std::string& id, kcnet::v1::MapPointType type) {
      kcnet::v1::MapPoint* point = resp->add_removed();
      point->set_id(id);
      point->set_type(type);
    };
    std::vector<Visit> visits;
    for (const RecordChange& change : batch.changes()) {
      const uint32_t type = change.type();
      if (type != model::kFacilityType && type != model::kVisitType &&
          !(type == model::kSupportRequestType && filter.with_requests.has_value())) {
        continue;
      }
      absl::StatusOr<std::string> id = sync::UuidToText(change.id());
      if (!id.ok()) continue;
      if (change.deleted()) {
        if (type == model::kFacilityType) removed(*id, kcnet::v1::MAP_POINT_TYPE_FACILITY);
        if (type == model::kVisitType) removed(*id, kcnet::v1::MAP_POINT_TYPE_VISIT);
        continue;
      }
      if (type == model::kFacilityType) {
        if (facility_seen.insert(*id).second) facilities.push_back(*id);
      } else if (type == model::kVisitType) {
        Visit v;
        if (!model::FromChange(change, &v).ok()) continue;
        visits.push_back(std::move(v));
      } else {
        SupportRequest r;
        if (!model::FromChange(change, &r).ok() || r.facility_id().empty()) continue;
        if (facility_seen.insert(r.facility_id()).second) facilities.push_back(r.facility_id());
      }
    }
    // Each facility as it is now (read with the caller's scope), with its visits.
    std::vector<kcnet::v1::MapPoint> visit_points;
    for (const std::string& id : facilities) {
      Facility f;
      absl::StatusOr<uint64_t> op = access_->Read(p, model::kFacilityType, id, &f);
      if (!op.ok() && op.status().code() != absl::StatusCode::kNotFound) return op.status();
      if (!op.ok() || std::find(scope.begin(), scope.end(), f.commune_id()) == scope.end() ||
          !filter.Keeps(f)) {
        removed(id, kcnet::v1::MAP_POINT_TYPE_FACILITY);
        continue;
      }
      AddPoint(f, resp->add_points());
      sync::ListQuery q{.type = model::kVisitType,
                        .buckets = {f.commune_id()},
                        .equals = {{Visit::kFacilityIdFieldNumber, TextValue(f.id())}}};
      bool at_end = false;
      absl::StatusOr<uint64_t> last = access_->Scan(
          q,
          [&](const RecordChange& r) {
            Visit v;
            if (model::FromChange(r, &v).ok() && filter.Keeps(v) &&
                visits_sent.insert(v.id()).second) {
              AddPoint(v, &visit_points.emplace_back());
            }
            return true;
          },
          &at_end);
      if (!last.ok()) return last.status();
    }
    for (const Visit& v : visits) {
      if (visits_sent.contains(v.id())) continue;
      if (filter.Keeps(v)) {
        visits_sent.insert(v.id());
        AddPoint(v, &visit_points.emplace_back());
      } else {
        removed(v.id(), kcnet::v1::MAP_POINT_TYPE_VISIT);
      }
    }
    for (kcnet::v1::MapPoint& point : visit_points) *resp->add_points() = std::move(point);
    resp->set_checkpoint(
        EncodePageToken(CheckpointFingerprint(p, req), CheckpointText(batch.server_op(), scope)));
    return absl::OkStatus();
  }

  // ListMapPoints: the facilities phase ("f:POSITION" in the page token), then the visits
  // ("v:POSITION"), each read with RecordAccess::Scan until the page is full.
  absl::Status MapPoints(const Principal& p, const v1::ListMapPointsRequest& req,
                         v1::ListMapPointsResponse* resp) {
    if (req.page_size() < 0 || req.page_size() > kMaxMapPage) {
      return absl::InvalidArgumentError(absl::StrCat("page_size: must be between 0 and ",
                                                     kMaxMapPage, ", got ", req.page_size()));
    }
    absl::Status checked = CheckFacilityFilter(req.query(), req.kind(), req.sector(),
                                               req.visited_from_ms(), req.visited_to_ms());
    if (!checked.ok()) return checked;
    absl::StatusOr<std::vector<int64_t>> scope = access_->ListScope(p, req.org_unit_id());
    if (!scope.ok()) return scope.status();
    const uint64_t fingerprint = QueryFingerprint(req, absl::StrCat(p.user_id));
    absl::StatusOr<std::string> position = DecodePageToken(req.page_token(), fingerprint);
    if (!position.ok()) return position.status();
    bool visits_phase = false;
    uint64_t after = 0;
    if (!position->empty()) {
      if (position->size() < 3 || ((*position)[0] != 'f' && (*position)[0] != 'v') ||
          (*position)[1] != ':' || !absl::SimpleAtoi(position->substr(2), &after)) {
        return absl::InvalidArgumentError("page_token: not a position of this list");
      }
      visits_phase = (*position)[0] == 'v';
    }
    const size_t limit = req.page_size() == 0 ? kDefaultMapPage : req.page_size();
    const std::vector<std::string> words = sync::SearchWords(req.query());
    // Live update: the changes since the checkpoint; or, on a full read's first page, the
    // checkpoint where it is complete. Both before the queue's filter is read below, so a
    // request that changes in between comes again in the next answer rather than never.
    std::optional<kcnet::v1::ChangeBatch> changes;
    if (!req.changed_since().empty()) {
      absl::StatusOr<std::string> since =
          DecodePageToken(req.changed_since(), CheckpointFingerprint(p, req));
      if (!since.ok()) {
        return absl::InvalidArgumentError(
            "changed_since: not a checkpoint of this filter (ask the first page again)");
      }
      // This caller's and filter's checkpoint, but made for other communes (the caller's
      // area changed since) or by a server before the communes were in it: read it all.
      uint64_t since_op = 0;
      const size_t slash = since->find('/');
      if (slash == std::string::npos || !absl::SimpleAtoi(since->substr(0, slash), &since_op) ||
          *since != CheckpointText(since_op, *scope)) {
        resp->set_reload(true);
        return absl::OkStatus();
      }
      absl::StatusOr<kcnet::v1::ChangeBatch> batch =
          access_->ChangesSince(*scope, since_op, kMaxMapChanges);
      if (!batch.ok()) return batch.status();
      if (batch->more()) {
        resp->set_reload(true);
        return absl::OkStatus();
      }
      changes = *std::move(batch);
    } else if (req.page_token().empty()) {
      // Changes committed during the read come again in the first answer from here.
      absl::StatusOr<kcnet::v1::ChangeBatch> now =
          access_->ChangesSince(*scope, static_cast<uint64_t>(INT64_MAX), 1);
      if (!now.ok()) return now.status();
      resp->set_checkpoint(
          EncodePageToken(CheckpointFingerprint(p, req), CheckpointText(now->server_op(), *scope)));
    }
    // The queue's filter: the facilities with a matching request, and their visits only
    // (by its collaborator when it names one). Read again for each page: simple, and the
    // requests are far fewer than the points.
    std::optional<FacilityIds> with_requests;
    if (req.has_requests()) {
      absl::StatusOr<FacilityIds> ids = FacilitiesWithRequests(*access_, p, req.requests());
      if (!ids.ok()) {
        return absl::Status(ids.status().code(), absl::StrCat("requests.", ids.status().message()));
      }
      with_requests = *std::move(ids);
    }
    const int64_t author = req.has_requests() ? req.requests().author_id() : 0;
    const MapFilter filter{req, words, with_requests, author};
    if (changes.has_value()) return MapChanges(p, req, *scope, filter, *changes, resp);
    bool at_end = false;
    if (!visits_phase) {
      sync::ListQuery q{.type = model::kFacilityType, .buckets = *scope, .after = after};
      absl::StatusOr<uint64_t> last = access_->Scan(
          q,
          [&](const RecordChange& r) {
            Facility f;
            if (!model::FromChange(r, &f).ok()) return true;
            if (!filter.Keeps(f)) return true;
            AddPoint(f, resp->add_points());
            return static_cast<size_t>(resp->points_size()) < limit;
          },
          &at_end);
      if (!last.ok()) return last.status();
      if (!at_end) {
        resp->set_next_page_token(EncodePageToken(fingerprint, absl::StrCat("f:", *last)));
        return absl::OkStatus();
      }
      if (req.facilities_only()) return absl::OkStatus();
      visits_phase = true;
      after = 0;
      if (static_cast<size_t>(resp->points_size()) >= limit) {
        resp->set_next_page_token(EncodePageToken(fingerprint, "v:0"));
        return absl::OkStatus();
      }
    }
    sync::ListQuery q{.type = model::kVisitType, .buckets = *scope, .after = after};
    absl::StatusOr<uint64_t> last = access_->Scan(
        q,
        [&](const RecordChange& r) {
          Visit v;
          if (!model::FromChange(r, &v).ok()) return true;
          if (!filter.Keeps(v)) return true;
          AddPoint(v, resp->add_points());
          return static_cast<size_t>(resp->points_size()) < limit;
        },
        &at_end);
    if (!last.ok()) return last.status();
    if (!at_end) {
      resp->set_next_page_token(EncodePageToken(fingerprint, absl::StrCat("v:", *last)));
    }
    return absl::OkStatus();
  }

  // ListFacilities with ids: each read with the caller's scope, then kept when in `scope`
  // (the request's org unit); absent, deleted and out-of-scope ids alike are left out.
  absl::Status ListByIds(const Principal& caller, const v1::ListFacilitiesRequest& req,
                         const std::vector<int64_t>& scope, v1::ListFacilitiesResponse* resp) {
    if (req.ids_size() > kMaxPageSize) {
      return absl::InvalidArgumentError(absl::StrCat("ids: at most ", kMaxPageSize, " / tối đa ",
                                                     kMaxPageSize, " mã cơ sở mỗi lần"));
    }
    if (!req.query().empty() || !req.page_token().empty()) {
      return absl::InvalidArgumentError(
          "ids: not with query or page_token / không dùng cùng từ khoá hay page_token");
    }
    const absl::flat_hash_set<int64_t> communes(scope.begin(), scope.end());
    for (int i = 0; i < req.ids_size(); ++i) {
      Facility f;
      absl::StatusOr<uint64_t> op = access_->Read(caller, model::kFacilityType, req.ids(i), &f);
      if (op.ok()) {
        if (communes.contains(f.commune_id())) *resp->add_facilities() = std::move(f);
      } else if (op.status().code() == absl::StatusCode::kInvalidArgument) {
        return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", op.status().message()));
      } else if (op.status().code() != absl::StatusCode::kNotFound) {
        return op.status();
      }
    }
    return absl::OkStatus();
  }

  // ListFacilities with a query, through the index: a page of its ids, each read from the
  // store (and checked against the caller's scope once more); a facility deleted since
  // the index saw it is left out.
  absl::Status Search(const Principal& caller, const v1::ListFacilitiesRequest& req,
                      const std::vector<int64_t>& scope, const std::vector<std::string>& words,
                      v1::ListFacilitiesResponse* resp) {
    absl::StatusOr<int> page_size = PageSize(req.page_size());
    if (!page_size.ok()) return page_size.status();
    const uint64_t fingerprint = QueryFingerprint(req, absl::StrCat(caller.user_id, "/search"));
    absl::StatusOr<std::string> after = DecodePageToken(req.page_token(), fingerprint);
    if (!after.ok()) return after.status();
    absl::StatusOr<FacilitySearch::Page> page =
        access_->search()->Search(scope, words, *after, *page_size);
    if (!page.ok()) return page.status();  // UNAVAILABLE handled by the caller
    for (const std::string& id : page->ids) {
      Facility f;
      absl::StatusOr<uint64_t> op = access_->Read(caller, model::kFacilityType, id, &f);
      if (op.ok()) {
        *resp->add_facilities() = std::move(f);
      } else if (op.status().code() != absl::StatusCode::kNotFound) {
        return op.status();
      }
    }
    if (!page->next.empty()) resp->set_next_page_token(EncodePageToken(fingerprint, page->next));
    return absl::OkStatus();
  }

  RecordAccess* access_;
  RpcRunner* runner_;
};

// ---------------------------------------------------------------------------------------

class VisitServiceImpl : public kcnet::v1::VisitService::CallbackService {
 public:
  VisitServiceImpl(RecordAccess* access, RpcRunner* runner) : access_(access), runner_(runner) {}

  ServerUnaryReactor* GetVisit(CallbackServerContext* ctx, const v1::GetRecordRequest* req,
                               Visit* resp) override {
    return runner_->Run(ctx, "kcnet.v1.VisitService/GetVisit", [=, this](const Principal* p) {
      return access_->Read(*p, model::kVisitType, req->id(), resp).status();
    });
  }

  ServerUnaryReactor* ListVisits(CallbackServerContext* ctx, const v1::ListVisitsRequest* req,
                                 v1::ListVisitsResponse* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.VisitService/ListVisits", [=, this](const Principal* p) -> absl::Status {
          sync::ListQuery q{.type = model::kVisitType};
          if (!req->facility_id().empty()) {
            Facility facility;
            absl::StatusOr<uint64_t> op =
                access_->Read(*p, model::kFacilityType, req->facility_id(), &facility);
            if (!op.ok()) {
              return absl::Status(op.status().code(),
                                  absl::StrCat("facility_", op.status().message()));
            }
            q.buckets = {facility.commune_id()};
            q.equals = {{Visit::kFacilityIdFieldNumber, TextValue(facility.id())}};
          } else {
            absl::StatusOr<std::vector<int64_t>> scope = access_->ListScope(*p, req->org_unit_id());
            if (!scope.ok()) return scope.status();
            q.buckets = *scope;
          }
          absl::StatusOr<std::vector<RecordChange>> page = access_->List(
              q, req->page_size(), req->page_token(),
              QueryFingerprint(*req, absl::StrCat(p->user_id)), resp->mutable_next_page_token());
          if (!page.ok()) return page.status();
          for (const RecordChange& r : *page) {
            absl::Status s = model::FromChange(r, resp->add_visits());
            if (!s.ok()) return s;
          }
          return absl::OkStatus();
        });
  }

  ServerUnaryReactor* CreateVisit(CallbackServerContext* ctx, const v1::CreateVisitRequest* req,
                                  Visit* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.VisitService/CreateVisit", [=, this](const Principal* p) -> absl::Status {
          Visit v = req->visit();
          Facility facility;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kFacilityType, v.facility_id(), &facility);
          if (!op.ok()) {
            return absl::Status(op.status().code(),
                                absl::StrCat("visit.facility_", op.status().message()));
          }
          if (v.id().empty()) v.set_id(RecordAccess::NewId());
          v.set_commune_id(facility.commune_id());
          v.set_collaborator_id(p->user_id);
          if (v.visited_ms() == 0) v.set_visited_ms(access_->NowMs());
          absl::StatusOr<RecordChange> change = NewRecord(v);
          if (!change.ok()) {
            return absl::InvalidArgumentError(absl::StrCat("visit.", change.status().message()));
          }
          absl::Status s = access_->Write(*p, {*change});
          if (!s.ok()) return s;
          return access_->Read(*p, model::kVisitType, v.id(), resp).status();
        });
  }

  ServerUnaryReactor* UpdateVisit(CallbackServerContext* ctx, const v1::UpdateVisitRequest* req,
                                  Visit* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.VisitService/UpdateVisit", [=, this](const Principal* p) -> absl::Status {
          Visit current;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kVisitType, req->visit().id(), &current);
          if (!op.ok()) return op.status();
          if (req->update_mask().paths_size() == 0) {
            return absl::InvalidArgumentError("update_mask: name the fields to change");
          }
          Visit next = req->visit();
          next.set_commune_id(current.commune_id());
          absl::StatusOr<RecordChange> change = RecordAccess::MaskedChange(
              next, req->update_mask(), {"id", "commune_id", "facility_id", "collaborator_id"});
          if (!change.ok()) return change.status();
          change->set_base_op(*op);
          absl::Status s = access_->Write(*p, {*change});
          if (!s.ok()) return s;
          return access_->Read(*p, model::kVisitType, current.id(), resp).status();
        });
  }

 private:
  RecordAccess* access_;
  RpcRunner* runner_;
};

// ---------------------------------------------------------------------------------------

// ApproveRequest.over_plan_reason's limit.
constexpr size_t kMaxOverPlanReasonBytes = 1000;

class SupportRequestServiceImpl : public kcnet::v1::SupportRequestService::CallbackService {
 public:
  SupportRequestServiceImpl(RecordAccess* access, RpcRunner* runner)
      : access_(access), runner_(runner) {}

  ServerUnaryReactor* GetSupportRequest(CallbackServerContext* ctx, const v1::GetRecordRequest* req,
                                        SupportRequest* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.SupportRequestService/GetSupportRequest", [=, this](const Principal* p) {
          return access_->Read(*p, model::kSupportRequestType, req->id(), resp).status();
        });
  }

  ServerUnaryReactor* ListSupportRequests(CallbackServerContext* ctx,
                                          const v1::ListSupportRequestsRequest* req,
                                          v1::ListSupportRequestsResponse* resp) override {
    return runner_->Run(ctx, "kcnet.v1.SupportRequestService/ListSupportRequests",
                        [=, this](const Principal* p) -> absl::Status {
                          absl::StatusOr<RequestFilter> filter =
                              MakeRequestFilter(*access_, *p, *req);
                          if (!filter.ok()) return filter.status();
                          absl::StatusOr<std::vector<RecordChange>> page =
                              access_->List(filter->query, req->page_size(), req->page_token(),
                                            QueryFingerprint(*req, absl::StrCat(p->user_id)),
                                            resp->mutable_next_page_token(), filter->keep);
                          if (!page.ok()) return page.status();
                          for (const RecordChange& r : *page) {
                            absl::Status s = model::FromChange(r, resp->add_support_requests());
                            if (!s.ok()) return s;
                          }
                          return absl::OkStatus();
                        });
  }

  ServerUnaryReactor* CountSupportRequests(CallbackServerContext* ctx,
                                           const v1::ListSupportRequestsRequest* req,
                                           v1::CountSupportRequestsResponse* resp) override {
    return runner_->Run(ctx, "kcnet.v1.SupportRequestService/CountSupportRequests",
                        [=, this](const Principal* p) -> absl::Status {
                          absl::StatusOr<RequestFilter> filter =
                              MakeRequestFilter(*access_, *p, *req);
                          if (!filter.ok()) return filter.status();
                          absl::StatusOr<int64_t> n = access_->Count(filter->query, filter->keep);
                          if (!n.ok()) return n.status();
                          resp->set_count(*n);
                          return absl::OkStatus();
                        });
  }

  ServerUnaryReactor* CreateSupportRequest(CallbackServerContext* ctx,
                                           const v1::CreateSupportRequestRequest* req,
                                           SupportRequest* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.SupportRequestService/CreateSupportRequest",
        [=, this](const Principal* p) -> absl::Status {
          SupportRequest r = req->support_request();
          Facility facility;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kFacilityType, r.facility_id(), &facility);
          if (!op.ok()) {
            return absl::Status(op.status().code(),
                                absl::StrCat("support_request.facility_", op.status().message()));
          }
          if (r.id().empty()) r.set_id(RecordAccess::NewId());
          r.set_commune_id(facility.commune_id());
          r.set_author_id(p->user_id);
          r.set_status(kcnet::v1::REQUEST_STATUS_DRAFT);
          r.set_created_ms(access_->NowMs());
          r.set_updated_ms(r.created_ms());
          absl::StatusOr<RecordChange> change = NewRecord(r);
          if (!change.ok()) {
            return absl::InvalidArgumentError(
                absl::StrCat("support_request.", change.status().message()));
          }
          absl::StatusOr<RecordChange> event = NewRecord(Event(
              *p, r, kcnet::v1::REQUEST_ACTION_CREATE, kcnet::v1::REQUEST_STATUS_DRAFT, "", 0));
          if (!event.ok()) return event.status();
          absl::Status s = access_->Write(*p, {*change, *event});
          if (!s.ok()) return s;
          return access_->Read(*p, model::kSupportRequestType, r.id(), resp).status();
        });
  }

  ServerUnaryReactor* UpdateSupportRequest(CallbackServerContext* ctx,
                                           const v1::UpdateSupportRequestRequest* req,
                                           SupportRequest* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.SupportRequestService/UpdateSupportRequest",
        [=, this](const Principal* p) -> absl::Status {
          SupportRequest current;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kSupportRequestType, req->support_request().id(), &current);
          if (!op.ok()) return op.status();
          if (req->update_mask().paths_size() == 0) {
            return absl::InvalidArgumentError("update_mask: name the fields to change");
          }
          SupportRequest next = req->support_request();
          next.set_commune_id(current.commune_id());
          next.set_updated_ms(access_->NowMs());
          google::protobuf::FieldMask mask = req->update_mask();
          mask.add_paths("updated_ms");
          absl::StatusOr<RecordChange> change = RecordAccess::MaskedChange(
              next, mask,
              {"id", "commune_id", "facility_id", "author_id", "status", "approved_amount_vnd",
               "approved_funding", "decision_note", "created_ms"});
          if (!change.ok()) return change.status();
          change->set_base_op(*op);
          absl::Status s = access_->Write(*p, {*change});
          if (!s.ok()) return s;
          return access_->Read(*p, model::kSupportRequestType, current.id(), resp).status();
        });
  }

#define KCNET_TRANSITION(Method, Action)                                                      \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const v1::TransitionRequest* req,    \
                             SupportRequest* resp) override {                                 \
    return runner_->Run(ctx, "kcnet.v1.SupportRequestService/" #Method,                       \
                        [=, this](const Principal* p) {                                       \
                          return Transition(*p, req->id(), Action, req->note(), 0,            \
                                            kcnet::v1::FUNDING_SOURCE_UNSPECIFIED, {}, resp); \
                        });                                                                   \
  }
  KCNET_TRANSITION(SubmitSupportRequest, kcnet::v1::REQUEST_ACTION_SUBMIT)
  KCNET_TRANSITION(EndorseSupportRequest, kcnet::v1::REQUEST_ACTION_ENDORSE)
  KCNET_TRANSITION(ReturnSupportRequest, kcnet::v1::REQUEST_ACTION_RETURN)
  KCNET_TRANSITION(RejectSupportRequest, kcnet::v1::REQUEST_ACTION_REJECT)
  KCNET_TRANSITION(StartSupportRequest, kcnet::v1::REQUEST_ACTION_START)
  KCNET_TRANSITION(CompleteSupportRequest, kcnet::v1::REQUEST_ACTION_COMPLETE)
  KCNET_TRANSITION(CancelSupportRequest, kcnet::v1::REQUEST_ACTION_CANCEL)
#undef KCNET_TRANSITION

  ServerUnaryReactor* ApproveSupportRequest(CallbackServerContext* ctx,
                                            const v1::ApproveRequest* req,
                                            SupportRequest* resp) override {
    return runner_->Run(ctx, "kcnet.v1.SupportRequestService/ApproveSupportRequest",
                        [=, this](const Principal* p) -> absl::Status {
                          if (req->over_plan_reason().size() > kMaxOverPlanReasonBytes) {
                            return absl::InvalidArgumentError(
                                absl::StrCat("over_plan_reason: at most ", kMaxOverPlanReasonBytes,
                                             " bytes, got ", req->over_plan_reason().size()));
                          }
                          return Transition(*p, req->id(), kcnet::v1::REQUEST_ACTION_APPROVE,
                                            req->note(), req->approved_amount_vnd(), req->funding(),
                                            {.over_plan_reason = req->over_plan_reason()}, resp);
                        });
  }

  ServerUnaryReactor* ListRequestEvents(CallbackServerContext* ctx,
                                        const v1::ListRequestEventsRequest* req,
                                        v1::ListRequestEventsResponse* resp) override {
    return runner_->Run(
        ctx, "kcnet.v1.SupportRequestService/ListRequestEvents",
        [=, this](const Principal* p) -> absl::Status {
          SupportRequest request;
          absl::StatusOr<uint64_t> op =
              access_->Read(*p, model::kSupportRequestType, req->request_id(), &request);
          if (!op.ok()) {
            return absl::Status(op.status().code(),
                                absl::StrCat("request_", op.status().message()));
          }
          sync::ListQuery q{
              .type = model::kRequestEventType,
              .buckets = {request.commune_id()},
              .equals = {{RequestEvent::kRequestIdFieldNumber, TextValue(request.id())}},
              .newest_first = false};
          absl::StatusOr<std::vector<RecordChange>> page = access_->List(
              q, req->page_size(), req->page_token(),
              QueryFingerprint(*req, absl::StrCat(p->user_id)), resp->mutable_next_page_token());
          if (!page.ok()) return page.status();
          for (const RecordChange& r : *page) {
            absl::Status s = model::FromChange(r, resp->add_events());
            if (!s.ok()) return s;
          }
          return absl::OkStatus();
        });
  }

 private:
  RequestEvent Event(const Principal& p, const SupportRequest& r, kcnet::v1::RequestAction action,
                     kcnet::v1::RequestStatus to, const std::string& note, int64_t amount) {
    return model::NewRequestEvent(r, p.user_id, action, to, note, amount, access_->NowMs());
  }

  absl::Status Transition(const Principal& p, const std::string& id,
                          kcnet::v1::RequestAction action, const std::string& note, int64_t amount,
                          kcnet::v1::FundingSource funding, WriteContext context,
                          SupportRequest* resp) {
    SupportRequest current;
    absl::StatusOr<uint64_t> op = access_->Read(p, model::kSupportRequestType, id, &current);
    if (!op.ok()) return op.status();
    absl::StatusOr<std::vector<RecordChange>> changes = model::RequestActionChanges(
        current, *op, access_->ActorFor(p),
        {.action = action, .note = note, .approved_amount_vnd = amount, .funding = funding},
        access_->NowMs());
    if (!changes.ok()) return changes.status();
    absl::Status s = access_->Write(p, *std::move(changes), std::move(context));
    if (!s.ok()) return s;
    return access_->Read(p, model::kSupportRequestType, id, resp).status();
  }

  RecordAccess* access_;
  RpcRunner* runner_;
};

// Owns the shared RecordAccess for the services' lifetime.
class RecordServicesHolder : public grpc::Service {
 public:
  explicit RecordServicesHolder(const RecordServiceDeps& deps) : access(deps) {}
  RecordAccess access;
};

}  // namespace

std::vector<std::unique_ptr<grpc::Service>> MakeRecordServices(const RecordServiceDeps& deps) {
  auto holder = std::make_unique<RecordServicesHolder>(deps);
  RecordAccess* access = &holder->access;
  std::vector<std::unique_ptr<grpc::Service>> out;
  out.push_back(std::make_unique<FacilityServiceImpl>(access, deps.runner));
  out.push_back(std::make_unique<VisitServiceImpl>(access, deps.runner));
  out.push_back(std::make_unique<SupportRequestServiceImpl>(access, deps.runner));
  out.push_back(std::move(holder));  // registered too: it has no methods
  return out;
}

}  // namespace kcnet::server
