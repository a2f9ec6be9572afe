// The check shared by the GPU tests of the two select kernels (memory_select,
// product_key's select): the kernel's rows, scores and weights for sub-key
// scores [n_tokens, heads, 2, n_keys] against SelectRowsSequential (topk.h).
#ifndef MEMSERVE_KERNELS_SELECT_TEST_UTIL_H_
#define MEMSERVE_KERNELS_SELECT_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"
#include "kernels/topk.h"

namespace memserve::kernels {

// Fills a Params (MemorySelectParams or ProductKeySelectParams: the same
// fields) over device copies of `scores`, runs launch(params) (an
// absl::Status), and compares each (token, head) with SelectRowsSequential:
// rows and scores exactly, weights to CUDA's expf (a few ulp; where the
// reference's weight is NaN it is not compared).
template <typename Params, typename Launch>
void ExpectSelectMatchesReference(Launch launch, const std::vector<float>& scores, int64_t n_tokens,
                                  int heads, int n_keys, int knn) {
  SCOPED_TRACE(testing::Message() << "tokens " << n_tokens << " heads " << heads << " n_keys "
                                  << n_keys << " knn " << knn);
  const int64_t items = n_tokens * heads;
  DeviceArray<float> dscores(scores), dweights(items * knn), dpicked(items * knn);
  DeviceArray<int64_t> drows(items * knn);
  Params p;
  p.subkey_scores = dscores.get();
  p.rows = drows.get();
  p.weights = dweights.get();
  p.scores = dpicked.get();
  p.n_tokens = n_tokens;
  p.heads = heads;
  p.n_keys = n_keys;
  p.knn = knn;
  ASSERT_TRUE(launch(p).ok());
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
      if (std::isnan(want_w[k])) continue;
      max_weight_error = std::max(
          max_weight_error, std::fabs(static_cast<double>(weights[item * knn + k]) - want_w[k]));
    }
  }
  EXPECT_EQ(row_mismatches, 0);
  EXPECT_EQ(score_mismatches, 0);
  EXPECT_LT(max_weight_error, 2e-6);
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_SELECT_TEST_UTIL_H_
