// LinkShaper with made-up times (bandwidth, delay, loss, order), then FaultProxy shaping a real
// loopback connection to a small echo server (lower bounds on time only: a loaded machine is
// slower, never faster), cutting after N bytes, and CutAll().
#include "tests/fault/link_shaper.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/random/random.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/fault/fault_proxy.h"

namespace kcnet::fault {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

std::string RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

TEST(LinkShaperTest, UnshapedDeliversAtOnce) {
  LinkShaper shaper(LinkShape{}, 1);
  const std::string bytes = RandomBytes(100'000, 1);
  shaper.Push(kT0, bytes);
  EXPECT_EQ(shaper.NextDue(), kT0);
  EXPECT_TRUE(shaper.TakeDue(kT0) == bytes);
  EXPECT_EQ(shaper.queued_bytes(), 0);
  EXPECT_EQ(shaper.NextDue(), absl::InfiniteFuture());
}

TEST(LinkShaperTest, BandwidthPacesDelivery) {
  LinkShape shape;
  shape.bytes_per_second = 10'000;
  LinkShaper shaper(shape, 1);
  const std::string bytes = RandomBytes(100'000, 2);
  shaper.Push(kT0, bytes);
  // After 5 s of a 10 kB/s link, 50 kB have arrived, give or take one segment.
  std::string got = shaper.TakeDue(kT0 + absl::Seconds(5));
  EXPECT_NEAR(static_cast<double>(got.size()), 50'000.0, LinkShaper::kSegmentBytes);
  got += shaper.TakeDue(kT0 + absl::Seconds(9.8));
  EXPECT_LT(got.size(), bytes.size());  // the last segment is still on the way
  got += shaper.TakeDue(kT0 + absl::Seconds(10) + absl::Milliseconds(1));
  EXPECT_TRUE(got == bytes);
  EXPECT_EQ(shaper.queued_bytes(), 0);
}

TEST(LinkShaperTest, BytesArrivingLaterWaitForTheLinkNotForEachOther) {
  LinkShape shape;
  shape.bytes_per_second = 1'000;
  LinkShaper shaper(shape, 1);
  shaper.Push(kT0, std::string(1'000, 'a'));  // leaves by kT0 + 1 s
  // Arrives while the link is busy: leaves after the first, at kT0 + 2 s.
  shaper.Push(kT0 + absl::Milliseconds(500), std::string(1'000, 'b'));
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Seconds(1)), std::string(1'000, 'a'));
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Milliseconds(1'999)), "");
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Seconds(2)), std::string(1'000, 'b'));
  // An idle link: a later byte is not delayed by the past.
  shaper.Push(kT0 + absl::Seconds(10), "c");
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Seconds(10) + absl::Milliseconds(1)), "c");
}

TEST(LinkShaperTest, DelayIsHalfTheRoundTripEachWay) {
  LinkShape shape;
  shape.rtt = absl::Milliseconds(500);
  LinkShaper shaper(shape, 1);
  shaper.Push(kT0, "hello");
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Milliseconds(249)), "");
  EXPECT_EQ(shaper.NextDue(), kT0 + absl::Milliseconds(250));
  EXPECT_EQ(shaper.TakeDue(kT0 + absl::Milliseconds(250)), "hello");
}

TEST(LinkShaperTest, LossStallsInOrderAndLosesNothing) {
  LinkShape shape;
  shape.bytes_per_second = 6'250;  // 50 kbit/s
  shape.rtt = absl::Milliseconds(500);
  shape.loss = 0.02;
  LinkShaper shaper(shape, 7);
  const size_t segments = 10'000;
  const std::string bytes = RandomBytes(segments * LinkShaper::kSegmentBytes, 3);
  shaper.Push(kT0, bytes);
  // 2% of 10 000 segments: 200 expected; far outside [120, 280] means the model is wrong.
  EXPECT_GT(shaper.losses(), 120);
  EXPECT_LT(shaper.losses(), 280);
  // Each loss holds the link for rtt + 200 ms; the last byte is due after all the sending,
  // all the stalls and half the round trip.
  const absl::Duration sending = absl::Seconds(static_cast<double>(bytes.size()) / 6'250);
  const absl::Time last =
      kT0 + sending + shaper.losses() * absl::Milliseconds(700) + absl::Milliseconds(250);
  std::string got;
  absl::Time previous_due = kT0;
  absl::Duration longest_gap;
  while (shaper.queued_bytes() > 0) {
    const absl::Time due = shaper.NextDue();
    longest_gap = std::max(longest_gap, due - previous_due);
    previous_due = due;
    got += shaper.TakeDue(due);
  }
  EXPECT_TRUE(got == bytes);  // in order, nothing lost
  EXPECT_LT(absl::AbsDuration(previous_due - last), absl::Milliseconds(1));
  // A lost segment is a stall of one segment's time plus the retransmission timeout.
  EXPECT_GE(longest_gap, absl::Milliseconds(700));
  EXPECT_LT(longest_gap, absl::Milliseconds(700) + absl::Seconds(3 * 1460.0 / 6'250));
}

TEST(LinkShaperTest, QueueLimitIsOneBandwidthDelayProduct) {
  LinkShape shape;
  EXPECT_EQ(shape.QueueLimit(), 1 << 20);
  shape.bytes_per_second = 6'250;
  shape.rtt = absl::Milliseconds(500);
  EXPECT_EQ(shape.QueueLimit(), 16 * 1024);  // the floor
  shape.bytes_per_second = 10'000'000;
  EXPECT_EQ(shape.QueueLimit(), 5'000'000);
}

// A TCP echo server on 127.0.0.1 (one thread per connection), for the proxy tests.
class EchoServer {
 public:
  EchoServer() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener_, 16), 0);
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] {
      while (true) {
        const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        std::thread([this, fd] {
          char buffer[16 * 1024];
          ssize_t n;
          while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
            received_ += n;
            if (send(fd, buffer, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
          }
          close(fd);
        }).detach();
      }
    });
  }
  ~EchoServer() {
    shutdown(listener_, SHUT_RDWR);
    close(listener_);
    acceptor_.join();
  }
  int port() const { return port_; }
  int64_t received() const { return received_.load(); }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::atomic<int64_t> received_{0};
  std::thread acceptor_;
};

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const timeval timeout{20, 0};  // a broken proxy fails the test instead of hanging it
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Sends `bytes` from a thread and reads the echo until `expect` bytes or end of file.
std::string SendAndReadEcho(int fd, const std::string& bytes, size_t expect) {
  std::thread writer([fd, &bytes] { (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); });
  std::string echo;
  char buffer[16 * 1024];
  while (echo.size() < expect) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    echo.append(buffer, static_cast<size_t>(n));
  }
  shutdown(fd, SHUT_RDWR);
  writer.join();
  return echo;
}

TEST(FaultProxyShapeTest, BandwidthAndDelayOverLoopback) {
  EchoServer echo;
  FaultProxyOptions options;
  options.link.bytes_per_second = 100'000;
  options.link.rtt = absl::Milliseconds(200);
  auto proxy = FaultProxy::Start(echo.port(), options);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int fd = Connect((*proxy)->port());
  const std::string bytes = RandomBytes(150'000, 4);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(SendAndReadEcho(fd, bytes, bytes.size()) == bytes);
  const absl::Duration took = absl::Now() - start;
  close(fd);
  // Up and back down a 100 kB/s link, pipelined: at least 1.5 s of sending plus 200 ms of
  // round trip. Only a lower bound: a loaded machine is slower, never faster.
  EXPECT_GE(took, absl::Milliseconds(1'650)) << took;
  (*proxy)->Stop();  // the counts are final once the connection's thread has ended
  const FaultProxyStats stats = (*proxy)->stats();
  EXPECT_EQ(stats.bytes_up, 150'000);
  EXPECT_EQ(stats.bytes_down, 150'000);
}

TEST(FaultProxyShapeTest, LossStallsButDeliversEverythingAndIsCountedAtOnce) {
  EchoServer echo;
  FaultProxyOptions options;
  options.seed = 3;
  options.link.loss = 0.5;  // each stall is 200 ms (no added RTT)
  auto proxy = FaultProxy::Start(echo.port(), options);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int fd = Connect((*proxy)->port());
  const std::string bytes = RandomBytes(8 * LinkShaper::kSegmentBytes, 6);
  EXPECT_TRUE(SendAndReadEcho(fd, bytes, bytes.size()) == bytes);
  // Counted while the connection is still open (a benchmark reads stats() mid-run).
  EXPECT_GT((*proxy)->stats().losses, 0);
  close(fd);
}

TEST(FaultProxyShapeTest, CutAfterBytesDeliversExactlyThatManyThenCloses) {
  EchoServer echo;
  FaultProxyOptions options;
  options.link.cut_after_bytes = 40'000;
  auto proxy = FaultProxy::Start(echo.port(), options);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int fd = Connect((*proxy)->port());
  const std::string bytes = RandomBytes(100'000, 5);
  const std::string got = SendAndReadEcho(fd, bytes, bytes.size());
  close(fd);
  EXPECT_LE(got.size(), 40'000u);  // the echo of at most what reached the server
  EXPECT_TRUE(got == bytes.substr(0, got.size()));
  // The next connection gets its own 40 000 bytes.
  const int again = Connect((*proxy)->port());
  EXPECT_EQ(SendAndReadEcho(again, "hello", 5), "hello");
  close(again);
  (*proxy)->Stop();
  const FaultProxyStats stats = (*proxy)->stats();
  EXPECT_EQ(stats.bytes_up, 40'005);
  EXPECT_EQ(stats.cut_after_bytes, 1);
}

TEST(FaultProxyShapeTest, CutAllClosesOpenConnections) {
  EchoServer echo;
  auto proxy = FaultProxy::Start(echo.port(), FaultProxyOptions{});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int fd = Connect((*proxy)->port());
  ASSERT_EQ(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
  char buffer[8];
  ASSERT_EQ(read(fd, buffer, sizeof(buffer)), 4);
  EXPECT_EQ((*proxy)->CutAll(), 1);
  EXPECT_LE(read(fd, buffer, sizeof(buffer)), 0);  // end of file or reset, not a timeout
  EXPECT_NE(errno, EAGAIN);
  close(fd);
  (*proxy)->Stop();
  EXPECT_EQ((*proxy)->stats().cut_all, 1);
}

TEST(FaultProxyShapeTest, SetLinkShapeAppliesToNewConnections) {
  EchoServer echo;
  auto proxy = FaultProxy::Start(echo.port(), FaultProxyOptions{});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  LinkShape slow;
  slow.rtt = absl::Milliseconds(400);
  (*proxy)->SetLinkShape(slow);
  const int fd = Connect((*proxy)->port());
  const absl::Time start = absl::Now();
  EXPECT_EQ(SendAndReadEcho(fd, "x", 1), "x");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  close(fd);
}

}  // namespace
}  // namespace kcnet::fault
