#include "sync/merge.h"

namespace kcnet::sync {

FieldMerge MergeField(Stamp current_stamp, uint64_t current_op, Stamp incoming,
                      uint64_t incoming_base_op) {
  FieldMerge result;
  if (incoming == current_stamp) return result;  // kSame, no conflict
  const bool concurrent = current_op > incoming_base_op && current_stamp.node != incoming.node;
  result.decision =
      incoming > current_stamp ? MergeDecision::kTakeIncoming : MergeDecision::kKeepCurrent;
  result.conflict = concurrent;
  return result;
}

}  // namespace kcnet::sync
