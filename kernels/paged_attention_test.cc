// paged_attention on the GPU vs the CPU backend's Attention on random batches
// (prefill chunks and decode tokens mixed, GQA, sliding windows, scattered
// blocks, fp32 and bf16 caches; skips without a GPU); the parameter
// validation runs everywhere.
#include "kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

PagedAttentionParams ValidParams(float* buf, int32_t* ibuf) {
  PagedAttentionParams p;
  p.q = buf;
  p.k_cache = buf;
  p.v_cache = buf;
  p.out = buf;
  p.seq_starts = ibuf;
  p.positions = ibuf;
  p.block_tables = ibuf;
  p.n_tokens = 1;
  p.n_seqs = 1;
  p.max_blocks = 1;
  p.block_size = 16;
  p.cache_rows = 16;
  p.n_heads = 4;
  p.n_kv_heads = 2;
  p.head_dim = 64;
  return p;
}

TEST(PagedAttentionParamsTest, ValidateNamesTheField) {
  float buf[4] = {};
  int32_t ibuf[4] = {};
  EXPECT_TRUE(ValidParams(buf, ibuf).Validate().ok());
  PagedAttentionParams p = ValidParams(buf, ibuf);
  p.block_tables = nullptr;
  EXPECT_TRUE(StatusMentions(p.Validate(), "PagedAttentionParams.block_tables is null"));
  p = ValidParams(buf, ibuf);
  p.n_heads = 6;
  p.n_kv_heads = 4;
  EXPECT_TRUE(StatusMentions(p.Validate(),
                             "PagedAttentionParams.n_heads must be a multiple of "
                             "n_kv_heads in [1, 65535], got 6"));
  p = ValidParams(buf, ibuf);
  p.head_dim = 512;
  EXPECT_TRUE(StatusMentions(p.Validate(), "PagedAttentionParams.head_dim must be in [1, 256]"));
  p = ValidParams(buf, ibuf);
  p.n_seqs = 2;
  EXPECT_TRUE(StatusMentions(p.Validate(), "PagedAttentionParams.n_seqs"));
  p = ValidParams(buf, ibuf);
  p.cache_rows = 8;
  EXPECT_TRUE(
      StatusMentions(p.Validate(), "PagedAttentionParams.cache_rows must be >= block_size"));
  p = ValidParams(buf, ibuf);
  p.q_stride = 100;
  EXPECT_TRUE(StatusMentions(LaunchPagedAttention(p, nullptr), "PagedAttentionParams.q_stride"));
  p = ValidParams(buf, ibuf);
  p.n_tokens = 0;
  p.n_seqs = 0;
  EXPECT_TRUE(LaunchPagedAttention(p, nullptr).ok());  // nothing to do: no CUDA call
  EXPECT_EQ(PagedAttentionWorkspaceBytes(ValidParams(buf, ibuf)), 0u);
  EXPECT_EQ(ValidParams(buf, ibuf).scale(), 0.125f);
}

struct Seq {
  int start_pos;  // position of the first query row
  int n_tokens;   // query rows this step
};

struct Case {
  std::vector<Seq> seqs;
  int n_heads = 8;
  int n_kv_heads = 2;
  int head_dim = 64;
  int block_size = 16;
  int sliding_window = 0;
  ElementType cache_type = ElementType::kF32;
  int64_t q_stride = 0;  // 0 = dense
};

