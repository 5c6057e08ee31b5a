// kcnet-server: the kcnet gRPC server (see server_cli.h for its flags and behaviour).
#include <malloc.h>

#include <cstdlib>

#include "server/app/server_cli.h"

int main(int argc, char** argv) {
  // One glibc malloc arena instead of up to 8 per core (issue 17, server memory): gRPC's
  // threads each took an arena of their own, and 200 concurrent photo uploads grew the
  // server's RSS by 20-28 MiB instead of 17-19 (docs/BENCHMARKS.md); throughput did not
  // change measurably (each thread keeps its tcache), nor did the record ingest
  // (ingest_bench: 8,583 against 8,197 mutations/s with 16 arenas, same series; round 4 in
  // docs/BENCHMARKS.md). MALLOC_ARENA_MAX in the environment still decides when set.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 1);
  return kcnet::server::RunServerCli(argc, argv);
}
