#include "sync/hlc.h"

#include <limits>

#include "gtest/gtest.h"

namespace kcnet::sync {
namespace {

constexpr int64_t kT0 = 1764000000000;  // 2025-11-24

TEST(HlcTest, PackUnpackRoundTrips) {
  const uint64_t hlc = HlcPack(kT0, 7);
  EXPECT_EQ(HlcWallMs(hlc), kT0);
  EXPECT_EQ(HlcCounter(hlc), 7u);
  EXPECT_EQ(HlcToString(hlc), "1764000000000.7");
}

TEST(HlcTest, NowIsStrictlyIncreasingWhenTheWallClockStands) {
  FakeClock wall(kT0);
  HybridClock clock(&wall);
  uint64_t last = 0;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t now = clock.Now();
    ASSERT_GT(now, last);
    last = now;
  }
  EXPECT_EQ(HlcWallMs(last), kT0);
  EXPECT_EQ(HlcCounter(last), 999u);
}

TEST(HlcTest, NowFollowsTheWallClockAndNeverGoesBack) {
  FakeClock wall(kT0);
  HybridClock clock(&wall);
  const uint64_t a = clock.Now();
  wall.Advance(5);
  const uint64_t b = clock.Now();
  EXPECT_EQ(b, HlcPack(kT0 + 5, 0));
  wall.Set(kT0 - 60000);  // the tablet's clock jumps back a minute
  const uint64_t c = clock.Now();
  EXPECT_GT(c, b);
  EXPECT_GT(b, a);
}

TEST(HlcTest, CounterOverflowBorrowsTheNextMillisecond) {
  FakeClock wall(kT0);
  HybridClock clock(&wall);
  clock.Raise(HlcPack(kT0, kHlcCounterMask));
  EXPECT_EQ(clock.Now(), HlcPack(kT0 + 1, 0));
}

// Found by tests/fuzz/clock_merge_fuzzer: Now() after Raise(2^64 - 1) wrapped to 0.
TEST(HlcTest, NowSaturatesInsteadOfWrappingAtTheTopOfTheRange) {
  FakeClock wall(kT0);
  HybridClock clock(&wall);
  clock.Raise(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(clock.Now(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(clock.Now(), std::numeric_limits<uint64_t>::max());
}

TEST(HlcTest, ObserveRaisesLaterStamps) {
  FakeClock wall(kT0);
  HybridClock clock(&wall);
  const uint64_t remote = HlcPack(kT0 + 1000, 3);
  ASSERT_TRUE(clock.Observe(remote).ok());
  EXPECT_GT(clock.Now(), remote);
}

TEST(HlcTest, ObserveRefusesAClockBeyondTheSkewBoundAndStaysUnchanged) {
  FakeClock wall(kT0);
  HybridClock clock(&wall, absl::Minutes(5));
  const uint64_t year_ahead = HlcPack(kT0 + 365LL * 24 * 3600 * 1000, 0);
  const absl::Status status = clock.Observe(year_ahead);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("ahead"), absl::string_view::npos) << status;
  EXPECT_EQ(HlcWallMs(clock.Now()), kT0);
  // Just inside the bound is accepted.
  EXPECT_TRUE(clock.Observe(HlcPack(kT0 + 5 * 60 * 1000, 0)).ok());
}

TEST(HlcTest, StampsOrderByClockThenNode) {
  EXPECT_LT((Stamp{1, 9}), (Stamp{2, 1}));
  EXPECT_LT((Stamp{2, 1}), (Stamp{2, 3}));
  EXPECT_EQ((Stamp{2, 3}), (Stamp{2, 3}));
}

TEST(HlcTest, NodeIdsAreStableAndDistinct) {
  EXPECT_EQ(NodeIdFor("tablet-a"), NodeIdFor("tablet-a"));
  EXPECT_NE(NodeIdFor("tablet-a"), NodeIdFor("tablet-b"));
  EXPECT_NE(NodeIdFor(""), 0u);
}

}  // namespace
}  // namespace kcnet::sync
