#include "clients/loadgen/loadgen_lib.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace memserve {
namespace loadgen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(PercentileTest, InterpolatesBetweenRanks) {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 6);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 10);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 10.9);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 11);
  EXPECT_DOUBLE_EQ(Percentile({4}, 99), 4);
  EXPECT_DOUBLE_EQ(Percentile({1, 2}, 50), 1.5);
}

TEST(PercentileTest, SummarizeSortsAndCounts) {
  Percentiles p = Summarize({5, 1, 3, 2, 4});
  EXPECT_EQ(p.count, 5u);
  EXPECT_DOUBLE_EQ(p.p50, 3);
  EXPECT_DOUBLE_EQ(p.p90, 4.6);
  Percentiles none = Summarize({});
  EXPECT_EQ(none.count, 0u);
  EXPECT_EQ(none.p50, 0);
}

std::vector<RequestRecord> SampleRecords() {
  RequestRecord a;
  a.completion_tokens = 3;
  a.ttft_ms = 10;
  a.itl_ms = {2, 4};
  a.latency_ms = 16;
  RequestRecord b;
  b.completion_tokens = 2;
  b.ttft_ms = 20;
  b.itl_ms = {6};
  b.latency_ms = 26;
  RequestRecord failed;  // its token is reported apart, never as throughput
  failed.code = "UNAVAILABLE";
  failed.message = "draining";
  failed.completion_tokens = 1;
  failed.ttft_ms = 30;
  failed.latency_ms = 31;
  RequestRecord refused;
  refused.code = "RESOURCE_EXHAUSTED";
  refused.message = "queue full (1024 waiting)";
  refused.latency_ms = 1;
  RequestRecord refused_again = refused;
  refused_again.message = "queue full (1025 waiting)";
  return {a, b, failed, refused, refused_again};
}

TEST(ReportTest, CountsOnlySuccessfulCallsAsThroughput) {
  Report r = MakeReport(SampleRecords(), 2, 0.5);
  EXPECT_EQ(r.streams, 2);
  EXPECT_EQ(r.requests, 5);
  EXPECT_EQ(r.ok, 2);
  EXPECT_EQ(r.completion_tokens, 5);
  EXPECT_EQ(r.failed_completion_tokens, 1);
  EXPECT_DOUBLE_EQ(r.tokens_per_s, 10);
  EXPECT_DOUBLE_EQ(r.requests_per_s, 4);
  EXPECT_EQ(r.ttft_ms.count, 2u);
  EXPECT_DOUBLE_EQ(r.ttft_ms.p50, 15);
  EXPECT_EQ(r.itl_ms.count, 3u);
  EXPECT_DOUBLE_EQ(r.itl_ms.p50, 4);
  EXPECT_EQ(r.latency_ms.count, 2u);
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors.at("UNAVAILABLE").count, 1);
  EXPECT_EQ(r.errors.at("UNAVAILABLE").example, "draining");
  EXPECT_EQ(r.errors.at("RESOURCE_EXHAUSTED").count, 2);
  EXPECT_EQ(r.errors.at("RESOURCE_EXHAUSTED").example, "queue full (1024 waiting)");
}

TEST(ReportTest, AllFailedMeansNoThroughput) {
  RequestRecord refused;
  refused.code = "INVALID_ARGUMENT";
  refused.message = "too long";
  refused.latency_ms = 1;
  Report r = MakeReport({refused, refused, refused}, 1, 0.01);
  EXPECT_EQ(r.ok, 0);
  EXPECT_EQ(r.tokens_per_s, 0);
  EXPECT_EQ(r.requests_per_s, 0);
  EXPECT_EQ(r.latency_ms.count, 0u);
  EXPECT_EQ(r.errors.at("INVALID_ARGUMENT").count, 3);
}

