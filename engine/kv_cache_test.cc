#include "engine/kv_cache.h"

#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(KvBlockAllocatorTest, HandsOutEveryBlockOnceThenNothing) {
  KvBlockAllocator allocator(5);
  std::set<KvBlockId> seen;
  for (int i = 0; i < 5; ++i) {
    std::optional<KvBlockId> block = allocator.Allocate();
    ASSERT_TRUE(block.has_value());
    EXPECT_GE(*block, 0);
    EXPECT_LT(*block, 5);
    EXPECT_TRUE(seen.insert(*block).second) << "block " << *block << " handed out twice";
  }
  EXPECT_FALSE(allocator.Allocate().has_value());
  EXPECT_EQ(allocator.num_free(), 0);
  EXPECT_EQ(allocator.num_used(), 5);
  EXPECT_DOUBLE_EQ(allocator.usage(), 1.0);
}

TEST(KvBlockAllocatorTest, FreedBlockIsReusedAndGaugeFollows) {
  KvBlockAllocator allocator(4);
  EXPECT_DOUBLE_EQ(allocator.usage(), 0.0);
  const KvBlockId a = *allocator.Allocate();
  const KvBlockId b = *allocator.Allocate();
  EXPECT_DOUBLE_EQ(allocator.usage(), 0.5);
  ASSERT_TRUE(allocator.Free(a).ok());
  EXPECT_EQ(allocator.num_used(), 1);
  EXPECT_EQ(*allocator.Allocate(), a);  // most recently freed first
  ASSERT_TRUE(allocator.Free(b).ok());
  ASSERT_TRUE(allocator.Free(a).ok());
  EXPECT_EQ(allocator.num_free(), 4);
}

TEST(KvBlockAllocatorTest, DoubleFreeIsRefusedWithoutCorruptingThePool) {
  KvBlockAllocator allocator(3);
  const KvBlockId a = *allocator.Allocate();
  ASSERT_TRUE(allocator.Free(a).ok());
  const absl::Status again = allocator.Free(a);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.message(), HasSubstr("double free"));
  // A corrupted free list would hand `a` out twice.
  std::set<KvBlockId> seen;
  while (std::optional<KvBlockId> block = allocator.Allocate()) seen.insert(*block);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(allocator.num_free(), 0);
}

TEST(KvBlockAllocatorTest, ForeignIdsAreRefused) {
  KvBlockAllocator allocator(3);
  for (KvBlockId id : {-1, 3, std::numeric_limits<KvBlockId>::max()}) {
    EXPECT_EQ(allocator.Free(id).code(), absl::StatusCode::kOutOfRange) << id;
  }
  EXPECT_EQ(allocator.num_free(), 3);
}

TEST(KvBlockAllocatorTest, EmptyPool) {
  KvBlockAllocator allocator(0);
  EXPECT_FALSE(allocator.Allocate().has_value());
  EXPECT_DOUBLE_EQ(allocator.usage(), 0.0);
}

TEST(BlockTableTest, BlocksNeededRoundsUp) {
  BlockTable table(4);
  EXPECT_EQ(table.BlocksNeeded(-3), 0);
  EXPECT_EQ(table.BlocksNeeded(0), 0);
  EXPECT_EQ(table.BlocksNeeded(1), 1);
  EXPECT_EQ(table.BlocksNeeded(4), 1);
  EXPECT_EQ(table.BlocksNeeded(5), 2);
  EXPECT_EQ(table.BlocksNeeded(std::numeric_limits<int>::max()), (1 << 29));
}

TEST(BlockTableTest, ReserveAllocatesOnlyMissingBlocks) {
  KvBlockAllocator allocator(10);
  BlockTable table(4);
  ASSERT_TRUE(table.Reserve(3, &allocator).ok());
  EXPECT_EQ(table.num_blocks(), 1);
  EXPECT_EQ(table.num_tokens(), 3);
  ASSERT_TRUE(table.Reserve(4, &allocator).ok());  // same block
  EXPECT_EQ(table.num_blocks(), 1);
  ASSERT_TRUE(table.Reserve(9, &allocator).ok());
  EXPECT_EQ(table.num_blocks(), 3);
  EXPECT_EQ(table.num_tokens(), 9);
  ASSERT_TRUE(table.Reserve(2, &allocator).ok());  // never shrinks
  EXPECT_EQ(table.num_tokens(), 9);
  EXPECT_EQ(allocator.num_used(), 3);
  EXPECT_THAT(table.blocks(), ElementsAre(0, 1, 2));
}

