// Helpers for kcnet benchmarks: one JSON line per figure on stdout, a wall-clock timer,
// and deterministic record generators.
//
// Thread-safety: Emit() may be called from one thread at a time.
#ifndef KCNET_BENCH_BENCH_UTIL_H_
#define KCNET_BENCH_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>

namespace kcnet::bench {

// {"bench":"initial_sync","metric":"records_per_s","value":123456,"unit":"records/s"}
inline void Emit(const std::string& bench, const std::string& metric, double value,
                 const std::string& unit) {
  std::printf("{\"bench\":\"%s\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n",
              bench.c_str(), metric.c_str(), value, unit.c_str());
  std::fflush(stdout);
}

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// A random version-4 UUID as 16 bytes.
inline std::string RandomUuidBytes(std::mt19937_64& rng) {
  std::string out(16, '\0');
  const uint64_t a = rng(), b = rng();
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(a >> (8 * i));
    out[8 + i] = static_cast<char>(b >> (8 * i));
  }
  out[6] = static_cast<char>((out[6] & 0x0f) | 0x40);
  out[8] = static_cast<char>((out[8] & 0x3f) | 0x80);
  return out;
}

}  // namespace kcnet::bench

#endif  // KCNET_BENCH_BENCH_UTIL_H_
