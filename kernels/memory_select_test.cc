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
#include "kernels/select_test_util.h"
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

void ExpectMatchesReference(const std::vector<float>& scores, int64_t n_tokens, int heads,
                            int n_keys, int knn) {
  ExpectSelectMatchesReference<MemorySelectParams>(
      [](const MemorySelectParams& p) { return LaunchMemorySelect(p, nullptr); }, scores, n_tokens,
      heads, n_keys, knn);
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
