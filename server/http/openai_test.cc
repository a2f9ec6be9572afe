// The OpenAI request parsing and response shapes, without a server (the
// e2e tests in tests/e2e/http_test.py drive the real one).
#include "server/http/openai.h"

#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::unique_ptr<Tokenizer> BytesTokenizer() {
  TokenizerConfig cfg;
  cfg.kind = "bytes";
  cfg.bos_id = 256;
  cfg.eos_id = 257;
  auto t = Tokenizer::Create(cfg, "");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

// The message of the error parsing `body` fails with.
std::string ParseError(Endpoint endpoint, const std::string& body) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(endpoint, body);
  EXPECT_FALSE(r.ok()) << body;
  return std::string(r.status().message());
}

TEST(ParseOpenAiRequestTest, CompletionFieldsBecomeTheProto) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(
      Endpoint::kCompletions,
      R"({"model": "demo", "prompt": "Hi", "max_tokens": 5, "temperature": 0, "top_p": 0.5,
          "top_k": -1, "min_p": 0.1, "seed": 7, "stop": "\n", "presence_penalty": 0.5,
          "frequency_penalty": -0.5, "repetition_penalty": 1.2, "logprobs": 2, "n": 1,
          "stream": true, "stream_options": {"include_usage": true}, "user": "u",
          "ignore_eos": true, "min_tokens": 1, "stop_token_ids": [3]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "demo");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->generate.text(), "Hi");
  const v1::SamplingParams& s = r->generate.sampling();
  EXPECT_EQ(s.max_tokens(), 5);
  EXPECT_TRUE(s.has_temperature());
  EXPECT_EQ(s.temperature(), 0.0f);
  EXPECT_EQ(s.top_p(), 0.5f);
  EXPECT_EQ(s.top_k(), 0);  // -1 = off, as vLLM
  EXPECT_FLOAT_EQ(s.min_p(), 0.1f);
  EXPECT_EQ(s.seed(), 7u);
  ASSERT_EQ(s.stop_size(), 1);
  EXPECT_EQ(s.stop(0), "\n");
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.2f);
  EXPECT_EQ(s.logprobs(), 2);
  EXPECT_TRUE(s.ignore_eos());
  EXPECT_EQ(s.min_tokens(), 1);
  EXPECT_EQ(s.stop_token_ids(0), 3);
}

TEST(ParseOpenAiRequestTest, UnsetFieldsStayUnset) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(
      Endpoint::kCompletions, R"({"prompt": "Hi", "max_tokens": null, "temperature": null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->generate.sampling().has_max_tokens());
  EXPECT_FALSE(r->generate.sampling().has_temperature());
  EXPECT_FALSE(r->generate.sampling().has_seed());
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->logprobs);
}

TEST(ParseOpenAiRequestTest, PromptForms) {
  auto r = ParseOpenAiRequest(Endpoint::kCompletions, R"({"prompt": [256, 72, 105]})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->generate.has_token_ids());
  EXPECT_EQ(r->generate.token_ids().ids_size(), 3);
  r = ParseOpenAiRequest(Endpoint::kCompletions, R"({"prompt": ["Hi"]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.text(), "Hi");
  r = ParseOpenAiRequest(Endpoint::kCompletions, R"({"prompt": [[72, 105]]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.token_ids().ids_size(), 2);
  EXPECT_THAT(ParseError(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})"),
              HasSubstr("prompt holds 2 prompts"));
  EXPECT_THAT(ParseError(Endpoint::kCompletions, R"({"max_tokens": 3})"),
              StartsWith("prompt is required"));
  EXPECT_THAT(ParseError(Endpoint::kCompletions, R"({"prompt": 5})"),
              StartsWith("prompt must be a string"));
}

TEST(ParseOpenAiRequestTest, ChatMessages) {
  auto r = ParseOpenAiRequest(Endpoint::kChatCompletions,
                              R"({"messages": [{"role": "developer", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                    {"type": "text", "text": "there"}]},
                       {"role": "assistant", "content": null, "name": "bot"}],
          "max_tokens": 9, "max_completion_tokens": 4, "logprobs": true, "top_logprobs": 3,
          "response_format": {"type": "text"}, "tools": [], "tool_choice": "none"})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->chat.messages_size(), 3);
  EXPECT_EQ(r->chat.messages(0).role(), "system");
  EXPECT_EQ(r->chat.messages(1).content(), "Hi there");
  EXPECT_EQ(r->chat.messages(2).content(), "");
  EXPECT_EQ(r->chat.sampling().max_tokens(), 4);  // max_completion_tokens wins
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->chat.sampling().logprobs(), 3);
}

