// RateLimiter: token buckets by key (a username, a peer address, a device), for the
// calls one caller could otherwise repeat without bound (sign-in, sync pushes). Each key
// may spend `burst` calls at once and regains `per_second` calls per second. A call over
// the limit is refused with RESOURCE_EXHAUSTED saying when to retry; the delay is also
// returned, for a google.rpc.RetryInfo detail.
//
// Memory is bounded: at most `max_keys` keys are tracked; when full, keys whose bucket has
// refilled are forgotten first, and if none has, the new key is refused like a spent one
// (a flood of fresh keys must not evict the keys it is flooding).
//
// Thread-safety: thread-safe.
#ifndef KCNET_SERVER_RPC_RATE_LIMITER_H_
#define KCNET_SERVER_RPC_RATE_LIMITER_H_

#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kcnet::server {

struct RateLimit {
  double burst = 0;       // calls allowed at once; 0 turns the limit off
  double per_second = 0;  // calls regained per second
  size_t max_keys = 100000;
};

class RateLimiter {
 public:
  explicit RateLimiter(RateLimit limit) : limit_(limit) {}
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Spends one call of `key` at `now`. OK, or RESOURCE_EXHAUSTED "<what>: too many calls;
  // retry in N ms" with `*retry_after` (if given) set to the wait.
  absl::Status Acquire(absl::string_view key, absl::Time now, absl::string_view what,
                       absl::Duration* retry_after = nullptr);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
  };
  double TokensAt(const Bucket& bucket, absl::Time now) const;

  const RateLimit limit_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

// The time a RESOURCE_EXHAUSTED status asks the caller to wait, carried in the status as
// a payload so that the gRPC edge can add a google.rpc.RetryInfo detail.
void SetRetryDelay(absl::Status* status, absl::Duration delay);
absl::Duration RetryDelay(const absl::Status& status);  // ZeroDuration() when none

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_RATE_LIMITER_H_
