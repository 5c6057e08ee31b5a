#include "tests/fault/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
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

// Socket buffers of 16 KiB (the kernel doubles them) on a shaped link's proxy sockets.
void SetSmallBuffers(int fd) {
  const int size = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
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
    : upstream_port_(upstream_port), options_(options), link_(options.link) {
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

void FaultProxy::SetLinkShape(const LinkShape& link) {
  absl::MutexLock lock(&mu_);
  link_ = link;
}

int FaultProxy::CutAll() {
  absl::MutexLock lock(&mu_);
  for (const auto& [client, server] : open_) {
    // The connection's thread sees end of file (or a failed write) and closes both.
    shutdown(client, SHUT_RDWR);
    shutdown(server, SHUT_RDWR);
  }
  stats_.cut_all += static_cast<int64_t>(open_.size());
  return static_cast<int>(open_.size());
}

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
    std::thread([this, client, seed, link = link_] {
      Forward(client, seed, link);
      absl::MutexLock done(&mu_);
      --active_;
    }).detach();
  }
}

void FaultProxy::Forward(int client, uint64_t seed, const LinkShape& link) {
  std::seed_seq seq{seed};
  absl::BitGen rng(seq);
  const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server >= 0 && link.shaped()) {
    // Small socket buffers on the proxy's side: the sender feels the shaped link.
    SetSmallBuffers(server);
    SetSmallBuffers(client);
  }
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
  {
    absl::MutexLock lock(&mu_);
    open_.insert({client, server});
  }
  // [0]: client to server, [1]: server to client. Unshaped, bytes are due at once.
  LinkShaper shapers[2] = {LinkShaper(link, seed ^ 0x5eed0), LinkShaper(link, seed ^ 0x5eed1)};
  const int fds_of[2] = {client, server};
  const int64_t queue_limit = link.QueueLimit();
  int64_t up_delivered = 0;
  int64_t counted_losses = 0;
  bool closing = false;  // read nothing more: deliver what is queued, then close
  bool reset = false;
  char buffer[16 * 1024];
  while (true) {
    // Deliver what is due.
    const absl::Time now = absl::Now();
    bool done = false;
    for (int from = 0; from < 2 && !done; ++from) {
      std::string due = shapers[from].TakeDue(now);
      if (due.empty()) continue;
      bool cut_here = false;
      if (from == 0 && link.cut_after_bytes > 0 &&
          up_delivered + static_cast<int64_t>(due.size()) >= link.cut_after_bytes) {
        due.resize(static_cast<size_t>(link.cut_after_bytes - up_delivered));
        cut_here = true;
      }
      const bool written = WriteAll(fds_of[1 - from], due.data(), due.size());
      {
        absl::MutexLock lock(&mu_);
        if (written) {
          stats_.bytes += static_cast<int64_t>(due.size());
          (from == 0 ? stats_.bytes_up : stats_.bytes_down) += static_cast<int64_t>(due.size());
        }
        stats_.cut_after_bytes += cut_here;
      }
      if (from == 0) up_delivered += static_cast<int64_t>(due.size());
      done = !written || cut_here;
    }
    if (done) break;
    if (closing && shapers[0].queued_bytes() == 0 && shapers[1].queued_bytes() == 0) break;

    // Wait for bytes to read (while the direction has room) or for the next delivery.
    const absl::Time next = std::min(shapers[0].NextDue(), shapers[1].NextDue());
    int timeout_ms = -1;
    if (next != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(absl::Ceil(next - absl::Now(), absl::Milliseconds(1)))));
    }
    pollfd fds[3] = {{client, POLLIN, 0}, {server, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    for (int from = 0; from < 2; ++from) {
      // A negative fd is ignored by poll(): no busy loop on a hung-up socket we do not read.
      if (closing || shapers[from].queued_bytes() >= queue_limit) fds[from].fd = -1;
    }
    const int ready = poll(fds, 3, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[2].revents != 0) break;
    bool stalled = false;
    for (int from = 0; from < 2 && !closing && !stalled; ++from) {
      if (fds[from].fd < 0 || fds[from].revents == 0) continue;
      const ssize_t n = read(fds[from].fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // one side closed: deliver what is queued, then close both
        closing = true;
        break;
      }
      size_t forward = static_cast<size_t>(n);
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
          stalled = true;
          break;
        }
        if (delay) {
          absl::SleepFor(absl::Microseconds(
              absl::Uniform<int64_t>(rng, 0, absl::ToInt64Microseconds(options_.max_delay) + 1)));
        }
        if (cut) forward = absl::Uniform<size_t>(rng, 1, forward);
        if (cut || drop) {
          closing = true;
          reset = absl::Bernoulli(rng, 0.5);
        }
      }
      shapers[from].Push(absl::Now(), absl::string_view(buffer, forward));
      const int64_t losses = shapers[0].losses() + shapers[1].losses();
      if (losses != counted_losses) {  // counted as they happen: stats() is read mid-run
        absl::MutexLock lock(&mu_);
        stats_.losses += losses - counted_losses;
        counted_losses = losses;
      }
    }
    if (stalled) break;
  }
  {
    absl::MutexLock lock(&mu_);
    open_.erase({client, server});
  }
  Close(client, reset);
  Close(server, reset);
}

}  // namespace kcnet::fault
