// paged_attention's batch indexing (kernels/paged_attention_index.h, which
// the kernel runs) on the CPU, and an emulation of the kernel's algorithm
// built on it (its split of the keys over warps in groups, a running-max
// softmax per warp, the merge of the warps) against the CPU backend's
// Attention. What the emulation cannot show (shuffles, shared memory, the
// launch) is left to paged_attention_test on a GPU.
#include "kernels/paged_attention_index.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention_test_batch.h"

namespace memserve::kernels {
namespace {

TEST(PagedAttentionIndexTest, SequenceOfRowMatchesALinearScan) {
  std::mt19937 rng(14);
  std::uniform_int_distribution<int> length(0, 3);  // empty sequences included
  for (int trial = 0; trial < 200; ++trial) {
    const int n_seqs = 1 + trial % 17;
    std::vector<int32_t> starts = {trial % 3};  // rows before the first sequence
    for (int s = 0; s < n_seqs; ++s) starts.push_back(starts.back() + length(rng));
    for (int64_t row = -1; row <= starts.back() + 1; ++row) {
      int want = -1;
      for (int s = 0; s < n_seqs; ++s) {
        if (starts[s] <= row && row < starts[s + 1]) want = s;
      }
      ASSERT_EQ(SequenceOfRow(starts.data(), n_seqs, row), want) << "row " << row;
    }
  }
}

TEST(PagedAttentionIndexTest, AttendedKeysAndCacheRows) {
  // Causal prefix, sliding window (includes the query's own position), and
  // the clip to what the table maps.
  EXPECT_EQ(AttendedKeys(10, 0, 4, 16).first, 0);
  EXPECT_EQ(AttendedKeys(10, 0, 4, 16).last, 10);
  EXPECT_EQ(AttendedKeys(10, 3, 4, 16).first, 8);
  EXPECT_EQ(AttendedKeys(1, 3, 4, 16).first, 0);
  EXPECT_EQ(AttendedKeys(1000000, 0, 4, 16).last, 63);
  const int32_t table[3] = {7, -1, 2};
  EXPECT_EQ(CacheRowOfPosition(table, 0, 4, 8), 28);
  EXPECT_EQ(CacheRowOfPosition(table, 3, 4, 8), 31);
  EXPECT_EQ(CacheRowOfPosition(table, 5, 4, 8), -1);  // entry -1
  EXPECT_EQ(CacheRowOfPosition(table, 9, 4, 8), 9);
  EXPECT_EQ(CacheRowOfPosition(table, 9, 4, 2), -1);  // entry 2 outside a 2-block cache
}

TEST(PagedAttentionIndexTest, SplitsOnlyForFewPairsAndLongContexts) {
  EXPECT_EQ(AttentionSplits(1, 16, 0), 1);        // unknown context: no split
  EXPECT_EQ(AttentionSplits(1, 16, 4096), 16);    // 17 wanted, 16 by work
  EXPECT_EQ(AttentionSplits(1, 16, 100000), 17);  // 264 / 16 pairs, rounded up
  EXPECT_EQ(AttentionSplits(1, 1, 1 << 20), kAttentionMaxSplits);
  EXPECT_EQ(AttentionSplits(1, 16, 300), 2);
  EXPECT_EQ(AttentionSplits(64, 16, 100000), 1);  // enough pairs already
  EXPECT_EQ(AttentionSplitChunk(4096, 16), 256);
  EXPECT_EQ(AttentionSplitChunk(10, 3), 4);
  // Chunks of 4 over keys [2, 13]: [2, 3], [4, 7], and the open-ended last.
  const KeyRange keys{2, 13};
  EXPECT_EQ(SplitKeys(keys, 0, 3, 4).first, 2);
  EXPECT_EQ(SplitKeys(keys, 0, 3, 4).last, 3);
  EXPECT_EQ(SplitKeys(keys, 1, 3, 4).first, 4);
  EXPECT_EQ(SplitKeys(keys, 1, 3, 4).last, 7);
  EXPECT_EQ(SplitKeys(keys, 2, 3, 4).first, 8);
  EXPECT_EQ(SplitKeys(keys, 2, 3, 4).last, 13);
  EXPECT_LT(SplitKeys(KeyRange{0, 2}, 1, 3, 4).last, SplitKeys(KeyRange{0, 2}, 1, 3, 4).first);
}

// paged_attention.cu's algorithm, step for step, on the host (its constants
// must match the kernel's): per (row, head) and split (SplitKeys), kWarps
// partitions take groups of kKeysPerIter consecutive keys in turn, each
// keeps a running max m, sum l and unnormalized output; the partitions are
// merged into the split's partial, and the splits' partials into the output
// (MergeSplitsKernel; with one split this is the kernel's direct output).
constexpr int kWarps = 4;
constexpr int kKeysPerIter = 4;

struct Partial {
  float m;
  float sum;
  std::vector<float> o;
};

std::vector<float> EmulateKernel(const AttentionTestBatch& b, int splits, int64_t chunk) {
  const AttentionTestCase& c = b.c;
  const int hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const int64_t cache_blocks = b.cache_rows / c.block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> out(b.n_tokens * b.q_dim);
  for (int64_t row = 0; row < b.n_tokens; ++row) {
    for (int h = 0; h < c.n_heads; ++h) {
      float* o = out.data() + row * b.q_dim + static_cast<int64_t>(h) * hd;
      const int s = SequenceOfRow(b.seq_starts.data(), b.n_seqs, row);
      int64_t pos = -1;
      if (s >= 0) pos = b.positions[b.seq_starts[s]] + (row - b.seq_starts[s]);
      if (s < 0 || pos < 0) {
        std::fill(o, o + hd, 0.0f);
        continue;
      }
      std::vector<Partial> partials;
      for (int split = 0; split < splits; ++split) {
        const KeyRange keys = SplitKeys(
            AttendedKeys(pos, c.sliding_window, b.max_blocks, c.block_size), split, splits, chunk);
        const int32_t* table = b.block_tables.data() + static_cast<int64_t>(s) * b.max_blocks;
        const int64_t head_offset = static_cast<int64_t>(h / group) * hd;
        const float* q = b.q.data() + row * b.q_dim + static_cast<int64_t>(h) * hd;
        float m[kWarps], l[kWarps];
        std::vector<std::vector<float>> acc(kWarps, std::vector<float>(hd, 0.0f));
        for (int w = 0; w < kWarps; ++w) {
          m[w] = kNegInf;
          l[w] = 0.0f;
          for (int64_t j0 = keys.first + w * kKeysPerIter; j0 <= keys.last;
               j0 += kWarps * kKeysPerIter) {
            bool valid[kKeysPerIter];
            int64_t offset[kKeysPerIter];
            float score[kKeysPerIter];
            float m_new = m[w];
            for (int u = 0; u < kKeysPerIter; ++u) {
              const int64_t j = j0 + u;
              const int64_t cache_row =
                  j <= keys.last ? CacheRowOfPosition(table, j, c.block_size, cache_blocks) : -1;
              valid[u] = cache_row >= 0;
              offset[u] = valid[u] ? cache_row * b.kv_dim + head_offset : 0;
              float dot = 0.0f;
              for (int d = 0; valid[u] && d < hd; ++d) dot += q[d] * b.k_cache[offset[u] + d];
              score[u] = valid[u] ? dot * scale : kNegInf;
              m_new = std::max(m_new, score[u]);
            }
            if (m_new == kNegInf) continue;
            const float correction = std::exp(m[w] - m_new);
            l[w] *= correction;
            for (float& a : acc[w]) a *= correction;
            for (int u = 0; u < kKeysPerIter; ++u) {
              const float p = valid[u] ? std::exp(score[u] - m_new) : 0.0f;
              l[w] += p;
              for (int d = 0; valid[u] && d < hd; ++d) acc[w][d] += p * b.v_cache[offset[u] + d];
            }
            m[w] = m_new;
          }
        }
        Partial part{kNegInf, 0.0f, std::vector<float>(hd)};
        for (int w = 0; w < kWarps; ++w) part.m = std::max(part.m, m[w]);
        for (int d = 0; d < hd; ++d) {
          float sum = 0.0f, value = 0.0f;
          for (int w = 0; w < kWarps; ++w) {
            if (m[w] == kNegInf) continue;
            const float f = std::exp(m[w] - part.m);
            sum += l[w] * f;
            value += acc[w][d] * f;
          }
          part.sum = sum;
          part.o[d] = value;
        }
        partials.push_back(part);
      }
      float m_all = kNegInf;
      for (const Partial& part : partials) m_all = std::max(m_all, part.m);
      for (int d = 0; d < hd; ++d) {
        float sum = 0.0f, value = 0.0f;
        for (const Partial& part : partials) {
          if (part.m == kNegInf) continue;
          const float f = std::exp(part.m - m_all);
          sum += part.sum * f;
          value += part.o[d] * f;
        }
        o[d] = sum > 0.0f ? value / sum : 0.0f;
      }
    }
  }
  return out;
}

double Nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    ref += static_cast<double>(want[i]) * want[i];
  }
  return err / ref;
}

