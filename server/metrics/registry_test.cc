#include "server/metrics/registry.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The lines of `text` that start with `prefix`.
std::vector<std::string> LinesStartingWith(const std::string& text, absl::string_view prefix) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) out.emplace_back(line);
  }
  return out;
}

double ValueOf(const std::string& line) {
  const size_t space = line.rfind(' ');
  double v = 0;
  EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &v)) << line;
  return v;
}

TEST(FormatValueTest, IntegersExactlyOthersShortest) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(-7), "-7");
  EXPECT_EQ(FormatValue(123456789012.0), "123456789012");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(0.025), "0.025");
  EXPECT_EQ(FormatValue(2560.5), "2560.5");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  const double third = 1.0 / 3.0;
  double back = 0;
  ASSERT_TRUE(absl::SimpleAtod(FormatValue(third), &back));
  EXPECT_EQ(back, third);
}

TEST(EscapeTest, LabelValuesEscapeBackslashQuoteNewline) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeHelp("a \"quoted\" \\ help\nline"), "a \"quoted\" \\\\ help\\nline");
}

TEST(RegistryTest, ExposesEscapedLabelsAndHelp) {
  Registry r;
  absl::StatusOr<Counter*> c = r.AddCounter("memserve:x_total", "Help with \\ and\nnewline.",
                                            {{"model_name", "my \"model\"\\\n"}});
  ASSERT_TRUE(c.ok()) << c.status();
  (*c)->Increment(2);
  const std::string text = r.Expose();
  EXPECT_THAT(text, HasSubstr("# HELP memserve:x_total Help with \\\\ and\\nnewline.\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE memserve:x_total counter\n"));
  EXPECT_THAT(text, HasSubstr("memserve:x_total{model_name=\"my \\\"model\\\"\\\\\\n\"} 2\n"));
  // Every line is a comment or a sample: no raw newline leaked from a value.
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "# ") || absl::StartsWith(line, "memserve:x_total{"))
        << line;
  }
}

TEST(RegistryTest, CounterNeverGoesDown) {
  Registry r;
  Counter* c = *r.AddCounter("c_total", "c", {});
  c->Increment();
  c->Increment(-5);
  c->Increment(std::nan(""));
  c->Increment(0.5);
  EXPECT_EQ(c->value(), 1.5);
  EXPECT_THAT(r.Expose(), HasSubstr("\nc_total 1.5\n"));
}

TEST(RegistryTest, GaugeSetAndAdd) {
  Registry r;
  Gauge* g = *r.AddGauge("g", "g", {{"device", "cpu"}});
  g->Set(10);
  g->Add(-2.5);
  EXPECT_EQ(g->value(), 7.5);
  EXPECT_THAT(r.Expose(), HasSubstr("g{device=\"cpu\"} 7.5\n"));
}

