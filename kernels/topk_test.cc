// The memory selection's ordering and merge logic (kernels/topk.h, which the
// CUDA kernel runs) on the CPU: top-k by rounds of arg-best, split over
// simulated threads as the kernel splits it, against a brute-force sort; the
// whole selection against a brute force over all n_keys^2 rows and against
// the CPU backend's MemorySelect, on random inputs with many ties.
#include "kernels/topk.h"

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

namespace memserve::kernels {
namespace {

// Scores drawn from a few small integers (many exact ties, sums exact in
// fp32), with some NaN and -inf when `specials`.
std::vector<float> TieHeavyScores(int n, int distinct, bool specials, std::mt19937* rng) {
  std::uniform_int_distribution<int> value(-distinct / 2, distinct / 2);
  std::uniform_int_distribution<int> special(0, 19);
  std::vector<float> s(n);
  for (float& x : s) {
    x = static_cast<float>(value(*rng));
    if (!specials) continue;
    const int r = special(*rng);
    if (r == 0) x = std::numeric_limits<float>::quiet_NaN();
    if (r == 1) x = -std::numeric_limits<float>::infinity();
  }
  return s;
}

// The k best (score, index) of s by brute force: NaN as -inf, sorted by
// (score desc, index asc).
std::vector<Ranked> BruteTopK(const std::vector<float>& s, int k) {
  std::vector<Ranked> all;
  for (int i = 0; i < static_cast<int>(s.size()); ++i) {
    all.push_back({std::isnan(s[i]) ? -std::numeric_limits<float>::infinity() : s[i], i});
  }
  std::sort(all.begin(), all.end(), [](const Ranked& a, const Ranked& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
  });
  all.resize(k);
  return all;
}

// Top-k as the kernel computes it: `threads` simulated threads each take
// BestAfter over their strided share, the block keeps the best (in a
// shuffled merge order: the result must not depend on it).
std::vector<Ranked> ParallelTopK(const std::vector<float>& s, int k, int threads,
                                 std::mt19937* rng) {
  std::vector<Ranked> out;
  Ranked cursor = NoneRanked();
  std::vector<int> order(threads);
  for (int t = 0; t < threads; ++t) order[t] = t;
  for (int round = 0; round < k; ++round) {
    std::shuffle(order.begin(), order.end(), *rng);
    Ranked best = NoneRanked();
    for (int t : order) {
      best =
          RankedBetter(best, BestAfter(s.data(), static_cast<int>(s.size()), t, threads, cursor));
    }
    cursor = best;
    out.push_back(best);
  }
  return out;
}

void ExpectSameRanking(const std::vector<Ranked>& got, const std::vector<Ranked>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].index, want[i].index) << "rank " << i;
    EXPECT_EQ(got[i].score, want[i].score) << "rank " << i;
  }
}

