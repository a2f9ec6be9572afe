#include "clients/cli/cli_lib.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "memserve/v1/memserve.pb.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(StatusTest, NamesAndExitCodes) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(42)), "CODE_42");
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::OK), kExitOk);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::INVALID_ARGUMENT), kExitUsage);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::UNAVAILABLE), kExitUnreachable);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::RESOURCE_EXHAUSTED), kExitOther);
  EXPECT_EQ(ExitCodeFor(grpc::StatusCode::DEADLINE_EXCEEDED), kExitOther);
}

TEST(StatusTest, FormatStatus) {
  EXPECT_EQ(FormatStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "sampling.top_p must be in (0, 1], got 0")),
            "INVALID_ARGUMENT: sampling.top_p must be in (0, 1], got 0");
  EXPECT_EQ(FormatStatus(grpc::Status(grpc::StatusCode::INTERNAL, "")), "INTERNAL");
  EXPECT_EQ(
      CannotReachMessage("localhost:50051", grpc::Status(grpc::StatusCode::UNAVAILABLE, "refused")),
      "cannot reach server at localhost:50051 (UNAVAILABLE: refused)");
}

TEST(SamplingTest, UnsetOptionalsStayUnset) {
  v1::SamplingParams p = BuildSamplingParams(SamplingOptions());
  EXPECT_FALSE(p.has_temperature());
  EXPECT_FALSE(p.has_top_p());
  EXPECT_FALSE(p.has_repetition_penalty());
  EXPECT_FALSE(p.has_seed());
  EXPECT_FALSE(p.has_max_tokens());
  EXPECT_EQ(p.top_k(), 0);
  EXPECT_EQ(p.stop_size(), 0);
  EXPECT_FALSE(p.ignore_eos());
}

TEST(SamplingTest, GivenValuesAreCopiedIncludingZeros) {
  SamplingOptions o;
  o.temperature = 0.0;  // greedy, which must not read as "unset"
  o.top_k = 40;
  o.top_p = 0.0;  // invalid, but for the server to say so
  o.min_p = 0.05;
  o.repetition_penalty = 1.1;
  o.frequency_penalty = -0.5;
  o.presence_penalty = 0.25;
  o.seed = 18446744073709551615ull;
  o.max_tokens = 16;
  o.min_tokens = 2;
  o.stop = {"\n\n", "END"};
  o.stop_token_ids = {2, 7};
  o.ignore_eos = true;
  o.logprobs = 5;
  o.include_stop_str = true;
  v1::SamplingParams p = BuildSamplingParams(o);
  ASSERT_TRUE(p.has_temperature());
  EXPECT_EQ(p.temperature(), 0.0f);
  EXPECT_EQ(p.top_k(), 40);
  ASSERT_TRUE(p.has_top_p());
  EXPECT_EQ(p.top_p(), 0.0f);
  EXPECT_FLOAT_EQ(p.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(p.repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(p.frequency_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(p.presence_penalty(), 0.25f);
  EXPECT_EQ(p.seed(), 18446744073709551615ull);
  EXPECT_EQ(p.max_tokens(), 16);
  EXPECT_EQ(p.min_tokens(), 2);
  EXPECT_THAT(p.stop(), ElementsAre("\n\n", "END"));
  EXPECT_THAT(p.stop_token_ids(), ElementsAre(2, 7));
  EXPECT_TRUE(p.ignore_eos());
  EXPECT_EQ(p.logprobs(), 5);
  EXPECT_TRUE(p.include_stop_str());
}

TEST(StopListTest, SplitsAndUnescapes) {
  EXPECT_THAT(*ParseStopList(""), ElementsAre());
  EXPECT_THAT(*ParseStopList("a"), ElementsAre("a"));
  EXPECT_THAT(*ParseStopList("a,bc"), ElementsAre("a", "bc"));
  EXPECT_THAT(*ParseStopList("x\\,y,\\n\\n,\\t\\r\\\\"), ElementsAre("x,y", "\n\n", "\t\r\\"));
  EXPECT_THAT(*ParseStopList(" , "), ElementsAre(" ", " "));
}

TEST(StopListTest, RejectsEmptyAndBadEscapes) {
  EXPECT_FALSE(ParseStopList(",").ok());
  EXPECT_FALSE(ParseStopList("a,").ok());
  EXPECT_FALSE(ParseStopList("a,,b").ok());
  EXPECT_FALSE(ParseStopList("a\\").ok());
  absl::StatusOr<std::vector<std::string>> bad = ParseStopList("a\\q");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\\q"));
}

TEST(TokenIdsTest, Parses) {
  EXPECT_THAT(*ParseTokenIds({"0", "12", "-3"}), ElementsAre(0, 12, -3));
  EXPECT_THAT(*ParseTokenIds({}), ElementsAre());
  EXPECT_FALSE(ParseTokenIds({"1", "two"}).ok());
  EXPECT_FALSE(ParseTokenIds({"99999999999"}).ok());
  EXPECT_FALSE(ParseTokenIds({""}).ok());
}

TEST(EscapeBytesTest, PrintableAsIsOthersEscaped) {
  EXPECT_EQ(EscapeBytes("Hello, world"), "Hello, world");
  EXPECT_EQ(EscapeBytes("a\nb\tc\rd\\"), "a\\nb\\tc\\rd\\\\");
  EXPECT_EQ(EscapeBytes(std::string("\x00\x7f\xe2\x82", 4)), "\\x00\\x7f\\xe2\\x82");
}

TEST(FormatTest, FinishReasonName) {
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_LENGTH), "LENGTH");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_STOP), "STOP");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_UNSPECIFIED), "UNSPECIFIED");
  EXPECT_EQ(FinishReasonName(static_cast<v1::FinishReason>(9)), "9");
}

