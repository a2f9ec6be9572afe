#include "clients/bench/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace bench {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(PerTokenGapsTest, EveryMessageOnItsOwnWithoutMerging) {
  EXPECT_THAT(PerTokenGaps({}, 0), ElementsAre());
  EXPECT_THAT(PerTokenGaps({5}, 0), ElementsAre());
  EXPECT_THAT(PerTokenGaps({5, 7, 10}, 0), ElementsAre(2, 3));
}

TEST(PerTokenGapsTest, ADeliveryOfKTokensCountsAsKGaps) {
  // Tokens at 10; then 3 together at ~20; then 1 at 26; then 2 together at ~30.
  const std::vector<double> gaps =
      PerTokenGaps({10, 20, 20.01, 20.02, 26, 30, 30.005}, /*merge_window_ms=*/0.05);
  // (20.02 - 10) / 3 three times, 26 - 20.02, (30.005 - 26) / 2 twice.
  ASSERT_EQ(gaps.size(), 6u);
  EXPECT_NEAR(gaps[0], 10.02 / 3, 1e-9);
  EXPECT_NEAR(gaps[1], 10.02 / 3, 1e-9);
  EXPECT_NEAR(gaps[2], 10.02 / 3, 1e-9);
  EXPECT_NEAR(gaps[3], 5.98, 1e-9);
  EXPECT_NEAR(gaps[4], 4.005 / 2, 1e-9);
  EXPECT_NEAR(gaps[5], 4.005 / 2, 1e-9);
  double sum = 0;
  for (double g : gaps) sum += g;
  EXPECT_NEAR(sum, 30.005 - 10, 1e-9);  // the gaps add up to last - first
}

TEST(PerTokenGapsTest, TokensThatCameWithTheFirstKeepTheirGaps) {
  const std::vector<double> gaps = PerTokenGaps({10, 10.01, 10.02, 15}, 0.05);
  ASSERT_EQ(gaps.size(), 3u);
  EXPECT_NEAR(gaps[0], 0.01, 1e-9);
  EXPECT_NEAR(gaps[1], 0.01, 1e-9);
  EXPECT_NEAR(gaps[2], 4.98, 1e-9);
}

RequestRecord Ok(double ttft, int tokens, double e2el, double sent_s = 0) {
  RequestRecord r;
  r.sent_s = sent_s;
  r.ttft_ms = ttft;
  r.output_tokens = tokens;
  r.input_tokens = 10;
  r.e2el_ms = e2el;
  r.itl_ms.assign(static_cast<size_t>(tokens > 0 ? tokens - 1 : 0),
                  tokens > 1 ? (e2el - ttft) / (tokens - 1) : 0);
  r.finish_reason = "length";
  return r;
}

TEST(GoodputTest, CountsRequestsMeetingEverySlo) {
  // A constructed trace over 4 s:
  //   a: TTFT 50, TPOT (250 - 50) / 10 = 20, E2EL 250   -> meets all
  //   b: TTFT 150 (> 100)                               -> fails ttft
  //   c: TTFT 20, TPOT (420 - 20) / 10 = 40 (> 25)      -> fails tpot
  //   d: TTFT 30, 1 token: TPOT counts as 0, E2EL 30    -> meets all
  //   e: TTFT 10, TPOT (1210 - 10) / 100 = 12, E2EL 1210 (> 1000) -> fails e2el
  //   f: failed                                         -> never good
  std::vector<RequestRecord> trace = {Ok(50, 11, 250), Ok(150, 11, 300), Ok(20, 11, 420),
                                      Ok(30, 1, 30), Ok(10, 101, 1210)};
  RequestRecord failed;
  failed.code = "DEADLINE_EXCEEDED";
  failed.message = "Deadline Exceeded";
  trace.push_back(failed);
  Slo slo;
  slo.ttft_ms = 100;
  slo.tpot_ms = 25;
  slo.e2el_ms = 1000;
  const std::vector<bool> meets = {true, false, false, true, false, false};
  for (size_t i = 0; i < trace.size(); ++i) EXPECT_EQ(MeetsSlo(trace[i], slo), meets[i]) << i;
  const Summary s = MakeSummary(trace, /*duration_s=*/4.0, {50, 99}, slo);
  EXPECT_EQ(s.good_requests, 2);
  ASSERT_TRUE(s.request_goodput);
  EXPECT_DOUBLE_EQ(*s.request_goodput, 0.5);     // 2 good / 4 s
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.25);  // 5 ok / 4 s

  // Each SLO alone.
  EXPECT_EQ(MakeSummary(trace, 4, {50}, *ParseGoodput("ttft:100")).good_requests, 4);
  EXPECT_EQ(MakeSummary(trace, 4, {50}, *ParseGoodput("tpot:25")).good_requests, 4);
  EXPECT_EQ(MakeSummary(trace, 4, {50}, *ParseGoodput("e2el:1000")).good_requests, 4);
  // No SLO, no goodput.
  EXPECT_FALSE(MakeSummary(trace, 4, {50}, Slo()).request_goodput);
}

