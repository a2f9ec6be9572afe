#include "engine/backend/cuda/staging.h"

#include "gtest/gtest.h"

namespace memserve::cuda {
namespace {

TEST(StagingTest, ChunksCoverTheRangeAndAlternateBuffers) {
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{99}, size_t{100}, size_t{101}, size_t{1000}}) {
    const std::vector<StagingChunk> chunks = PlanStagingChunks(bytes, 100, 2);
    EXPECT_EQ(chunks.size(), (bytes + 99) / 100) << bytes;
    size_t next = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      EXPECT_EQ(chunks[i].offset, next);
      EXPECT_GE(chunks[i].bytes, 1u);
      EXPECT_LE(chunks[i].bytes, 100u);
      EXPECT_EQ(chunks[i].buffer, static_cast<int>(i % 2));
      next += chunks[i].bytes;
    }
    EXPECT_EQ(next, bytes);
  }
  EXPECT_EQ(PlanStagingChunks(250, 100, 1).back().buffer, 0);
  EXPECT_TRUE(PlanStagingChunks(250, 0, 2).empty());
}

TEST(StagingTest, Rate) {
  EXPECT_DOUBLE_EQ(GigabytesPerSecond(size_t{2000000000}, 0.5), 4.0);
  EXPECT_EQ(GigabytesPerSecond(100, 0.0), 0.0);
}

}  // namespace
TEST(RowsPerChunkTest, WholeRowsAtLeastOneAtMostAll) {
  EXPECT_EQ(RowsPerChunk(1000, 256, 1024), 4);
  EXPECT_EQ(RowsPerChunk(1000, 256, 1000), 3);
  EXPECT_EQ(RowsPerChunk(1000, 4096, 1024), 1);  // a row larger than a buffer
  EXPECT_EQ(RowsPerChunk(3, 256, 1 << 20), 3);
  EXPECT_EQ(RowsPerChunk(0, 256, 1024), 0);
}

}  // namespace memserve::cuda
