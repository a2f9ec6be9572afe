// Generate end to end on the trained demo model (models/demo), whose greedy
// answers are known: "The capital of Batourkor is" -> " Draenddron." + EOS.
// Covers the finish reasons, stop strings across tokens, usage counts, event
// text vs result text, and request validation.
#include "engine/generate.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model_cpu.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

constexpr char kPrompt[] = "The capital of Batourkor is";
constexpr char kAnswer[] = " Draenddron.";

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const std::string dir = absl::StrCat(srcdir ? srcdir : ".", "/memserve/models/demo");
    auto model = LoadCpuModel(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    auto tok = Tokenizer::Create(model_->config().tokenizer, dir);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
  }

  static GenerateOptions Greedy(int max_tokens) {
    GenerateOptions o;
    o.prompt = kPrompt;
    o.sampling.temperature = 0.0f;
    o.max_tokens = max_tokens;
    return o;
  }

  // Runs Generate; checks that the events' text plus the trailing text is the
  // result text and that one event came per completion token.
  static GenerateResult Run(const GenerateOptions& o) {
    std::string streamed;
    int events = 0;
    auto r = Generate(*model_, *tokenizer_, o, [&](const TokenEvent& ev) {
      streamed += ev.text;
      ++events;
    });
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    EXPECT_EQ(streamed + r->trailing_text, r->text);
    EXPECT_EQ(events, r->completion_tokens);
    return *r;
  }

  static Model* model_;
  static Tokenizer* tokenizer_;
};

Model* GenerateTest::model_ = nullptr;
Tokenizer* GenerateTest::tokenizer_ = nullptr;

TEST_F(GenerateTest, KnownFactEndsWithEos) {
  GenerateResult r = Run(Greedy(24));
  EXPECT_EQ(r.text, kAnswer);
  EXPECT_EQ(r.finish_reason, FinishReason::kEos);
  EXPECT_EQ(r.prompt_tokens, static_cast<int>(sizeof(kPrompt) - 1) + 1);      // bytes + BOS
  EXPECT_EQ(r.completion_tokens, static_cast<int>(sizeof(kAnswer) - 1) + 1);  // + EOS
}

TEST_F(GenerateTest, MaxTokensEndsWithLength) {
  GenerateResult r = Run(Greedy(3));
  EXPECT_EQ(r.text, " Dr");
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.completion_tokens, 3);
}

TEST_F(GenerateTest, MinTokensHoldsOffEos) {
  GenerateOptions o = Greedy(24);
  o.min_tokens = 15;  // the answer's EOS would be token 13
  GenerateResult r = Run(o);
  EXPECT_GE(r.completion_tokens, 15);
  EXPECT_EQ(r.text.substr(0, sizeof(kAnswer) - 1), kAnswer);
  EXPECT_GT(r.text.size(), sizeof(kAnswer) - 1);
}

TEST_F(GenerateTest, StopTokenEndsWithStop) {
  GenerateOptions o = Greedy(24);
  o.stop_token_ids = {'d'};  // bytes tokenizer: id = byte; " Draen|d|dron."
  GenerateResult r = Run(o);
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.stop_token_id, 'd');
  EXPECT_EQ(r.text, " Draen");
  EXPECT_EQ(r.completion_tokens, 7);
  o.include_stop_str = true;
  EXPECT_EQ(Run(o).text, " Draend");
}

TEST_F(GenerateTest, StopStringsAreMatchedOnlyAfterMinTokens) {
  GenerateOptions o = Greedy(24);
  o.stop = {"dd"};  // tokens 7 and 8 of " Draendd|ron."
  o.min_tokens = 6;
  GenerateResult r = Run(o);
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.stop_string, "dd");
  EXPECT_EQ(r.text, " Draen");
  o.min_tokens = 7;  // the first 'd' is within min_tokens: no match
  r = Run(o);
  EXPECT_EQ(r.finish_reason, FinishReason::kEos);
  EXPECT_EQ(r.text, kAnswer);
}

