// Helpers shared by the libFuzzer targets in tests/fuzz: an invariant check that aborts
// (so that libFuzzer records the input as a crash) and the fixed time the targets run at.
//
// Thread-safety: the targets are single-threaded; nothing here has state.
#ifndef KCNET_TESTS_FUZZ_FUZZ_UTIL_H_
#define KCNET_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Aborts with the condition and a message when an invariant does not hold.
#define KCNET_FUZZ_CHECK(cond, ...)                                                     \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                \
      std::fprintf(stderr, "\n");                                                       \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace kcnet::fuzz {

// The wall clock (Unix ms) every target's FakeClock shows; the seeds' clocks are near it.
inline constexpr int64_t kNowMs = 1764000000000;

// The communes the fuzzed actor may write to (the seeds use them as buckets).
inline constexpr int64_t kCommune = 11;
inline constexpr int64_t kOtherCommune = 12;

}  // namespace kcnet::fuzz

#endif  // KCNET_TESTS_FUZZ_FUZZ_UTIL_H_
