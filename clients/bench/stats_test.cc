#include "clients/bench/stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace memserve {
namespace bench {
namespace {

// The percentile by its definition, written another way: the sorted values
// are points (100 * i / (n - 1), x_i) of a piecewise linear curve; find the
// segment holding p and read the curve there.
double BruteForcePercentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  if (n == 1) return v[0];
  for (size_t i = 0; i + 1 < n; ++i) {
    const double x0 = 100.0 * static_cast<double>(i) / static_cast<double>(n - 1);
    const double x1 = 100.0 * static_cast<double>(i + 1) / static_cast<double>(n - 1);
    if (p >= x0 && p <= x1) return v[i] + (v[i + 1] - v[i]) * (p - x0) / (x1 - x0);
  }
  return v.back();
}

TEST(PercentileTest, MatchesNumpyOnKnownValues) {
  // np.percentile([1..11], [0, 50, 90, 99, 100]) and np.percentile([1, 2], 50).
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 6);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 10);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 10.9);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 11);
  EXPECT_DOUBLE_EQ(Percentile({4}, 99), 4);
  EXPECT_DOUBLE_EQ(Percentile({1, 2}, 50), 1.5);
}

TEST(PercentileTest, MatchesBruteForceOnRandomValues) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> value(0, 1.5);
  for (int n : {1, 2, 3, 10, 101, 1000}) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = value(rng);
    const std::vector<double> ps = {1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100};
    const Distribution d = Summarize(v, ps);
    ASSERT_EQ(d.percentiles.size(), ps.size());
    for (size_t i = 0; i < ps.size(); ++i) {
      EXPECT_EQ(d.percentiles[i].first, ps[i]);
      EXPECT_NEAR(d.percentiles[i].second, BruteForcePercentile(v, ps[i]), 1e-9)
          << "n=" << n << " p=" << ps[i];
    }
    EXPECT_NEAR(d.median, BruteForcePercentile(v, 50), 1e-9);
  }
}

TEST(SummarizeTest, MeanAndPopulationStd) {
  // np.mean / np.std([2, 4, 4, 4, 5, 5, 7, 9]) = 5, 2.
  const Distribution d = Summarize({9, 2, 4, 4, 5, 4, 5, 7}, {50});
  EXPECT_EQ(d.count, 8u);
  EXPECT_DOUBLE_EQ(d.mean, 5);
  EXPECT_DOUBLE_EQ(d.stddev, 2);
  EXPECT_DOUBLE_EQ(d.median, 4.5);
}

TEST(SummarizeTest, NoValuesGivesZerosAndKeepsTheRequestedPercentiles) {
  const Distribution d = Summarize({}, {50, 99});
  EXPECT_EQ(d.count, 0u);
  EXPECT_EQ(d.mean, 0);
  ASSERT_EQ(d.percentiles.size(), 2u);
  EXPECT_EQ(d.percentiles[1].first, 99);
  EXPECT_EQ(d.percentiles[1].second, 0);
}

}  // namespace
}  // namespace bench
}  // namespace memserve
