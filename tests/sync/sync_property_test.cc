// Property tests of the sync core: random scenarios with a server and several devices
// that edit and delete the same records offline, push and pull through a faulty channel
// (dropped requests and acknowledgements, duplicated and reordered deliveries), and end
// with a quiet period in which everything is delivered.
//
// Checked for every scenario:
//  1. convergence: every device's confirmed records equal the server's, and checksums
//     (running and recomputed) agree in every bucket;
//  2. idempotence: re-applying every push batch and every download batch changes nothing;
//  3. no loss: every mutation a device wrote was applied exactly once or refused and
//     reported to its device; every field's final stamp is the highest applied to it;
//  4. conflicts: the conflict log equals what an independent in-memory model of the
//     merge rules expects: every overwritten concurrent edit by another writer is in it.
//
// The same property runs on both server stores (value-parameterized): SQLite and
// PostgreSQL (PgServerStore on a PostgreSQL of its own, a new database per scenario; skipped
// with a message when the PostgreSQL binaries are absent).
//
// KCNET_PROPERTY_SCENARIOS sets the number of scenarios (default 1000; on PostgreSQL at
// most KCNET_PG_PROPERTY_SCENARIOS, default 20: each needs a database); RC_PARAMS
// (rapidcheck's own, e.g. "seed=123") replays one.
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/device_store.h"
#include "sync/server_store.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using kcnet::v1::ChangeBatch;
using kcnet::v1::MutationBatch;
using kcnet::v1::PushAck;
using kcnet::v1::RecordChange;
using kcnet::v1::Value;

constexpr int64_t kT0 = 1764000000000;
constexpr int kRecords = 6;
int g_converged = 0;

// The PostgreSQL server of the PostgreSQL variant (null on the SQLite one), and the number
// of databases made on it so far.
kcnet::testing::PgInstance* g_pg = nullptr;
int g_pg_databases = 0;

// ---- The independent model of the server's merge --------------------------------------

struct ModelField {
  Value value;
  Stamp stamp;
  uint64_t op = 0;
};
struct ModelRow {
  bool deleted = false;
  Stamp del_stamp;
  std::map<uint32_t, ModelField> fields;
};
// (record id, field, loser hlc, loser node, winner hlc, winner node)
using ConflictKey = std::tuple<std::string, uint32_t, uint64_t, uint64_t, uint64_t, uint64_t>;

class Model {
 public:
  explicit Model(const Schema& schema) : type_(*schema.Find(1)) {}

  // Applies `m` as the server did; `server_op` is the highest op id the server gave it
  // (MutationResult.op). Op ids are only promised to grow, not to be dense (the
  // PostgreSQL store draws them from a sequence, with gaps), so the model numbers the ops
  // it makes itself and then moves them up to end at the server's: a device's base_op
  // (a server op id) is then compared with op ids on the same scale.
  void Apply(uint64_t node, const kcnet::v1::Mutation& m, uint64_t server_op) {
    const uint64_t before = op_;
    for (const RecordChange& c : m.changes()) ApplyChange(node, c);
    if (op_ == before || server_op <= op_) return;
    const uint64_t shift = server_op - op_;
    for (const RecordChange& c : m.changes()) {
      auto it = rows_.find(c.id());
      if (it == rows_.end()) continue;
      for (auto& [number, f] : it->second.fields) {
        if (f.op > before && f.op <= op_) f.op += shift;
      }
    }
    op_ = server_op;
  }

  const std::map<std::string, ModelRow>& rows() const { return rows_; }
  const std::multiset<ConflictKey>& conflicts() const { return conflicts_; }

