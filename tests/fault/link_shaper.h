// LinkShaper: a model of one direction of a slow, lossy link, for FaultProxy (tests/fault) and
// the benchmarks that need a 2G-like link over loopback (bench/attachments_bench.cc). It is
// pure bookkeeping: the caller pushes the bytes it read at time `now` and takes, at later
// times, the bytes whose delivery time has come; it never reads a clock or sleeps, so a unit
// test drives it with made-up times.
//
// The model, per direction, in segments of kSegmentBytes (a TCP segment over Ethernet):
//  - bandwidth: the link sends one segment at a time at bytes_per_second, so a segment
//    starts when it has arrived and the one before it has left (a queue at the bottleneck);
//  - delay: each segment is delivered rtt/2 after it has left (rtt/2 each way gives the
//    round-trip time the endpoints see, on top of loopback's ~0);
//  - loss: over loopback nothing is really lost, and TCP would hide a loss anyway: the
//    application sees a lost segment as a stall, because TCP delivers in order and the segment
//    and everything behind it wait for the retransmission. So "2% loss" here means: each segment
//    independently, with probability 0.02, is held for one retransmission timeout (modelled as
//    rtt + 200 ms, Linux's minimum RTO on top of the smoothed RTT) before it leaves, and the
//    segments behind it wait too. Bytes are never dropped or reordered; connection cuts are a
//    separate fault (FaultProxyOptions::cut, LinkShape::cut_after_bytes, FaultProxy::CutAll).
//
// Thread-safety: not thread-safe; one per direction of a connection, used by its thread.
#ifndef KCNET_TESTS_FAULT_LINK_SHAPER_H_
#define KCNET_TESTS_FAULT_LINK_SHAPER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kcnet::fault {

// The shape of a link, the same both ways. All zero: an unshaped link (bytes pass at once).
struct LinkShape {
  int64_t bytes_per_second = 0;               // each way; 0: unlimited
  absl::Duration rtt = absl::ZeroDuration();  // added round-trip time (half each way)
  double loss = 0;                            // per segment, see LinkShaper
  // Per connection: after this many client-to-server bytes have been delivered, close the
  // connection (both sides, with a FIN). 0: never.
  int64_t cut_after_bytes = 0;

  bool shaped() const { return bytes_per_second > 0 || rtt > absl::ZeroDuration() || loss > 0; }
  // How many bytes a direction may hold before the proxy stops reading from its source, so
  // that the sender feels the slow link (back-pressure) instead of filling a queue:
  // one bandwidth-delay product (at least 16 KiB), or 1 MiB when the bandwidth is unlimited.
  int64_t QueueLimit() const;
};

class LinkShaper {
 public:
  static constexpr size_t kSegmentBytes = 1460;
  // A lost segment waits rtt + kMinRto before it leaves.
  static constexpr absl::Duration kMinRto = absl::Milliseconds(200);

  LinkShaper(const LinkShape& shape, uint64_t seed);

  // Queues `bytes`, which arrived at `now`, and schedules their delivery.
  void Push(absl::Time now, absl::string_view bytes);
  // Removes and returns the bytes whose delivery time is <= now (in order; may be empty).
  std::string TakeDue(absl::Time now);
  // When the next queued byte is due; absl::InfiniteFuture() when nothing is queued.
  absl::Time NextDue() const;
  int64_t queued_bytes() const { return queued_bytes_; }
  // Segments held for a retransmission timeout so far.
  int64_t losses() const { return losses_; }

 private:
  struct Segment {
    absl::Time due;
    std::string bytes;
  };

  const LinkShape shape_;
  absl::BitGen rng_;
  std::deque<Segment> queue_;
  int64_t queued_bytes_ = 0;
  absl::Time link_free_ = absl::InfinitePast();  // when the link has sent the last segment
  int64_t losses_ = 0;
};

}  // namespace kcnet::fault

#endif  // KCNET_TESTS_FAULT_LINK_SHAPER_H_