TEST(RegistryTest, SameNameAndLabelsIsTheSameSeries) {
  Registry r;
  Counter* a = *r.AddCounter("req_total", "r", {{"code", "OK"}});
  Counter* b = *r.AddCounter("req_total", "r", {{"code", "OK"}});
  Counter* other = *r.AddCounter("req_total", "r", {{"code", "CANCELLED"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
  a->Increment();
  b->Increment();
  other->Increment();
  const std::string text = r.Expose();
  EXPECT_EQ(LinesStartingWith(text, "# TYPE req_total").size(), 1u) << text;
  EXPECT_THAT(text, HasSubstr("req_total{code=\"OK\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("req_total{code=\"CANCELLED\"} 1\n"));
}

TEST(RegistryTest, RejectsBadNamesAndConflicts) {
  Registry r;
  EXPECT_FALSE(r.AddCounter("9bad", "h", {}).ok());
  EXPECT_FALSE(r.AddCounter("has-dash", "h", {}).ok());
  EXPECT_FALSE(r.AddCounter("", "h", {}).ok());
  EXPECT_FALSE(r.AddCounter("ok", "h", {{"__reserved", "x"}}).ok());
  EXPECT_FALSE(r.AddCounter("ok", "h", {{"a:b", "x"}}).ok());
  EXPECT_FALSE(r.AddCounter("ok", "h", {{"a", "x"}, {"a", "y"}}).ok());
  ASSERT_TRUE(r.AddCounter("dup", "h", {{"a", "x"}}).ok());
  absl::StatusOr<Gauge*> as_gauge = r.AddGauge("dup", "h", {{"a", "x"}});
  ASSERT_FALSE(as_gauge.ok());
  EXPECT_THAT(std::string(as_gauge.status().message()), HasSubstr("metric 'dup'"));
  EXPECT_FALSE(r.AddCounter("dup", "h", {{"b", "x"}}).ok());  // other label names
  EXPECT_FALSE(r.AddHistogram("h1", "h", {}, {}).ok());
  EXPECT_FALSE(r.AddHistogram("h2", "h", {}, {1, 1}).ok());
  EXPECT_FALSE(r.AddHistogram("h3", "h", {}, {2, 1}).ok());
  EXPECT_FALSE(r.AddHistogram("h4", "h", {}, {1, std::numeric_limits<double>::infinity()}).ok());
  EXPECT_FALSE(r.AddHistogram("h5", "h", {{"le", "x"}}, {1}).ok());
}

TEST(HistogramTest, BucketsAreCumulativeAndInfEqualsCount) {
  Registry r;
  const std::vector<double> bounds = {0.001, 0.01, 0.1, 1, 10};
  Histogram* h = *r.AddHistogram("lat_seconds", "latency", {{"model_name", "demo"}}, bounds);
  // Exactly on a bound counts in that bucket (le = less or equal).
  for (double v : {0.0005, 0.001, 0.002, 0.05, 0.1, 0.5, 3.0, 10.0, 50.0, 1e9}) h->Observe(v);
  h->Observe(std::nan(""));  // ignored
  const Histogram::Snapshot s = h->snapshot();
  ASSERT_EQ(s.cumulative.size(), bounds.size() + 1);
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 5, 6, 8, 10}));
  EXPECT_EQ(s.count, 10u);
  EXPECT_NEAR(s.sum, 0.0005 + 0.001 + 0.002 + 0.05 + 0.1 + 0.5 + 3 + 10 + 50 + 1e9, 1e-3);

  const std::string text = r.Expose();
  EXPECT_THAT(text, HasSubstr("# TYPE lat_seconds histogram\n"));
  const std::vector<std::string> buckets = LinesStartingWith(text, "lat_seconds_bucket{");
  ASSERT_EQ(buckets.size(), bounds.size() + 1) << text;
  double previous = -1;
  for (const std::string& line : buckets) {
    EXPECT_THAT(line, HasSubstr("model_name=\"demo\",le=\""));
    const double v = ValueOf(line);
    EXPECT_GE(v, previous) << "buckets must not decrease: " << line;
    previous = v;
  }
  EXPECT_THAT(buckets.front(), HasSubstr("le=\"0.001\"} 2"));
  EXPECT_THAT(buckets.back(), HasSubstr("le=\"+Inf\"} 10"));
  const std::vector<std::string> count = LinesStartingWith(text, "lat_seconds_count{");
  const std::vector<std::string> sum = LinesStartingWith(text, "lat_seconds_sum{");
  ASSERT_EQ(count.size(), 1u);
  ASSERT_EQ(sum.size(), 1u);
  EXPECT_EQ(ValueOf(count[0]), ValueOf(buckets.back()));
  EXPECT_NEAR(ValueOf(sum[0]), s.sum, 1e-3);
}

TEST(HistogramTest, ConcurrentObservationsAllCounted) {
  Registry r;
  Histogram* h = *r.AddHistogram("x", "x", {}, {1, 2, 3});
  Counter* c = *r.AddCounter("n_total", "n", {});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        h->Observe((i + t) % 4);
        c->Increment();
      }
    });
  }
  // Expose while observing: every snapshot stays consistent.
  for (int i = 0; i < 50; ++i) {
    const std::string text = r.Expose();
    const std::vector<std::string> inf = LinesStartingWith(text, "x_bucket{le=\"+Inf\"}");
    const std::vector<std::string> count = LinesStartingWith(text, "x_count ");
    ASSERT_EQ(inf.size(), 1u);
    ASSERT_EQ(count.size(), 1u);
    EXPECT_EQ(ValueOf(inf[0]), ValueOf(count[0]));
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(h->snapshot().count, 40000u);
  EXPECT_EQ(c->value(), 40000);
}

TEST(RegistryTest, CollectHooksRunBeforeExposition) {
  Registry r;
  Gauge* g = *r.AddGauge("running", "r", {});
  int calls = 0;
  r.AddCollectHook([&] { g->Set(++calls); });
  EXPECT_THAT(r.Expose(), HasSubstr("\nrunning 1\n"));
  EXPECT_THAT(r.Expose(), HasSubstr("\nrunning 2\n"));
  EXPECT_THAT(r.Expose(), Not(HasSubstr("running 1\n")));
}

TEST(RegistryTest, FamiliesSortedByName) {
  Registry r;
  ASSERT_TRUE(r.AddGauge("b", "b", {}).ok());
  ASSERT_TRUE(r.AddGauge("a", "a", {}).ok());
  const std::string text = r.Expose();
  EXPECT_LT(text.find("# HELP a "), text.find("# HELP b "));
}

}  // namespace
}  // namespace metrics
}  // namespace memserve
