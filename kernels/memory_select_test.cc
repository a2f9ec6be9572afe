// memory_select on the GPU vs the sequential reference of kernels/topk.h
// (which topk_test.cc checks against a brute-force sort and against the CPU
// backend's MemorySelect), on random sub-key scores with and without ties
// (skips without a GPU); the parameter validation runs everywhere.
#include "kernels/memory_select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"
#include "kernels/topk.h"

namespace memserve::kernels {
namespace {

TEST(MemorySelectParamsTest, ValidateNamesTheField) {
  float f[4] = {};
  int64_t r[4] = {};
  MemorySelectParams p;
  EXPECT_TRUE(StatusMentions(p.Validate(), "MemorySelectParams.subkey_scores is null"));
  p.subkey_scores = f;
  p.rows = r;
  p.weights = f;
  p.n_tokens = 1;
  p.heads = 2;
  p.n_keys = 16;
  p.knn = 17;
  EXPECT_TRUE(StatusMentions(p.Validate(),
                             "MemorySelectParams.knn must be in [1, min(n_keys, "
                             "64)] = [1, 16], got 17"));
  p.knn = 16;
  EXPECT_TRUE(p.Validate().ok());  // scores (optional) may be null
  p.n_keys = 8193;
  EXPECT_TRUE(StatusMentions(p.Validate(), "MemorySelectParams.n_keys must be in [1, 8192]"));
  p.n_keys = 16;
  p.heads = 0;
  EXPECT_TRUE(StatusMentions(LaunchMemorySelect(p, nullptr), "MemorySelectParams.heads"));
}

// Runs the kernel on scores [n_tokens, heads, 2, n_keys] and compares each
// (token, head) with SelectRowsSequential: rows and scores exactly, weights
// to CUDA's expf (a few ulp).
void ExpectMatchesReference(const std::vector<float>& scores, int64_t n_tokens, int heads,
                            int n_keys, int knn) {
  SCOPED_TRACE(testing::Message() << "tokens " << n_tokens << " heads " << heads << " n_keys "
                                  << n_keys << " knn " << knn);
  const int64_t items = n_tokens * heads;
  DeviceArray<float> dscores(scores), dweights(items * knn), dpicked(items * knn);
  DeviceArray<int64_t> drows(items * knn);
  MemorySelectParams p;
  p.subkey_scores = dscores.get();
  p.rows = drows.get();
  p.weights = dweights.get();
  p.scores = dpicked.get();
  p.n_tokens = n_tokens;
  p.heads = heads;
  p.n_keys = n_keys;
  p.knn = knn;
  ASSERT_TRUE(LaunchMemorySelect(p, nullptr).ok());
  const std::vector<int64_t> rows = drows.Read();
  const std::vector<float> weights = dweights.Read(), picked = dpicked.Read();
  ASSERT_EQ(rows.size(), static_cast<size_t>(items * knn));

  std::vector<float> s1(knn), s2(knn), want_s(knn), want_w(knn);
  std::vector<int32_t> i1(knn), i2(knn);
  std::vector<int64_t> want_r(knn);
  int64_t row_mismatches = 0, score_mismatches = 0;
  double max_weight_error = 0.0;
  for (int64_t item = 0; item < items; ++item) {
    SelectRowsSequential(scores.data() + item * 2 * n_keys, n_keys, knn, s1.data(), i1.data(),
                         s2.data(), i2.data(), want_r.data(), want_s.data(), want_w.data());
    for (int k = 0; k < knn; ++k) {
      row_mismatches += rows[item * knn + k] != want_r[k];
      score_mismatches += picked[item * knn + k] != want_s[k];
      max_weight_error = std::max(
          max_weight_error, std::fabs(static_cast<double>(weights[item * knn + k]) - want_w[k]));
    }
  }
  EXPECT_EQ(row_mismatches, 0);
  EXPECT_EQ(score_mismatches, 0);
  EXPECT_LT(max_weight_error, 2e-6);
}

TEST(MemorySelectTest, MatchesTheReferenceOnRandomScores) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  std::normal_distribution<float> normal;
  struct Shape {
    int64_t n_tokens;
    int heads, n_keys, knn;
  };
  for (const Shape& s : {Shape{3, 4, 1024, 32}, Shape{1, 2, 8192, 64}, Shape{70, 4, 256, 16},
                         Shape{2, 3, 64, 64}, Shape{5, 2, 7, 1}, Shape{4, 2, 100, 3}}) {
    std::vector<float> scores(s.n_tokens * s.heads * 2 * s.n_keys);
    for (float& x : scores) x = normal(rng);
    ExpectMatchesReference(scores, s.n_tokens, s.heads, s.n_keys, s.knn);
  }
}

// Small-integer scores: many exact ties in both stages, resolved by index
// (sub-keys) and by row; NaN and -inf count as the lowest scores.
TEST(MemorySelectTest, BreaksTiesLikeTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  std::uniform_int_distribution<int> small(-3, 3), special(0, 29);
  for (int n_keys : {64, 512, 8192}) {
    for (int knn : {8, 32, 64}) {
      const int64_t n_tokens = 3;
      const int heads = 2;
      std::vector<float> scores(n_tokens * heads * 2 * n_keys);
      for (float& x : scores) {
        x = static_cast<float>(small(rng));
        const int r = special(rng);
        if (r == 0) x = std::numeric_limits<float>::quiet_NaN();
        if (r == 1) x = -std::numeric_limits<float>::infinity();
      }
      ExpectMatchesReference(scores, n_tokens, heads, n_keys, knn);
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