 private:
  void ApplyChange(uint64_t node, const RecordChange& c) {
    const Stamp in{c.hlc(), node};
    auto it = rows_.find(c.id());
    if (it == rows_.end()) {
      ModelRow row;
      ++op_;
      for (const FieldSpec& f : type_.fields) row.fields[f.number] = ModelField{{}, in, op_};
      for (const auto& f : c.fields()) row.fields[f.field()].value = f.value();
      rows_[c.id()] = row;
      return;
    }
    ModelRow& row = it->second;
    if (row.deleted) {
      if (c.deleted() || row.del_stamp.node == node) return;
      for (const auto& f : c.fields()) {
        conflicts_.insert(
            {c.id(), f.field(), in.hlc, in.node, row.del_stamp.hlc, row.del_stamp.node});
      }
      return;
    }
    if (c.deleted()) {
      for (const auto& [number, f] : row.fields) {
        if (f.op > c.base_op() && f.stamp.node != node) {
          conflicts_.insert({c.id(), number, f.stamp.hlc, f.stamp.node, in.hlc, in.node});
        }
      }
      row.deleted = true;
      row.del_stamp = in;
      row.fields.clear();
      ++op_;
      return;
    }
    bool changed = false;
    std::vector<uint32_t> taken;
    for (const auto& f : c.fields()) {
      ModelField& cur = row.fields[f.field()];
      if (cur.stamp == in) continue;
      const bool concurrent = cur.op > c.base_op() && cur.stamp.node != node;
      if (in > cur.stamp) {
        if (concurrent) {
          conflicts_.insert({c.id(), f.field(), cur.stamp.hlc, cur.stamp.node, in.hlc, in.node});
        }
        cur.value = f.value();
        cur.stamp = in;
        taken.push_back(f.field());
        changed = true;
      } else if (concurrent) {
        conflicts_.insert({c.id(), f.field(), in.hlc, in.node, cur.stamp.hlc, cur.stamp.node});
      }
    }
    if (changed) {
      ++op_;
      for (uint32_t n : taken) row.fields[n].op = op_;
    }
  }

  const RecordTypeSpec& type_;
  std::map<std::string, ModelRow> rows_;
  std::multiset<ConflictKey> conflicts_;
  uint64_t op_ = 0;
};

// ---- The scenario ----------------------------------------------------------------------

struct Device {
  std::string name;
  std::unique_ptr<FakeClock> clock;
  std::unique_ptr<DeviceStore> store;
  std::vector<ChangeBatch> held;  // downloads delayed by the channel
  std::set<uint64_t> written;     // sequences of its writes
};

class Scenario {
 public:
  Scenario(int devices, int buckets) : buckets_(buckets), model_(schema_) {
    ServerStoreOptions so;
    so.clock = &wall_;
    so.durable = false;  // durability is the crash tests' subject; this one is logic
    if (g_pg == nullptr) {
      server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
    } else {
      const std::string db = absl::StrCat("scenario", ++g_pg_databases);
      RC_ASSERT(g_pg->CreateDatabase(db).ok());
      auto store = pgstore::PgServerStore::Open(g_pg->conninfo(db), &schema_, so);
      if (!store.ok()) RC_FAIL(std::string(store.status().message()));
      server_ = std::move(*store);
    }
    for (int i = 0; i < devices; ++i) {
      Device d;
      d.name = "tablet-" + std::to_string(i);
      d.clock = std::make_unique<FakeClock>(kT0);
      DeviceStoreOptions o;
      o.clock = d.clock.get();
      o.durable = false;
      d.store = *DeviceStore::Open(dir_.File(d.name + ".db"), &schema_, d.name, o);
      for (int b = 1; b <= buckets; ++b) RC_ASSERT(d.store->Subscribe(b).ok());
      devices_.push_back(std::move(d));
    }
  }

  int devices() const { return static_cast<int>(devices_.size()); }

  void Advance(int64_t ms) {
    wall_.Advance(ms);
    for (Device& d : devices_) d.clock->Advance(ms);
  }
  void SetSkew(int device, int64_t skew_ms) {
    devices_[device].clock->Set(wall_.NowMs() + skew_ms);
  }

