// Every request rule, as a table of bad requests and the exact message each
// gets, under the engine's field names and under the gRPC API's.
#include "engine/request/validate.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.vocab_size = 258;
  c.max_seqlen = 128;
  return c;
}

EngineRequest Good() {
  EngineRequest r;
  r.prompt = {256, 72, 105};
  r.options.max_tokens = 8;
  return r;
}

FieldNames Grpc(const std::string& prompt) {
  FieldNames n;
  n.prompt = prompt;
  n.options = "sampling.";
  return n;
}

struct Case {
  const char* name;
  std::function<void(EngineRequest*)> mutate;
  std::string engine_message;  // FieldNames{} (Engine::Submit, generate)
  std::string grpc_message;    // FieldNames{"token_ids", "sampling."}
};

TEST(ValidateRequestTest, GoodRequestAndEdgesPass) {
  EXPECT_TRUE(ValidateRequest(Good(), Config()).ok());
  EngineRequest r = Good();
  r.options.max_tokens = 125;  // 3 + 125 = the whole context
  r.options.min_tokens = 125;
  r.options.logprobs = kMaxLogprobs;
  r.options.stop.assign(kMaxStopStrings, std::string(kMaxStopStringBytes, 'x'));
  r.options.stop_token_ids.assign(kMaxStopTokenIds, 257);
  r.options.sampling.temperature = 0.0f;
  r.options.sampling.top_p = 1.0f;
  r.options.sampling.min_p = 1.0f;
  r.options.sampling.top_k = 100000;
  r.options.sampling.repetition_penalty = 10.0f;
  r.options.sampling.frequency_penalty = -2.0f;
  r.options.sampling.presence_penalty = 2.0f;
  EXPECT_TRUE(ValidateRequest(r, Config()).ok());
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams()).ok());
}