TEST(TopKTest, RankingOrder) {
  const Ranked a{2.0f, 5}, b{2.0f, 7}, c{3.0f, 9};
  EXPECT_TRUE(RankedBefore(c, a));   // higher score first
  EXPECT_TRUE(RankedBefore(a, b));   // tie: smaller index first
  EXPECT_FALSE(RankedBefore(a, a));  // strict
  EXPECT_TRUE(RankedBefore(a, NoneRanked()));
  EXPECT_FALSE(RankedBefore(NoneRanked(), a));
  EXPECT_EQ(RankingScore(std::nanf("")), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(CandidatesOfRank(32, 0), 32);
  EXPECT_EQ(CandidatesOfRank(32, 31), 1);
  int pairs = 0;
  for (int ra = 0; ra < 32; ++ra) pairs += CandidatesOfRank(32, ra);
  EXPECT_EQ(pairs, 119);  // docs/model.md: 119 of 1024 pairs for knn = 32
}

TEST(TopKTest, ParallelRoundsMatchASortWithTiesNanAndInf) {
  std::mt19937 rng(5);
  for (int n : {1, 2, 7, 64, 100, 1000, 8192}) {
    for (int k : {1, 3, 32, 64}) {
      if (k > n) continue;
      for (int threads : {1, 32, 256}) {
        for (int distinct : {3, 50, 100000}) {
          const std::vector<float> s = TieHeavyScores(n, distinct, /*specials=*/true, &rng);
          SCOPED_TRACE(testing::Message() << "n=" << n << " k=" << k << " threads=" << threads
                                          << " distinct=" << distinct);
          ExpectSameRanking(ParallelTopK(s, k, threads, &rng), BruteTopK(s, k));
        }
      }
    }
  }
}

// The best knn rows of the whole table (score s1[a] + s2[b] of row
// a * n_keys + b) by brute force, and the softmax of their scores.
void BruteSelect(const float* head_scores, int n_keys, int knn, std::vector<int64_t>* rows,
                 std::vector<float>* scores) {
  std::vector<float> sums(static_cast<size_t>(n_keys) * n_keys);
  for (int a = 0; a < n_keys; ++a) {
    for (int b = 0; b < n_keys; ++b) {
      sums[static_cast<size_t>(a) * n_keys + b] =
          RankingScore(head_scores[a]) + RankingScore(head_scores[n_keys + b]);
    }
  }
  std::vector<Ranked> best = BruteTopK(sums, knn);
  rows->clear();
  scores->clear();
  for (const Ranked& r : best) {
    rows->push_back(r.index);
    scores->push_back(r.score);
  }
}

Selection Sequential(const float* head_scores, int n_keys, int knn) {
  std::vector<float> s1(knn), s2(knn);
  std::vector<int32_t> i1(knn), i2(knn);
  Selection out;
  out.rows.resize(knn);
  out.scores.resize(knn);
  out.weights.resize(knn);
  SelectRowsSequential(head_scores, n_keys, knn, s1.data(), i1.data(), s2.data(), i2.data(),
                       out.rows.data(), out.scores.data(), out.weights.data());
  return out;
}

// With integer scores every sum is exact, so the candidate restriction is
// exact, ties included: the selection equals the brute force over all rows.
TEST(TopKTest, SelectionMatchesBruteForceOverAllRowsWithTies) {
  std::mt19937 rng(9);
  for (int n_keys : {1, 4, 16, 64, 150}) {
    for (int knn : {1, 2, 5, 16, 32, 64}) {
      if (knn > n_keys) continue;
      for (int distinct : {2, 9, 1000}) {
        const std::vector<float> scores = TieHeavyScores(2 * n_keys, distinct, false, &rng);
        SCOPED_TRACE(testing::Message()
                     << "n_keys=" << n_keys << " knn=" << knn << " distinct=" << distinct);
        const Selection got = Sequential(scores.data(), n_keys, knn);
        std::vector<int64_t> rows;
        std::vector<float> want_scores;
        BruteSelect(scores.data(), n_keys, knn, &rows, &want_scores);
        EXPECT_EQ(got.rows, rows);
        EXPECT_EQ(got.scores, want_scores);
        float sum = 0.0f;
        for (float w : got.weights) sum += w;
        EXPECT_NEAR(sum, 1.0f, 1e-5f);
        for (int k = 1; k < knn; ++k) EXPECT_LE(got.weights[k], got.weights[k - 1]);
      }
    }
  }
}

// The CPU backend's MemorySelect, with k_dim = 2 so that each sub-key score
// is one exact product q * key (no summation order to differ), gives the
// same rows, scores and weights, bit for bit.
TEST(TopKTest, SelectionMatchesTheCpuBackendsMemorySelect) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (int n_keys : {8, 64, 300}) {
    for (int knn : {1, 4, 32, 64}) {
      if (knn > n_keys) continue;
      for (int distinct : {5, 1000}) {
        const int heads = 3, n_tokens = 4;
        // Keys [heads, 2, n_keys, 1]; queries [n_tokens, heads, 2]: small
        // integers (ties), so every product is exact.
        const std::vector<float> keys = TieHeavyScores(heads * 2 * n_keys, distinct, false, &rng);
        const std::vector<float> queries = TieHeavyScores(n_tokens * heads * 2, 7, false, &rng);
        ForEachCpuSelection(
            &pool, keys, queries, n_tokens, heads, n_keys, knn,
            [&](int t, int h, const std::vector<float>& head_scores, const Selection& cpu) {
              SCOPED_TRACE(testing::Message()
                           << "n_keys=" << n_keys << " knn=" << knn << " t=" << t << " h=" << h);
              const Selection got = Sequential(head_scores.data(), n_keys, knn);
              EXPECT_EQ(got.rows, cpu.rows);
              EXPECT_EQ(got.scores, cpu.scores);
              EXPECT_EQ(got.weights, cpu.weights);
            });
      }
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
