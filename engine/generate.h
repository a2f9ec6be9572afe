// Generate: one request, start to finish, on one model (no batching). The
// CLI's `memserve generate` runs on it; the batched engine reuses its pieces
// (stop handling, event shape). Requests are validated by
// engine/request/validate.h.
#ifndef MEMSERVE_ENGINE_GENERATE_H_
#define MEMSERVE_ENGINE_GENERATE_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/request/request.h"
#include "engine/request/validate.h"
#include "engine/sampling.h"
#include "engine/stop_strings.h"
#include "engine/tokenizer.h"

namespace memserve {

struct TokenLogprob {
  int id = 0;
  float logprob = 0.f;
};

// One generated token. `text` is the newly released text: whole UTF-8
// characters, minus anything held back as a possible stop-string start (it
// may be empty and released with a later token or at the end).
struct TokenEvent {
  int id = 0;
  std::string text;
  float logprob = 0.f;            // log_softmax of the raw logits
  std::vector<TokenLogprob> top;  // `logprobs` best alternatives, best first
};

enum class FinishReason { kLength, kEos, kStop };
const char* FinishReasonName(FinishReason r);  // "length", "eos", "stop"

struct GenerateResult {
  FinishReason finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  int completion_tokens = 0;  // includes the EOS token when one ended generation
  std::string trailing_text;  // text released only at the end (held-back tail)
  std::string text;           // all released text, trailing_text included
  std::string stop_string;    // kStop by a stop string: the one that matched
  int stop_token_id = -1;     // kStop by a stop token: its id; else -1
};

// The per-request half of generation, shared by Generate and the batched
// engine: samples each next token from the logits the model produced for the
// sequence, turns it into a TokenEvent (UTF-8-safe text, stop-string
// holdback, logprobs) and decides when the request ends (EOS, stop string,
// stop token, max_tokens). Owns the request's RNG, so its tokens depend only
// on its own logits. Not thread-safe.
class RequestDecoder {
 public:
  // REQUIRES: ValidateGenerateOptions(options).ok(), !prompt.empty().
  RequestDecoder(const Tokenizer& tokenizer, const GenerateOptions& options,
                 std::vector<int> prompt);

  // Samples and processes the next token from `logits` ([vocab]).
  // REQUIRES: !done().
  TokenEvent Next(absl::Span<const float> logits);

  bool done() const { return done_; }
  // The prompt followed by every generated token.
  const std::vector<int>& tokens() const { return tokens_; }
  int prompt_tokens() const { return prompt_tokens_; }
  int completion_tokens() const { return result_.completion_tokens; }

  // The outcome once done(): flushes held-back text into trailing_text.
  // Call once.
  GenerateResult Finish();

 private:
  const Tokenizer& tokenizer_;
  GenerateOptions options_;
  Sampler sampler_;
  IncrementalDecoder decoder_;
  StopStringMatcher stops_;
  std::vector<int> tokens_;
  int prompt_tokens_;
  std::vector<float> masked_;  // logits with EOS/stop tokens masked (min_tokens)
  GenerateResult result_;
  bool done_ = false;
};

// Tokenizes (if needed), prefills, then decodes until EOS, a stop string or
// max_tokens; calls `on_token` once per generated token, in order, on the
// calling thread.
absl::StatusOr<GenerateResult> Generate(Model& model, const Tokenizer& tokenizer,
                                        const GenerateOptions& options,
                                        const std::function<void(const TokenEvent&)>& on_token);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_GENERATE_H_
