// A small Prometheus metrics registry: counters, gauges and histograms with
// labels, written out in the Prometheus text exposition format (version
// 0.0.4). Debian has no prometheus-cpp package, and the format is small
// (docs/metrics.md says why we wrote our own).
//
//   Registry registry;
//   absl::StatusOr<Counter*> c = registry.AddCounter(
//       "memserve:prompt_tokens_total", "Prompt tokens computed.", {{"model_name", "demo"}});
//   (*c)->Increment(28);
//   std::string text = registry.Expose();   // for GET /metrics
//
// Thread-safety: every method of every class here is safe to call from any
// thread. A series returned by Add* lives as long as its Registry.
#ifndef MEMSERVE_SERVER_METRICS_REGISTRY_H_
#define MEMSERVE_SERVER_METRICS_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace memserve {
namespace metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// Label name -> value, in the order they are written.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value (Prometheus counter).
class Counter {
 public:
  // Adds `delta`; a negative or NaN delta is ignored (a counter never goes
  // down).
  void Increment(double delta = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (Prometheus gauge).
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted in buckets with fixed upper bounds (Prometheus
// histogram: cumulative `le` buckets, +Inf, _sum and _count).
class Histogram {
 public:
  // REQUIRES: `bounds` strictly increasing and finite (Registry checks).
  explicit Histogram(std::vector<double> bounds);

  // Counts `value` in the first bucket whose bound is >= value (and +Inf);
  // NaN is ignored.
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;        // the finite upper bounds
    std::vector<uint64_t> cumulative;  // per bound, then +Inf: observations <= bound
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  // A consistent view (one lock): the +Inf bucket equals count.
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative; +Inf last
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The series `name`{labels}, created on first use; the same name and
  // labels return the same series. InvalidArgument (naming the metric) when
  // the name is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), a
  // label name is not [a-zA-Z_][a-zA-Z0-9_]* or starts with "__", a label
  // name repeats, the name is already registered as another type or with
  // another help text or label names, or (histograms) `bounds` is empty,
  // not strictly increasing, not finite, or a label is named "le".
  absl::StatusOr<Counter*> AddCounter(absl::string_view name, absl::string_view help,
                                      const Labels& labels);
  absl::StatusOr<Gauge*> AddGauge(absl::string_view name, absl::string_view help,
                                  const Labels& labels);
  absl::StatusOr<Histogram*> AddHistogram(absl::string_view name, absl::string_view help,
                                          const Labels& labels, const std::vector<double>& bounds);

  // `hook` runs at the start of every Expose() (e.g. to set gauges from a
  // current state); hooks run in the order added, one Expose at a time.
  void AddCollectHook(std::function<void()> hook);

  // Every family, sorted by name, in the text exposition format: "# HELP"
  // and "# TYPE" lines, then one line per series (histograms: _bucket lines
  // with cumulative counts and le="+Inf", then _sum and _count). Label
  // values and help text are escaped as the format requires.
  std::string Expose() const;

 private:
  using Type = MetricType;
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<double> bounds;
    std::vector<std::unique_ptr<Series>> series;  // in creation order
  };

  absl::StatusOr<Series*> Find(Type type, absl::string_view name, absl::string_view help,
                               const Labels& labels, const std::vector<double>& bounds);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex collect_mu_;  // one Expose runs the hooks at a time
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

// Exposition helpers (exposed for tests).
// A sample value: integers exactly ("3"), others in the shortest form that
// reads back to the same double ("0.1"), and "+Inf", "-Inf", "NaN".
std::string FormatValue(double value);
// A label value escaped: backslash, double quote and newline as \\, \" and \n.
std::string EscapeLabelValue(absl::string_view value);
// Help text escaped: backslash and newline as \\ and \n.
std::string EscapeHelp(absl::string_view help);

}  // namespace metrics
}  // namespace memserve

#endif  // MEMSERVE_SERVER_METRICS_REGISTRY_H_
