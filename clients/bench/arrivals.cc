#include "clients/bench/arrivals.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace memserve {
namespace bench {

absl::Status ValidateArrivals(const ArrivalOptions& o) {
  if (!(o.request_rate > 0)) {  // also NaN
    return absl::InvalidArgumentError(
        absl::StrCat("--request_rate must be > 0 (or inf), got ", o.request_rate));
  }
  if (!(o.burstiness >= kMinBurstiness && o.burstiness <= kMaxBurstiness)) {
    return absl::InvalidArgumentError(absl::StrCat("--burstiness must be in [", kMinBurstiness,
                                                   ", ", kMaxBurstiness, "], got ", o.burstiness));
  }
  return absl::OkStatus();
}

std::vector<double> ArrivalTimes(int64_t count, const ArrivalOptions& o) {
  std::vector<double> times(static_cast<size_t>(count), 0.0);
  if (std::isinf(o.request_rate)) return times;
  std::mt19937_64 rng(o.seed);
  std::gamma_distribution<double> interval(o.burstiness, 1.0 / (o.request_rate * o.burstiness));
  double t = 0;
  for (int64_t i = 1; i < count; ++i) {
    t += interval(rng);
    times[static_cast<size_t>(i)] = t;
  }
  return times;
}

}  // namespace bench
}  // namespace memserve
