// ThreadPool: a fixed set of threads running queued tasks in arrival order. The RPC
// runner uses one as its storage threads, so that SQLite work never blocks gRPC's threads.
//
// Thread-safety: thread-safe. Schedule() and Stop() may be called from any thread, also
// from a task (but a task must not call Stop(): it would wait for itself).
#ifndef KCNET_SERVER_RPC_THREAD_POOL_H_
#define KCNET_SERVER_RPC_THREAD_POOL_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace kcnet::server {

class ThreadPool {
 public:
  // Starts `threads` threads (at least 1). TrySchedule() refuses a task while
  // `max_queued` tasks wait (Schedule() never does). `nice` > 0 lowers the threads'
  // scheduling priority (Linux), for work that may wait while other threads need the CPU.
  explicit ThreadPool(int threads, size_t max_queued = SIZE_MAX, int nice = 0);
  // Stop()s.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task` to run on one of the threads. Returns false, and drops the task, after
  // Stop() has begun.
  bool Schedule(std::function<void()> task);
  // Queues `task` unless `max_queued` tasks already wait: RESOURCE_EXHAUSTED then, and
  // UNAVAILABLE after Stop() has begun; the task is dropped on failure.
  absl::Status TrySchedule(std::function<void()> task);

  // Refuses new tasks, runs every task already queued, then joins the threads.
  // Idempotent.
  void Stop();

 private:
  void Work();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const size_t max_queued_;
  const int nice_;
  // Written by the constructor and joined by the first Stop() only.
  std::vector<std::thread> threads_;
  absl::Mutex join_mu_;  // serialises Stop() calls
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_THREAD_POOL_H_
