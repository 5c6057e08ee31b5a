#include "tests/fault/link_shaper.h"

#include <algorithm>
#include <random>
#include <utility>

namespace kcnet::fault {

int64_t LinkShape::QueueLimit() const {
  if (bytes_per_second <= 0) return int64_t{1} << 20;
  const int64_t bdp =
      static_cast<int64_t>(static_cast<double>(bytes_per_second) * absl::ToDoubleSeconds(rtt));
  return std::max<int64_t>(16 * 1024, bdp);
}

LinkShaper::LinkShaper(const LinkShape& shape, uint64_t seed) : shape_(shape) {
  std::seed_seq seq{seed};
  rng_ = absl::BitGen(seq);
}

void LinkShaper::Push(absl::Time now, absl::string_view bytes) {
  const absl::Duration one_way = shape_.rtt / 2;
  while (!bytes.empty()) {
    const size_t size = std::min(bytes.size(), kSegmentBytes);
    absl::Time start = std::max(now, link_free_);
    if (shape_.loss > 0 && absl::Bernoulli(rng_, shape_.loss)) {
      ++losses_;
      start += shape_.rtt + kMinRto;
    }
    absl::Duration transmit = absl::ZeroDuration();
    if (shape_.bytes_per_second > 0) {
      transmit =
          absl::Seconds(static_cast<double>(size) / static_cast<double>(shape_.bytes_per_second));
    }
    link_free_ = start + transmit;
    const absl::Time due = link_free_ + one_way;
    // Segments due at the same time (an unshaped link) are merged: fewer, larger writes.
    if (!queue_.empty() && queue_.back().due == due) {
      queue_.back().bytes.append(bytes.data(), size);
    } else {
      queue_.push_back({due, std::string(bytes.substr(0, size))});
    }
    queued_bytes_ += static_cast<int64_t>(size);
    bytes.remove_prefix(size);
  }
}

std::string LinkShaper::TakeDue(absl::Time now) {
  std::string out;
  while (!queue_.empty() && queue_.front().due <= now) {
    if (out.empty()) {
      out = std::move(queue_.front().bytes);
    } else {
      out += queue_.front().bytes;
    }
    queue_.pop_front();
  }
  queued_bytes_ -= static_cast<int64_t>(out.size());
  return out;
}

absl::Time LinkShaper::NextDue() const {
  return queue_.empty() ? absl::InfiniteFuture() : queue_.front().due;
}

}  // namespace kcnet::fault
