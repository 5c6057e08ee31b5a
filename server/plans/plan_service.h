// PlanService (proto/kcnet/v1/plans.proto): provinces' extension plans, their revision
// trail, and the disbursements of support requests, over PlanStore. Scope: a plan is
// visible to callers whose subtrees hold the province or lie inside it; a plan out of
// scope answers NOT_FOUND exactly as a missing one. Only province officers covering the
// province create and revise its plan and record disbursements (docs/API.md).
//
// Thread-safety: thread-safe; the dependencies must outlive the service.
#ifndef KCNET_SERVER_PLANS_PLAN_SERVICE_H_
#define KCNET_SERVER_PLANS_PLAN_SERVICE_H_

#include <memory>

#include "grpcpp/grpcpp.h"
#include "server/directory/directory.h"
#include "server/plans/plan_store.h"
#include "server/rpc/rpc_runner.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server {

struct PlanServiceDeps {
  Directory* directory = nullptr;
  PlanStore* plans = nullptr;
  sync::ServerStore* records = nullptr;
  RpcRunner* runner = nullptr;
  sync::Clock* clock = sync::SystemClock();
};

// The PlanService, to register on a builder.
std::unique_ptr<grpc::Service> MakePlanService(const PlanServiceDeps& deps);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_PLANS_PLAN_SERVICE_H_
