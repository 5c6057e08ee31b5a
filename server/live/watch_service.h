// WatchService: the console's live-change stream (proto/kcnet/v1/services.proto). Each open
// WatchChanges stream gets a notice at once (seq 0) and then one whenever a commit of the
// record store touched a commune (sync bucket) of its caller's scope, so that a browser tab
// re-reads its queue within moments of a tablet's push or another officer's decision. A
// notice says only "something in your scope changed": no record, nothing of other scopes.
//
// The service is the store's commit observer (ServerStore::AddCommitObserver). The observer
// runs on the committing thread and only starts a write (non-blocking) or marks one pending;
// notices coalesce while a write is in flight, so a slow tab never queues more than one.
// Before each notice the stream re-reads its token and scope (a revoked token ends it with
// UNAUTHENTICATED; a reassigned user watches its new communes from then on). At most
// `max_streams_per_user` streams per user are open at once (RESOURCE_EXHAUSTED).
//
// Thread-safety: thread-safe. Lock order: the hub's mutex, then a stream's.
#ifndef KCNET_SERVER_LIVE_WATCH_SERVICE_H_
#define KCNET_SERVER_LIVE_WATCH_SERVICE_H_

#include <memory>

#include "kcnet/v1/services.grpc.pb.h"
#include "server/directory/directory.h"
#include "sync/server_store.h"

namespace kcnet::server {

struct WatchServiceOptions {
  int max_streams_per_user = 4;
};

class WatchHub;

class WatchServiceImpl : public kcnet::v1::WatchService::CallbackService {
 public:
  // `directory` and `store` must outlive the service (and the store's commits after it:
  // the observer only holds a weak reference to the hub).
  WatchServiceImpl(Directory* directory, sync::ServerStore* store,
                   WatchServiceOptions options = {});
  ~WatchServiceImpl() override;

  grpc::ServerWriteReactor<kcnet::v1::ChangeNotice>* WatchChanges(
      grpc::CallbackServerContext* context, const kcnet::v1::WatchChangesRequest* request) override;

  // Open watch streams (for tests).
  int open_streams() const;

 private:
  std::shared_ptr<WatchHub> hub_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_LIVE_WATCH_SERVICE_H_
