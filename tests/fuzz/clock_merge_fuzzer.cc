// libFuzzer target: the hybrid logical clock and the per-field merge rule. The input is a
// program of operations (set or move the wall clock, Now, Observe, Raise, merges of random
// stamps) read with FuzzedDataProvider.
//
// Invariants (abort on violation): Now() is strictly increasing and above every value
// observed or raised; Observe() refuses exactly the clocks beyond the skew bound and then
// changes nothing; MergeField is antisymmetric (the two sides of a merge agree on the
// winner), reports equal stamps as the same write, only reports conflicts between
// different nodes, and replicas applying the same writes in any order end with the
// highest stamp; HLC packing round-trips; node ids are never 0.
//
// Thread-safety: single-threaded (libFuzzer calls it from one thread).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "sync/hlc.h"
#include "sync/merge.h"
#include "tests/fuzz/fuzz_util.h"

namespace kcnet::fuzz {
namespace {

using sync::FieldMerge;
using sync::MergeDecision;
using sync::MergeField;
using sync::Stamp;

// A stamp from a small space, so that equal clocks and nodes happen often.
Stamp SmallStamp(FuzzedDataProvider& in) {
  return Stamp{sync::HlcPack(kNowMs + in.ConsumeIntegralInRange<int64_t>(-2, 2),
                             in.ConsumeIntegralInRange<uint64_t>(0, 3)),
               in.ConsumeIntegralInRange<uint64_t>(1, 3)};
}

void CheckMerge(FuzzedDataProvider& in) {
  const Stamp a = in.ConsumeBool()
                      ? SmallStamp(in)
                      : Stamp{in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint64_t>()};
  const Stamp b = in.ConsumeBool()
                      ? SmallStamp(in)
                      : Stamp{in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint64_t>()};
  const uint64_t op_a = in.ConsumeIntegralInRange<uint64_t>(0, 5);
  const uint64_t op_b = in.ConsumeIntegralInRange<uint64_t>(0, 5);
  const uint64_t base = in.ConsumeIntegralInRange<uint64_t>(0, 5);
  const FieldMerge b_over_a = MergeField(a, op_a, b, base);
  const FieldMerge a_over_b = MergeField(b, op_b, a, base);
  if (a == b) {
    KCNET_FUZZ_CHECK(b_over_a.decision == MergeDecision::kSame && !b_over_a.conflict,
                     "equal stamps are not the same write");
    KCNET_FUZZ_CHECK(a_over_b.decision == MergeDecision::kSame && !a_over_b.conflict,
                     "equal stamps are not the same write");
    return;
  }
  const bool b_wins = b > a;
  KCNET_FUZZ_CHECK(
      b_over_a.decision == (b_wins ? MergeDecision::kTakeIncoming : MergeDecision::kKeepCurrent),
      "incoming b: wrong winner");
  KCNET_FUZZ_CHECK(
      a_over_b.decision == (b_wins ? MergeDecision::kKeepCurrent : MergeDecision::kTakeIncoming),
      "incoming a: wrong winner");
  KCNET_FUZZ_CHECK(!b_over_a.conflict || a.node != b.node, "a conflict with its own node");
  KCNET_FUZZ_CHECK(!a_over_b.conflict || a.node != b.node, "a conflict with its own node");
  KCNET_FUZZ_CHECK(b_over_a.conflict == (op_a > base && a.node != b.node),
                   "conflict rule: stored op %llu, base op %llu",
                   static_cast<unsigned long long>(op_a), static_cast<unsigned long long>(base));
}

// Three replicas receive the same writes in different orders; all end with the maximum.
void CheckConvergence(FuzzedDataProvider& in) {
  std::vector<Stamp> writes(in.ConsumeIntegralInRange<size_t>(1, 6));
  for (Stamp& s : writes) s = SmallStamp(in);
  const Stamp highest = *std::max_element(writes.begin(), writes.end());
  std::vector<Stamp> order = writes;
  for (int replica = 0; replica < 3; ++replica) {
    if (replica == 1) std::reverse(order.begin(), order.end());
    if (replica == 2) std::sort(order.begin(), order.end());
    Stamp current = order.front();
    for (size_t i = 1; i < order.size(); ++i) {
      const FieldMerge m = MergeField(current, 1, order[i], 0);
      if (m.decision == MergeDecision::kTakeIncoming) current = order[i];
    }
    KCNET_FUZZ_CHECK(current == highest, "replica %d did not converge on the highest stamp",
                     replica);
  }
}

void Run(FuzzedDataProvider& in) {
  sync::FakeClock wall(in.ConsumeIntegralInRange<int64_t>(0, sync::kHlcMaxWallMs));
  const absl::Duration skew = absl::Milliseconds(in.ConsumeIntegralInRange<int64_t>(0, 600000));
  sync::HybridClock hlc(&wall, skew);
  uint64_t floor = 0;  // every value returned, observed or raised so far
  bool issued = false;
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        wall.Set(in.ConsumeIntegralInRange<int64_t>(0, sync::kHlcMaxWallMs));
        break;
      case 1: {
        const int64_t now = wall.NowMs();
        wall.Set(std::clamp<int64_t>(now + in.ConsumeIntegralInRange<int64_t>(-100000, 100000), 0,
                                     sync::kHlcMaxWallMs));
        break;
      }
      case 2: {
        const uint64_t now = hlc.Now();
        // The one exception: a clock raised to the largest value stays there.
        const bool saturated = floor == std::numeric_limits<uint64_t>::max() && now == floor;
        KCNET_FUZZ_CHECK(!issued || now > floor || saturated, "Now() %s is not above %s",
                         sync::HlcToString(now).c_str(), sync::HlcToString(floor).c_str());
        KCNET_FUZZ_CHECK(sync::HlcWallMs(now) >= wall.NowMs(), "Now() is behind the wall clock");
        floor = now;
        issued = true;
        break;
      }
      case 3: {
        const uint64_t remote =
            in.ConsumeBool()
                ? in.ConsumeIntegral<uint64_t>()
                : sync::HlcPack(wall.NowMs() + in.ConsumeIntegralInRange<int64_t>(-1000, 700000),
                                in.ConsumeIntegral<uint16_t>());
        const bool acceptable =
            sync::HlcWallMs(remote) <= wall.NowMs() + absl::ToInt64Milliseconds(skew);
        const absl::Status status = hlc.Observe(remote);
        KCNET_FUZZ_CHECK(status.ok() == acceptable, "Observe(%s) at wall %lld: %s",
                         sync::HlcToString(remote).c_str(), static_cast<long long>(wall.NowMs()),
                         status.ToString().c_str());
        if (status.ok()) {
          floor = std::max(floor, remote);
          issued = true;
        }
        break;
      }
      case 4: {
        const uint64_t value = in.ConsumeIntegral<uint64_t>();
        hlc.Raise(value);
        floor = std::max(floor, value);
        issued = true;
        break;
      }
      case 5:
        CheckMerge(in);
        break;
      case 6:
        CheckConvergence(in);
        break;
      case 7: {
        const std::string name = in.ConsumeRandomLengthString(64);
        KCNET_FUZZ_CHECK(sync::NodeIdFor(name) != 0, "node id 0");
        const int64_t ms = in.ConsumeIntegralInRange<int64_t>(0, sync::kHlcMaxWallMs);
        const uint64_t counter = in.ConsumeIntegral<uint16_t>();
        const uint64_t packed = sync::HlcPack(ms, counter);
        KCNET_FUZZ_CHECK(sync::HlcWallMs(packed) == ms && sync::HlcCounter(packed) == counter,
                         "HlcPack does not round-trip");
        sync::HlcToString(packed);
        break;
      }
    }
  }
}

}  // namespace
}  // namespace kcnet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  kcnet::fuzz::Run(in);
  return 0;
}
