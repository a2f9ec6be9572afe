#include "engine/batch_descriptor.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace memserve {
namespace {

template <typename T>
std::vector<T> Read(const HostBatch& b, size_t offset, size_t n) {
  std::vector<T> v(n);
  std::memcpy(v.data(), b.bytes.data() + offset, n * sizeof(T));
  return v;
}

TEST(BatchDescriptorTest, PrefillAndDecodeChunks) {
  // Sequence a: 3 prompt tokens at 0..2 in blocks {4, 1}; b: one decode
  // token at position 5 in blocks {0, 2} (block size 4).
  const std::vector<int> a = {7, 8, 9}, b = {3};
  const std::vector<KvBlockId> ta = {4, 1}, tb = {0, 2};
  StepChunk ca = StepChunk::ForTokens(a, 0, ta, /*wants_logits=*/false);
  ca.all_logits = true;
  const StepChunk cb = StepChunk::ForTokens(b, 5, tb, /*wants_logits=*/true);
  const std::vector<StepChunk> pass = {ca, cb};
  HostBatch h;
  BuildHostBatch(pass, /*block_size=*/4, /*pad_to_seqs=*/0, /*table_width=*/0, &h);
  EXPECT_EQ(h.n_tokens, 4);
  EXPECT_EQ(h.n_seqs, 2);
  EXPECT_EQ(h.max_blocks, 2);
  EXPECT_EQ(h.ids, (std::vector<int32_t>{7, 8, 9, 3}));
  EXPECT_EQ(h.positions, (std::vector<int32_t>{0, 1, 2, 5}));
  EXPECT_EQ(h.kv_rows, (std::vector<int64_t>{16, 17, 18, 2 * 4 + 1}));
  EXPECT_EQ(h.seq_starts, (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(h.tables, (std::vector<int32_t>{4, 0, 0, 2}));  // a uses one block
  EXPECT_EQ(h.logit_rows, (std::vector<int64_t>{0, 1, 2, 3}));
  // The upload image holds every array at its 8-aligned offset.
  EXPECT_EQ(h.bytes.size() % 8, 0u);
  for (size_t off : {h.offset_ids, h.offset_positions, h.offset_seq_starts, h.offset_tables}) {
    EXPECT_EQ(off % 8, 0u);
  }
  EXPECT_EQ(Read<int64_t>(h, h.offset_kv_rows, 4), h.kv_rows);
  EXPECT_EQ(Read<int32_t>(h, h.offset_ids, 4), h.ids);
  EXPECT_EQ(Read<int32_t>(h, h.offset_positions, 4), h.positions);
  EXPECT_EQ(Read<int32_t>(h, h.offset_seq_starts, 3), h.seq_starts);
  EXPECT_EQ(Read<int32_t>(h, h.offset_tables, 4), h.tables);
}

TEST(BatchDescriptorTest, DecodePaddedToItsBucket) {
  const std::vector<int> a = {5}, b = {6}, c = {7};
  const std::vector<KvBlockId> ta = {3}, tb = {1, 6}, tc = {2};
  const std::vector<StepChunk> pass = {StepChunk::ForTokens(a, 2, ta, true),
                                       StepChunk::ForTokens(b, 9, tb, true),
                                       StepChunk::ForTokens(c, 0, tc, true)};
  ASSERT_TRUE(IsDecodePass(pass));
  const int bucket = DecodeGraphBucket(3);
  ASSERT_EQ(bucket, 4);
  const int width = DecodeGraphTableWidth(/*max_seqlen=*/30, /*block_size=*/8);
  EXPECT_EQ(width, 4);
  HostBatch h;
  BuildHostBatch(pass, 8, bucket, width, &h);
  EXPECT_EQ(h.n_tokens, 4);
  EXPECT_EQ(h.n_seqs, 4);
  EXPECT_EQ(h.max_blocks, 4);
  EXPECT_EQ(h.ids, (std::vector<int32_t>{5, 6, 7, 0}));
  EXPECT_EQ(h.positions, (std::vector<int32_t>{2, 9, 0, 0}));
  // The padding token's row is outside the cache (not written).
  EXPECT_EQ(h.kv_rows, (std::vector<int64_t>{3 * 8 + 2, 6 * 8 + 1, 2 * 8, -1}));
  EXPECT_EQ(h.seq_starts, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(h.tables, (std::vector<int32_t>{3, 0, 0, 0,  //
                                            1, 6, 0, 0,  //
                                            2, 0, 0, 0,  //
                                            0, 0, 0, 0}));
  EXPECT_EQ(h.logit_rows, (std::vector<int64_t>{0, 1, 2}));
  // The same bucket always gives the same upload size (a graph's buffer).
  HostBatch one;
  BuildHostBatch(absl::MakeConstSpan(pass).subspan(0, 1), 8, bucket, width, &one);
  EXPECT_EQ(one.bytes.size(), h.bytes.size());
}

TEST(BatchDescriptorTest, Buckets) {
  EXPECT_EQ(DecodeGraphBucket(0), 0);
  EXPECT_EQ(DecodeGraphBucket(1), 1);
  EXPECT_EQ(DecodeGraphBucket(2), 2);
  EXPECT_EQ(DecodeGraphBucket(3), 4);
  EXPECT_EQ(DecodeGraphBucket(9), 16);
  EXPECT_EQ(DecodeGraphBucket(17), 24);
  EXPECT_EQ(DecodeGraphBucket(64), 64);
  EXPECT_EQ(DecodeGraphBucket(65), 96);
  EXPECT_EQ(DecodeGraphBucket(256), 256);
  EXPECT_EQ(DecodeGraphBucket(257), 0);
  int previous = 0;
  for (int bucket : kDecodeGraphBuckets) {
    EXPECT_GT(bucket, previous);
    previous = bucket;
  }
  // Padding to a bucket at most doubles the work, and adds at most 31
  // sequences.
  for (int n = 1; n <= 256; ++n) {
    const int b = DecodeGraphBucket(n);
    EXPECT_GE(b, n);
    EXPECT_LE(b, 2 * n) << n;
    EXPECT_LE(b - n, 31) << n;
  }
}

TEST(BatchDescriptorTest, OnlyOneTokenChunksWithLogitsAreDecodePasses) {
  const std::vector<int> one = {1}, two = {1, 2};
  const std::vector<KvBlockId> t = {0};
  EXPECT_FALSE(IsDecodePass({}));
  EXPECT_TRUE(IsDecodePass({StepChunk::ForTokens(one, 0, t, true)}));
  EXPECT_FALSE(IsDecodePass({StepChunk::ForTokens(one, 0, t, false)}));
  EXPECT_FALSE(
      IsDecodePass({StepChunk::ForTokens(one, 0, t, true), StepChunk::ForTokens(two, 0, t, true)}));
  StepChunk all = StepChunk::ForTokens(one, 0, t, false);
  all.all_logits = true;
  EXPECT_TRUE(IsDecodePass({all}));
}

}  // namespace
}  // namespace memserve