TEST(ParseOpenAiRequestTest, ErrorsNameTheField) {
  const Endpoint c = Endpoint::kCompletions;
  const Endpoint chat = Endpoint::kChatCompletions;
  EXPECT_THAT(ParseError(c, "{"), StartsWith("the request body is not valid JSON"));
  EXPECT_THAT(ParseError(c, "[1]"), StartsWith("the request body must be a JSON object"));
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "temprature": 1})"),
            "temprature: unrecognized request field for /v1/completions");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "temperature": "hot"})"),
            "temperature must be a number, got a string");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "max_tokens": 1.5})"),
            "max_tokens must be an integer, got a non-integer number");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "max_tokens": 1e12})"),
            "max_tokens is out of range, got 1000000000000");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "n": 2})"),
            "n must be 1 (one choice per request), got 2");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "seed": -1})"), "seed must be >= 0, got -1");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "stop": [1]})"),
            "stop[0] must be a string, got a number");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "echo": true})"),
            "echo: true is not supported by this server");
  EXPECT_EQ(ParseError(c, R"({"prompt": "x", "stream_options": {"include_usage": true}})"),
            "stream_options is only allowed when stream is true");
  EXPECT_EQ(ParseError(chat, R"({"messages": [{"role": "user", "content": "x"}],
                                  "top_logprobs": 2})"),
            "top_logprobs requires logprobs to be true");
  EXPECT_EQ(
      ParseError(chat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
      "messages[0].content[0].type must be \"text\" (the only part this server takes)");
  EXPECT_EQ(ParseError(chat, R"({"messages": [{"content": "x"}]})"),
            "messages[0].role is required");
  EXPECT_EQ(ParseError(chat, R"({"messages": [], "tools": [{"type": "function"}]})"),
            "tools: tool calls are not supported by this server");
  EXPECT_EQ(ParseError(chat, R"({"prompt": "x", "messages": []})"),
            "prompt: unrecognized request field for /v1/chat/completions");
}

TEST(ErrorBodyTest, OpenAiShapeWithParam) {
  json e = json::parse(ErrorBody(absl::InvalidArgumentError("top_p must be in (0, 1], got 0")));
  EXPECT_EQ(e["error"]["message"], "top_p must be in (0, 1], got 0");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "top_p");
  EXPECT_TRUE(e["error"]["code"].is_null());
  e = json::parse(ErrorBody(absl::InvalidArgumentError("messages[2].role must be one of x")));
  EXPECT_EQ(e["error"]["param"], "messages[2].role");
  e = json::parse(ErrorBody(absl::ResourceExhaustedError("the queue is full"), "queue_full"));
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_EQ(e["error"]["code"], "queue_full");
  e = json::parse(ErrorBody(absl::UnavailableError("draining")));
  EXPECT_EQ(e["error"]["type"], "service_unavailable_error");
}

TEST(RenameFieldsTest, ChatTopLogprobs) {
  const absl::Status s = absl::InvalidArgumentError("logprobs must be in [0, 20], got 25");
  EXPECT_EQ(RenameFields(Endpoint::kChatCompletions, s).message(),
            "top_logprobs must be in [0, 20], got 25");
  EXPECT_EQ(RenameFields(Endpoint::kCompletions, s).message(), s.message());
}

