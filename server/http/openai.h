// The OpenAI-compatible request and response formats of the HTTP API
// (docs/api.md, "HTTP API"), as pure functions over JSON text: no sockets,
// no engine. A request body becomes the memserve.v1 proto message the gRPC
// API takes (GenerateRequest for /v1/completions, ChatRequest for
// /v1/chat/completions), so both transports then share one conversion and
// one validation (server/api/). Responses follow OpenAI's shapes (and vLLM's
// `stop_reason`): `text_completion` / `chat.completion` objects, their
// streamed chunks as server-sent events, and errors as
//   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}.
#ifndef MEMSERVE_SERVER_HTTP_OPENAI_H_
#define MEMSERVE_SERVER_HTTP_OPENAI_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/generate.h"
#include "engine/tokenizer.h"
#include "memserve/v1/memserve.pb.h"
#include "nlohmann/json.hpp"

namespace memserve {

enum class Endpoint { kCompletions, kChatCompletions };

// "/v1/completions" or "/v1/chat/completions" (also the method in logs).
const char* EndpointPath(Endpoint endpoint);

// A parsed request body.
struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  v1::GenerateRequest generate;  // kCompletions: prompt and sampling
  v1::ChatRequest chat;          // kChatCompletions: messages and sampling
  std::string model;             // "" when absent or null
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // Log-probabilities in the response: /v1/completions `logprobs` (an
  // integer, the alternatives per token) present, or /v1/chat/completions
  // `logprobs: true` (`top_logprobs` alternatives).
  bool logprobs = false;
};

// Parses and checks `body` for `endpoint`. Accepted fields (null = absent):
//   both: model, stream, stream_options {include_usage}, max_tokens,
//         temperature, top_p, top_k (-1 = off, as vLLM), min_p, seed (>= 0),
//         stop (a string or an array), stop_token_ids, presence_penalty,
//         frequency_penalty, repetition_penalty, min_tokens, ignore_eos,
//         include_stop_str_in_output, n (1 only), user (ignored),
//         logit_bias (empty only)
//   /v1/completions: prompt (a string, an array of token ids, or a
//         one-element array of either), logprobs (int), best_of (1 only),
//         echo (false only), suffix (empty only)
//   /v1/chat/completions: messages [{role, content, name}] (content a
//         string, null or an array of {"type": "text", "text"} parts; role
//         "developer" is "system"), max_completion_tokens (wins over
//         max_tokens), logprobs (bool), top_logprobs (int, needs logprobs),
//         response_format ({"type": "text"} only), tools / functions (empty
//         only), tool_choice ("none" only), parallel_tool_calls (ignored)
// Errors: InvalidArgument naming the field: malformed JSON (with the
// position), a body that is not an object, an unknown field, a wrong type,
// a value this server cannot honour (n > 1, tools, ...). Range rules are not
// checked here but by the shared validation (server/api/request_convert.h).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, absl::string_view body);

// `status` as an OpenAI-shaped error body. The type comes from the shared
// table (server/api/errors.h); `param` is the request field the message
// starts with when that is a field of the HTTP API (every validation message
// starts with its field), else null; `code` is `code` or null.
std::string ErrorBody(const absl::Status& status, const char* code = nullptr);
// The same error as a server-sent event (a stream that fails after it
// started), followed by "data: [DONE]".
std::string ErrorEvents(const absl::Status& status);

// A status rephrased for the endpoint: the shared validation names chat's
// `top_logprobs` "logprobs".
absl::Status RenameFields(Endpoint endpoint, const absl::Status& status);

// Builds one request's responses: the streamed chunks or the whole body.
// Not thread-safe (one per request).
class OpenAiResponse {
 public:
  // `id` is the response id ("cmpl-..." / "chatcmpl-..." from the request
  // id), `created` Unix seconds, `model` the served name. REQUIRES: the
  // tokenizer outlives this object.
  OpenAiResponse(const OpenAiRequest& request, const std::string& request_id, int64_t created,
                 std::string model, const Tokenizer* tokenizer);

  const std::string& id() const { return id_; }

  // Streaming: one "data: {chunk}\n\n" event per generated token, its text
  // the token's released text (possibly empty); the first chat chunk also
  // carries role "assistant".
  std::string TokenChunk(const TokenEvent& token);
  // Streaming: the events after the last token: a chunk with the held-back
  // trailing text, finish_reason and stop_reason; with include_usage a chunk
  // with empty choices and the usage; then "data: [DONE]\n\n".
  std::string FinalChunks(const GenerateResult& result);

  // Non-streaming: collects a token for Body.
  void Add(const TokenEvent& token);
  // Non-streaming: the whole response object.
  std::string Body(const GenerateResult& result) const;

 private:
  nlohmann::json Chunk() const;  // id, object, created, model (+ usage null)
  nlohmann::json TokenLogprobs(const TokenEvent& token, int text_offset) const;
  nlohmann::json Usage(const GenerateResult& result) const;

  const Endpoint endpoint_;
  const bool include_usage_;
  const bool logprobs_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const Tokenizer* const tokenizer_;
  bool first_chunk_ = true;
  int text_offset_ = 0;                  // characters of token strings so far
  std::vector<nlohmann::json> entries_;  // Add: logprob entries, one per token
  std::string text_;                     // Add: released text
};

// Serializes as compact JSON; invalid UTF-8 (a token that is part of a
// character) becomes U+FFFD.
std::string DumpJson(const nlohmann::json& value);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_HTTP_OPENAI_H_
