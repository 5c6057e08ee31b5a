#include "sync/upload_trace.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace kcnet::sync {
namespace {

// The trace file's descriptor, or -1 when the trace is off.
int TraceFd() {
  static const int fd = [] {
    const char* path = std::getenv("KCNET_UPLOAD_TRACE");
    if (path == nullptr || *path == '\0') return -1;
    return ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }();
  return fd;
}

}  // namespace

bool UploadTraceOn() { return TraceFd() >= 0; }

void UploadTrace(const char* side, const char* event, int64_t a, int64_t b) {
  const int fd = TraceFd();
  if (fd < 0) return;
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  char line[160];
  const int n = std::snprintf(line, sizeof(line), "%" PRId64 " %s %s %" PRId64 " %" PRId64 "\n",
                              static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec, side,
                              event, a, b);
  if (n > 0) (void)!::write(fd, line, static_cast<size_t>(n));
}

}  // namespace kcnet::sync