  // A local edit: create the record if the device does not see it, else set some fields.
  void Edit(int device, int record, const std::vector<std::pair<uint32_t, Value>>& fields) {
    Device& d = devices_[device];
    const std::string id = kcnet::testing::Id(record);
    auto current = d.store->Read(1, id);
    RC_ASSERT(current.ok());
    if (current->has_value() && (*current)->deleted()) return;
    // Ids are UUIDs in real life: only one device ever creates a given record.
    if (!current->has_value() && record % devices() != device) return;
    auto change = kcnet::testing::Change(1, id, fields);
    if (!current->has_value()) {
      auto* unit = change.add_fields();
      unit->set_field(2);
      unit->mutable_value()->set_int_value(record % buckets_ + 1);
    }
    auto seq = d.store->Write({change});
    RC_ASSERT(seq.ok());
    d.written.insert(*seq);
  }

  void Delete(int device, int record) {
    Device& d = devices_[device];
    const std::string id = kcnet::testing::Id(record);
    auto current = d.store->Read(1, id);
    RC_ASSERT(current.ok());
    if (!current->has_value() || (*current)->deleted()) return;
    auto seq = d.store->Write({kcnet::testing::Deletion(1, id)});
    RC_ASSERT(seq.ok());
    d.written.insert(*seq);
  }

  // A coordinator's unary write on the server: it sees the current state.
  void ServerEdit(int record, uint32_t field, const Value& value) {
    const std::string id = kcnet::testing::Id(record);
    auto current = server_->ReadRecord(1, id);
    RC_ASSERT(current.ok());
    if (!current->has_value() || (*current)->deleted()) return;
    MutationBatch batch;
    auto* m = batch.add_mutations();
    auto c = kcnet::testing::Change(1, id, {{field, value}});
    c.set_hlc(server_->clock().Now());
    c.set_base_op((*current)->op());
    *m->add_changes() = c;
    Push(Writer{"", NodeIdFor("coordinator")}, batch);
  }

  enum class PushFault { kNone, kDropRequest, kDropAck, kDuplicate, kSkipFirst };
  void PushFrom(int device, PushFault fault) {
    Device& d = devices_[device];
    auto batch = d.store->PendingBatch(8);
    RC_ASSERT(batch.ok());
    if (batch->mutations_size() == 0 || fault == PushFault::kDropRequest) return;
    if (fault == PushFault::kSkipFirst && batch->mutations_size() > 1) {
      batch->mutable_mutations()->erase(batch->mutable_mutations()->begin());
    }
    const Writer w{d.name, d.store->node()};
    PushAck ack = Push(w, *batch);
    if (fault == PushFault::kDropAck) return;
    RC_ASSERT(d.store->Acknowledge(ack).ok());
    if (fault == PushFault::kDuplicate) {
      PushAck again = Push(w, *batch);
      RC_ASSERT(d.store->Acknowledge(again).ok());
    }
  }

  enum class PullFault { kNone, kDrop, kDuplicate, kHold };
  void PullTo(int device, PullFault fault, size_t max_changes) {
    Device& d = devices_[device];
    auto cursors = d.store->Cursors();
    RC_ASSERT(cursors.ok());
    auto batch = server_->ChangesSince(*cursors, DownloadLimits{.max_changes = max_changes});
    RC_ASSERT(batch.ok());
    downloads_.push_back({device, *batch});
    switch (fault) {
      case PullFault::kDrop:
        return;
      case PullFault::kHold:
        d.held.push_back(*batch);
        return;
      case PullFault::kDuplicate:
        Deliver(d, *batch);
        Deliver(d, *batch);
        return;
      case PullFault::kNone:
        Deliver(d, *batch);
        return;
    }
  }

  void ReleaseHeld(int device) {
    Device& d = devices_[device];
    for (const ChangeBatch& b : d.held) Deliver(d, b);
    d.held.clear();
  }

