// The one place where a generation request is validated. The gRPC server
// (server/api/request_convert.cc), Engine::Submit, Generate and `memserve
// generate` all check requests here, so a rule and its message exist once.
//
// Every error is InvalidArgument with one line that starts with the field's
// name as the caller spells it (FieldNames) and states the limit, e.g.
//   "sampling.top_p must be in (0, 1], got 0"
//   "token_ids[3] = 300 is outside the vocabulary [0, 258)"
//   "text (120 tokens) + sampling.max_tokens (20) exceeds the model's context
//    of 128 tokens (max_seqlen)"
#ifndef MEMSERVE_ENGINE_REQUEST_VALIDATE_H_
#define MEMSERVE_ENGINE_REQUEST_VALIDATE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/config.h"
#include "engine/request/request.h"
#include "engine/sampling.h"

namespace memserve {

// How a caller names the request's fields in messages.
struct FieldNames {
  // The prompt: "prompt" (engine, CLI), "prompt_ids", "text", "token_ids",
  // "messages (rendered)" (gRPC).
  std::string prompt = "prompt";
  // Put before every option field: "" (engine, CLI) or "sampling." (gRPC).
  std::string options;
};

// request_id: empty, or at most kMaxRequestIdBytes printable ASCII bytes
// without spaces (0x21-0x7e).
absl::Status ValidateRequestId(absl::string_view id);

// Text to be tokenized as a prompt: non-empty, at most kMaxPromptBytes,
// valid UTF-8.
absl::Status ValidatePromptText(absl::string_view field, absl::string_view text);

// Text for the Tokenize call: at most kMaxPromptBytes (may be empty).
absl::Status ValidateTextBytes(absl::string_view field, absl::string_view text);

// Every id in [0, vocab_size) ("field[i] = id is outside the vocabulary").
absl::Status ValidateTokenIds(absl::string_view field, absl::Span<const int> ids, int vocab_size);

// The sampling parameters: temperature finite and >= 0, top_k >= 0, top_p in
// (0, 1], min_p in [0, 1], repetition_penalty in (0, 10], frequency_penalty
// and presence_penalty in [-2, 2]. Messages start with `prefix` + the field.
absl::Status ValidateSamplingParams(const SamplingParams& params, absl::string_view prefix = "");

// Everything but the prompt against the model's limits: max_tokens in
// [1, max_seqlen], min_tokens in [0, max_tokens], logprobs, stop strings
// (count, bytes, UTF-8), stop_token_ids (count, vocabulary), then the
// sampling parameters. Messages start with `prefix` + the field.
absl::Status ValidateOptions(const GenerateOptions& options, const ModelConfig& config,
                             absl::string_view prefix = "");

// A tokenized prompt: non-empty, every id in the vocabulary, and prompt +
// max_tokens within max_seqlen.
absl::Status ValidatePromptTokens(absl::Span<const int> prompt, int max_tokens,
                                  const ModelConfig& config, const FieldNames& names = {});

// A whole engine request: the prompt tokens (empty, vocabulary), the
// options, then prompt + max_tokens against the context.
absl::Status ValidateRequest(const EngineRequest& request, const ModelConfig& config,
                             const FieldNames& names = {});

// A Generate request before tokenization: the prompt text (or prompt_ids,
// named "prompt_ids"), then the options (and for ids, the context).
absl::Status ValidateGenerateOptions(const GenerateOptions& options, const ModelConfig& config);

// max_tokens for a prompt of `prompt_tokens`: `requested` when set, else
// min(default_max_tokens, the context left). Fails when the prompt leaves
// no room to generate (prompt_tokens >= max_seqlen), naming names.prompt.
absl::StatusOr<int> ResolveMaxTokens(std::optional<int> requested, int prompt_tokens,
                                     int default_max_tokens, const ModelConfig& config,
                                     const FieldNames& names = {});

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_REQUEST_VALIDATE_H_
