// Download cursors: how a device's position in a bucket (kcnet.v1.BucketCursor, see
// sync.proto) moves when it stores a download page. The device store applies it, and the
// server's sync stream applies the same rule to predict where each page it sends takes the
// device.
//
// Thread-safety: pure functions.
#ifndef KCNET_SYNC_CURSOR_H_
#define KCNET_SYNC_CURSOR_H_

#include <algorithm>

#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {

// Moves `cursor` by a page's cursor `page` for the same bucket: the op only moves up, and
// the floor moves up to the page's op when the page completes the bucket (its floor equals
// its op) at or above the cursor. A delayed page (op below the cursor) changes neither.
inline void AdvanceCursor(const kcnet::v1::BucketCursor& page, kcnet::v1::BucketCursor* cursor) {
  if (page.op() >= cursor->op() && page.floor() == page.op()) cursor->set_floor(page.op());
  cursor->set_op(std::max(cursor->op(), page.op()));
}

// Same position (the bucket is not compared).
inline bool SamePosition(const kcnet::v1::BucketCursor& a, const kcnet::v1::BucketCursor& b) {
  return a.op() == b.op() && a.floor() == b.floor();
}

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_CURSOR_H_