  // Delivers everything: pushes until outboxes are empty, then pulls until complete.
  void Quiesce() {
    for (int round = 0; round < 10; ++round) {
      for (int i = 0; i < devices(); ++i) {
        ReleaseHeld(i);
        for (int k = 0; k < 100; ++k) {
          auto pending = devices_[i].store->PendingCount();
          RC_ASSERT(pending.ok());
          if (*pending == 0) break;
          PushFrom(i, PushFault::kNone);
        }
      }
      bool all_done = true;
      for (int i = 0; i < devices(); ++i) {
        for (int k = 0; k < 1000; ++k) {
          auto cursors = devices_[i].store->Cursors();
          auto batch = server_->ChangesSince(*cursors, DownloadLimits{.max_changes = 5});
          RC_ASSERT(batch.ok());
          Deliver(devices_[i], *batch);
          if (!batch->more()) break;
        }
        auto pending = devices_[i].store->PendingCount();
        if (*pending != 0) all_done = false;
      }
      if (all_done) return;
    }
    RC_FAIL("outboxes did not drain");
  }

  void CheckAll() {
    CheckConvergence();
    CheckNoLoss();
    CheckConflicts();
    CheckIdempotence();  // last: it re-sends everything
  }

 private:
  PushAck Push(const Writer& w, const MutationBatch& batch) {
    auto ack = server_->Apply(w, batch);
    RC_ASSERT(ack.ok());
    pushes_.push_back({w, batch});
    for (int i = 0; i < ack->results_size(); ++i) {
      const auto& r = ack->results(i);
      if (r.outcome() != kcnet::v1::MUTATION_OUTCOME_APPLIED &&
          r.outcome() != kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT) {
        continue;
      }
      // A mutation stamped beyond the skew bound was applied with the server's clock.
      kcnet::v1::Mutation m = batch.mutations(i);
      if (r.restamped_hlc() != 0) {
        for (auto& c : *m.mutable_changes()) c.set_hlc(r.restamped_hlc());
      }
      RC_ASSERT(m.seq() == r.seq());
      if (!w.device_id.empty()) {
        // Exactly once: no (device, seq) is applied twice.
        RC_ASSERT(applied_.insert({w.device_id, m.seq()}).second);
      }
      for (const auto& c : m.changes()) {
        // A create writes every field (those it does not name, as null).
        const bool create = !model_.rows().contains(c.id());
        for (uint32_t number = 2; number <= 7; ++number) {
          bool named = create;
          for (const auto& f : c.fields()) named = named || f.field() == number;
          if (!named) continue;
          Stamp& best = max_stamp_[{c.id(), number}];
          best = std::max(best, Stamp{c.hlc(), w.node});
        }
      }
      model_.Apply(w.node, m, r.op());
    }
    return *ack;
  }

  void Deliver(Device& d, const ChangeBatch& batch) {
    auto result = d.store->ApplyDownload(batch);
    if (!result.ok()) {
      std::cerr << "device " << d.name << " cursors:";
      const std::vector<kcnet::v1::BucketCursor> cursors = d.store->Cursors().value();
      for (const auto& c : cursors) std::cerr << " " << c.bucket() << "@" << c.op();
      std::cerr << "\nbatch: " << batch.ShortDebugString() << "\n";
      RC_FAIL(result.status().ToString());
    }
    // Nothing here corrupts a store, so a mismatch is a bug.
    RC_ASSERT(result->mismatched.empty());
  }