TEST(MakeSummaryTest, ThroughputsCountSuccessfulRequestsOnly) {
  RequestRecord failed;
  failed.code = "RESOURCE_EXHAUSTED";
  failed.message = "the queue is full (1 waiting, max_queue 1)";
  failed.output_tokens = 0;
  RequestRecord cut = failed;
  cut.code = "UNAVAILABLE";
  cut.message = "draining";
  cut.output_tokens = 3;
  RequestRecord again = failed;
  again.message = "another message";
  const std::vector<RequestRecord> records = {Ok(10, 5, 50, 0.0), Ok(20, 3, 40, 0.01), failed, cut,
                                              again};
  const Summary s = MakeSummary(records, 2.0, {50, 90}, Slo());
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.total_input_tokens, 20);
  EXPECT_EQ(s.total_output_tokens, 8);
  EXPECT_EQ(s.failed_output_tokens, 3);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(s.output_throughput, 4.0);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 14.0);
  EXPECT_EQ(s.ttft_ms.count, 2u);
  EXPECT_DOUBLE_EQ(s.ttft_ms.mean, 15);
  EXPECT_EQ(s.tpot_ms.count, 2u);  // (50 - 10) / 4 = 10 and (40 - 20) / 2 = 10
  EXPECT_DOUBLE_EQ(s.tpot_ms.mean, 10);
  EXPECT_EQ(s.itl_ms.count, 6u);  // 4 + 2 tokens after the first
  EXPECT_EQ(s.e2el_ms.count, 2u);
  ASSERT_EQ(s.errors.size(), 2u);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED").count, 2);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED").example, failed.message);  // the first one
  EXPECT_EQ(s.errors.at("UNAVAILABLE").count, 1);
}

TEST(MakeSummaryTest, PeakConcurrencyAndPeakOutputRate) {
  std::vector<RequestRecord> r = {Ok(1, 2, 1000, 0.0), Ok(1, 2, 1000, 0.5), Ok(1, 2, 100, 2.0)};
  r[0].token_times_ms = {1, 999};
  r[1].token_times_ms = {501, 1499};
  r[2].token_times_ms = {2001, 2099};
  const Summary s = MakeSummary(r, 2.1, {50}, Slo());
  EXPECT_EQ(s.max_concurrent_requests, 2);
  EXPECT_EQ(s.max_output_tokens_per_s, 3);  // 1, 999, 501 in [0 s, 1 s)
}

