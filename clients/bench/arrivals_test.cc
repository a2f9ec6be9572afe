#include "clients/bench/arrivals.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace memserve {
namespace bench {
namespace {

using ::testing::HasSubstr;

struct IntervalStats {
  double mean = 0;
  double cv = 0;  // standard deviation / mean
};

IntervalStats Intervals(const std::vector<double>& times) {
  std::vector<double> d;
  for (size_t i = 1; i < times.size(); ++i) d.push_back(times[i] - times[i - 1]);
  double sum = 0;
  for (double x : d) sum += x;
  const double mean = sum / static_cast<double>(d.size());
  double sq = 0;
  for (double x : d) sq += (x - mean) * (x - mean);
  return {mean, std::sqrt(sq / static_cast<double>(d.size())) / mean};
}

TEST(ArrivalTimesTest, PoissonHasTheRateAndExponentialIntervals) {
  const std::vector<double> t = ArrivalTimes(200001, {/*request_rate=*/10, /*burstiness=*/1, 3});
  EXPECT_EQ(t.front(), 0);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_GE(t[i], t[i - 1]);
  const IntervalStats s = Intervals(t);
  EXPECT_NEAR(s.mean, 0.1, 0.001);  // 1 / rate
  EXPECT_NEAR(s.cv, 1.0, 0.02);     // exponential: std == mean
}

TEST(ArrivalTimesTest, BurstinessSetsTheDispersionNotTheRate) {
  for (double b : {0.25, 0.5, 2.0, 4.0}) {
    const IntervalStats s = Intervals(ArrivalTimes(200001, {5, b, 11}));
    EXPECT_NEAR(s.mean, 0.2, 0.004) << "burstiness " << b;
    EXPECT_NEAR(s.cv, 1 / std::sqrt(b), 0.04) << "burstiness " << b;  // gamma: 1 / sqrt(shape)
  }
}

TEST(ArrivalTimesTest, InfiniteRateSendsEverythingAtOnce) {
  const std::vector<double> t = ArrivalTimes(5, {std::numeric_limits<double>::infinity(), 1, 0});
  EXPECT_EQ(t, std::vector<double>(5, 0.0));
  EXPECT_TRUE(ArrivalTimes(0, {1, 1, 0}).empty());
}

TEST(ArrivalTimesTest, SeededAndReproducible) {
  EXPECT_EQ(ArrivalTimes(100, {2, 0.5, 42}), ArrivalTimes(100, {2, 0.5, 42}));
  EXPECT_NE(ArrivalTimes(100, {2, 0.5, 42}), ArrivalTimes(100, {2, 0.5, 43}));
}

TEST(ValidateArrivalsTest, NamesTheFlagAndTheLimit) {
  EXPECT_TRUE(ValidateArrivals({std::numeric_limits<double>::infinity(), 1, 0}).ok());
  EXPECT_THAT(ValidateArrivals({0, 1, 0}).message(),
              HasSubstr("--request_rate must be > 0 (or inf), got 0"));
  EXPECT_THAT(ValidateArrivals({std::nan(""), 1, 0}).message(), HasSubstr("--request_rate"));
  EXPECT_THAT(ValidateArrivals({1, 0, 0}).message(),
              HasSubstr("--burstiness must be in [0.01, 1000], got 0"));
  EXPECT_FALSE(ValidateArrivals({1, std::numeric_limits<double>::infinity(), 0}).ok());
}

}  // namespace
}  // namespace bench
}  // namespace memserve
