// SyncService: the per-device bidirectional sync stream (docs/SYNC.md) and the conflict
// review RPCs.
//
// A stream: Hello (device id, schema version, cursors) -> Welcome (the device's buckets:
// the communes of its user's subtree, and the buckets to purge) -> download pages, up to
// the device's window ahead of its acknowledgements (its cursors advance only with what it
// has stored; each page says which cursors it was read from) -> live: a commit touching one of the
// device's buckets sends the next page at once. Pushes (MutationBatch) are applied exactly once
// through the rules and answered with a PushAck. The user's scope is re-read on every event and at
// least every `scope_check_interval`: a reassignment becomes a ScopeChange on the open stream.
//
// Threading: gRPC's callbacks only schedule work; all stream state is touched by tasks on
// the service's own thread pool, under the stream's mutex. One read and one write are in
// flight per stream; outgoing messages wait in a bounded queue (a device that stops
// reading is disconnected with RESOURCE_EXHAUSTED instead of growing the server's memory).
//
// Thread-safety: thread-safe.
#ifndef KCNET_SERVER_SYNC_STREAM_SYNC_SERVICE_H_
#define KCNET_SERVER_SYNC_STREAM_SYNC_SERVICE_H_

#include <functional>
#include <memory>

#include "absl/time/time.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/directory/directory.h"
#include "server/metrics/grpc_metrics.h"
#include "server/metrics/server_metrics.h"
#include "server/records/mutation_guard.h"
#include "server/rpc/logger.h"
#include "server/rpc/rate_limiter.h"
#include "server/rpc/rpc_runner.h"
#include "sync/server_store.h"

namespace kcnet::server {

struct SyncServiceOptions {
  // The stream's worker pool. A push holds its worker while its batch waits for the
  // store's group commit, so enough workers let many streams' batches share one commit.
  int threads = 16;
  sync::DownloadLimits page = {.max_changes = 1000, .max_bytes = 1 << 20};
  // Download pages sent ahead of the device's acknowledgement, at most (the device asks
  // for its own window in Hello; the smaller applies).
  uint32_t max_pages_in_flight = 8;
  int max_streams_per_user = 4;
  size_t max_queued_messages = 64;
  absl::Duration scope_check_interval = absl::Seconds(5);
  // Pushes per user (all its devices together): a burst, then a steady rate. A push over
  // it ends the stream with RESOURCE_EXHAUSTED and a retry delay (the SDK backs off). A
  // push carries up to 1,000 mutations, so the default leaves any real tablet far below.
  RateLimit push_limit = {.burst = 1000, .per_second = 100};
  // Where each stream's line goes when it ends (method, caller, status, duration), like
  // every unary RPC's. nullptr: no lines. Must outlive the service.
  Logger* logger = nullptr;
  // Checks every pushed or restored mutation after the rules (the plans' draw on an
  // approval, server/plans); null: none. Must outlive the service.
  MutationGuard* guard = nullptr;
  // Called when a stream's Hello is accepted (a successful sync begins), with the device,
  // its user and the writes it said wait in its outbox (Hello.pending_writes): the activity
  // report's "last sync" (server/reports). Runs on the stream's thread; must be quick.
  std::function<void(const std::string& device_id, int64_t user_id, uint32_t pending_writes)>
      on_hello;
  // Metrics (server/metrics): the stream's grpc_server_* series (the gRPC interceptor
  // skips bidi streams) and the kcnet_sync_* counters. Null: none. Must outlive the service.
  metrics::GrpcServerMetrics* grpc_metrics = nullptr;
  const metrics::SyncMetrics* metrics = nullptr;
};

class SyncHub;

class SyncServiceImpl : public kcnet::v1::SyncService::CallbackService {
 public:
  // `directory`, `store` and `runner` (for the unary conflict RPCs) must outlive the
  // service. Installs itself as the store's commit listener.
  SyncServiceImpl(Directory* directory, sync::ServerStore* store, RpcRunner* runner,
                  SyncServiceOptions options = {});
  ~SyncServiceImpl() override;

  grpc::ServerBidiReactor<kcnet::v1::SyncClientMessage, kcnet::v1::SyncServerMessage>* Sync(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListConflicts(grpc::CallbackServerContext* context,
                                          const kcnet::v1::ListConflictsRequest* request,
                                          kcnet::v1::ListConflictsResponse* response) override;
  grpc::ServerUnaryReactor* ResolveConflict(grpc::CallbackServerContext* context,
                                            const kcnet::v1::ResolveConflictRequest* request,
                                            kcnet::v1::Conflict* response) override;
  grpc::ServerUnaryReactor* ReleaseDevice(grpc::CallbackServerContext* context,
                                          const kcnet::v1::ReleaseDeviceRequest* request,
                                          kcnet::v1::ReleaseDeviceResponse* response) override;

  // Open streams (for tests and benchmarks).
  int open_streams() const;
  // Stops live notifications and the pool; open streams are cancelled by the gRPC server's
  // shutdown. Idempotent.
  void Stop();

 private:
  Directory* directory_;
  sync::ServerStore* store_;
  RpcRunner* runner_;
  std::shared_ptr<SyncHub> hub_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_SYNC_STREAM_SYNC_SERVICE_H_