TEST(ReportTest, Json) {
  nlohmann::json j = ReportToJson(MakeReport(SampleRecords(), 2, 0.5));
  for (const char* key :
       {"streams", "requests", "ok", "failed", "completion_tokens", "failed_completion_tokens",
        "wall_s", "tokens_per_s", "requests_per_s", "ttft_ms", "itl_ms", "latency_ms", "errors"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["streams"], 2);
  EXPECT_EQ(j["requests"], 5);
  EXPECT_EQ(j["failed"], 3);
  EXPECT_EQ(j["completion_tokens"], 5);
  EXPECT_EQ(j["failed_completion_tokens"], 1);
  EXPECT_EQ(j["wall_s"], 0.5);
  EXPECT_EQ(j["tokens_per_s"], 10.0);
  EXPECT_EQ(j["requests_per_s"], 4.0);
  EXPECT_EQ(j["ttft_ms"]["p50"], 15.0);
  EXPECT_TRUE(j["itl_ms"].contains("p90"));
  EXPECT_TRUE(j["itl_ms"].contains("p99"));
  EXPECT_EQ(j["errors"]["UNAVAILABLE"]["count"], 1);
  EXPECT_EQ(j["errors"]["UNAVAILABLE"]["example"], "draining");
  EXPECT_FALSE(j["errors"].contains("OK"));

  nlohmann::json empty = ReportToJson(MakeReport({}, 1, 1.0));
  EXPECT_TRUE(empty["ttft_ms"]["p50"].is_null());
  EXPECT_TRUE(empty["errors"].is_object());
  EXPECT_TRUE(empty["errors"].empty());
}

TEST(ReportTest, Text) {
  const std::string text = FormatReport(MakeReport(SampleRecords(), 2, 0.5));
  EXPECT_THAT(text, HasSubstr("2 streams, 5 requests (2 ok, 3 failed)"));
  EXPECT_THAT(text, HasSubstr("completion tokens  5  (and 1 in failed calls, not counted)"));
  EXPECT_THAT(text, HasSubstr("10.0 tokens/s  (4.00 requests/s)"));
  EXPECT_THAT(text, HasSubstr("TTFT ms            p50 15.00"));
  EXPECT_THAT(text,
              HasSubstr("failed             2 x RESOURCE_EXHAUSTED, e.g. \"queue full (1024 "
                        "waiting)\"\n  failed             1 x UNAVAILABLE, e.g. \"draining\"\n"));
  EXPECT_THAT(FormatReport(MakeReport({}, 1, 1.0)), HasSubstr("TTFT ms            -"));
}

TEST(MaxTokensTest, PicksWhatFitsTheContext) {
  EXPECT_EQ(*PickMaxTokens(std::nullopt, 31, 128), 97);
  EXPECT_EQ(*PickMaxTokens(std::nullopt, 31, 4096), kLoadgenMaxTokens);
  EXPECT_EQ(*PickMaxTokens(std::nullopt, 127, 128), 1);
  EXPECT_EQ(*PickMaxTokens(50, 31, 128), 50);
  EXPECT_EQ(*PickMaxTokens(97, 31, 128), 97);
}

TEST(MaxTokensTest, RefusesWhatCannotFit) {
  absl::StatusOr<int> r = PickMaxTokens(128, 31, 128);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "--max_tokens 128 does not fit: the longest prompt is 31 tokens and the model's "
            "context (max_seqlen) 128, so at most 97");
  r = PickMaxTokens(std::nullopt, 128, 128);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("leaves no room"));
  EXPECT_FALSE(PickMaxTokens(0, 1, 128).ok());
}

TEST(PromptsTest, ParsesJsonLines) {
  absl::StatusOr<std::vector<std::string>> p =
      ParsePromptsJsonl("{\"prompt\": \"a\"}\n\n  {\"prompt\": \"b\\nc\", \"id\": 3}\r\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(*p, ElementsAre("a", "b\nc"));
}

TEST(PromptsTest, RejectsBadLines) {
  EXPECT_FALSE(ParsePromptsJsonl("").ok());
  EXPECT_FALSE(ParsePromptsJsonl("\n\n").ok());
  absl::StatusOr<std::vector<std::string>> bad =
      ParsePromptsJsonl("{\"prompt\": \"a\"}\nnot json\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 2"));
  EXPECT_FALSE(ParsePromptsJsonl("{\"text\": \"a\"}").ok());
  EXPECT_FALSE(ParsePromptsJsonl("{\"prompt\": 3}").ok());
  EXPECT_FALSE(ParsePromptsJsonl("[\"prompt\"]").ok());
}

}  // namespace
}  // namespace loadgen
}  // namespace memserve
