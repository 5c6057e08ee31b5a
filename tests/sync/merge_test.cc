#include "sync/merge.h"

#include "gtest/gtest.h"

namespace kcnet::sync {
namespace {

constexpr uint64_t kA = 100;  // node ids
constexpr uint64_t kB = 200;

TEST(MergeTest, HigherClockWins) {
  EXPECT_EQ(MergeField({10, kA}, 5, {11, kB}, 5).decision, MergeDecision::kTakeIncoming);
  EXPECT_EQ(MergeField({12, kA}, 5, {11, kB}, 5).decision, MergeDecision::kKeepCurrent);
}

TEST(MergeTest, EqualClocksAreBrokenByNodeIdTheSameWayEverywhere) {
  EXPECT_EQ(MergeField({10, kA}, 5, {10, kB}, 5).decision, MergeDecision::kTakeIncoming);
  EXPECT_EQ(MergeField({10, kB}, 5, {10, kA}, 5).decision, MergeDecision::kKeepCurrent);
}

TEST(MergeTest, TheSameWriteAgainChangesNothing) {
  const FieldMerge m = MergeField({10, kA}, 5, {10, kA}, 0);
  EXPECT_EQ(m.decision, MergeDecision::kSame);
  EXPECT_FALSE(m.conflict);
}

TEST(MergeTest, AnEditThatSawTheCurrentValueIsNotAConflict) {
  // The writer had confirmed op 5, the value's op.
  EXPECT_FALSE(MergeField({10, kA}, 5, {11, kB}, 5).conflict);
  EXPECT_FALSE(MergeField({10, kA}, 5, {11, kB}, 9).conflict);
}

TEST(MergeTest, AnEditThatDidNotSeeAnotherWritersValueIsAConflictEitherWay) {
  // Incoming wins and overwrites B's unseen value.
  FieldMerge m = MergeField({10, kA}, 7, {11, kB}, 5);
  EXPECT_EQ(m.decision, MergeDecision::kTakeIncoming);
  EXPECT_TRUE(m.conflict);
  // Incoming loses to A's unseen newer value.
  m = MergeField({12, kA}, 7, {11, kB}, 5);
  EXPECT_EQ(m.decision, MergeDecision::kKeepCurrent);
  EXPECT_TRUE(m.conflict);
}

TEST(MergeTest, OwnUnseenWritesAreNotConflicts) {
  // A device edits twice offline; the second edit's base predates the first's op.
  EXPECT_FALSE(MergeField({10, kA}, 7, {11, kA}, 0).conflict);
}

}  // namespace
}  // namespace kcnet::sync