TEST(ParseGoodputTest, AcceptsPairsAndNamesTheFlagOnErrors) {
  const auto slo = ParseGoodput("ttft:100 tpot:12.5,e2el:2000");
  ASSERT_TRUE(slo.ok()) << slo.status();
  EXPECT_EQ(slo->ttft_ms, 100);
  EXPECT_EQ(slo->tpot_ms, 12.5);
  EXPECT_EQ(slo->e2el_ms, 2000);
  EXPECT_TRUE(ParseGoodput("")->empty());
  EXPECT_EQ(ParseGoodput("itl:5").status().message(),
            "--goodput: unknown metric 'itl' in 'itl:5' (use ttft, tpot or e2el)");
  EXPECT_EQ(ParseGoodput("ttft:0").status().message(),
            "--goodput: 'ttft:0' is not KEY:MS with KEY ttft, tpot or e2el and MS > 0");
  EXPECT_THAT(ParseGoodput("ttft").status().message(), HasSubstr("--goodput: 'ttft'"));
  EXPECT_EQ(ParseGoodput("ttft:1 ttft:2").status().message(), "--goodput: ttft given twice");
}

TEST(ParsePercentilesTest, Limits) {
  EXPECT_THAT(*ParsePercentiles("50, 90,99.9"), ElementsAre(50, 90, 99.9));
  EXPECT_EQ(ParsePercentiles("0").status().message(),
            "--percentiles: '0' is not a number in (0, 100]");
  EXPECT_EQ(ParsePercentiles("50,101").status().message(),
            "--percentiles: '101' is not a number in (0, 100]");
  EXPECT_EQ(ParsePercentiles("").status().message(),
            "--percentiles: '' is not a number in (0, 100]");
  EXPECT_EQ(ParsePercentiles("50,50").status().message(), "--percentiles: 50 given twice");
}

TEST(ReportFormatsTest, JsonTableAndCsvAgree) {
  RequestRecord failed;
  failed.code = "INVALID_ARGUMENT";
  failed.message = "sampling.temperature must be finite and >= 0, got -1";
  const std::vector<RequestRecord> records = {Ok(10, 5, 50), Ok(1, 1, 1), failed};
  const Summary s = MakeSummary(records, 1.0, {50, 99}, *ParseGoodput("ttft:5"));
  const nlohmann::json j = SummaryToJson(s);
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["request_goodput"], 1.0);
  EXPECT_EQ(j["ttft_ms"]["p99"], s.ttft_ms.percentiles[1].second);
  EXPECT_EQ(j["tpot_ms"]["count"], 1);
  EXPECT_EQ(j["errors"]["INVALID_ARGUMENT"]["example"], failed.message);
  const nlohmann::json none = SummaryToJson(MakeSummary({failed}, 1.0, {99}, Slo()));
  EXPECT_TRUE(none["ttft_ms"]["p99"].is_null());
  EXPECT_TRUE(none["request_goodput"].is_null());

  const nlohmann::json arrays = RecordsToJson(records);
  EXPECT_EQ(arrays["status"], nlohmann::json({"OK", "OK", "INVALID_ARGUMENT"}));
  EXPECT_TRUE(arrays["ttfts_ms"][2].is_null());
  EXPECT_TRUE(arrays["tpots_ms"][1].is_null());  // one token: no TPOT
  EXPECT_EQ(arrays["itls_ms"][0].size(), 4u);
  EXPECT_EQ(arrays["messages"][2], failed.message);

  const std::string table = FormatTable(s, "Serving Benchmark Result");
  EXPECT_THAT(table, HasSubstr("Serving Benchmark Result"));
  EXPECT_THAT(table, HasSubstr("Request goodput (req/s):"));
  EXPECT_THAT(table, HasSubstr("P99 ITL (ms):"));
  EXPECT_THAT(table, HasSubstr("1 x INVALID_ARGUMENT, e.g. \"" + failed.message + "\""));

  const std::vector<std::string> header = absl::StrSplit(CsvHeader({50, 99}), ',');
  const std::vector<std::string> row = absl::StrSplit(CsvRow("request_rate", "inf", s), ',');
  EXPECT_EQ(header.size(), row.size());
  EXPECT_EQ(header[0], "parameter");
  EXPECT_EQ(row[1], "inf");
  EXPECT_EQ(header.back(), "e2el_ms_p99");
}

}  // namespace
}  // namespace bench
}  // namespace memserve
