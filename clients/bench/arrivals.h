// When memserve-bench sends its requests: the arrival process of
// `vllm bench serve`. Intervals between consecutive arrivals are drawn from a
// gamma distribution with shape `burstiness` and mean 1 / request_rate
// (scale 1 / (request_rate * burstiness)): burstiness 1 is a Poisson process
// (exponential intervals), smaller values are burstier (coefficient of
// variation 1 / sqrt(burstiness)), larger ones more regular. An infinite rate
// sends everything at once.
#ifndef MEMSERVE_CLIENTS_BENCH_ARRIVALS_H_
#define MEMSERVE_CLIENTS_BENCH_ARRIVALS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace memserve {
namespace bench {

struct ArrivalOptions {
  // Requests per second on average; +infinity = all at time 0.
  double request_rate = 0;
  // Gamma shape of the intervals; 1 = Poisson.
  double burstiness = 1;
  uint64_t seed = 0;
};

// Limits of the flags, for the messages and the checks.
inline constexpr double kMinBurstiness = 0.01;
inline constexpr double kMaxBurstiness = 1000;

// INVALID_ARGUMENT naming the flag (--request_rate, --burstiness) and the
// limit when `options` is out of range: request_rate > 0 (inf allowed),
// burstiness in [kMinBurstiness, kMaxBurstiness].
absl::Status ValidateArrivals(const ArrivalOptions& options);

// Arrival times in seconds from the start for `count` requests, ascending;
// the first request arrives at 0 (vLLM sends its first request at once and
// then sleeps one interval before each next). The same options and count give
// the same times on the same standard library.
// REQUIRES: ValidateArrivals(options).ok(), count >= 0.
std::vector<double> ArrivalTimes(int64_t count, const ArrivalOptions& options);

}  // namespace bench
}  // namespace memserve

#endif  // MEMSERVE_CLIENTS_BENCH_ARRIVALS_H_
