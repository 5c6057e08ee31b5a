// Helpers of the live-update benchmarks (live_latency_bench, cluster_bench): a Probe that
// notes when a download page first carries a given record, and Acks that wait for a
// writer's push acknowledgements.
//
// Thread-safety: both are thread-safe (the stream's reader thread reports, the bench's
// main thread waits).
#ifndef KCNET_BENCH_LIVE_PROBE_H_
#define KCNET_BENCH_LIVE_PROBE_H_

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::bench {

// When does a device see a record? Arm() with the record's id, Saw() every page the device
// receives, Wait() for the time the first page with the record arrived.
class Probe {
 public:
  void Arm(const std::string& id_bytes) {
    absl::MutexLock lock(&mu_);
    target_ = id_bytes;
    arrived_.reset();
  }
  void Saw(const kcnet::v1::ChangeBatch& batch) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    if (target_.empty() || arrived_.has_value()) return;
    for (const kcnet::v1::RecordChange& c : batch.changes()) {
      if (c.id() == target_) {
        arrived_ = now;
        return;
      }
    }
  }
  std::optional<absl::Time> Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return arrived_.has_value(); };
    mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout);
    return arrived_;
  }

 private:
  absl::Mutex mu_;
  std::string target_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> arrived_ ABSL_GUARDED_BY(mu_);
};

// A writer's push acknowledgements: WaitFor(seq) until every push up to `seq` is answered;
// any answer but APPLIED is printed (with `name`) and fails the wait.
class Acks {
 public:
  explicit Acks(std::string name) : name_(std::move(name)) {}
  void Got(const kcnet::v1::PushAck& ack) {
    absl::MutexLock lock(&mu_);
    for (const kcnet::v1::MutationResult& r : ack.results()) {
      if (r.outcome() != kcnet::v1::MUTATION_OUTCOME_APPLIED) {
        std::cerr << name_ << ": push " << r.seq() << " answered " << r.outcome() << ": "
                  << r.reason() << "\n";
        failed_ = true;
      }
    }
    last_ = std::max(last_, ack.last_applied_seq());
  }
  bool WaitFor(uint64_t seq, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return last_ >= seq || failed_; };
    mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
    return last_ >= seq && !failed_;
  }

 private:
  const std::string name_;
  absl::Mutex mu_;
  uint64_t last_ ABSL_GUARDED_BY(mu_) = 0;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kcnet::bench

#endif  // KCNET_BENCH_LIVE_PROBE_H_
