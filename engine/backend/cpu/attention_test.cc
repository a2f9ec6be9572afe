// CpuBackend::Attention against a naive loop; paged equals contiguous.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/cpu/cpu_backend_test_util.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

// Naive attention over a cache [positions, n_kv, hd].
std::vector<double> NaiveAttention(const AttentionArgs& a) {
  const int hd = a.head_dim;
  std::vector<double> out(a.n_tokens * a.n_heads * hd, 0.0);
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t pos = a.start_pos + t;
    for (int h = 0; h < a.n_heads; ++h) {
      const int kvh = h / (a.n_heads / a.n_kv_heads);
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= pos; ++j) {
        if (a.sliding_window > 0 && pos - j >= a.sliding_window) continue;
        double d = 0;
        for (int i = 0; i < hd; ++i) {
          d += static_cast<double>(a.q[(t * a.n_heads + h) * hd + i]) *
               a.k_cache[(j * a.n_kv_heads + kvh) * hd + i];
        }
        s.push_back(d / std::sqrt(static_cast<double>(hd)));
        js.push_back(j);
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      for (size_t n = 0; n < s.size(); ++n) {
        for (int i = 0; i < hd; ++i) {
          out[(t * a.n_heads + h) * hd + i] +=
              s[n] / sum * a.v_cache[(js[n] * a.n_kv_heads + kvh) * hd + i];
        }
      }
    }
  }
  return out;
}

TEST_P(CpuBackendTest, AttentionMatchesNaiveLoop) {
  struct Case {
    int n_heads, n_kv, hd;
    int64_t start, tokens;
    int window;
  };
  const Case cases[] = {{4, 4, 16, 0, 1, 0},  {4, 4, 16, 0, 7, 0}, {4, 2, 8, 5, 3, 0},
                        {6, 1, 20, 9, 1, 0},  {4, 2, 16, 3, 9, 4}, {2, 2, 32, 20, 1, 5},
                        {8, 2, 64, 0, 33, 0}, {4, 4, 16, 0, 12, 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("heads=", c.n_heads, " kv=", c.n_kv, " hd=", c.hd, " start=", c.start,
                              " T=", c.tokens, " window=", c.window));
    const int64_t total = c.start + c.tokens;
    std::vector<float> q = RandomVector(c.tokens * c.n_heads * c.hd, &rng_);
    std::vector<float> k = RandomVector(total * c.n_kv * c.hd, &rng_);
    std::vector<float> v = RandomVector(total * c.n_kv * c.hd, &rng_);
    std::vector<float> out(c.tokens * c.n_heads * c.hd, -7.0f);
    AttentionArgs a;
    a.n_tokens = c.tokens;
    a.start_pos = c.start;
    a.n_heads = c.n_heads;
    a.n_kv_heads = c.n_kv;
    a.head_dim = c.hd;
    a.sliding_window = c.window;
    a.q = q.data();
    a.k_cache = k.data();
    a.v_cache = v.data();
    a.out = out.data();
    backend_.Attention(a);
    const std::vector<double> ref = NaiveAttention(a);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << i;
  }
}

// Several sequences in one call, each in its own shuffled blocks of a paged
// cache, give exactly the results of one contiguous-cache call per sequence.
TEST_P(CpuBackendTest, PagedBatchedAttentionEqualsContiguousPerSequence) {
  const int n_heads = 4, n_kv = 2, hd = 16, block_size = 3;
  const int64_t row = n_kv * hd;
  struct Seq {
    int64_t start, tokens;
  };
  const Seq seqs[] = {{0, 5}, {7, 1}, {2, 4}, {11, 1}, {0, 1}};
  int blocks_total = 0;
  for (const Seq& q : seqs) blocks_total += (q.start + q.tokens + block_size - 1) / block_size;
  std::vector<int32_t> block_ids(blocks_total);
  for (int i = 0; i < blocks_total; ++i) block_ids[i] = i;
  std::shuffle(block_ids.begin(), block_ids.end(), rng_);
  std::vector<float> paged_k(blocks_total * block_size * row, NAN);
  std::vector<float> paged_v(paged_k.size(), NAN);

  std::vector<std::vector<float>> qs, ks, vs, expected;
  std::vector<AttentionArgs> batch;
  std::vector<float> out_all;
  int next_block = 0;
  for (const Seq& q : seqs) {
    const int64_t total = q.start + q.tokens;
    qs.push_back(RandomVector(q.tokens * n_heads * hd, &rng_));
    ks.push_back(RandomVector(total * row, &rng_));
    vs.push_back(RandomVector(total * row, &rng_));
    AttentionArgs a;
    a.n_tokens = q.tokens;
    a.start_pos = q.start;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = hd;
    a.q = qs.back().data();
    a.k_cache = ks.back().data();
    a.v_cache = vs.back().data();
    expected.emplace_back(q.tokens * n_heads * hd);
    a.out = expected.back().data();
    backend_.Attention(a);  // contiguous reference

    const int32_t* table = block_ids.data() + next_block;
    for (int64_t j = 0; j < total; ++j) {
      const int64_t r = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
      std::copy(ks.back().begin() + j * row, ks.back().begin() + (j + 1) * row,
                paged_k.begin() + r * row);
      std::copy(vs.back().begin() + j * row, vs.back().begin() + (j + 1) * row,
                paged_v.begin() + r * row);
    }
    next_block += static_cast<int>((total + block_size - 1) / block_size);
    a.k_cache = paged_k.data();
    a.v_cache = paged_v.data();
    a.block_table = table;
    a.block_size = block_size;
    batch.push_back(a);
  }
  std::vector<std::vector<float>> outs;
  for (size_t i = 0; i < batch.size(); ++i) {
    outs.emplace_back(expected[i].size(), -7.0f);
    batch[i].out = outs[i].data();
  }
  backend_.Attention(absl::MakeConstSpan(batch));
  for (size_t i = 0; i < batch.size(); ++i) {
    for (size_t j = 0; j < expected[i].size(); ++j) {
      ASSERT_EQ(outs[i][j], expected[i][j]) << "sequence " << i << " element " << j;
    }
  }
}

INSTANTIATE_CPU_BACKEND_TEST_SUITE(CpuBackendTest);

}  // namespace
}  // namespace memserve