TEST(FormatTest, TokenJsonl) {
  v1::Token t;
  t.set_id(42);
  t.set_text("hi");
  t.set_logprob(-0.5f);
  jsonl::TokenLine line = ToJsonlToken(t);
  EXPECT_EQ(line.id, 42);
  EXPECT_EQ(line.text, "hi");
  EXPECT_EQ(line.logprob, -0.5f);
  EXPECT_TRUE(line.top.empty());
  v1::TopLogprob* top = t.add_top_logprobs();
  top->set_id(7);
  top->set_logprob(-1.0f);
  top->set_token_bytes(std::string("\xe2", 1));
  line = ToJsonlToken(t);
  ASSERT_EQ(line.top.size(), 1u);
  EXPECT_EQ(line.top[0].id, 7);
  EXPECT_EQ(line.top[0].logprob, -1.0f);
  EXPECT_EQ(line.top[0].text, "\xe2");
}

v1::Final MakeFinal() {
  v1::Final f;
  f.set_finish_reason(v1::FINISH_REASON_STOP);
  f.set_trailing_text("!");
  f.mutable_usage()->set_prompt_tokens(5);
  f.mutable_usage()->set_completion_tokens(16);
  f.mutable_timings()->set_queue_ms(0.25);
  f.mutable_timings()->set_time_to_first_token_ms(12.34);
  f.mutable_timings()->set_total_ms(45.67);
  f.set_request_id("r1");
  f.set_stop_string("\n");
  return f;
}

TEST(FormatTest, FinalJsonl) {
  jsonl::FinalLine line = ToJsonlFinal(MakeFinal());
  EXPECT_EQ(line.finish_reason, "stop");
  EXPECT_EQ(line.text, "!");
  EXPECT_EQ(line.prompt_tokens, 5);
  EXPECT_EQ(line.completion_tokens, 16);
  EXPECT_EQ(line.stop_string, "\n");
  EXPECT_FALSE(line.stop_token_id.has_value());
  v1::Final f;
  f.set_finish_reason(v1::FINISH_REASON_EOS);
  f.set_stop_token_id(3);
  line = ToJsonlFinal(f);
  EXPECT_EQ(line.finish_reason, "eos");
  EXPECT_FALSE(line.stop_string.has_value());
  EXPECT_EQ(line.stop_token_id, 3);
}

std::vector<ChatMessageSize> Conversation(std::initializer_list<std::pair<char, int>> messages) {
  std::vector<ChatMessageSize> out;
  for (const auto& [role, tokens] : messages) out.push_back({role == 'u', tokens});
  return out;
}

TEST(ChatTest, NothingDroppedWhenItFits) {
  const auto c = Conversation({{'s', 10}, {'u', 20}, {'a', 30}, {'u', 20}});
  const ChatDrop d = OldestTurnsToDrop(c, 100, 20);
  EXPECT_EQ(d.first, 1u);
  EXPECT_EQ(d.count, 0u);
}

TEST(ChatTest, DropsWholeOldestTurnsKeepingTheSystemPrompt) {
  const auto c = Conversation({{'s', 10}, {'u', 20}, {'a', 30}, {'u', 5}, {'a', 5}, {'u', 20}});
  // 90 tokens + 20 reserve: the first turn (50) must go.
  ChatDrop d = OldestTurnsToDrop(c, 100, 20);
  EXPECT_EQ(d.first, 1u);
  EXPECT_EQ(d.count, 2u);
  // Room for the system prompt and the last turn only.
  d = OldestTurnsToDrop(c, 50, 20);
  EXPECT_EQ(d.count, 4u);
  // Not even that: every earlier turn goes, the last one stays.
  d = OldestTurnsToDrop(c, 10, 20);
  EXPECT_EQ(d.count, 4u);
}

