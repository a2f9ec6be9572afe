#include "engine/runtime/memory_pool.h"

#include <memory>

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

// A ShardedMemory that records nothing: the pool's bookkeeping only.
class FakeSharded : public ShardedMemory {
 public:
  absl::Status Gather(int, const Tensor&, const Tensor&, const Tensor&) override {
    return absl::OkStatus();
  }
  bool capturable() const override { return false; }
  std::vector<DeviceBytes> device_bytes() const override {
    return {{"cuda:0", 100 * 16 * 2}, {"cuda:1", 100 * 16 * 2}};
  }
};

MemoryPool::Table ShapeOnly(int64_t rows, int64_t columns) {
  MemoryPool::Table t;
  t.rows = rows;
  t.columns = columns;
  t.elem_bytes = 2;
  return t;
}

TEST(MemoryPoolTest, ShardedPoolKeepsShapesPlacementAndDeviceBytes) {
  absl::StatusOr<MemoryPool> pool = MemoryPool::CreateSharded(
      {ShapeOnly(100, 32)},
      {MemoryShard{Device::kCuda, 0, 0, 16}, MemoryShard{Device::kCuda, 1, 16, 32}},
      std::make_unique<FakeSharded>());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->placement(), MemoryPlacement::kSharded);
  EXPECT_EQ(pool->bytes(), 100 * 32 * 2);
  EXPECT_EQ(pool->shard_bytes(1), 100 * 16 * 2);
  ASSERT_NE(pool->sharded(), nullptr);
  ASSERT_EQ(pool->device_bytes().size(), 2u);
  EXPECT_EQ(pool->device_bytes()[1].device, "cuda:1");

  // Shards must tile the columns; a gatherer is required.
  EXPECT_EQ(MemoryPool::CreateSharded({ShapeOnly(100, 32)}, {MemoryShard{Device::kCuda, 0, 0, 16}},
                                      std::make_unique<FakeSharded>())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MemoryPool::CreateSharded({ShapeOnly(100, 32)}, {MemoryShard{Device::kCuda, 0, 0, 32}},
                                      nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MemoryPoolTest, CpuPoolIsHostPlacementOnTheCpu) {
  absl::StatusOr<MemoryPool> pool = MemoryPool::Create({ShapeOnly(10, 64)}, 4, Device::kCpu);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->placement(), MemoryPlacement::kHost);
  ASSERT_EQ(pool->device_bytes().size(), 1u);
  EXPECT_EQ(pool->device_bytes()[0].device, "cpu");
  EXPECT_EQ(pool->device_bytes()[0].bytes, 10 * 64 * 2);
  EXPECT_EQ(pool->shards().size(), 4u);
  EXPECT_EQ(pool->sharded(), nullptr);
}

}  // namespace
}  // namespace memserve
