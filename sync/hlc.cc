#include "sync/hlc.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kcnet::sync {
namespace {

class RealClock : public Clock {
 public:
  int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

std::string HlcToString(uint64_t hlc) { return absl::StrCat(HlcWallMs(hlc), ".", HlcCounter(hlc)); }

uint64_t NodeIdFor(absl::string_view replica_name) {
  // FNV-1a 64, then a splitmix64 finaliser for better spread of short names.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : replica_name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

Clock* SystemClock() {
  static Clock* clock = new RealClock();
  return clock;
}

HybridClock::HybridClock(Clock* clock, absl::Duration max_skew)
    : clock_(clock), max_skew_(max_skew) {}

uint64_t HybridClock::Now() {
  const int64_t wall = std::clamp<int64_t>(clock_->NowMs(), 0, kHlcMaxWallMs);
  absl::MutexLock lock(&mu_);
  const uint64_t candidate = HlcPack(wall, 0);
  // When the counter would overflow, borrow the next millisecond: the value stays
  // strictly increasing and runs ahead of the wall clock by at most a millisecond per
  // 65,536 stamps. At the very top of the range (a clock raised to the largest value)
  // it saturates rather than wrap to 0, which would lose every later write.
  if (candidate > last_) {
    last_ = candidate;
  } else if (last_ < std::numeric_limits<uint64_t>::max()) {
    ++last_;
  }
  return last_;
}

absl::Status HybridClock::CheckSkew(uint64_t remote) {
  const int64_t wall = clock_->NowMs();
  const int64_t limit = wall + absl::ToInt64Milliseconds(max_skew_);
  if (HlcWallMs(remote) > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clock ", HlcToString(remote), " is ", HlcWallMs(remote) - wall,
        " ms ahead of this replica's clock (", wall, " ms); at most ",
        absl::ToInt64Milliseconds(max_skew_), " ms is accepted: check the device's date and time"));
  }
  return absl::OkStatus();
}

absl::Status HybridClock::Observe(uint64_t remote) {
  absl::Status status = CheckSkew(remote);
  if (!status.ok()) return status;
  Raise(remote);
  return absl::OkStatus();
}

void HybridClock::Raise(uint64_t floor) {
  absl::MutexLock lock(&mu_);
  last_ = std::max(last_, floor);
}

uint64_t HybridClock::Peek() {
  absl::MutexLock lock(&mu_);
  return last_;
}

void HybridClock::Lower(uint64_t to) {
  absl::MutexLock lock(&mu_);
  last_ = std::min(last_, to);
}

}  // namespace kcnet::sync
