// Request types: what a caller asks the engine to generate (GenerateOptions,
// EngineRequest) and the limits a request must keep that are not model
// properties. The rules themselves are checked in one place:
// engine/request/validate.h.
#ifndef MEMSERVE_ENGINE_REQUEST_REQUEST_H_
#define MEMSERVE_ENGINE_REQUEST_REQUEST_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/sampling.h"

namespace memserve {

// Request limits that are not model properties (ModelInfo.limits).
inline constexpr int kMaxStopStrings = 64;
inline constexpr int kMaxStopStringBytes = 256;
inline constexpr int kMaxLogprobs = 20;
inline constexpr int kMaxStopTokenIds = 64;
inline constexpr size_t kMaxPromptBytes = 4 << 20;
inline constexpr size_t kMaxRequestIdBytes = 128;
// max_tokens of a request that leaves it unset, capped by the context left
// after the prompt: the server's --default_max_tokens default and
// `memserve generate`'s (docs/api.md).
inline constexpr int kDefaultMaxTokens = 256;

struct GenerateOptions {
  std::string prompt;           // UTF-8 text; encoded with BOS. Ignored when
  std::vector<int> prompt_ids;  // prompt_ids is non-empty (used as is, no BOS added)
  SamplingParams sampling;
  int max_tokens = 128;  // >= 1; prompt + max_tokens <= max_seqlen
  // Before this many tokens, EOS and stop tokens cannot be sampled and stop
  // strings are not matched (a stop string must lie wholly in the text of
  // later tokens). [0, max_tokens].
  int min_tokens = 0;
  std::vector<std::string> stop;    // stop strings; output is cut before the match
  std::vector<int> stop_token_ids;  // sampling one ends generation (kStop)
  bool include_stop_str = false;
  bool ignore_eos = false;
  int logprobs = 0;  // top-n alternatives per token, 0..kMaxLogprobs
};

// One generation request for the batched engine, already tokenized.
struct EngineRequest {
  std::string id;           // for logs; need not be unique
  std::vector<int> prompt;  // token ids, >= 1, each in the vocabulary
  GenerateOptions options;  // prompt / prompt_ids are ignored
  absl::Time deadline = absl::InfiniteFuture();
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_REQUEST_REQUEST_H_
