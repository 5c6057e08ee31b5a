// Hybrid logical clocks: the stamps that order concurrent field edits.
//
// An HLC value packs 48 bits of Unix wall-clock milliseconds and a 16-bit counter:
// `hlc = wall_ms << 16 | counter`. A Stamp pairs it with the writer's 64-bit node id,
// which breaks ties, so that every replica orders any two writes the same way.
//
// Thread-safety: Clock implementations must be thread-safe. HybridClock is thread-safe.
#ifndef KCNET_SYNC_HLC_H_
#define KCNET_SYNC_HLC_H_

#include <compare>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kcnet::sync {

inline constexpr int kHlcCounterBits = 16;
inline constexpr uint64_t kHlcCounterMask = (uint64_t{1} << kHlcCounterBits) - 1;
inline constexpr int64_t kHlcMaxWallMs = (int64_t{1} << 48) - 1;

constexpr uint64_t HlcPack(int64_t wall_ms, uint64_t counter) {
  return (static_cast<uint64_t>(wall_ms) << kHlcCounterBits) | (counter & kHlcCounterMask);
}
constexpr int64_t HlcWallMs(uint64_t hlc) { return static_cast<int64_t>(hlc >> kHlcCounterBits); }
constexpr uint64_t HlcCounter(uint64_t hlc) { return hlc & kHlcCounterMask; }

// "1732550000123.7" for logs and error messages.
std::string HlcToString(uint64_t hlc);

// A write's position in the total order: clock first, node id as tie-break.
struct Stamp {
  uint64_t hlc = 0;
  uint64_t node = 0;
  friend auto operator<=>(const Stamp&, const Stamp&) = default;
};

// The node id of a replica, derived from its device id (or "server", or "user:<id>") by a
// fixed 64-bit hash, so that any party can compute it. Never 0.
uint64_t NodeIdFor(absl::string_view replica_name);

// A source of wall-clock time: the seam tests replace.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() = 0;
};

// The system's real-time clock. Thread-safe. Never deleted.
Clock* SystemClock();

// A clock whose time the test sets. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t now_ms) : now_ms_(now_ms) {}
  int64_t NowMs() override {
    absl::MutexLock lock(&mu_);
    return now_ms_;
  }
  void Set(int64_t now_ms) {
    absl::MutexLock lock(&mu_);
    now_ms_ = now_ms;
  }
  void Advance(int64_t ms) {
    absl::MutexLock lock(&mu_);
    now_ms_ += ms;
  }

 private:
  absl::Mutex mu_;
  int64_t now_ms_ ABSL_GUARDED_BY(mu_);
};

// Issues strictly increasing HLC values and folds in clocks seen from other replicas.
class HybridClock {
 public:
  // `clock` must outlive this object. `max_skew` bounds how far ahead of the local wall
  // clock a remote clock may be before Observe() refuses it.
  explicit HybridClock(Clock* clock, absl::Duration max_skew = absl::Minutes(5));

  // Returns a value greater than every value returned or observed before (once the clock
  // was raised to the largest value, 2^64 - 1, it stays there instead of wrapping).
  uint64_t Now();

  // Folds a remote clock in, so that later Now() values are greater. Fails with
  // INVALID_ARGUMENT, naming both times, when `remote` is more than max_skew ahead of the
  // local wall clock; the clock is then unchanged.
  absl::Status Observe(uint64_t remote);

  // The check Observe() makes, without changing the clock.
  absl::Status CheckSkew(uint64_t remote);

  // Ensures later Now() values exceed `floor` (used when reopening a store).
  void Raise(uint64_t floor);

  // The last value returned or observed, without issuing one.
  uint64_t Peek();

  // Moves the clock back to `to` (later Now() values exceed `to` and the wall clock, no
  // longer the values issued before). Only for a replica that learned its clock ran ahead
  // of the server's and holds no write stamped by the clock it leaves behind.
  void Lower(uint64_t to);

  absl::Duration max_skew() const { return max_skew_; }

 private:
  Clock* const clock_;
  const absl::Duration max_skew_;
  absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_HLC_H_