  void CheckConvergence() {
    for (int b = 1; b <= buckets_; ++b) {
      auto server_cp = server_->Checkpoint(b);
      RC_ASSERT(server_cp.ok());
      for (Device& d : devices_) {
        RC_ASSERT(d.store->Checkpoint(b)->checksum() == server_cp->checksum());
        RC_ASSERT(d.store->RecomputeCheckpoint(b)->checksum() == server_cp->checksum());
        RC_ASSERT(d.store->RecomputeCheckpoint(b)->records() == server_cp->records());
      }
    }
    for (int r = 0; r < kRecords; ++r) {
      const std::string id = kcnet::testing::Id(r);
      auto on_server = server_->ReadRecord(1, id);
      RC_ASSERT(on_server.ok());
      for (Device& d : devices_) {
        auto on_device = d.store->Read(1, id, /*confirmed_only=*/true);
        RC_ASSERT(on_device.ok());
        RC_ASSERT(on_server->has_value() == on_device->has_value());
        if (on_server->has_value()) {
          RC_ASSERT((*on_server)->SerializeAsString() == (*on_device)->SerializeAsString());
        }
        // With nothing pending, what the user sees is the confirmed state.
        auto seen = d.store->Read(1, id);
        RC_ASSERT(seen->has_value() == on_device->has_value());
        if (seen->has_value()) {
          RC_ASSERT((*seen)->SerializeAsString() == (*on_device)->SerializeAsString());
        }
      }
    }
  }

  void CheckNoLoss() {
    for (Device& d : devices_) {
      auto reports = d.store->ListReports();
      RC_ASSERT(reports.ok());
      std::set<uint64_t> refused;
      for (const Report& r : *reports) {
        if (r.result.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED) {
          refused.insert(r.mutation.seq());
        }
      }
      for (uint64_t seq : d.written) {
        const bool was_applied = applied_.count({d.name, seq}) > 0;
        RC_ASSERT(was_applied != (refused.count(seq) > 0));
      }
    }
    // LWW: each live field ends with the highest stamp ever applied to it.
    for (const auto& [key, best] : max_stamp_) {
      auto rec = server_->ReadRecord(1, key.first);
      RC_ASSERT(rec.ok() && rec->has_value());
      if ((*rec)->deleted()) continue;
      Stamp final_stamp{(*rec)->hlc(), (*rec)->node()};
      for (const auto& f : (*rec)->fields()) {
        if (f.field() != key.second) continue;
        if (f.hlc() != 0) final_stamp.hlc = f.hlc();
        if (f.node() != 0) final_stamp.node = f.node();
      }
      if (!(final_stamp == best)) {
        std::cerr << "field " << key.second << " final " << HlcToString(final_stamp.hlc) << "/"
                  << final_stamp.node << " best " << HlcToString(best.hlc) << "/" << best.node
                  << "\n"
                  << (*rec)->DebugString() << "\n";
      }
      RC_ASSERT(final_stamp == best);
    }
    // The model agrees on every record's values.
    for (const auto& [id, row] : model_.rows()) {
      auto rec = server_->ReadRecord(1, id);
      RC_ASSERT(rec.ok() && rec->has_value());
      RC_ASSERT((*rec)->deleted() == row.deleted);
      if (row.deleted) continue;
      for (const auto& [number, f] : row.fields) {
        RC_ASSERT(kcnet::testing::FieldOf(**rec, number).SerializeAsString() ==
                  f.value.SerializeAsString());
      }
    }
  }

  void CheckConflicts() {
    auto listed = server_->ListConflicts({}, true, 0, 100000);
    RC_ASSERT(listed.ok());
    std::multiset<ConflictKey> actual;
    for (const auto& c : *listed) {
      actual.insert({c.record_id(), c.field(), c.loser_hlc(), c.loser_node(), c.winner_hlc(),
                     c.winner_node()});
    }
    RC_ASSERT(actual == model_.conflicts());
  }

