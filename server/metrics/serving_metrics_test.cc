// ServingMetrics over a real engine on the demo model: what /metrics says
// after real requests.
#include "server/metrics/serving_metrics.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace metrics {
namespace {

using ::testing::HasSubstr;

class Waiter : public RequestObserver {
 public:
  void OnToken(const TokenEvent&) override {}
  void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings&) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(result);
    done_ = true;
    cv_.notify_all();
  }
  absl::StatusOr<GenerateResult> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::StatusOr<GenerateResult> result_ = absl::UnknownError("not done");
};

// The value of the sample line that starts with `series` (name and labels).
double Sample(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double v = 0;
      EXPECT_TRUE(absl::SimpleAtod(line.substr(series.size() + 1), &v)) << line;
      return v;
    }
  }
  ADD_FAILURE() << "no sample " << series << " in:\n" << text;
  return -1;
}

TEST(ServingMetricsTest, SeriesAddUpToTheRequests) {
  EngineOptions options;
  options.model_dir = "models/demo";
  options.threads = 2;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Registry registry;
  auto metrics = ServingMetrics::Create(&registry, **engine);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*engine)->SetStatsObserver(metrics->get());

  const std::string m = "{model_name=\"demo\"}";
  std::string text = registry.Expose();
  EXPECT_EQ(Sample(text, "memserve:num_requests_running" + m), 0);
  EXPECT_EQ(
      Sample(text, "memserve:request_success_total{model_name=\"demo\",finished_reason=\"stop\"}"),
      0);
  EXPECT_GT(
      Sample(
          text,
          "memserve:memory_pool_bytes{model_name=\"demo\",device=\"cpu\",placement=\"cpu-mmap\"}"),
      0);

  int64_t prompt = 0, completion = 0;
  int length = 0, stop = 0;
  const std::vector<int> max_tokens = {3, 5, 60, 60};
  for (int n : max_tokens) {
    EngineRequest r;
    r.prompt = *(*engine)->tokenizer().Encode("The capital of Batourkor is", true);
    r.options.max_tokens = n;
    r.options.sampling.temperature = 0;
    prompt += static_cast<int64_t>(r.prompt.size());
    auto w = std::make_shared<Waiter>();
    ASSERT_TRUE((*engine)->Submit(std::move(r), w).ok());
    auto result = w->Wait();
    ASSERT_TRUE(result.ok()) << result.status();
    completion += result->completion_tokens;
    (result->finish_reason == FinishReason::kLength ? length : stop) += 1;
    metrics->get()->RecordRequest("Complete", absl::StatusCode::kOk);
  }
  metrics->get()->RecordRequest("Complete", absl::StatusCode::kInvalidArgument);
  ASSERT_GT(stop, 0) << "the demo model should answer with EOS within 60 tokens";
  // A step is published just after its requests end: wait for the last one.
  for (int i = 0; i < 500; ++i) {
    text = registry.Expose();
    if (Sample(text, "memserve:e2e_request_latency_seconds_count" + m) == 4) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(Sample(text, "memserve:prompt_tokens_total" + m), prompt);
  EXPECT_EQ(Sample(text, "memserve:generation_tokens_total" + m), completion);
  EXPECT_EQ(
      Sample(text,
             "memserve:request_success_total{model_name=\"demo\",finished_reason=\"length\"}"),
      length);
  EXPECT_EQ(
      Sample(text, "memserve:request_success_total{model_name=\"demo\",finished_reason=\"stop\"}"),
      stop);
  EXPECT_EQ(Sample(text, "memserve:time_to_first_token_seconds_count" + m), 4);
  EXPECT_EQ(Sample(text, "memserve:e2e_request_latency_seconds_count" + m), 4);
  EXPECT_EQ(Sample(text, "memserve:inter_token_latency_seconds_count" + m), completion - 4);
  EXPECT_EQ(
      Sample(text, "memserve:requests_total{model_name=\"demo\",method=\"Complete\",code=\"OK\"}"),
      4);
  EXPECT_EQ(Sample(text,
                   "memserve:requests_total{model_name=\"demo\",method=\"Complete\",code=\"INVALID_"
                   "ARGUMENT\"}"),
            1);
  // Every computed token read heads x knn rows of the one memory layer.
  EXPECT_GT(Sample(text, "memserve:memory_rows_read_total" + m), 0);
  EXPECT_EQ(static_cast<int64_t>(Sample(text, "memserve:memory_rows_read_total" + m)) % (4 * 16),
            0);
  EXPECT_GT(Sample(text, "memserve:memory_rows_sampled_total" + m), 0);
  EXPECT_GT(Sample(text, "memserve:memory_distinct_row_fraction_count" + m), 0);
  EXPECT_GT(Sample(text, "memserve:memory_lookup_seconds_count" + m), 0);
  EXPECT_THAT(
      text,
      HasSubstr("memserve:time_to_first_token_seconds_bucket{model_name=\"demo\",le=\"0.001\"}"));
  EXPECT_THAT(
      text,
      HasSubstr("memserve:e2e_request_latency_seconds_bucket{model_name=\"demo\",le=\"7680\"}"));
}

TEST(BucketsTest, OneTwoFive) {
  EXPECT_EQ(Buckets125(100), (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(Buckets125(128), (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(Buckets125(1), (std::vector<double>{1}));
}

}  // namespace
}  // namespace metrics
}  // namespace memserve
