#include "server/logging.h"

#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using ::testing::HasSubstr;

const absl::Time kWhen = absl::FromUnixMillis(1796080468123);  // 2026-11-30T23:14:28.123Z

TEST(LogLineTest, TextHasTimestampLevelMessageAndFields) {
  const std::string line = LogLine(LogLevel::kInfo, "request")
                               .Field("id", "req-7")
                               .Field("method", "Generate")
                               .Field("prompt_tokens", 28)
                               .Field("queue_ms", 0.2)
                               .Field("total_ms", 10.0)
                               .Field("ok", true)
                               .Format(LogFormat::kText, kWhen);
  EXPECT_EQ(line,
            "2026-11-30T23:14:28.123Z INFO request id=req-7 method=Generate prompt_tokens=28 "
            "queue_ms=0.2 total_ms=10 ok=true");
}

TEST(LogLineTest, TextQuotesValuesThatWouldSplitTheLine) {
  const std::string line = LogLine(LogLevel::kError, "request")
                               .Field("error", "bad \"text\"\nsecond line = x\\y")
                               .Field("empty", "")
                               .Format(LogFormat::kText, kWhen);
  EXPECT_EQ(line,
            "2026-11-30T23:14:28.123Z ERROR request error=\"bad \\\"text\\\"\\nsecond line = "
            "x\\\\y\" empty=\"\"");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const std::string message =
      LogLine(LogLevel::kWarning, "two\nlines").Format(LogFormat::kText, kWhen);
  EXPECT_EQ(message, "2026-11-30T23:14:28.123Z WARNING two\\nlines");
}

TEST(LogLineTest, JsonIsOneObjectWithTypedFields) {
  const std::string line = LogLine(LogLevel::kInfo, "ready")
                               .Field("model", "demo")
                               .Field("kv_cache_bytes", int64_t{1} << 40)
                               .Field("load_ms", 2.25)
                               .Field("bad_utf8",
                                      "a\xff"
                                      "b")
                               .Format(LogFormat::kJson, kWhen);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "2026-11-30T23:14:28.123Z");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["msg"], "ready");
  EXPECT_EQ(j["model"], "demo");
  EXPECT_EQ(j["kv_cache_bytes"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(j["load_ms"].get<double>(), 2.25);
  EXPECT_EQ(j["bad_utf8"],
            "a\xef\xbf\xbd"
            "b");  // U+FFFD
  // ts, level and msg come first, then the fields in order.
  EXPECT_EQ(line.rfind("{\"ts\":", 0), 0u) << line;
  EXPECT_LT(line.find("\"msg\""), line.find("\"model\""));
}

TEST(LogFormatTest, ParsesTextAndJsonOnly) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  absl::StatusOr<LogFormat> bad = ParseLogFormat("xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--log_format"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'xml'"));
}

}  // namespace
}  // namespace memserve
