// FaultProxy: a fault-injecting TCP proxy for the network fault tests (tests/fault). It
// listens on 127.0.0.1 (a picked port) and forwards each accepted connection to
// 127.0.0.1:upstream_port, a thread per connection. A random generator seeded from
// FaultProxyOptions::seed decides, per accepted connection, whether to refuse it (close at
// once), and per forwarded chunk (one read(), up to 16 KiB) whether to delay it, to drop
// the connection after it (close, half the time with a TCP reset), or to cut it: forward a
// strict prefix (usually part of an HTTP/2 frame, so a message is cut in the middle) and
// close; or whether to stall (forward nothing for seconds, then close). Duplication is not injected
// at the byte level, where it would only corrupt the HTTP/2 framing; duplicate delivery comes from
// clients re-sending pushes whose acknowledgement a fault lost (the tests count the server's
// DUPLICATE answers) and from explicit replays.
//
// The faults' order is decided by the seed, the byte streams by the peers' timing, so a
// replay with the same seed repeats the mix of faults, not every interleaving.
//
// The proxy also shapes the link (FaultProxyOptions::link, SetLinkShape): bandwidth each way,
// added round-trip time, loss as TCP shows it to the application (stalls; see LinkShaper for
// what "2% loss" means over loopback), and a cut after N client-to-server bytes. A shaped
// direction holds at most LinkShape::QueueLimit() bytes and the proxy's sockets have small
// buffers, so a sender feels the slow link as back-pressure. CutAll() cuts every open
// connection now (a bench cuts uploads mid-way with it).
//
// Thread-safety: thread-safe.
#ifndef KCNET_TESTS_FAULT_FAULT_PROXY_H_
#define KCNET_TESTS_FAULT_FAULT_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/fault/link_shaper.h"

namespace kcnet::fault {

struct FaultProxyOptions {
  uint64_t seed = 1;
  double refuse = 0;  // per accepted connection: close it at once
  double delay = 0;   // per chunk: sleep up to max_delay before forwarding it
  absl::Duration max_delay = absl::Milliseconds(40);
  double drop = 0;  // per chunk: forward it, then close both sides
  double cut = 0;   // per chunk: forward a strict prefix of it, then close both sides
  // Per chunk: a half-dead link: hold the chunk and forward nothing more in either
  // direction for up to max_stall (so that a client's deadline passes), then close.
  double stall = 0;
  absl::Duration max_stall = absl::Seconds(8);
  // The link's shape for connections accepted from now on (SetLinkShape changes it). Applies
  // even when faults are disabled: it is the link, not a fault.
  LinkShape link;
};

// Counts since Start().
struct FaultProxyStats {
  int64_t connections = 0;
  int64_t refused = 0;
  int64_t delayed = 0;
  int64_t dropped = 0;
  int64_t cut = 0;
  int64_t stalled = 0;
  int64_t chunks = 0;
  int64_t bytes = 0;            // forwarded, both ways
  int64_t bytes_up = 0;         // forwarded client to server
  int64_t bytes_down = 0;       // forwarded server to client
  int64_t losses = 0;           // segments a shaped link held for a retransmission timeout
  int64_t cut_after_bytes = 0;  // connections closed by LinkShape::cut_after_bytes
  int64_t cut_all = 0;          // connections closed by CutAll()
};

class FaultProxy {
 public:
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(int upstream_port,
                                                           const FaultProxyOptions& options);
  // Stop().
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  // Off: plain forwarding, no faults (connections already open keep their fate).
  void SetFaultsEnabled(bool enabled) { enabled_.store(enabled); }
  // The link's shape for connections accepted from now on.
  void SetLinkShape(const LinkShape& link);
  // Closes every open connection now (both sides, with a FIN); returns how many.
  int CutAll();
  FaultProxyStats stats();
  // Closes the listener and every connection and joins the threads. Idempotent.
  void Stop();

 private:
  FaultProxy(int upstream_port, const FaultProxyOptions& options);
  void AcceptLoop();
  void Forward(int client, uint64_t seed, const LinkShape& link);

  const int upstream_port_;
  const FaultProxyOptions options_;
  int listener_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};  // readable once stopping: wakes every poll()
  std::atomic<bool> enabled_{true};
  std::thread acceptor_;

  absl::Mutex mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);  // seeded: decides each connection's seed
  int active_ ABSL_GUARDED_BY(mu_) = 0;    // connection threads (detached) still running
  FaultProxyStats stats_ ABSL_GUARDED_BY(mu_);
  LinkShape link_ ABSL_GUARDED_BY(mu_);
  // The sockets of open connections (client side, server side), for CutAll().
  std::set<std::pair<int, int>> open_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kcnet::fault

#endif  // KCNET_TESTS_FAULT_FAULT_PROXY_H_
