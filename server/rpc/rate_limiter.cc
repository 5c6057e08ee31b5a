#include "server/rpc/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"

namespace kcnet::server {
namespace {

// The payload URL of a retry delay (milliseconds, decimal).
constexpr absl::string_view kRetryDelayUrl = "type.kcnet.dev/kcnet.RetryDelayMs";

}  // namespace

double RateLimiter::TokensAt(const Bucket& bucket, absl::Time now) const {
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - bucket.refilled));
  return std::min(limit_.burst, bucket.tokens + elapsed * limit_.per_second);
}

absl::Status RateLimiter::Acquire(absl::string_view key, absl::Time now, absl::string_view what,
                                  absl::Duration* retry_after) {
  if (limit_.burst <= 0) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= limit_.max_keys) {
      absl::erase_if(
          buckets_, [&](const auto& entry) { return TokensAt(entry.second, now) >= limit_.burst; });
    }
    if (buckets_.size() >= limit_.max_keys) {
      const absl::Duration wait = absl::Seconds(1);
      if (retry_after != nullptr) *retry_after = wait;
      absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
          what, ": too many callers at once; retry in ", absl::ToInt64Milliseconds(wait), " ms"));
      SetRetryDelay(&status, wait);
      return status;
    }
    it = buckets_.emplace(std::string(key), Bucket{limit_.burst, now}).first;
  }
  Bucket& bucket = it->second;
  bucket.tokens = TokensAt(bucket, now);
  bucket.refilled = now;
  if (bucket.tokens >= 1) {
    bucket.tokens -= 1;
    return absl::OkStatus();
  }
  const double seconds = limit_.per_second > 0 ? (1 - bucket.tokens) / limit_.per_second : 3600.0;
  const absl::Duration wait = absl::Milliseconds(std::ceil(seconds * 1000));
  if (retry_after != nullptr) *retry_after = wait;
  absl::Status status = absl::ResourceExhaustedError(
      absl::StrCat(what, ": too many calls; retry in ", absl::ToInt64Milliseconds(wait), " ms"));
  SetRetryDelay(&status, wait);
  return status;
}

void SetRetryDelay(absl::Status* status, absl::Duration delay) {
  status->SetPayload(kRetryDelayUrl, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(delay))));
}

absl::Duration RetryDelay(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kRetryDelayUrl);
  int64_t ms = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &ms)) {
    return absl::ZeroDuration();
  }
  return absl::Milliseconds(ms);
}

}  // namespace kcnet::server
