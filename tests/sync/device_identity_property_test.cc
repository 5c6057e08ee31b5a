// Property test of device identity (issue 13): random users register, release and borrow
// random device ids and push, replay and forge random mutations through the server store,
// the way ServerStore::RegisterDevice and Apply are used by the sync stream. Whatever the
// interleaving:
//   1. a device id is pushed under only by the user it is registered to (a borrowed one is
//      refused at registration), and a registration's key never serves two users;
//   2. a DUPLICATE answer is only ever given to the very payload that was applied at that
//      (key, sequence): another device's or another user's write is never DUPLICATE;
//   3. every payload is applied at most once per (key, sequence).
//
// Thread-safety: single-threaded.
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"
#include "sync/hlc.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

constexpr int64_t kT0 = 1'760'000'000'000;
constexpr int64_t kUnit = 10;

// A creation of item `id` (type 1 of TestSchema) whose count is `payload`.
kcnet::v1::Mutation Create(uint64_t seq, int id, int64_t payload, uint64_t hlc) {
  kcnet::v1::Mutation m;
  m.set_seq(seq);
  kcnet::v1::RecordChange* c = m.add_changes();
  c->set_type(1);
  std::string bytes(16, '\0');
  bytes[0] = static_cast<char>(id);
  bytes[1] = static_cast<char>(id >> 8);
  bytes[6] = 0x70;
  bytes[8] = static_cast<char>(0x80);
  c->set_id(bytes);
  c->set_hlc(hlc);
  auto* unit = c->add_fields();
  unit->set_field(2);
  unit->mutable_value()->set_int_value(kUnit);
  auto* count = c->add_fields();
  count->set_field(3);
  count->mutable_value()->set_int_value(payload);
  return m;
}

RC_GTEST_PROP(DeviceIdentity, NoWriteOfOneDeviceIsEverDuplicateForAnother, ()) {
  kcnet::testing::TempDir dir;
  const Schema schema = kcnet::testing::TestSchema();
  FakeClock wall(kT0);
  absl::StatusOr<std::unique_ptr<ServerStore>> opened = ServerStore::Open(
      dir.File("server.db"), &schema, ServerStoreOptions{.clock = &wall, .durable = false});
  RC_ASSERT(opened.ok());
  ServerStore& store = **opened;

  const int users = *rc::gen::inRange(1, 4);
  const int devices = *rc::gen::inRange(1, 4);
  std::map<std::string, int64_t> key_owner;      // registration key -> its user
  std::map<std::string, int64_t> device_owner;   // device id -> user holding it now
  std::map<std::string, int64_t> registered_to;  // device id -> its last registered user
  std::map<std::pair<std::string, uint64_t>, int64_t> applied;  // (key, seq) -> payload
  struct Sent {
    std::string key;
    uint64_t node;
    kcnet::v1::Mutation m;
  };
  std::vector<Sent> sent;
  int next_record = 1;
  int64_t next_payload = 1;

  const int steps = *rc::gen::inRange(5, 80);
  for (int step = 0; step < steps; ++step) {
    const int64_t user = *rc::gen::inRange(1, users + 1);
    const std::string device = absl::StrCat("tablet-", *rc::gen::inRange(0, devices));
    const int action = *rc::gen::inRange(0, 10);
    if (action == 0) {
      // The holder (or an administrator, now and then) releases the device.
      const bool admin = *rc::gen::inRange(0, 4) == 0;
      absl::Status released = store.ReleaseDevice(device, user, admin);
      auto last = registered_to.find(device);
      const bool may = last != registered_to.end() && (admin || last->second == user);
      RC_ASSERT(released.ok() == may);  // releasing again is harmless
      if (may) device_owner.erase(device);
      continue;
    }
    if (action == 1 && !sent.empty()) {
      // A replay of an earlier push, exactly as sent (a lost acknowledgement).
      const Sent& again = *rc::gen::elementOf(sent);
      kcnet::v1::MutationBatch batch;
      *batch.add_mutations() = again.m;
      absl::StatusOr<kcnet::v1::PushAck> ack = store.Apply({again.key, again.node, {}}, batch);
      RC_ASSERT(ack.ok());
      const auto& r = ack->results(0);
      if (r.outcome() == kcnet::v1::MUTATION_OUTCOME_DUPLICATE) {
        auto it = applied.find({again.key, again.m.seq()});
        RC_ASSERT(it != applied.end());
        RC_ASSERT(it->second == again.m.changes(0).fields(1).value().int_value());
      }
      continue;
    }
    // A push by `user` on `device`: registration first, as the stream's Hello does.
    absl::StatusOr<DeviceRegistration> reg = store.RegisterDevice(device, user);
    auto holder = device_owner.find(device);
    if (holder != device_owner.end() && holder->second != user) {
      RC_ASSERT(absl::IsPermissionDenied(reg.status()));  // a borrowed id is refused
      continue;
    }
    RC_ASSERT(reg.ok());
    RC_ASSERT(reg->owner == user);
    device_owner[device] = user;
    registered_to[device] = user;
    auto [known, inserted] = key_owner.try_emplace(reg->key, user);
    RC_ASSERT(known->second == user);  // a key never serves two users
    RC_ASSERT(reg->node == NodeIdFor(reg->key));
    // The next sequence, or one already used (a cloned tablet, a replay with new content).
    const uint64_t seq = *rc::gen::inRange<int>(0, 3) == 0 && reg->last_applied_seq > 0
                             ? static_cast<uint64_t>(*rc::gen::inRange<int>(
                                   1, static_cast<int>(reg->last_applied_seq) + 1))
                             : reg->last_applied_seq + 1;
    const int64_t payload = next_payload++;
    wall.Advance(1);
    Sent s{reg->key, reg->node, Create(seq, next_record++, payload, HlcPack(wall.NowMs(), 0))};
    kcnet::v1::MutationBatch batch;
    *batch.add_mutations() = s.m;
    absl::StatusOr<kcnet::v1::PushAck> ack = store.Apply({s.key, s.node, {}}, batch);
    RC_ASSERT(ack.ok());
    const auto& r = ack->results(0);
    // A new payload is never DUPLICATE: it was never applied anywhere.
    RC_ASSERT(r.outcome() != kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
    if (r.outcome() == kcnet::v1::MUTATION_OUTCOME_APPLIED) {
      RC_ASSERT(applied.emplace(std::make_pair(s.key, seq), payload).second);
    } else {
      RC_ASSERT(r.outcome() == kcnet::v1::MUTATION_OUTCOME_REFUSED);
      RC_ASSERT(seq <= reg->last_applied_seq);  // only a reused sequence is refused here
    }
    sent.push_back(std::move(s));
  }
}

}  // namespace
}  // namespace kcnet::sync
