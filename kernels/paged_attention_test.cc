// paged_attention on the GPU vs the CPU backend's Attention on random batches
// (prefill chunks and decode tokens mixed, GQA, sliding windows, scattered
// blocks, fp32 and bf16 caches; skips without a GPU); the parameter
// validation runs everywhere.
#include "kernels/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention_test_batch.h"
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
  EXPECT_EQ(PagedAttentionWorkspaceBytes(ValidParams(buf, ibuf)), 0u);  // max_context unknown
  EXPECT_EQ(ValidParams(buf, ibuf).scale(), 0.125f);
}

using Case = AttentionTestCase;

// Runs the kernel on a random batch for `c` and compares it with the CPU
// backend's Attention by NMSE. max_context > 0 lets the kernel split the
// keys of few (row, head) pairs across blocks (it then needs a workspace).
void ExpectMatchesCpu(const Case& c, std::mt19937* rng, int64_t max_context = 0) {
  SCOPED_TRACE(testing::Message() << c.seqs.size() << " seqs, heads " << c.n_heads << "/"
                                  << c.n_kv_heads << " head_dim " << c.head_dim << " block "
                                  << c.block_size << " window " << c.sliding_window << " "
                                  << ElementTypeName(c.cache_type) << " q_stride " << c.q_stride
                                  << " max_context " << max_context);
  const AttentionTestBatch b = MakeAttentionTestBatch(c, rng);
  const std::vector<float> want = CpuAttentionReference(b);
  ASSERT_FALSE(want.empty());

  DeviceArray<float> dq(b.q_wide), dk32(b.k_cache), dv32(b.v_cache), dout(b.n_tokens * b.q_dim);
  DeviceArray<uint16_t> dk16(b.k_bf16), dv16(b.v_bf16);
  DeviceArray<int32_t> dstarts(b.seq_starts), dpos(b.positions), dtables(b.block_tables);
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
  p.n_tokens = b.n_tokens;
  p.n_seqs = b.n_seqs;
  p.max_blocks = b.max_blocks;
  p.block_size = c.block_size;
  p.cache_rows = b.cache_rows;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = c.head_dim;
  p.sliding_window = c.sliding_window;
  p.max_context = max_context;
  const size_t workspace_bytes = PagedAttentionWorkspaceBytes(p);
  DeviceArray<float> workspace(workspace_bytes / sizeof(float));
  if (workspace_bytes > 0) {
    p.workspace = workspace.get();
    p.workspace_bytes = workspace_bytes;
  }
  ASSERT_TRUE(LaunchPagedAttention(p, nullptr).ok());
  // fp32 on both sides; only the summation order differs.
  EXPECT_LT(Nmse(dout.Read(), want), 1e-10);
}

TEST(PagedAttentionTest, MixedBatchMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  for (ElementType type : {ElementType::kF32, ElementType::kBF16}) {
    for (int head_dim : {64, 128, 40, 256, 16}) {
      Case c;
      c.seqs = MixedAttentionBatch();
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
    c.seqs = MixedAttentionBatch();
    c.n_heads = 8;
    c.n_kv_heads = kv_heads;
    ExpectMatchesCpu(c, &rng);
  }
  for (int window : {1, 5, 37, 4096}) {
    Case c;
    c.seqs = MixedAttentionBatch();
    c.sliding_window = window;
    c.cache_type = ElementType::kBF16;
    ExpectMatchesCpu(c, &rng);
  }
  for (int block_size : {1, 3, 256}) {
    Case c;
    c.seqs = MixedAttentionBatch();
    c.block_size = block_size;
    ExpectMatchesCpu(c, &rng);
  }
  Case fused;  // q inside a fused [n, q_dim + 2 * kv_dim] projection output
  fused.seqs = MixedAttentionBatch();
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

// Few (row, head) pairs and a known max_context: the keys are split across
// blocks and merged by a second kernel (flash-decoding).
TEST(PagedAttentionTest, SplitDecodeMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  Case one;  // batch 1, 16 heads, context 3000: 12 splits of 250 positions
  one.seqs = {{2999, 1}};
  one.n_heads = 16;
  one.n_kv_heads = 4;
  one.head_dim = 64;
  one.cache_type = ElementType::kBF16;
  ExpectMatchesCpu(one, &rng, /*max_context=*/3000);
  Case few;  // contexts past max_context land in the open-ended last split
  std::uniform_int_distribution<int> context(0, 2000);
  for (int s = 0; s < 3; ++s) few.seqs.push_back({context(rng), 1});
  few.seqs.push_back({0, 1});
  few.sliding_window = 300;
  ExpectMatchesCpu(few, &rng, /*max_context=*/600);
  few.sliding_window = 0;
  few.head_dim = 256;
  ExpectMatchesCpu(few, &rng, /*max_context=*/4096);
}

TEST(PagedAttentionParamsTest, SplitsNeedTheWorkspace) {
  float buf[4] = {};
  int32_t ibuf[4] = {};
  PagedAttentionParams p = ValidParams(buf, ibuf);
  p.max_context = 1 << 16;  // 1 row x 4 heads: split
  const size_t need = PagedAttentionWorkspaceBytes(p);
  EXPECT_EQ(need, 4u * 64 * (64 + 2) * sizeof(float));
  EXPECT_TRUE(StatusMentions(p.Validate(), "PagedAttentionParams.workspace must hold"));
  p.workspace = buf;
  p.workspace_bytes = need;
  EXPECT_TRUE(p.Validate().ok());
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
