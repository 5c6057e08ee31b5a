// Field-level last-writer-wins with conflict detection: the one rule every replica
// applies when an incoming write meets a stored field.
//
// An incoming write carries its stamp (hlc, node) and the op id of the record version its
// writer had confirmed (base_op). It is *concurrent* with the stored value when the
// stored value was written after that version (op > base_op) by another node: the writer
// could not have seen it. The higher stamp wins; a concurrent loser, whichever side it is
// on, is a conflict to record. Deletion is not decided here: a tombstone wins over every
// update (see ServerStore).
//
// Thread-safety: pure functions.
#ifndef KCNET_SYNC_MERGE_H_
#define KCNET_SYNC_MERGE_H_

#include <cstdint>

#include "sync/hlc.h"

namespace kcnet::sync {

enum class MergeDecision {
  kTakeIncoming,  // the incoming write has the higher stamp
  kKeepCurrent,   // the stored value has the higher stamp
  kSame,          // the same write again (equal stamps): nothing to do
};

struct FieldMerge {
  MergeDecision decision = MergeDecision::kSame;
  bool conflict = false;  // the losing side is a concurrent edit by another node
};

// Decides one field. `current_stamp`/`current_op` describe the stored value.
FieldMerge MergeField(Stamp current_stamp, uint64_t current_op, Stamp incoming,
                      uint64_t incoming_base_op);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_MERGE_H_
