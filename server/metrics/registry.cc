#include "server/metrics/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memserve {
namespace metrics {
namespace {

bool IsMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok =
        absl::ascii_isalpha(c) || c == '_' || c == ':' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(absl::string_view name) {
  if (name.empty() || (name.size() >= 2 && name.substr(0, 2) == "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` with `extra` (e.g. le="0.1") last; "" without labels.
std::string LabelText(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::vector<std::string> parts;
  for (const auto& [k, v] : labels)
    parts.push_back(absl::StrCat(k, "=\"", EscapeLabelValue(v), "\""));
  if (!extra.empty()) parts.push_back(extra);
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0) {  // 2^53
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", value);
    return buf;
  }
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Counter::Increment(double delta) {
  if (!(delta >= 0)) return;  // negative or NaN
  double old = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(old, old + delta, std::memory_order_relaxed)) {
  }
}

void Gauge::Add(double delta) {
  double old = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(old, old + delta, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const uint64_t c : counts_) {
    total += c;
    s.cumulative.push_back(total);
  }
  s.sum = sum_;
  s.count = total;
  return s;
}

absl::StatusOr<Registry::Series*> Registry::Find(Type type, absl::string_view name,
                                                 absl::string_view help, const Labels& labels,
                                                 const std::vector<double>& bounds) {
  const std::string what = absl::StrCat("metric '", name, "'");
  if (!IsMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"));
  }
  std::vector<std::string> label_names;
  for (const auto& [k, v] : labels) {
    if (!IsLabelName(k)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": label '", k, "' is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"));
    }
    if (std::find(label_names.begin(), label_names.end(), k) != label_names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": label '", k, "' given twice"));
    }
    if (type == Type::kHistogram && k == "le") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": a histogram cannot have a label named 'le'"));
    }
    label_names.push_back(k);
  }
  if (type == Type::kHistogram) {
    if (bounds.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": a histogram needs bucket bounds"));
    }
    for (size_t i = 0; i < bounds.size(); ++i) {
      if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": bucket bounds must be finite and strictly increasing, got ",
            absl::StrJoin(bounds, ", ",
                          [](std::string* out, double b) { out->append(FormatValue(b)); })));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = families_.try_emplace(std::string(name));
  Family& family = it->second;
  if (inserted) {
    family.type = type;
    family.help = std::string(help);
    family.label_names = label_names;
    family.bounds = bounds;
  } else if (family.type != type || family.help != help || family.label_names != label_names ||
             family.bounds != bounds) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": already registered as a ",
                                                   TypeName(family.type),
                                                   " with other help, labels or buckets"));
  }
  for (const std::unique_ptr<Series>& s : family.series) {
    if (s->labels == labels) return s.get();
  }
  auto series = std::make_unique<Series>();
  series->labels = labels;
  switch (type) {
    case Type::kCounter:
      series->counter = std::make_unique<Counter>();
      break;
    case Type::kGauge:
      series->gauge = std::make_unique<Gauge>();
      break;
    case Type::kHistogram:
      series->histogram = std::make_unique<Histogram>(bounds);
      break;
  }
  family.series.push_back(std::move(series));
  return family.series.back().get();
}

absl::StatusOr<Counter*> Registry::AddCounter(absl::string_view name, absl::string_view help,
                                              const Labels& labels) {
  absl::StatusOr<Series*> s = Find(Type::kCounter, name, help, labels, {});
  if (!s.ok()) return s.status();
  return (*s)->counter.get();
}

absl::StatusOr<Gauge*> Registry::AddGauge(absl::string_view name, absl::string_view help,
                                          const Labels& labels) {
  absl::StatusOr<Series*> s = Find(Type::kGauge, name, help, labels, {});
  if (!s.ok()) return s.status();
  return (*s)->gauge.get();
}

absl::StatusOr<Histogram*> Registry::AddHistogram(absl::string_view name, absl::string_view help,
                                                  const Labels& labels,
                                                  const std::vector<double>& bounds) {
  absl::StatusOr<Series*> s = Find(Type::kHistogram, name, help, labels, bounds);
  if (!s.ok()) return s.status();
  return (*s)->histogram.get();
}

void Registry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Expose() const {
  {
    absl::MutexLock collect(&collect_mu_);
    std::vector<std::function<void()>> hooks;
    {
      absl::MutexLock lock(&mu_);
      hooks = hooks_;
    }
    for (const auto& hook : hooks) hook();
  }
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family.help), "\n", "# TYPE ", name, " ",
                    TypeName(family.type), "\n");
    for (const std::unique_ptr<Series>& s : family.series) {
      switch (family.type) {
        case Type::kCounter:
          absl::StrAppend(&out, name, LabelText(s->labels), " ", FormatValue(s->counter->value()),
                          "\n");
          break;
        case Type::kGauge:
          absl::StrAppend(&out, name, LabelText(s->labels), " ", FormatValue(s->gauge->value()),
                          "\n");
          break;
        case Type::kHistogram: {
          const Histogram::Snapshot snap = s->histogram->snapshot();
          for (size_t i = 0; i <= snap.bounds.size(); ++i) {
            const std::string le =
                i < snap.bounds.size() ? FormatValue(snap.bounds[i]) : std::string("+Inf");
            absl::StrAppend(&out, name, "_bucket",
                            LabelText(s->labels, absl::StrCat("le=\"", le, "\"")), " ",
                            FormatValue(static_cast<double>(snap.cumulative[i])), "\n");
          }
          absl::StrAppend(&out, name, "_sum", LabelText(s->labels), " ", FormatValue(snap.sum),
                          "\n", name, "_count", LabelText(s->labels), " ",
                          FormatValue(static_cast<double>(snap.count)), "\n");
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace metrics
}  // namespace memserve
