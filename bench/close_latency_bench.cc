// close_latency: how long Client::Close() (what the destructor and kcnet_client_free do)
// takes while a sync is in flight against a stalled server: a TCP listener that never
// accepts, so the connection completes in the kernel's backlog and then hears nothing (a
// dead proxy, a captive portal). On Android a close that waits for the sync's timeout is
// an ANR; the goal is p99 <= 1 s.
//
// Each round: open the store (signed in once against a real server in this process), start
// a sync against the stalled listener (SyncNow on a thread, with the background sync
// queued behind it), wait until it is in flight, then time Close(). 30 rounds by default.
// Metrics: p50_ms, p99_ms, max_ms.
//
// Usage: close_latency_bench [rounds]
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "tests/testing/test_server.h"

namespace kcnet::bench {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "close_latency_bench: " << what << "\n";
  std::exit(1);
}

int Run(const std::string& dir, int rounds) {
  // A real server, only to sign in once (the token is kept in the store).
  absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
      server::KcnetServer::Start(kcnet::testing::TestServerOptions(dir + "/server", "127.0.0.1:0"));
  if (!server.ok()) Die(server.status().ToString());
  server::Directory* d = (*server)->directory();
  const int64_t p = d->CreateOrgUnit("90", "Tỉnh", kcnet::v1::ORG_UNIT_LEVEL_PROVINCE, 0)->id();
  const int64_t h = d->CreateOrgUnit("901", "Huyện", kcnet::v1::ORG_UNIT_LEVEL_DISTRICT, p)->id();
  const int64_t x = d->CreateOrgUnit("90101", "Xã", kcnet::v1::ORG_UNIT_LEVEL_COMMUNE, h)->id();
  if (!d->CreateUser("ctv", "ctv", "password-123", kcnet::v1::ROLE_COMMUNE_COLLABORATOR, {x})
           .ok()) {
    Die("create user");
  }
  sdk::ClientOptions options;
  options.path = dir + "/tablet.db";
  options.device_id = "bench-tablet";
  options.durable = false;
  options.server_address = absl::StrCat("127.0.0.1:", (*server)->port());
  {
    absl::StatusOr<std::unique_ptr<sdk::Client>> client = sdk::Client::Open(options);
    if (!client.ok()) Die(client.status().ToString());
    absl::Status status = (*client)->SignIn("ctv", "password-123");
    if (!status.ok()) Die(status.ToString());
  }
  (*server)->Shutdown(absl::Seconds(1));

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("stalled listener");
  }
  options.server_address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  options.sync_timeout = absl::Minutes(2);  // the default: what a close used to wait for

  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    absl::StatusOr<std::unique_ptr<sdk::Client>> client = sdk::Client::Open(options);
    if (!client.ok()) Die(client.status().ToString());
    std::thread sync([&] { (*client)->SyncNow().IgnoreError(); });
    (*client)->StartBackgroundSync();  // queued behind SyncNow
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (!(*client)->Status().syncing && absl::Now() < limit) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    absl::SleepFor(absl::Milliseconds(50));  // inside the stalled call
    Timer timer;
    absl::Status closed = (*client)->Close();
    ms.push_back(timer.Seconds() * 1000);
    if (!closed.ok()) Die(closed.ToString());
    sync.join();
    client->reset();
  }
  close(fd);
  std::sort(ms.begin(), ms.end());
  const auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  };
  std::cerr << "close_latency: " << rounds << " closes during a stalled sync\n";
  Emit("close_latency", "p50_ms", at(0.50), "ms");
  Emit("close_latency", "p99_ms", at(0.99), "ms");
  Emit("close_latency", "max_ms", ms.back(), "ms");
  return 0;
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  char tmpl[] = "/tmp/kcnet-close-bench-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) kcnet::bench::Die("mkdtemp failed");
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 30;
  const int rc = kcnet::bench::Run(dir, rounds);
  std::filesystem::remove_all(dir);
  return rc;
}