// "data: {json}\n\n" events of `sse`, the JSON parsed ("[DONE]" kept as a string).
std::vector<json> Events(const std::string& sse) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << sse;
    if (end == std::string::npos) break;
    const std::string line = sse.substr(pos, end - pos);
    EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
    const std::string data = line.substr(6);
    out.push_back(data == "[DONE]" ? json(data) : json::parse(data));
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiResponseTest, ChatStreamChunks) {
  auto tokenizer = BytesTokenizer();
  OpenAiRequest request;
  request.endpoint = Endpoint::kChatCompletions;
  request.stream = true;
  request.include_usage = true;
  OpenAiResponse response(request, "r1", 1700000000, "demo", tokenizer.get());
  EXPECT_EQ(response.id(), "chatcmpl-r1");
  TokenEvent t;
  t.id = 'D';
  t.text = "D";
  std::vector<json> first = Events(response.TokenChunk(t));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(first[0]["created"], 1700000000);
  EXPECT_EQ(first[0]["model"], "demo");
  EXPECT_TRUE(first[0]["usage"].is_null());
  EXPECT_EQ(first[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first[0]["choices"][0]["delta"]["content"], "D");
  EXPECT_TRUE(first[0]["choices"][0]["finish_reason"].is_null());
  std::vector<json> second = Events(response.TokenChunk(t));
  EXPECT_FALSE(second[0]["choices"][0]["delta"].contains("role"));
  GenerateResult result;
  result.finish_reason = FinishReason::kStop;
  result.stop_string = ".";
  result.prompt_tokens = 4;
  result.completion_tokens = 2;
  std::vector<json> tail = Events(response.FinalChunks(result));
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(tail[0]["choices"][0]["stop_reason"], ".");
  EXPECT_EQ(tail[0]["choices"][0]["delta"], json::object());
  EXPECT_EQ(tail[1]["choices"], json::array());
  EXPECT_EQ(tail[1]["usage"]["total_tokens"], 6);
  EXPECT_EQ(tail[2], "[DONE]");
}

TEST(OpenAiResponseTest, CompletionBodyWithLogprobs) {
  auto tokenizer = BytesTokenizer();
  OpenAiRequest request;
  request.endpoint = Endpoint::kCompletions;
  request.logprobs = true;
  OpenAiResponse response(request, "r2", 1, "demo", tokenizer.get());
  TokenEvent a;
  a.id = 'A';
  a.text = "A";
  a.logprob = -0.5f;
  a.top = {{'A', -0.5f}, {'B', -1.5f}};
  TokenEvent eos;
  eos.id = 257;
  eos.logprob = -0.25f;
  response.Add(a);
  response.Add(eos);
  GenerateResult result;
  result.finish_reason = FinishReason::kEos;
  result.text = "A";
  result.prompt_tokens = 3;
  result.completion_tokens = 2;
  const json body = json::parse(response.Body(result));
  EXPECT_EQ(body["id"], "cmpl-r2");
  EXPECT_EQ(body["object"], "text_completion");
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["text"], "A");
  EXPECT_EQ(choice["finish_reason"], "stop");  // EOS is "stop" in OpenAI's terms
  EXPECT_TRUE(choice["stop_reason"].is_null());
  EXPECT_EQ(choice["logprobs"]["tokens"], json::array({"A", ""}));
  EXPECT_EQ(choice["logprobs"]["token_logprobs"][1], -0.25);
  EXPECT_EQ(choice["logprobs"]["top_logprobs"][0]["B"], -1.5);
  EXPECT_EQ(choice["logprobs"]["text_offset"], json::array({0, 1}));
  EXPECT_EQ(body["usage"],
            json({{"prompt_tokens", 3}, {"completion_tokens", 2}, {"total_tokens", 5}}));
}

TEST(OpenAiResponseTest, ChatLogprobsCarryBytesAndInvalidUtf8BecomesReplacement) {
  auto tokenizer = BytesTokenizer();
  OpenAiRequest request;
  request.endpoint = Endpoint::kChatCompletions;
  request.logprobs = true;
  OpenAiResponse response(request, "r3", 1, "demo", tokenizer.get());
  TokenEvent t;
  t.id = 0xE6;  // the first byte of a 3-byte character: no text yet
  t.logprob = -1.0f;
  const json chunk = json::parse(Events(response.TokenChunk(t))[0].dump());
  const json& entry = chunk["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], "\xef\xbf\xbd");  // U+FFFD
  EXPECT_EQ(entry["bytes"], json::array({0xE6}));
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "");
}

}  // namespace
}  // namespace memserve
