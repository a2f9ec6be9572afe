// The statistics of memserve-bench, in one place: the mean, median, standard
// deviation and percentiles of a list of values. Percentiles interpolate
// linearly between the two nearest ranks (numpy's default, `np.percentile`),
// the standard deviation is the population one (`np.std`), so a report can be
// checked against numpy on its own per-request arrays.
#ifndef MEMSERVE_CLIENTS_BENCH_STATS_H_
#define MEMSERVE_CLIENTS_BENCH_STATS_H_

#include <cstddef>
#include <utility>
#include <vector>

namespace memserve {
namespace bench {

// The p-th percentile (p in [0, 100], clamped) of `sorted_values`.
// REQUIRES: `sorted_values` sorted ascending and not empty.
double Percentile(const std::vector<double>& sorted_values, double p);

// A summary of some values. With count 0 every number is 0 (the report
// prints "-" / null for them).
struct Distribution {
  size_t count = 0;
  double mean = 0;
  double median = 0;
  double stddev = 0;  // population standard deviation
  // (p, value) for each requested p, in the order requested.
  std::vector<std::pair<double, double>> percentiles;
};

// The summary of `values` (any order) with the given percentiles.
Distribution Summarize(std::vector<double> values, const std::vector<double>& percentiles);

}  // namespace bench
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_BENCH_STATS_H_