TEST(ChatTest, WithoutSystemPromptAndWithCancelledReplies) {
  // A turn may hold several messages (here a user message whose reply was
  // never added).
  const auto c = Conversation({{'u', 40}, {'u', 40}, {'a', 10}, {'u', 10}});
  const ChatDrop d = OldestTurnsToDrop(c, 69, 10);
  EXPECT_EQ(d.first, 0u);
  EXPECT_EQ(d.count, 3u);
  EXPECT_EQ(OldestTurnsToDrop(c, 100, 10).count, 1u);
  EXPECT_EQ(OldestTurnsToDrop({}, 10, 20).count, 0u);
}

TEST(FormatTest, Summary) {
  EXPECT_EQ(FormatSummary(MakeFinal()),
            "finish=STOP prompt_tokens=5 completion_tokens=16 ttft_ms=12.3 total_ms=45.7 "
            "stop_string=\"\\n\" request_id=r1");
  v1::Final f;
  f.set_finish_reason(v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(FormatSummary(f),
            "finish=LENGTH prompt_tokens=0 completion_tokens=0 ttft_ms=0.0 total_ms=0.0");
}

TEST(FormatTest, MessageAsTextFlattensEveryField) {
  v1::ModelInfo info;
  info.set_model_name("demo");
  info.set_dim(64);
  info.mutable_memory()->add_layers(1);
  info.mutable_memory()->add_layers(3);
  info.mutable_memory()->set_placement("cpu-mmap");
  info.mutable_limits()->set_max_queue(256);
  const std::string text = FormatMessageAsText(info);
  EXPECT_THAT(text, HasSubstr("model_name  "));
  // Names are aligned to the longest; values follow.
  EXPECT_THAT(text, ::testing::ContainsRegex("\nmemory\\.layers +1, 3\n"));
  EXPECT_THAT(text, ::testing::ContainsRegex("\nmemory\\.placement +cpu-mmap\n"));
  EXPECT_THAT(text, ::testing::ContainsRegex("\nlimits\\.max_queue +256\n"));
  // Unset zero values are printed too.
  EXPECT_THAT(text, ::testing::ContainsRegex("\nn_layers +0\n"));
  EXPECT_THAT(text, ::testing::ContainsRegex("\ntokenizer\\.eos_id +0\n"));
  // Empty values (a string, no repeated messages) are the name alone, with
  // no trailing blanks.
  EXPECT_THAT(text, HasSubstr("\nmemory.memory_placement\n"));
  EXPECT_THAT(text, HasSubstr("\nmemory.device_bytes\n"));
}

TEST(FormatTest, MessageAsTextEnumsOptionalsAndOneofs) {
  v1::ServerStatus status;
  status.set_state(v1::SERVING_STATE_SERVING);
  status.set_kv_usage(0.5);
  const std::string text = FormatMessageAsText(status);
  EXPECT_THAT(text, ::testing::ContainsRegex("(^|\n)state +SERVING_STATE_SERVING\n"));
  EXPECT_THAT(text, ::testing::ContainsRegex("\nkv_usage +0.5\n"));

  v1::SamplingParams p;
  p.set_temperature(0);
  p.add_stop("a");
  p.add_stop("b");
  const std::string sp = FormatMessageAsText(p);
  EXPECT_THAT(sp, ::testing::ContainsRegex("(^|\n)temperature +0\n"));
  EXPECT_THAT(sp, ::testing::ContainsRegex("\ntop_p +\\(unset\\)\n"));
  EXPECT_THAT(sp, ::testing::ContainsRegex("\nstop +a, b\n"));

  // Only the chosen member of a oneof appears.
  v1::Final f = MakeFinal();
  const std::string ft = FormatMessageAsText(f);
  EXPECT_THAT(ft, HasSubstr("stop_string"));
  EXPECT_THAT(ft, ::testing::Not(HasSubstr("stop_token_id")));
}

TEST(FormatTest, MessageAsJson) {
  v1::ServerStatus status;
  status.set_state(v1::SERVING_STATE_LOADING);
  status.set_requests_served(3);
  nlohmann::json j = nlohmann::json::parse(FormatMessageAsJson(status));
  EXPECT_EQ(j["state"], "SERVING_STATE_LOADING");
  EXPECT_EQ(j["running"], 0);            // zero values are printed
  EXPECT_EQ(j["requests_served"], "3");  // proto3 JSON: int64 as a string
  EXPECT_TRUE(j.contains("kv_blocks_total"));
}

TEST(ChannelTest, NothingListeningIsUnavailableQuickly) {
  // Port 1 on localhost: nothing listens there in a test sandbox.
  std::shared_ptr<grpc::Channel> channel = MakeChannel("127.0.0.1:1");
  const absl::Time start = absl::Now();
  grpc::Status s = WaitForServer(channel, absl::Seconds(5));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.error_code() == grpc::StatusCode::UNAVAILABLE ||
              s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      << FormatStatus(s);
  // A refused connection fails at once, not at the end of the timeout.
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

}  // namespace
}  // namespace cli
}  // namespace memserve
