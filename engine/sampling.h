// Sampling: turns one position's logits into the next token id, as a chain
// of small stages (penalties, temperature, top-k, top-p, min-p, pick) with a
// per-request RNG; plus log-probabilities for the API.
#ifndef MEMSERVE_ENGINE_SAMPLING_H_
#define MEMSERVE_ENGINE_SAMPLING_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace memserve {

struct SamplingParams {
  // Logits are divided by temperature; 0 = greedy (argmax, ties -> lowest id).
  float temperature = 1.0f;
  // Keep the k most likely tokens; 0 = off.
  int top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches
  // top_p (at least one token); 1 = off.
  float top_p = 1.0f;
  // Drop tokens whose probability is below min_p * (the top token's); 0 = off.
  float min_p = 0.0f;
  // CTRL-style penalty on tokens already in the sequence (prompt included):
  // a positive logit is divided by it, a negative one multiplied; 1 = off.
  float repetition_penalty = 1.0f;
  // OpenAI-style: logit -= frequency_penalty * count + presence_penalty * (count > 0),
  // counting occurrences in the sequence so far; 0 = off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // With has_seed, the same seed and logits give the same tokens; without,
  // the RNG is seeded from std::random_device.
  uint64_t seed = 0;
  bool has_seed = false;

  // Limits, checked by ValidateSamplingParams (engine/request/validate.h).
  static constexpr float kMaxRepetitionPenalty = 10.0f;
  static constexpr float kMaxAbsFrequencyPenalty = 2.0f;
  static constexpr float kMaxAbsPresencePenalty = 2.0f;
};

// One request's sampler. Owns its RNG, so its draws do not depend on other
// requests. Not thread-safe (one request at a time); cheap to create.
class Sampler {
 public:
  // REQUIRES: ValidateSamplingParams(params).ok().
  explicit Sampler(const SamplingParams& params);

  // The next token for `logits` ([vocab]), given the sequence so far
  // (`previous_tokens`, used only by the penalties; ids outside the vocab are
  // ignored). Stages, in order: penalties, temperature, top-k, top-p, min-p,
  // then a draw from the renormalized remaining probabilities. NaN logits
  // count as -inf. Ties between equal logits are broken by the lower id.
  // REQUIRES: !logits.empty().
  int Sample(absl::Span<const float> logits, absl::Span<const int> previous_tokens);

  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    int id;
    float logit;
  };
  void ApplyPenalties(absl::Span<const int> previous_tokens);
  double Uniform();  // [0, 1), 53 random bits

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;            // [vocab] logits after penalties
  std::vector<Candidate> candidates_;  // surviving tokens
  std::vector<float> probs_;           // unnormalized, aligned with candidates_
  std::vector<int> counts_;            // [vocab] occurrences (penalties only)
};

// Log-probabilities of one position: log_softmax of the RAW model logits,
// before penalties, temperature and truncation, so that they describe the
// model, not the sampling settings (the OpenAI API convention).
struct TokenLogprobs {
  float chosen = 0.0f;                     // logprob of the chosen token
  std::vector<std::pair<int, float>> top;  // k best (id, logprob), best first, ties -> lower id
};

// REQUIRES: !logits.empty(), 0 <= chosen < logits.size(), k >= 0 (clamped to
// the vocabulary size).
TokenLogprobs ComputeLogprobs(absl::Span<const float> logits, int chosen, int k);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_SAMPLING_H_
