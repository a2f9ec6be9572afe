#include "clients/bench/stats.h"

#include <algorithm>
#include <cmath>

namespace memserve {
namespace bench {

double Percentile(const std::vector<double>& sorted_values, double p) {
  const size_t n = sorted_values.size();
  if (n == 1) return sorted_values[0];
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(n - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, n - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac;
}

Distribution Summarize(std::vector<double> values, const std::vector<double>& percentiles) {
  Distribution d;
  d.count = values.size();
  for (double p : percentiles) d.percentiles.emplace_back(p, 0.0);
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - d.mean) * (v - d.mean);
  d.stddev = std::sqrt(squares / static_cast<double>(values.size()));
  d.median = Percentile(values, 50);
  for (auto& [p, value] : d.percentiles) value = Percentile(values, p);
  return d;
}

}  // namespace bench
}  // namespace memserve
