// Generate: one request, start to finish, on one model (no batching). The
// CLI's `memserve generate` runs on it; the batched engine reuses its pieces
// (validation, stop handling, event shape).
#ifndef MEMSERVE_ENGINE_GENERATE_H_
#define MEMSERVE_ENGINE_GENERATE_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace memserve {

// Request limits that are not model properties.
inline constexpr int kMaxStopStrings = 64;
inline constexpr int kMaxStopStringBytes = 256;
inline constexpr int kMaxLogprobs = 20;
inline constexpr size_t kMaxPromptBytes = 4 << 20;

struct GenerateOptions {
  std::string prompt;           // UTF-8 text; encoded with BOS. Ignored when
  std::vector<int> prompt_ids;  // prompt_ids is non-empty (used as is, no BOS added)
  SamplingParams sampling;
  int max_tokens = 128;              // >= 1; prompt + max_tokens <= max_seqlen
  std::vector<std::string> stop;     // stop strings; output is cut before the match
  bool include_stop_str = false;
  bool ignore_eos = false;
  int logprobs = 0;                  // top-n alternatives per token, 0..kMaxLogprobs
};

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
  float logprob = 0.f;              // log_softmax of the raw logits
  std::vector<TokenLogprob> top;    // `logprobs` best alternatives, best first
};

enum class FinishReason { kLength, kEos, kStop };
const char* FinishReasonName(FinishReason r);  // "length", "eos", "stop"

struct GenerateResult {
  FinishReason finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  int completion_tokens = 0;   // includes the EOS token when one ended generation
  std::string trailing_text;   // text released only at the end (held-back tail)
  std::string text;            // all released text, trailing_text included
};

// Checks the request against the model's limits before any work. Errors are
// InvalidArgument naming the field and the limit.
absl::Status ValidateGenerateOptions(const GenerateOptions& options, const ModelConfig& config);

// Tokenizes (if needed), prefills, then decodes until EOS, a stop string or
// max_tokens; calls `on_token` once per generated token, in order, on the
// calling thread.
absl::StatusOr<GenerateResult> Generate(Model& model, const Tokenizer& tokenizer,
                                        const GenerateOptions& options,
                                        const std::function<void(const TokenEvent&)>& on_token);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_GENERATE_H_
