// Loading benchmark data straight into a server's replica store (not timed): records go
// in as single-change mutations by one "loader" writer, 1,000 per batch (one durable
// transaction each), through ServerStore::Apply like any push.
//
// Thread-safety: call from one thread; the store serialises its own writes.
#ifndef KCNET_BENCH_LOAD_UTIL_H_
#define KCNET_BENCH_LOAD_UTIL_H_

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/message.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"

namespace kcnet::bench {

// Applies every record (a Facility, Visit, ...) as a new record; fails on the first
// refusal, naming it.
inline absl::Status LoadRecords(sync::ServerStore* store,
                                const std::vector<const google::protobuf::Message*>& records,
                                size_t batch_size = 1000) {
  const sync::Writer loader{"loader", sync::NodeIdFor("loader")};
  uint64_t seq = 0;
  for (size_t i = 0; i < records.size(); i += batch_size) {
    kcnet::v1::MutationBatch batch;
    for (size_t j = i; j < std::min(records.size(), i + batch_size); ++j) {
      kcnet::v1::Mutation* m = batch.add_mutations();
      m->set_seq(++seq);
      absl::StatusOr<kcnet::v1::RecordChange> change = model::ToChange(*records[j]);
      if (!change.ok()) return change.status();
      change->set_hlc(store->clock().Now());
      *m->add_changes() = *std::move(change);
    }
    absl::StatusOr<kcnet::v1::PushAck> ack = store->Apply(loader, batch);
    if (!ack.ok()) return ack.status();
    for (const kcnet::v1::MutationResult& r : ack->results()) {
      if (r.outcome() != kcnet::v1::MUTATION_OUTCOME_APPLIED) {
        return absl::InternalError(absl::StrCat("load: mutation ", r.seq(), ": ", r.reason()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kcnet::bench

#endif  // KCNET_BENCH_LOAD_UTIL_H_