// Builds the batch (blocks scattered over a larger cache), runs the CPU
// backend's Attention and the kernel, compares by NMSE.
void ExpectMatchesCpu(const Case& c, std::mt19937* rng) {
  SCOPED_TRACE(testing::Message() << c.seqs.size() << " seqs, heads " << c.n_heads << "/"
                                  << c.n_kv_heads << " head_dim " << c.head_dim << " block "
                                  << c.block_size << " window " << c.sliding_window << " "
                                  << ElementTypeName(c.cache_type) << " q_stride " << c.q_stride);
  const int n_seqs = static_cast<int>(c.seqs.size());
  std::vector<int32_t> seq_starts = {0}, positions;
  int max_blocks = 1, total_blocks = 0;
  for (const Seq& s : c.seqs) {
    for (int t = 0; t < s.n_tokens; ++t) positions.push_back(s.start_pos + t);
    seq_starts.push_back(seq_starts.back() + s.n_tokens);
    const int blocks = (s.start_pos + s.n_tokens + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, blocks);
    total_blocks += blocks;
  }
  const int64_t n_tokens = seq_starts.back();
  const int cache_blocks = total_blocks + 3;  // some blocks belong to nobody
  std::vector<int32_t> free_blocks(cache_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), *rng);
  std::vector<int32_t> tables(static_cast<size_t>(n_seqs) * max_blocks, -7);  // unused: junk
  for (int s = 0, next = 0; s < n_seqs; ++s) {
    const int blocks = (c.seqs[s].start_pos + c.seqs[s].n_tokens + c.block_size - 1) / c.block_size;
    for (int b = 0; b < blocks; ++b) tables[s * max_blocks + b] = free_blocks[next++];
  }
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  const int64_t cache_rows = static_cast<int64_t>(cache_blocks) * c.block_size;
  const int64_t q_stride = c.q_stride == 0 ? q_dim : c.q_stride;
  const std::vector<float> q_wide = RandomVector(n_tokens * q_stride, rng);
  std::vector<float> q(n_tokens * q_dim);
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::copy_n(q_wide.begin() + t * q_stride, q_dim, q.begin() + t * q_dim);
  }
  std::vector<float> k_cache = RandomVector(cache_rows * kv_dim, rng);
  std::vector<float> v_cache = RandomVector(cache_rows * kv_dim, rng);
  std::vector<uint16_t> k_bf16(k_cache.size()), v_bf16(v_cache.size());
  for (size_t i = 0; i < k_cache.size(); ++i) {
    k_bf16[i] = F32ToBf16(k_cache[i]);
    v_bf16[i] = F32ToBf16(v_cache[i]);
    if (c.cache_type == ElementType::kBF16) {  // the CPU reads what the GPU reads
      k_cache[i] = Bf16ToF32(k_bf16[i]);
      v_cache[i] = Bf16ToF32(v_bf16[i]);
    }
  }

  CpuBackend cpu(CpuBackend::Options{2, CpuIsa::kAuto});
  TestTensors host(&cpu);
  BatchDescriptor batch;
  batch.n_tokens = n_tokens;
  batch.n_seqs = n_seqs;
  batch.block_size = c.block_size;
  batch.max_blocks = max_blocks;
  batch.positions = host.I32(positions, {n_tokens});
  batch.seq_starts = host.I32(seq_starts, {n_seqs + 1});
  batch.block_tables = host.I32(tables, {n_seqs, max_blocks});
  AttentionShape shape;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim = c.head_dim;
  shape.sliding_window = c.sliding_window;
  const Tensor out_cpu = host.Filled(DType::kF32, {n_tokens, q_dim});
  ASSERT_TRUE(cpu.Attention(shape, batch, host.F32(q, {n_tokens, q_dim}),
                            host.F32(k_cache, {cache_rows, kv_dim}),
                            host.F32(v_cache, {cache_rows, kv_dim}), out_cpu)
                  .ok());
  const std::vector<float> want = host.ReadF32(out_cpu);

  DeviceArray<float> dq(q_wide), dk32(k_cache), dv32(v_cache), dout(n_tokens * q_dim);
  DeviceArray<uint16_t> dk16(k_bf16), dv16(v_bf16);
  DeviceArray<int32_t> dstarts(seq_starts), dpos(positions), dtables(tables);
  PagedAttentionParams p;
  p.q = dq.get();
  p.q_stride = c.q_stride;
  p.cache_type = c.cache_type;
  p.k_cache = c.cache_type == ElementType::kF32 ? static_cast<const void*>(dk32.get())
                                                : static_cast<const void*>(dk16.get());
  p.v_cache = c.cache_type == ElementType::kF32 ? static_cast<const void*>(dv32.get())
                                                : static_cast<const void*>(dv16.get());
  p.out = dout.get();
  p.seq_starts = dstarts.get();
  p.positions = dpos.get();
  p.block_tables = dtables.get();
  p.n_tokens = n_tokens;
  p.n_seqs = n_seqs;
  p.max_blocks = max_blocks;
  p.block_size = c.block_size;
  p.cache_rows = cache_rows;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = c.head_dim;
  p.sliding_window = c.sliding_window;
  ASSERT_TRUE(LaunchPagedAttention(p, nullptr).ok());
  // fp32 on both sides; only the summation order differs.
  EXPECT_LT(Nmse(dout.Read(), want), 1e-10);
}

