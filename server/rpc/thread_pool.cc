#include "server/rpc/thread_pool.h"

#include <algorithm>
#include <utility>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "absl/strings/str_cat.h"

namespace kcnet::server {

ThreadPool::ThreadPool(int threads, size_t max_queued, int nice)
    : max_queued_(max_queued), nice_(nice) {
  const int count = std::max(threads, 1);
  threads_.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) threads_.emplace_back([this] { Work(); });
}

ThreadPool::~ThreadPool() { Stop(); }

bool ThreadPool::Schedule(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  queue_.push_back(std::move(task));
  return true;
}

absl::Status ThreadPool::TrySchedule(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (queue_.size() >= max_queued_) {
    return absl::ResourceExhaustedError(absl::StrCat(queue_.size(), " tasks already wait"));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void ThreadPool::Stop() {
  absl::MutexLock join_lock(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void ThreadPool::Work() {
#ifdef __linux__
  // On Linux a thread has its own nice value (setpriority on its thread id). Best effort:
  // a failure leaves the thread at the process's priority.
  if (nice_ > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice_);
#endif
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->queue_.empty();
          },
          this));
      // Stopping drains the queue first: a queued RPC is still answered.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace kcnet::server
