#include "engine/runtime/memory_pool.h"

#include "gtest/gtest.h"

namespace memserve {
namespace {

TEST(ShardColumnsTest, ContiguousAlignedCoverage) {
  for (int64_t v_dim : {1, 16, 24, 100, 128, 1000, 4096}) {
    for (int shards : {1, 2, 3, 4, 7, 64}) {
      const auto cols = ShardColumns(v_dim, shards);
      ASSERT_FALSE(cols.empty());
      EXPECT_LE(static_cast<int>(cols.size()), shards);
      int64_t next = 0;
      for (const auto& [begin, end] : cols) {
        EXPECT_EQ(begin, next);
        EXPECT_EQ(begin % 16, 0);
        EXPECT_GT(end, begin);
        next = end;
      }
      EXPECT_EQ(next, v_dim) << v_dim << " " << shards;
    }
  }
  EXPECT_EQ(ShardColumns(128, 4).size(), 4u);
}

TEST(MemoryPoolTest, RejectsBadShardCounts) {
  EXPECT_EQ(MemoryPool::Create({}, 0, Device::kCpu).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MemoryPool::Create({}, 65, Device::kCpu).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MemoryPool::Create({}, 4, Device::kCpu).ok());
}

}  // namespace
}  // namespace memserve