TEST(BlockTableTest, ReserveIsAllOrNothing) {
  KvBlockAllocator allocator(3);
  BlockTable other(4);
  ASSERT_TRUE(other.Reserve(4, &allocator).ok());
  BlockTable table(4);
  ASSERT_TRUE(table.Reserve(1, &allocator).ok());
  const absl::Status s = table.Reserve(13, &allocator);  // needs 3 more, 1 free
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table.num_blocks(), 1);
  EXPECT_EQ(table.num_tokens(), 1);
  EXPECT_EQ(allocator.num_free(), 1);
  EXPECT_TRUE(table.Reserve(8, &allocator).ok());  // exactly the last block
  EXPECT_EQ(allocator.num_free(), 0);
}

TEST(BlockTableTest, NegativeTotalIsInvalid) {
  KvBlockAllocator allocator(1);
  BlockTable table(4);
  EXPECT_EQ(table.Reserve(-1, &allocator).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlockTableTest, ReleaseReturnsEveryBlock) {
  KvBlockAllocator allocator(6);
  BlockTable a(2), b(2);
  ASSERT_TRUE(a.Reserve(5, &allocator).ok());
  ASSERT_TRUE(b.Reserve(2, &allocator).ok());
  EXPECT_EQ(allocator.num_used(), 4);
  a.Release(&allocator);
  EXPECT_EQ(a.num_blocks(), 0);
  EXPECT_EQ(a.num_tokens(), 0);
  EXPECT_EQ(allocator.num_used(), 1);
  b.Release(&allocator);
  b.Release(&allocator);  // already empty: nothing to free
  EXPECT_EQ(allocator.num_used(), 0);
}

TEST(BlockTableTest, LocateMapsPositionsThroughTheTable) {
  KvBlockAllocator allocator(4);
  BlockTable filler(3), table(3);
  ASSERT_TRUE(filler.Reserve(3, &allocator).ok());  // takes block 0
  ASSERT_TRUE(table.Reserve(7, &allocator).ok());   // blocks 1, 2, 3
  ASSERT_THAT(table.blocks(), ElementsAre(1, 2, 3));
  const std::vector<std::pair<int, KvSlot>> expected = {
      {0, {1, 0}}, {2, {1, 2}}, {3, {2, 0}}, {5, {2, 2}}, {6, {3, 0}}};
  for (const auto& [position, slot] : expected) {
    const KvSlot got = table.Locate(position);
    EXPECT_EQ(got.block, slot.block) << "position " << position;
    EXPECT_EQ(got.offset, slot.offset) << "position " << position;
  }
}

TEST(PagedKvLayoutTest, OffsetsTileTheLayerExactlyOnce) {
  const PagedKvLayout layout{/*block_size=*/3, /*num_blocks=*/4, /*kv_dim=*/5};
  ASSERT_TRUE(layout.Validate().ok());
  EXPECT_EQ(layout.floats_per_block(), 15);
  EXPECT_EQ(layout.floats_per_layer(), 60);
  std::vector<int> covered(layout.floats_per_layer(), 0);
  for (KvBlockId block = 0; block < layout.num_blocks; ++block) {
    for (int offset = 0; offset < layout.block_size; ++offset) {
      const int64_t start = layout.Offset({block, offset});
      ASSERT_GE(start, 0);
      ASSERT_LE(start + layout.kv_dim, layout.floats_per_layer());
      for (int64_t i = 0; i < layout.kv_dim; ++i) ++covered[start + i];
    }
  }
  for (int c : covered) EXPECT_EQ(c, 1);
  EXPECT_EQ(layout.Offset({2, 1}), (2 * 3 + 1) * 5);
}

TEST(PagedKvLayoutTest, OffsetsOfLargePoolsDoNotOverflow) {
  const PagedKvLayout layout{/*block_size=*/16, /*num_blocks=*/1 << 20, /*kv_dim=*/8192};
  ASSERT_TRUE(layout.Validate().ok());
  EXPECT_EQ(layout.Offset({(1 << 20) - 1, 15}), layout.floats_per_layer() - 8192);
}

TEST(PagedKvLayoutTest, ValidateNamesTheField) {
  struct Case {
    PagedKvLayout layout;
    const char* field;
  };
  const int kMax = std::numeric_limits<int>::max();
  for (const Case& c : std::vector<Case>{
           {{0, 4, 8}, "block_size"},
           {{16, 0, 8}, "num_blocks"},
           {{16, 4, 0}, "kv_dim"},
           {{kMax, kMax, int64_t{1} << 40}, "overflows"},
       }) {
    const absl::Status s = c.layout.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(s.message(), HasSubstr(c.field));
  }
}

TEST(KvCacheManagerTest, ReservesAndReleasesBySequenceLikeTheAllocator) {
  KvCacheManager kv(/*num_blocks=*/6, /*block_size=*/2);
  EXPECT_EQ(kv.storage(), nullptr);  // bookkeeping only
  ASSERT_TRUE(kv.Reserve(1, 3).ok());
  ASSERT_TRUE(kv.Reserve(2, 2).ok());
  EXPECT_THAT(kv.blocks(1), ElementsAre(0, 1));
  EXPECT_THAT(kv.blocks(2), ElementsAre(2));
  ASSERT_TRUE(kv.Reserve(1, 4).ok());  // block 1 has room
  EXPECT_THAT(kv.blocks(1), ElementsAre(0, 1));
  ASSERT_TRUE(kv.Reserve(1, 5).ok());
  EXPECT_THAT(kv.blocks(1), ElementsAre(0, 1, 3));
  ASSERT_TRUE(kv.Reserve(1, 2).ok());  // never shrinks
  EXPECT_EQ(kv.num_tokens(1), 5);
  EXPECT_EQ(kv.num_tokens(2), 2);
  EXPECT_EQ(kv.num_used(), 4);
  EXPECT_EQ(kv.num_sequences(), 2);

  kv.Release(1);
  EXPECT_THAT(kv.blocks(1), ElementsAre());
  EXPECT_EQ(kv.num_tokens(1), 0);
  EXPECT_EQ(kv.num_free(), 5);
  EXPECT_EQ(kv.num_sequences(), 1);
  kv.Release(1);  // holds none: no-op
  kv.Release(99);
  EXPECT_EQ(kv.num_free(), 5);
  ASSERT_TRUE(kv.Reserve(3, 1).ok());
  EXPECT_THAT(kv.blocks(3), ElementsAre(3));  // the most recently freed first
}

TEST(KvCacheManagerTest, ReserveIsAllOrNothing) {
  KvCacheManager kv(3, 4);
  ASSERT_TRUE(kv.Reserve(1, 4).ok());
  const absl::Status s = kv.Reserve(1, 13);  // 4 blocks, 1 held + 2 free
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(kv.blocks(1), ElementsAre(0));
  EXPECT_EQ(kv.num_tokens(1), 4);
  EXPECT_EQ(kv.Reserve(2, 13).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.num_sequences(), 1);  // a sequence that got nothing holds no table
  EXPECT_EQ(kv.num_free(), 2);
  EXPECT_EQ(kv.Reserve(2, -1).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(kv.Reserve(2, 0).ok());
  EXPECT_EQ(kv.num_sequences(), 1);
  EXPECT_EQ(kv.BlocksNeeded(9), 3);
  EXPECT_EQ(kv.BlocksNeeded(0), 0);
}

// The model reads a chunk's block table while other sequences come and go.
TEST(KvCacheManagerTest, OtherSequencesDoNotMoveATable) {
  KvCacheManager kv(1000, 1);
  ASSERT_TRUE(kv.Reserve(0, 3).ok());
  const absl::Span<const KvBlockId> table = kv.blocks(0);
  for (uint64_t id = 1; id < 500; ++id) ASSERT_TRUE(kv.Reserve(id, 1).ok());
  for (uint64_t id = 1; id < 500; id += 2) kv.Release(id);
  EXPECT_EQ(kv.blocks(0).data(), table.data());
  EXPECT_THAT(table, ElementsAre(0, 1, 2));
}

}  // namespace
}  // namespace memserve
