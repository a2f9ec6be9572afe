#include "clients/common/generation_jsonl.h"

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace memserve {
namespace jsonl {
namespace {

TEST(GenerationJsonlTest, TokenLine) {
  TokenLine t;
  t.id = 68;
  t.text = "D";
  t.logprob = -0.5f;
  t.top = {{68, -0.5f, "D"}, {256, -2.0f, ""}};
  EXPECT_EQ(FormatToken(t),
            R"({"id":68,"logprob":-0.5,"text":"D","top":[{"id":68,"logprob":-0.5,"text":"D"},)"
            R"({"id":256,"logprob":-2.0,"text":""}]})");
  t.top.clear();
  EXPECT_EQ(FormatToken(t), R"({"id":68,"logprob":-0.5,"text":"D","top":[]})");
}

TEST(GenerationJsonlTest, PartialCharactersBecomeReplacementCharacters) {
  TokenLine t;
  t.id = 0xe4;
  t.top = {{0xe4, -1.0f, "\xe4"}};
  const nlohmann::json j = nlohmann::json::parse(FormatToken(t));
  EXPECT_EQ(j["text"], "");
  EXPECT_EQ(j["top"][0]["text"], "\xef\xbf\xbd");  // U+FFFD
}

TEST(GenerationJsonlTest, FinalLine) {
  FinalLine f;
  f.finish_reason = kFinishLength;
  f.text = "!";
  f.prompt_tokens = 5;
  f.completion_tokens = 3;
  EXPECT_EQ(FormatFinal(f), R"({"finish_reason":"length","text":"!",)"
                            R"("usage":{"completion_tokens":3,"prompt_tokens":5}})");
  f.finish_reason = kFinishStop;
  f.stop_string = "\n";
  EXPECT_EQ(nlohmann::json::parse(FormatFinal(f))["stop_string"], "\n");
  f.stop_string.reset();
  f.stop_token_id = 7;
  const nlohmann::json j = nlohmann::json::parse(FormatFinal(f));
  EXPECT_EQ(j["stop_token_id"], 7);
  EXPECT_FALSE(j.contains("stop_string"));
}

}  // namespace
}  // namespace jsonl
}  // namespace memserve
