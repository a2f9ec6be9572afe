// The product-key lookup kernel's selection logic (kernels/product_key_select.h,
// which the CUDA kernel runs) on the CPU: the rank keys' order, the radix
// top-k against a sort, and the whole selection (SelectRowsRadix, the
// kernel's algorithm step for step) against SelectRowsSequential (topk.h)
// and the CPU backend's MemorySelect, on random and tie-heavy inputs with
// NaN, -inf and -0, knn up to 64 and n_keys up to 8192.
#include "kernels/product_key_select.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/memory_lookup.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cpu_select_testing.h"
#include "kernels/topk.h"

namespace memserve::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Small integers (many exact ties; sums exact in fp32), with NaN, -inf and
// -0 mixed in when `specials`; or, with distinct = 0, random normals.
std::vector<float> Scores(int n, int distinct, bool specials, std::mt19937* rng) {
  std::uniform_int_distribution<int> value(-distinct / 2, distinct / 2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> special(0, 29);
  std::vector<float> s(n);
  for (float& x : s) {
    x = distinct == 0 ? normal(*rng) : static_cast<float>(value(*rng));
    if (!specials) continue;
    const int r = special(*rng);
    if (r == 0) x = std::numeric_limits<float>::quiet_NaN();
    if (r == 1) x = -kInf;
    if (r == 2) x = -0.0f;
  }
  return s;
}

// (score desc, index asc), NaN as -inf, -0 == +0: the CPU's order.
bool Before(float a, int64_t ia, float b, int64_t ib) {
  if (std::isnan(a)) a = -kInf;
  if (std::isnan(b)) b = -kInf;
  return a > b || (a == b && ia < ib);
}

TEST(ProductKeySelectTest, RankKeysOrderAsTheCpu) {
  std::mt19937 rng(1);
  const std::vector<float> s = Scores(2000, 7, true, &rng);
  std::uniform_int_distribution<uint32_t> index(0, 100);
  for (int trial = 0; trial < 200000; ++trial) {
    const size_t a = rng() % s.size(), b = rng() % s.size();
    const uint32_t ia = index(rng), ib = index(rng);
    const bool ab = Before(s[a], ia, s[b], ib);
    const bool ba = Before(s[b], ib, s[a], ia);
    const uint64_t ka = RankKey(s[a], ia), kb = RankKey(s[b], ib);
    ASSERT_EQ(ka > kb, ab) << s[a] << "@" << ia << " vs " << s[b] << "@" << ib;
    ASSERT_EQ(kb > ka, ba) << s[a] << "@" << ia << " vs " << s[b] << "@" << ib;
  }
  // Round trip: the score (NaN -> -inf, -0 -> +0) and the index.
  for (float x : {1.5f, -2.25f, 0.0f, -0.0f, kInf, -kInf, std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max()}) {
    const uint64_t k = RankKey(x, 12345u);
    EXPECT_EQ(RankKeyIndex(k), 12345u);
    const float want = std::isnan(x) ? -kInf : (x == 0.0f ? 0.0f : x);
    EXPECT_EQ(FloatBits(RankKeyScore(k)), FloatBits(want)) << x;
  }
}

TEST(ProductKeySelectTest, CandidatesArePairsWithRankProductAtMostKnn) {
  for (int knn = 1; knn <= 64; ++knn) {
    const int count = CandidateCount(knn);
    int c = 0;
    for (int ra = 0; ra < knn; ++ra) {
      for (int rb = 0; rb < knn; ++rb) {
        if ((ra + 1) * (rb + 1) > knn) continue;
        int got_a = -1, got_b = -1;
        CandidatePair(knn, c, &got_a, &got_b);
        ASSERT_EQ(got_a, ra) << "knn=" << knn << " c=" << c;
        ASSERT_EQ(got_b, rb) << "knn=" << knn << " c=" << c;
        ++c;
      }
    }
    EXPECT_EQ(c, count) << knn;
  }
  EXPECT_EQ(CandidateCount(32), 119);  // docs/model.md: 119 of 1024 for knn = 32
}

TEST(ProductKeySelectTest, RadixTopKMatchesASort) {
  std::mt19937 rng(2);
  int max_passes = 0;
  for (int n : {1, 2, 7, 64, 100, 1024, 8192}) {
    for (int k : {1, 2, 17, 32, 64}) {
      if (k > n) continue;
      for (int distinct : {0, 1, 3, 50, 100000}) {
        const std::vector<float> s = Scores(n, distinct, distinct == 3, &rng);
        SCOPED_TRACE(testing::Message() << "n=" << n << " k=" << k << " distinct=" << distinct);
        std::vector<uint64_t> sel(k), got(k);
        const int passes =
            RadixTopKSequential([&s](int i) { return RankKey(s[i], static_cast<uint32_t>(i)); }, n,
                                k, sel.data(), got.data());
        max_passes = std::max(max_passes, passes);
        EXPECT_LE(passes, 8);
        std::vector<int> order(n);
        for (int i = 0; i < n; ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&s](int a, int b) { return Before(s[a], a, s[b], b); });
        for (int r = 0; r < k; ++r) {
          ASSERT_EQ(RankKeyIndex(got[r]), static_cast<uint32_t>(order[r])) << "rank " << r;
        }
      }
    }
  }
  EXPECT_GE(max_passes, 5);  // ties went into the index bytes somewhere
}