  void CheckIdempotence() {
    std::vector<uint64_t> sums;
    for (int b = 1; b <= buckets_; ++b) sums.push_back(server_->Checkpoint(b)->checksum());
    const uint64_t last_op = server_->last_op();
    const size_t conflicts = server_->ListConflicts({}, true, 0, 100000)->size();
    for (const auto& [w, batch] : pushes_) {
      if (w.device_id.empty()) continue;  // unary writes are not retried by design
      auto ack = server_->Apply(w, batch);
      RC_ASSERT(ack.ok());
      for (const auto& r : ack->results()) {
        // Applied ones are duplicates; a refused one is refused again (while the server
        // still remembers it) or a duplicate; nothing is applied a second time.
        if (applied_.count({w.device_id, r.seq()}) > 0) {
          RC_ASSERT(r.outcome() == kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
        } else {
          RC_ASSERT(r.outcome() == kcnet::v1::MUTATION_OUTCOME_DUPLICATE ||
                    r.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED);
        }
      }
    }
    RC_ASSERT(server_->last_op() == last_op);
    RC_ASSERT(server_->ListConflicts({}, true, 0, 100000)->size() == conflicts);
    for (int b = 1; b <= buckets_; ++b) {
      RC_ASSERT(server_->Checkpoint(b)->checksum() == sums[b - 1]);
      for (Device& d : devices_) RC_ASSERT(d.store->Checkpoint(b)->checksum() == sums[b - 1]);
    }
    for (const auto& [device, batch] : downloads_) {
      // Read before re-applying, to show what changed if something does.
      std::vector<std::string> before;
      for (const auto& c : batch.changes()) {
        auto r = devices_[device].store->Read(c.type(), c.id(), true);
        before.push_back(r.ok() && r->has_value() ? (*r)->ShortDebugString() : "absent");
      }
      auto result = devices_[device].store->ApplyDownload(batch);
      RC_ASSERT(result.ok());
      if (result->applied != 0u) {
        std::cerr << "re-applied batch changed " << devices_[device].name << ": "
                  << batch.ShortDebugString() << "\n";
        for (const auto& b : before) std::cerr << "  before: " << b << "\n";
      }
      RC_ASSERT(result->applied == 0u);
    }
    for (int b = 1; b <= buckets_; ++b) {
      for (Device& d : devices_) {
        RC_ASSERT(d.store->RecomputeCheckpoint(b)->checksum() == sums[b - 1]);
      }
    }
  }

  kcnet::testing::TempDir dir_;
  Schema schema_ = kcnet::testing::TestSchema();
  FakeClock wall_{kT0};
  const int buckets_;
  std::unique_ptr<ServerStore> server_;
  std::vector<Device> devices_;
  Model model_;
  std::vector<std::pair<Writer, MutationBatch>> pushes_;
  std::vector<std::pair<int, ChangeBatch>> downloads_;
  std::set<std::pair<std::string, uint64_t>> applied_;
  std::map<std::pair<std::string, uint32_t>, Stamp> max_stamp_;
};

// A random value for field `number` of the test schema's item type.
Value RandomValue(uint32_t number) {
  Value v;
  if (*rc::gen::inRange(0, 10) == 0) return v;  // null
  switch (number) {
    case 3:
      v.set_int_value(*rc::gen::inRange(0, 4));
      break;
    case 4:
      v.set_double_value(*rc::gen::inRange(-3, 3) * 0.5);
      break;
    case 5:
      v.set_string_value(*rc::gen::element<std::string>("a", "b", "Hà Nội", ""));
      break;
    case 6:
      v.set_bool_value(*rc::gen::arbitrary<bool>());
      break;
    default:
      v.set_bytes_value(std::string(*rc::gen::inRange(0, 3), 'x'));
      break;
  }
  return v;
}

void ReplicasConvergeUnderFaults() {
  const int num_devices = *rc::gen::inRange(2, 5);
  const int buckets = *rc::gen::inRange(1, 3);
  Scenario s(num_devices, buckets);
  // Now and then a tablet whose clock is set an hour ahead: the server re-stamps its writes.
  if (*rc::gen::inRange(0, 8) == 0) s.SetSkew(0, 3600 * 1000);
  const int steps = *rc::gen::inRange(5, 60);
  for (int step = 0; step < steps; ++step) {
    const int device = *rc::gen::inRange(0, num_devices);
    const int action = *rc::gen::inRange(0, 100);
    if (action < 35) {
      const int record = *rc::gen::inRange(0, kRecords);
      std::vector<std::pair<uint32_t, Value>> fields;
      for (uint32_t number = 3; number <= 7; ++number) {
        if (*rc::gen::inRange(0, 3) == 0) fields.push_back({number, RandomValue(number)});
      }
      s.Edit(device, record, fields);
    } else if (action < 40) {
      s.Delete(device, *rc::gen::inRange(0, kRecords));
    } else if (action < 45) {
      const auto number = static_cast<uint32_t>(*rc::gen::inRange(3, 8));
      s.ServerEdit(*rc::gen::inRange(0, kRecords), number, RandomValue(number));
    } else if (action < 68) {
      s.PushFrom(device, *rc::gen::element(
                             Scenario::PushFault::kNone, Scenario::PushFault::kNone,
                             Scenario::PushFault::kDropRequest, Scenario::PushFault::kDropAck,
                             Scenario::PushFault::kDuplicate, Scenario::PushFault::kSkipFirst));
    } else if (action < 90) {
      s.PullTo(device,
               *rc::gen::element(Scenario::PullFault::kNone, Scenario::PullFault::kNone,
                                 Scenario::PullFault::kDrop, Scenario::PullFault::kDuplicate,
                                 Scenario::PullFault::kHold),
               static_cast<size_t>(*rc::gen::inRange(1, 10)));
    } else if (action < 94) {
      s.ReleaseHeld(device);
    } else {
      s.Advance(*rc::gen::inRange(0, 3000));
    }
    if (*rc::gen::inRange(0, 4) == 0) s.Advance(*rc::gen::inRange(0, 50));
  }
  s.Quiesce();
  s.CheckAll();
  ++g_converged;
}

enum class Store { kSqlite, kPostgres };

class SyncProperty : public ::testing::TestWithParam<Store> {};

TEST_P(SyncProperty, ReplicasConvergeUnderFaults) {
  rc::detail::TestParams params = rc::detail::configuration().testParams;
  std::unique_ptr<kcnet::testing::PgInstance> pg;
  if (GetParam() == Store::kPostgres) {
    auto started = kcnet::testing::PgInstance::Start();
    if (absl::IsNotFound(started.status())) GTEST_SKIP() << started.status();
    ASSERT_TRUE(started.ok()) << started.status();
    pg = std::move(*started);
    const char* n = std::getenv("KCNET_PG_PROPERTY_SCENARIOS");
    params.maxSuccess = std::min(params.maxSuccess, n != nullptr ? std::atoi(n) : 20);
  }
  g_pg = pg.get();
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  rc::detail::TestMetadata metadata;
  metadata.id = absl::StrCat(info->test_suite_name(), "/", info->name());
  metadata.description = info->name();
  const auto result = rc::detail::checkProperty(
      rc::detail::toProperty(&ReplicasConvergeUnderFaults), metadata, params);
  g_pg = nullptr;
  if (!result.template is<rc::detail::SuccessResult>()) {
    std::ostringstream ss;
    rc::detail::printResultMessage(result, ss);
    FAIL() << ss.str();
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, SyncProperty, ::testing::Values(Store::kSqlite, Store::kPostgres),
                         [](const ::testing::TestParamInfo<Store>& info) {
                           return info.param == Store::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace kcnet::sync

int main(int argc, char** argv) {
  // rapidcheck reads RC_PARAMS once, at its first check; set the default count before.
  const char* n = std::getenv("KCNET_PROPERTY_SCENARIOS");
  const std::string scenarios = n != nullptr ? n : "1000";
  const char* params = std::getenv("RC_PARAMS");
  std::string merged = std::string(params != nullptr ? params : "");
  if (merged.find("max_success") == std::string::npos) {
    merged += " max_success=" + scenarios;
  }
  setenv("RC_PARAMS", merged.c_str(), 1);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  std::cout << kcnet::sync::g_converged << " scenarios converged" << std::endl;
  return rc;
}
