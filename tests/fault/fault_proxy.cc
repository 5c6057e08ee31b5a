#include "tests/fault/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kcnet::fault {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Writes all of `data`; false when the peer is gone.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Closes `fd`, with a TCP reset instead of a FIN when `reset`.
void Close(int fd, bool reset) {
  if (reset) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  close(fd);
}

}  // namespace

FaultProxy::FaultProxy(int upstream_port, const FaultProxyOptions& options)
    : upstream_port_(upstream_port), options_(options) {
  std::seed_seq seq{options.seed};
  rng_ = absl::BitGen(seq);
}

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(int upstream_port,
                                                              const FaultProxyOptions& options) {
  std::unique_ptr<FaultProxy> proxy(new FaultProxy(upstream_port, options));
  if (pipe2(proxy->wake_, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  proxy->listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (proxy->listener_ < 0) return absl::InternalError("socket failed");
  const int one = 1;
  setsockopt(proxy->listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Loopback(0);
  if (bind(proxy->listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(proxy->listener_, 128) != 0) {
    return absl::UnavailableError(absl::StrCat("proxy cannot listen: errno ", errno));
  }
  socklen_t len = sizeof(addr);
  getsockname(proxy->listener_, reinterpret_cast<sockaddr*>(&addr), &len);
  proxy->port_ = ntohs(addr.sin_port);
  proxy->acceptor_ = std::thread([p = proxy.get()] { p->AcceptLoop(); });
  return proxy;
}

FaultProxy::~FaultProxy() { Stop(); }

FaultProxyStats FaultProxy::stats() {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void FaultProxy::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (wake_[1] >= 0) {
    const char byte = 0;
    (void)!write(wake_[1], &byte, 1);
  }
  if (acceptor_.joinable()) acceptor_.join();
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* active) { return *active == 0; }, &active_));
  }
  if (listener_ >= 0) close(listener_);
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
}

void FaultProxy::AcceptLoop() {
  while (true) {
    pollfd fds[2] = {{listener_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    const int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    absl::MutexLock lock(&mu_);
    if (stopped_) {
      close(client);
      return;
    }
    ++stats_.connections;
    if (enabled_.load() && absl::Bernoulli(rng_, options_.refuse)) {
      ++stats_.refused;
      Close(client, absl::Bernoulli(rng_, 0.5));
      continue;
    }
    const uint64_t seed = absl::Uniform<uint64_t>(rng_);
    ++active_;
    std::thread([this, client, seed] {
      Forward(client, seed);
      absl::MutexLock done(&mu_);
      --active_;
    }).detach();
  }
}

void FaultProxy::Forward(int client, uint64_t seed) {
  std::seed_seq seq{seed};
  absl::BitGen rng(seq);
  const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = Loopback(upstream_port_);
  if (server < 0 || connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (server >= 0) close(server);
    close(client);
    return;
  }
  const int one = 1;
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // A peer that stops reading cannot block this thread (and Stop()) for ever.
  const timeval send_timeout{10, 0};
  setsockopt(server, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
  char buffer[16 * 1024];
  bool reset = false;
  while (true) {
    pollfd fds[3] = {{client, POLLIN, 0}, {server, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[2].revents != 0) break;
    const int from = fds[0].revents != 0 ? 0 : 1;
    if (fds[from].revents == 0) continue;
    const int to_fd = from == 0 ? server : client;
    const ssize_t n = read(fds[from].fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // one side closed: close both
    size_t forward = static_cast<size_t>(n);
    bool close_after = false;
    if (enabled_.load()) {
      const bool delay = absl::Bernoulli(rng, options_.delay);
      const bool cut = forward > 1 && absl::Bernoulli(rng, options_.cut);
      const bool drop = !cut && absl::Bernoulli(rng, options_.drop);
      const bool stall = !cut && !drop && absl::Bernoulli(rng, options_.stall);
      {
        absl::MutexLock lock(&mu_);
        ++stats_.chunks;
        stats_.delayed += delay;
        stats_.cut += cut;
        stats_.dropped += drop;
        stats_.stalled += stall;
      }
      if (stall) {
        // Nothing is read or forwarded; only Stop() ends the stall early.
        pollfd wake{wake_[0], POLLIN, 0};
        const int64_t ms =
            absl::Uniform<int64_t>(rng, absl::ToInt64Milliseconds(options_.max_stall) / 2,
                                   absl::ToInt64Milliseconds(options_.max_stall) + 1);
        poll(&wake, 1, static_cast<int>(ms));
        break;
      }
      if (delay) {
        absl::SleepFor(absl::Microseconds(
            absl::Uniform<int64_t>(rng, 0, absl::ToInt64Microseconds(options_.max_delay) + 1)));
      }
      if (cut) forward = absl::Uniform<size_t>(rng, 1, forward);
      close_after = cut || drop;
      reset = close_after && absl::Bernoulli(rng, 0.5);
    }
    if (!WriteAll(to_fd, buffer, forward)) break;
    {
      absl::MutexLock lock(&mu_);
      stats_.bytes += static_cast<int64_t>(forward);
    }
    if (close_after) break;
  }
  Close(client, reset);
  Close(server, reset);
}

}  // namespace kcnet::fault