TEST_F(GenerateTest, MinTokensAndStopTokenIdsAreValidated) {
  GenerateOptions o = Greedy(8);
  o.min_tokens = 9;
  EXPECT_THAT(ValidateGenerateOptions(o, model_->config()).message(),
              ::testing::HasSubstr("min_tokens must be in [0, max_tokens = 8], got 9"));
  o = Greedy(8);
  o.stop_token_ids = {1, 258};
  EXPECT_THAT(ValidateGenerateOptions(o, model_->config()).message(),
              ::testing::HasSubstr("stop_token_ids[1] = 258 is outside the vocabulary"));
  o = Greedy(8);
  o.stop_token_ids.assign(65, 1);
  EXPECT_THAT(ValidateGenerateOptions(o, model_->config()).message(),
              ::testing::HasSubstr("stop_token_ids has 65 ids; the limit is 64"));
  o = Greedy(8);
  o.stop = {"a", ""};
  EXPECT_THAT(ValidateGenerateOptions(o, model_->config()).message(),
              ::testing::HasSubstr("stop[1] is 0 bytes; it must be 1 to 256"));
}

TEST_F(GenerateTest, StopStringSpanningTokensCutsBeforeIt) {
  GenerateOptions o = Greedy(24);
  o.stop = {"ddr"};
  GenerateResult r = Run(o);
  EXPECT_EQ(r.text, " Draen");
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.completion_tokens, 9);  // " Draenddr" completes the stop string
  o.include_stop_str = true;
  EXPECT_EQ(Run(o).text, " Draenddr");
}

TEST_F(GenerateTest, HeldBackPrefixIsReleasedAtTheEnd) {
  GenerateOptions o = Greedy(24);
  o.stop = {"n.X"};  // " Draenddron." ends with "n." : held back, then released
  GenerateResult r = Run(o);
  EXPECT_EQ(r.text, kAnswer);
  EXPECT_EQ(r.finish_reason, FinishReason::kEos);
  EXPECT_EQ(r.trailing_text, "n.");
}

TEST_F(GenerateTest, IgnoreEosRunsToMaxTokens) {
  GenerateOptions o = Greedy(20);
  o.ignore_eos = true;
  GenerateResult r = Run(o);
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.completion_tokens, 20);
  EXPECT_EQ(r.text.rfind(kAnswer, 0), 0u) << r.text;
}

TEST_F(GenerateTest, TopLogprobsAreSortedAndIncludeTheGreedyChoice) {
  GenerateOptions o = Greedy(4);
  o.logprobs = 3;
  auto r = Generate(*model_, *tokenizer_, o, [](const TokenEvent& ev) {
    ASSERT_EQ(ev.top.size(), 3u);
    EXPECT_EQ(ev.top[0].id, ev.id);
    EXPECT_FLOAT_EQ(ev.top[0].logprob, ev.logprob);
    EXPECT_GE(ev.top[0].logprob, ev.top[1].logprob);
    EXPECT_GE(ev.top[1].logprob, ev.top[2].logprob);
  });
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST_F(GenerateTest, InvalidRequestsNameTheField) {
  struct Case {
    std::string field;
    void (*mutate)(GenerateOptions*);
  };
  const std::vector<Case> cases = {
      {"prompt is empty", [](GenerateOptions* o) { o->prompt.clear(); }},
      {"not valid UTF-8", [](GenerateOptions* o) { o->prompt = "ab\xff"; }},
      {"prompt_ids[1]",
       [](GenerateOptions* o) {
         o->prompt_ids = {1, 999};
       }},
      {"max_tokens", [](GenerateOptions* o) { o->max_tokens = 0; }},
      {"max_seqlen", [](GenerateOptions* o) { o->max_tokens = 120; }},  // 28 + 120 > 128
      {"logprobs", [](GenerateOptions* o) { o->logprobs = kMaxLogprobs + 1; }},
      {"stop has", [](GenerateOptions* o) { o->stop.assign(kMaxStopStrings + 1, "x"); }},
      {"stop[0]",
       [](GenerateOptions* o) { o->stop = {std::string(kMaxStopStringBytes + 1, 'x')}; }},
      {"temperature", [](GenerateOptions* o) { o->sampling.temperature = -1.0f; }},
      {"top_p", [](GenerateOptions* o) { o->sampling.top_p = 0.0f; }},
  };
  for (const Case& c : cases) {
    GenerateOptions o = Greedy(8);
    c.mutate(&o);
    int events = 0;
    auto r = Generate(*model_, *tokenizer_, o, [&](const TokenEvent&) { ++events; });
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(r.status().message().find(c.field), std::string::npos)
        << c.field << ": " << r.status().message();
    EXPECT_EQ(events, 0) << c.field;
  }
}

}  // namespace
}  // namespace memserve