TEST(ValidateRequestTest, EveryRuleNamesTheFieldAndTheLimit) {
  const float nan = std::nanf("");
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {"empty prompt", [](EngineRequest* r) { r->prompt.clear(); },
       "prompt is empty (at least 1 token is required)",
       "token_ids is empty (at least 1 token is required)"},
      {"id over vocab", [](EngineRequest* r) { r->prompt.push_back(258); },
       "prompt[3] = 258 is outside the vocabulary [0, 258)",
       "token_ids[3] = 258 is outside the vocabulary [0, 258)"},
      {"negative id", [](EngineRequest* r) { r->prompt[0] = -1; },
       "prompt[0] = -1 is outside the vocabulary [0, 258)",
       "token_ids[0] = -1 is outside the vocabulary [0, 258)"},
      {"max_tokens 0", [](EngineRequest* r) { r->options.max_tokens = 0; },
       "max_tokens must be in [1, 128] (the model's max_seqlen), got 0",
       "sampling.max_tokens must be in [1, 128] (the model's max_seqlen), got 0"},
      {"max_tokens over max_seqlen", [](EngineRequest* r) { r->options.max_tokens = 129; },
       "max_tokens must be in [1, 128] (the model's max_seqlen), got 129",
       "sampling.max_tokens must be in [1, 128] (the model's max_seqlen), got 129"},
      {"prompt + max_tokens over context", [](EngineRequest* r) { r->options.max_tokens = 126; },
       "prompt (3 tokens) + max_tokens (126) exceeds the model's context of 128 tokens "
       "(max_seqlen)",
       "token_ids (3 tokens) + sampling.max_tokens (126) exceeds the model's context of 128 "
       "tokens (max_seqlen)"},
      {"min_tokens over max_tokens", [](EngineRequest* r) { r->options.min_tokens = 9; },
       "min_tokens must be in [0, max_tokens = 8], got 9",
       "sampling.min_tokens must be in [0, max_tokens = 8], got 9"},
      {"negative min_tokens", [](EngineRequest* r) { r->options.min_tokens = -1; },
       "min_tokens must be in [0, max_tokens = 8], got -1",
       "sampling.min_tokens must be in [0, max_tokens = 8], got -1"},
      {"logprobs", [](EngineRequest* r) { r->options.logprobs = 21; },
       "logprobs must be in [0, 20], got 21", "sampling.logprobs must be in [0, 20], got 21"},
      {"too many stop strings", [](EngineRequest* r) { r->options.stop.assign(65, "x"); },
       "stop has 65 strings; the limit is 64", "sampling.stop has 65 strings; the limit is 64"},
      {"empty stop string",
       [](EngineRequest* r) {
         r->options.stop = {"a", ""};
       },
       "stop[1] is 0 bytes; it must be 1 to 256",
       "sampling.stop[1] is 0 bytes; it must be 1 to 256"},
      {"long stop string", [](EngineRequest* r) { r->options.stop = {std::string(257, 'x')}; },
       "stop[0] is 257 bytes; it must be 1 to 256",
       "sampling.stop[0] is 257 bytes; it must be 1 to 256"},
      {"stop string not UTF-8",
       [](EngineRequest* r) {
         r->options.stop = {"ok", "\xff"};
       },
       "stop[1] is not valid UTF-8", "sampling.stop[1] is not valid UTF-8"},
      {"too many stop tokens", [](EngineRequest* r) { r->options.stop_token_ids.assign(65, 1); },
       "stop_token_ids has 65 ids; the limit is 64",
       "sampling.stop_token_ids has 65 ids; the limit is 64"},
      {"stop token over vocab",
       [](EngineRequest* r) {
         r->options.stop_token_ids = {1, 258};
       },
       "stop_token_ids[1] = 258 is outside the vocabulary [0, 258)",
       "sampling.stop_token_ids[1] = 258 is outside the vocabulary [0, 258)"},
      {"negative temperature", [](EngineRequest* r) { r->options.sampling.temperature = -0.5f; },
       "temperature must be in [0, inf) (0 = greedy), got -0.5",
       "sampling.temperature must be in [0, inf) (0 = greedy), got -0.5"},
      {"infinite temperature", [=](EngineRequest* r) { r->options.sampling.temperature = inf; },
       "temperature must be in [0, inf) (0 = greedy), got inf",
       "sampling.temperature must be in [0, inf) (0 = greedy), got inf"},
      {"NaN temperature", [=](EngineRequest* r) { r->options.sampling.temperature = nan; },
       "temperature must be in [0, inf) (0 = greedy), got nan",
       "sampling.temperature must be in [0, inf) (0 = greedy), got nan"},
      {"top_k", [](EngineRequest* r) { r->options.sampling.top_k = -1; },
       "top_k must be >= 0 (0 = off), got -1", "sampling.top_k must be >= 0 (0 = off), got -1"},
      {"top_p 0", [](EngineRequest* r) { r->options.sampling.top_p = 0.0f; },
       "top_p must be in (0, 1], got 0", "sampling.top_p must be in (0, 1], got 0"},
      {"top_p over 1", [](EngineRequest* r) { r->options.sampling.top_p = 1.5f; },
       "top_p must be in (0, 1], got 1.5", "sampling.top_p must be in (0, 1], got 1.5"},
      {"top_p NaN", [=](EngineRequest* r) { r->options.sampling.top_p = nan; },
       "top_p must be in (0, 1], got nan", "sampling.top_p must be in (0, 1], got nan"},
      {"min_p", [](EngineRequest* r) { r->options.sampling.min_p = 1.01f; },
       "min_p must be in [0, 1], got 1.01", "sampling.min_p must be in [0, 1], got 1.01"},
      {"negative min_p", [](EngineRequest* r) { r->options.sampling.min_p = -0.5f; },
       "min_p must be in [0, 1], got -0.5", "sampling.min_p must be in [0, 1], got -0.5"},
      {"repetition_penalty 0",
       [](EngineRequest* r) { r->options.sampling.repetition_penalty = 0.0f; },
       "repetition_penalty must be in (0, 10] (1 = off), got 0",
       "sampling.repetition_penalty must be in (0, 10] (1 = off), got 0"},
      {"repetition_penalty 11",
       [](EngineRequest* r) { r->options.sampling.repetition_penalty = 11.0f; },
       "repetition_penalty must be in (0, 10] (1 = off), got 11",
       "sampling.repetition_penalty must be in (0, 10] (1 = off), got 11"},
      {"frequency_penalty", [](EngineRequest* r) { r->options.sampling.frequency_penalty = 2.5f; },
       "frequency_penalty must be in [-2, 2], got 2.5",
       "sampling.frequency_penalty must be in [-2, 2], got 2.5"},
      {"presence_penalty", [](EngineRequest* r) { r->options.sampling.presence_penalty = -3.0f; },
       "presence_penalty must be in [-2, 2], got -3",
       "sampling.presence_penalty must be in [-2, 2], got -3"},
      {"presence_penalty NaN",
       [=](EngineRequest* r) { r->options.sampling.presence_penalty = nan; },
       "presence_penalty must be in [-2, 2], got nan",
       "sampling.presence_penalty must be in [-2, 2], got nan"},
  };
  for (const Case& c : cases) {
    EngineRequest r = Good();
    c.mutate(&r);
    const absl::Status engine = ValidateRequest(r, Config());
    EXPECT_EQ(engine.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_EQ(engine.message(), c.engine_message) << c.name;
    const absl::Status grpc = ValidateRequest(r, Config(), Grpc("token_ids"));
    EXPECT_EQ(grpc.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_EQ(grpc.message(), c.grpc_message) << c.name;
  }
}

TEST(ValidateRequestTest, PromptText) {
  EXPECT_TRUE(ValidatePromptText("text", "hi").ok());
  EXPECT_EQ(ValidatePromptText("text", "").message(), "text is empty");
  EXPECT_EQ(ValidatePromptText("prompt", "ab\xff").message(), "prompt is not valid UTF-8");
  const std::string big(kMaxPromptBytes + 1, 'a');
  EXPECT_EQ(ValidatePromptText("text", big).message(),
            "text is 4194305 bytes; the limit is 4194304 (max_prompt_bytes)");
  // Tokenize takes any text up to the limit, the empty one too.
  EXPECT_TRUE(ValidateTextBytes("text", "").ok());
  EXPECT_EQ(ValidateTextBytes("text", big).message(),
            "text is 4194305 bytes; the limit is 4194304 (max_prompt_bytes)");
}

TEST(ValidateRequestTest, RequestId) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId("req-42_ok").ok());
  EXPECT_EQ(ValidateRequestId(std::string(129, 'a')).message(),
            "request_id is 129 bytes; the limit is 128");
  EXPECT_EQ(ValidateRequestId("a b").message(),
            "request_id must be printable ASCII without spaces; byte 1 is 0x20");
  EXPECT_EQ(ValidateRequestId("\x7f").message(),
            "request_id must be printable ASCII without spaces; byte 0 is 0x7f");
}