// Prefill chunks (from position 0 and continuing), decode tokens, a
// one-token sequence at position 0, sequences crossing block boundaries.
std::vector<Seq> MixedBatch() {
  return {{0, 50}, {100, 1}, {33, 7}, {0, 1}, {250, 1}, {17, 64}, {15, 2}};
}

TEST(PagedAttentionTest, MixedBatchMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  for (ElementType type : {ElementType::kF32, ElementType::kBF16}) {
    for (int head_dim : {64, 128, 40, 256, 16}) {
      Case c;
      c.seqs = MixedBatch();
      c.head_dim = head_dim;
      c.cache_type = type;
      ExpectMatchesCpu(c, &rng);
    }
  }
}

TEST(PagedAttentionTest, GqaWindowsBlockSizesAndStridedQ) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  for (int kv_heads : {1, 4, 8}) {  // MQA, GQA, MHA
    Case c;
    c.seqs = MixedBatch();
    c.n_heads = 8;
    c.n_kv_heads = kv_heads;
    ExpectMatchesCpu(c, &rng);
  }
  for (int window : {1, 5, 37, 4096}) {
    Case c;
    c.seqs = MixedBatch();
    c.sliding_window = window;
    c.cache_type = ElementType::kBF16;
    ExpectMatchesCpu(c, &rng);
  }
  for (int block_size : {1, 3, 256}) {
    Case c;
    c.seqs = MixedBatch();
    c.block_size = block_size;
    ExpectMatchesCpu(c, &rng);
  }
  Case fused;  // q inside a fused [n, q_dim + 2 * kv_dim] projection output
  fused.seqs = MixedBatch();
  fused.q_stride = 8 * 64 + 2 * 2 * 64;
  ExpectMatchesCpu(fused, &rng);
}

// Many sequences, one token each, long contexts: the decode shape.
TEST(PagedAttentionTest, DecodeBatchMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(10);
  std::uniform_int_distribution<int> context(0, 2000);
  Case c;
  for (int s = 0; s < 64; ++s) c.seqs.push_back({context(rng), 1});
  c.n_heads = 16;
  c.n_kv_heads = 4;
  c.head_dim = 128;
  c.block_size = 32;
  c.cache_type = ElementType::kBF16;
  ExpectMatchesCpu(c, &rng);
}

// Entries the host cannot check are masked, never read out of bounds: a
// row before the first sequence gives zeros, a position whose block entry is
// outside the cache is skipped.
TEST(PagedAttentionTest, InconsistentBatchEntriesAreMasked) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  const int hd = 32;
  // Cache: 2 blocks of 2 rows, one kv head; v rows are 1, 2, 3, 4 everywhere.
  std::vector<float> k(4 * hd, 0.0f), v(4 * hd);
  for (int r = 0; r < 4; ++r) std::fill_n(v.begin() + r * hd, hd, static_cast<float>(r + 1));
  DeviceArray<float> dq(std::vector<float>(2 * hd, 0.0f)), dk(k), dv(v);
  DeviceArray<float> dout(std::vector<float>(2 * hd, 9.0f));
  // Row 0 belongs to no sequence; row 1 is sequence 0 at position 3, whose
  // table maps positions 0-1 to block 1 (rows 2, 3) and positions 2-3 to an
  // invalid block 5 (skipped).
  DeviceArray<int32_t> dstarts(std::vector<int32_t>{1, 2}), dpos(std::vector<int32_t>{0, 3});
  DeviceArray<int32_t> dtables(std::vector<int32_t>{1, 5});
  PagedAttentionParams p;
  p.q = dq.get();
  p.k_cache = dk.get();
  p.v_cache = dv.get();
  p.cache_type = ElementType::kF32;
  p.out = dout.get();
  p.seq_starts = dstarts.get();
  p.positions = dpos.get();
  p.block_tables = dtables.get();
  p.n_tokens = 2;
  p.n_seqs = 1;
  p.max_blocks = 2;
  p.block_size = 2;
  p.cache_rows = 4;
  p.n_heads = 1;
  p.n_kv_heads = 1;
  p.head_dim = hd;
  ASSERT_TRUE(LaunchPagedAttention(p, nullptr).ok());
  const std::vector<float> out = dout.Read();
  ASSERT_EQ(out.size(), 2u * hd);
  for (int d = 0; d < hd; ++d) {
    EXPECT_EQ(out[d], 0.0f);
    EXPECT_FLOAT_EQ(out[hd + d], 3.5f);  // equal scores over rows 2, 3: mean of 3 and 4
  }
}

}  // namespace
}  // namespace memserve::kernels
