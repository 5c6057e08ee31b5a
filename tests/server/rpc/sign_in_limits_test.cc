// The pieces that keep a sign-in flood off everyone else: the bounded thread pool, the
// token-bucket rate limiter, and the RetryInfo detail at the gRPC edge.
#include <atomic>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/rpc/rate_limiter.h"
#include "server/rpc/rpc_runner.h"
#include "server/rpc/storage_rpc_runner.h"
#include "server/rpc/thread_pool.h"

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;

TEST(BoundedThreadPoolTest, AFullQueueRefusesInsteadOfGrowing) {
  ThreadPool pool(1, /*max_queued=*/2);
  absl::Notification release, started;
  ASSERT_TRUE(pool.TrySchedule([&] {
                    started.Notify();
                    release.WaitForNotification();
                  })
                  .ok());
  started.WaitForNotification();  // the thread is busy; now fill the queue
  std::atomic<int> ran{0};
  EXPECT_TRUE(pool.TrySchedule([&] { ++ran; }).ok());
  EXPECT_TRUE(pool.TrySchedule([&] { ++ran; }).ok());
  EXPECT_EQ(pool.TrySchedule([&] { ++ran; }).code(), absl::StatusCode::kResourceExhausted);
  release.Notify();
  pool.Stop();
  EXPECT_EQ(ran.load(), 2);
  EXPECT_EQ(pool.TrySchedule([] {}).code(), absl::StatusCode::kUnavailable);
}

TEST(RateLimiterTest, ABurstThenTheRefillRate) {
  RateLimiter limiter(RateLimit{.burst = 2, .per_second = 1});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(limiter.Acquire("a", t0, "sign-in").ok());
  EXPECT_TRUE(limiter.Acquire("a", t0, "sign-in").ok());
  absl::Duration wait;
  absl::Status refused = limiter.Acquire("a", t0, "sign-in", &wait);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("sign-in: too many calls; retry in 1000 ms"));
  EXPECT_EQ(wait, absl::Seconds(1));
  EXPECT_EQ(RetryDelay(refused), absl::Seconds(1));
  EXPECT_TRUE(limiter.Acquire("b", t0, "sign-in").ok());  // keys are apart
  EXPECT_TRUE(limiter.Acquire("a", t0 + absl::Seconds(1), "sign-in").ok());
  RateLimiter off(RateLimit{});
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(off.Acquire("a", t0, "x").ok());
}

TEST(RateLimiterTest, AFloodOfNewKeysCannotEvictTheKeysItFloods) {
  RateLimiter limiter(RateLimit{.burst = 1, .per_second = 0.001, .max_keys = 2});
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(limiter.Acquire("victim", t0, "x").ok());
  EXPECT_TRUE(limiter.Acquire("k1", t0, "x").ok());
  EXPECT_EQ(limiter.Acquire("k2", t0, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(limiter.Acquire("victim", t0, "x").code(), absl::StatusCode::kResourceExhausted);
}

TEST(RetryInfoTest, ARetryDelayBecomesARetryInfoDetail) {
  absl::Status status = absl::ResourceExhaustedError("sign-in: too many calls; retry in 1500 ms");
  SetRetryDelay(&status, absl::Milliseconds(1500));
  grpc::Status out = ToGrpcStatus(status);
  EXPECT_EQ(out.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(out.error_details()));
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::RetryInfo info;
  ASSERT_TRUE(details.details(0).UnpackTo(&info));
  EXPECT_EQ(info.retry_delay().seconds(), 1);
  EXPECT_EQ(info.retry_delay().nanos(), 500000000);
}

TEST(PeerAddressTest, ThePortIsDropped) {
  EXPECT_EQ(PeerAddress("ipv4:10.0.0.7:51234"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerAddress("ipv6:[::1]:51234"), "ipv6:[::1]");
  EXPECT_EQ(PeerAddress("unix:"), "unix:");
}

}  // namespace
}  // namespace kcnet::server
