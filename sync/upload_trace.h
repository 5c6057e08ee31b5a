// Upload trace (issue 17, throughput): timestamps of one attachment upload's steps on both
// sides (the SDK's chunks and acks, the server's receive, write, commit and ack), to tell
// what serialises. Off unless the environment variable KCNET_UPLOAD_TRACE names a file when
// the process first traces; then each event appends one line to it (O_APPEND, so the
// server and the device, two processes, may share the file):
//   <CLOCK_MONOTONIC ns> <side> <event> <a> <b>
// CLOCK_MONOTONIC is one clock for every process of the machine, so the lines of both sides
// sort into one timeline (bench/upload_timeline.py prints it). A disabled trace costs one
// load of a cached flag per call.
//
// Thread-safety: thread-safe (one write(2) per line).
#ifndef KCNET_SYNC_UPLOAD_TRACE_H_
#define KCNET_SYNC_UPLOAD_TRACE_H_

#include <cstdint>

namespace kcnet::sync {

// Whether KCNET_UPLOAD_TRACE was set (read once).
bool UploadTraceOn();

// Appends "<ns> <side> <event> <a> <b>" when the trace is on; nothing otherwise. `side` and
// `event` are short words without spaces (e.g. "srv", "commit_start"); `a` and `b` are
// offsets or sizes.
void UploadTrace(const char* side, const char* event, int64_t a, int64_t b = 0);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_UPLOAD_TRACE_H_