TEST(ValidateRequestTest, GenerateOptionsCheckTextOrIds) {
  GenerateOptions o;
  o.max_tokens = 8;
  EXPECT_EQ(ValidateGenerateOptions(o, Config()).message(), "prompt is empty");
  o.prompt = "hello";
  EXPECT_TRUE(ValidateGenerateOptions(o, Config()).ok());
  o.prompt_ids = {1, 300};
  EXPECT_EQ(ValidateGenerateOptions(o, Config()).message(),
            "prompt_ids[1] = 300 is outside the vocabulary [0, 258)");
  o.prompt_ids.assign(121, 1);
  EXPECT_EQ(ValidateGenerateOptions(o, Config()).message(),
            "prompt_ids (121 tokens) + max_tokens (8) exceeds the model's context of 128 tokens "
            "(max_seqlen)");
}

TEST(ValidateRequestTest, ResolveMaxTokens) {
  const ModelConfig c = Config();
  EXPECT_EQ(*ResolveMaxTokens(std::nullopt, 3, 256, c), 125);  // the context left
  EXPECT_EQ(*ResolveMaxTokens(std::nullopt, 3, 16, c), 16);    // the default
  EXPECT_EQ(*ResolveMaxTokens(50, 3, 16, c), 50);              // as requested
  EXPECT_EQ(*ResolveMaxTokens(std::nullopt, 127, 16, c), 1);
  EXPECT_EQ(ResolveMaxTokens(std::nullopt, 128, 16, c, Grpc("text")).status().message(),
            "text: the prompt is 128 tokens; the model's context (max_seqlen) is 128 tokens, "
            "which leaves no room to generate");
}

}  // namespace
}  // namespace memserve