// Emulates the kernel without splits and with splits of `chunk` positions
// (chunk 0: none), both against the CPU backend.
void ExpectEmulationMatchesCpu(const AttentionTestCase& c, std::mt19937* rng, int splits = 1,
                               int64_t chunk = 0) {
  SCOPED_TRACE(testing::Message() << c.seqs.size() << " seqs, heads " << c.n_heads << "/"
                                  << c.n_kv_heads << " head_dim " << c.head_dim << " block "
                                  << c.block_size << " window " << c.sliding_window << " splits "
                                  << splits << " chunk " << chunk);
  const AttentionTestBatch b = MakeAttentionTestBatch(c, rng);
  const std::vector<float> want = CpuAttentionReference(b);
  ASSERT_EQ(want.size(), static_cast<size_t>(b.n_tokens * b.q_dim));
  EXPECT_LT(Nmse(EmulateKernel(b, splits, chunk), want), 1e-10);
}

TEST(PagedAttentionEmulationTest, MatchesTheCpuBackend) {
  std::mt19937 rng(15);
  for (int kv_heads : {1, 2, 8}) {
    for (int window : {0, 1, 5, 37}) {
      for (int block_size : {1, 3, 16, 256}) {
        AttentionTestCase c;
        c.seqs = MixedAttentionBatch();
        c.n_kv_heads = kv_heads;
        c.head_dim = 40;
        c.sliding_window = window;
        c.block_size = block_size;
        ExpectEmulationMatchesCpu(c, &rng);
      }
    }
  }
  AttentionTestCase decode;  // many sequences, one token each, long contexts
  std::uniform_int_distribution<int> context(0, 1500);
  for (int s = 0; s < 16; ++s) decode.seqs.push_back({context(rng), 1});
  decode.n_heads = 4;
  decode.n_kv_heads = 2;
  decode.head_dim = 32;
  decode.cache_type = ElementType::kBF16;
  ExpectEmulationMatchesCpu(decode, &rng);
  // Split across blocks: chunks that cut blocks and windows, a last split
  // past max_context (chunk x splits below the longest context), one split
  // per position.
  for (const auto& [splits, chunk] :
       std::vector<std::pair<int, int64_t>>{{2, 800}, {5, 37}, {3, 100}, {16, 1}, {7, 256}}) {
    ExpectEmulationMatchesCpu(decode, &rng, splits, chunk);
    AttentionTestCase windowed = decode;
    windowed.sliding_window = 50;
    ExpectEmulationMatchesCpu(windowed, &rng, splits, chunk);
  }
}

}  // namespace
}  // namespace memserve::kernels