Selection Radix(const float* head_scores, int n_keys, int knn) {
  std::vector<uint64_t> top1(knn), top2(knn), sel(knn), cand(CandidateCount(knn));
  Selection out{std::vector<int64_t>(knn), std::vector<float>(knn), std::vector<float>(knn)};
  SelectRowsRadix(head_scores, n_keys, knn, top1.data(), top2.data(), sel.data(), cand.data(),
                  out.rows.data(), out.scores.data(), out.weights.data());
  return out;
}

Selection Reference(const float* head_scores, int n_keys, int knn) {
  std::vector<float> s1(knn), s2(knn);
  std::vector<int32_t> i1(knn), i2(knn);
  Selection out{std::vector<int64_t>(knn), std::vector<float>(knn), std::vector<float>(knn)};
  SelectRowsSequential(head_scores, n_keys, knn, s1.data(), i1.data(), s2.data(), i2.data(),
                       out.rows.data(), out.scores.data(), out.weights.data());
  return out;
}

void ExpectSame(const Selection& got, const Selection& want) {
  EXPECT_EQ(got.rows, want.rows);
  ASSERT_EQ(got.scores.size(), want.scores.size());
  for (size_t k = 0; k < got.scores.size(); ++k) {
    EXPECT_EQ(got.scores[k], want.scores[k]) << "rank " << k;  // -0 == +0
    EXPECT_NEAR(got.weights[k], want.weights[k], 1e-6f) << "rank " << k;
  }
}

TEST(ProductKeySelectTest, SelectionMatchesTheSequentialReference) {
  std::mt19937 rng(4);
  for (int n_keys : {1, 3, 64, 257, 1024, 4096, 8192}) {
    for (int knn : {1, 2, 8, 32, 63, 64}) {
      if (knn > n_keys) continue;
      for (int distinct : {0, 2, 9, 1000}) {
        const std::vector<float> s = Scores(2 * n_keys, distinct, distinct == 9, &rng);
        SCOPED_TRACE(testing::Message()
                     << "n_keys=" << n_keys << " knn=" << knn << " distinct=" << distinct);
        ExpectSame(Radix(s.data(), n_keys, knn), Reference(s.data(), n_keys, knn));
      }
    }
  }
}

// The CPU backend's MemorySelect with k_dim = 2 (each sub-key score one exact
// product, so no summation order differs): same rows and scores.
TEST(ProductKeySelectTest, SelectionMatchesTheCpuBackendsMemorySelect) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  for (int n_keys : {8, 300, 1024, 8192}) {
    for (int knn : {1, 5, 32, 64}) {
      if (knn > n_keys) continue;
      for (int distinct : {0, 5, 1000}) {
        const int heads = 2, n_tokens = 3;
        const std::vector<float> keys = Scores(heads * 2 * n_keys, distinct, false, &rng);
        const std::vector<float> queries = Scores(n_tokens * heads * 2, 7, false, &rng);
        ForEachCpuSelection(
            &pool, keys, queries, n_tokens, heads, n_keys, knn,
            [&](int t, int h, const std::vector<float>& head_scores, const Selection& cpu) {
              SCOPED_TRACE(testing::Message()
                           << "n_keys=" << n_keys << " knn=" << knn << " distinct=" << distinct
                           << " t=" << t << " h=" << h);
              ExpectSame(Radix(head_scores.data(), n_keys, knn), cpu);
            });
      }
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
