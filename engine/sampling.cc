#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace memserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float Sanitize(float v) { return std::isnan(v) ? kNegInf : v; }

// (logit desc, id asc).
template <typename C>
bool Better(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Tokens sorted before a full sort is tried for top-p: usually the nucleus
// is much smaller than the vocabulary.
constexpr size_t kTopPPartialSort = 256;

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  if (params_.has_seed) {
    rng_.seed(params_.seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

void Sampler::ApplyPenalties(absl::Span<const int> previous_tokens) {
  const bool repetition = params_.repetition_penalty != 1.0f;
  const bool additive = params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f;
  if ((!repetition && !additive) || previous_tokens.empty()) return;
  const int vocab = static_cast<int>(work_.size());
  counts_.assign(vocab, 0);
  for (int id : previous_tokens) {
    if (id >= 0 && id < vocab) ++counts_[id];
  }
  for (int id = 0; id < vocab; ++id) {
    const int n = counts_[id];
    if (n == 0) continue;
    float& l = work_[id];
    if (repetition) l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    l -= params_.frequency_penalty * static_cast<float>(n) + params_.presence_penalty;
  }
}

int Sampler::Sample(absl::Span<const float> logits, absl::Span<const int> previous_tokens) {
  const int vocab = static_cast<int>(logits.size());
  // Stage 1: penalties.
  work_.resize(vocab);
  for (int i = 0; i < vocab; ++i) work_[i] = Sanitize(logits[i]);
  ApplyPenalties(previous_tokens);

  // Greedy: argmax, the lowest id among equals.
  if (params_.temperature == 0.0f) {
    int best = 0;
    for (int i = 1; i < vocab; ++i) {
      if (work_[i] > work_[best]) best = i;
    }
    return best;
  }

  // Stage 3: top-k (sorted, best first). Without top-k the candidates stay in
  // id order until top-p needs them sorted.
  candidates_.resize(vocab);
  for (int i = 0; i < vocab; ++i) candidates_[i] = {i, work_[i]};
  auto better = [](const Candidate& a, const Candidate& b) { return Better(a, b); };
  bool sorted = false;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    std::nth_element(candidates_.begin(), candidates_.begin() + (params_.top_k - 1),
                     candidates_.end(), better);
    candidates_.resize(params_.top_k);
    std::sort(candidates_.begin(), candidates_.end(), better);
    sorted = true;
  }

  // Stage 2 (applied here, order-independent): temperature. probs_ are
  // exp((logit - max) / T): the best token has 1, nothing overflows.
  float max_logit = kNegInf;
  for (const Candidate& c : candidates_) max_logit = std::max(max_logit, c.logit);
  if (max_logit == kNegInf) {
    // Every logit is -inf (or NaN): fall back to the lowest id among them.
    int best = candidates_[0].id;
    for (const Candidate& c : candidates_) best = std::min(best, c.id);
    return best;
  }
  const double inv_t = 1.0 / params_.temperature;
  auto fill_probs = [&]() {
    probs_.resize(candidates_.size());
    double total = 0.0;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      probs_[i] = static_cast<float>(
          std::exp((static_cast<double>(candidates_[i].logit) - max_logit) * inv_t));
      total += probs_[i];
    }
    return total;
  };
  double total = fill_probs();

  // Stage 4: top-p over the sorted candidates.
  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * total;
    if (!sorted) {
      // Sort a prefix first; fall back to a full sort if the nucleus is larger.
      const size_t prefix = std::min(candidates_.size(), kTopPPartialSort);
      std::partial_sort(candidates_.begin(), candidates_.begin() + prefix, candidates_.end(),
                        better);
      double mass = 0.0;
      for (size_t i = 0; i < prefix; ++i) {
        mass += std::exp((static_cast<double>(candidates_[i].logit) - max_logit) * inv_t);
      }
      if (mass < target) {
        std::sort(candidates_.begin(), candidates_.end(), better);
      } else {
        candidates_.resize(prefix);
      }
      sorted = true;
      fill_probs();  // realigned with the reordered candidates; total unchanged
    }
    double cum = 0.0;
    size_t keep = 0;
    while (keep < candidates_.size()) {
      cum += probs_[keep];
      ++keep;
      if (cum >= target) break;
    }
    candidates_.resize(keep);
    probs_.resize(keep);
    total = cum;
  }

  // Stage 5: min-p, relative to the best token's probability (1 here).
  if (params_.min_p > 0.0f) {
    size_t out = 0;
    double kept = 0.0;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (probs_[i] >= params_.min_p) {
        candidates_[out] = candidates_[i];
        probs_[out] = probs_[i];
        kept += probs_[i];
        ++out;
      }
    }
    candidates_.resize(out);  // never empty: the best token has probability 1
    probs_.resize(out);
    total = kept;
  }

  // Stage 6: pick.
  const double u = Uniform() * total;
  double cum = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cum += probs_[i];
    if (u < cum) return candidates_[i].id;
  }
  // Rounding left u at the very end: the last candidate with nonzero weight.
  for (size_t i = candidates_.size(); i-- > 0;) {
    if (probs_[i] > 0.0f) return candidates_[i].id;
  }
  return candidates_.back().id;
}

TokenLogprobs ComputeLogprobs(absl::Span<const float> logits, int chosen, int k) {
  const int vocab = static_cast<int>(logits.size());
  float max_logit = kNegInf;
  for (float v : logits) max_logit = std::max(max_logit, Sanitize(v));
  // Every logit -inf (or NaN): a uniform distribution.
  const bool degenerate = max_logit == kNegInf;
  double sum = 0.0;
  if (!degenerate) {
    for (float v : logits) sum += std::exp(static_cast<double>(Sanitize(v)) - max_logit);
  }
  const double log_z = static_cast<double>(max_logit) + std::log(sum);
  auto logprob = [&](int id) {
    if (degenerate) return static_cast<float>(-std::log(static_cast<double>(vocab)));
    return static_cast<float>(static_cast<double>(Sanitize(logits[id])) - log_z);
  };
  TokenLogprobs out;
  out.chosen = logprob(chosen);
  k = std::max(0, std::min(k, vocab));
  if (k == 0) return out;
  struct Entry {
    int id;
    float logit;
  };
  std::vector<Entry> entries(vocab);
  for (int i = 0; i < vocab; ++i) entries[i] = {i, Sanitize(logits[i])};
  std::partial_sort(entries.begin(), entries.begin() + k, entries.end(),
                    [](const Entry& a, const Entry& b) { return Better(a, b); });
  out.top.reserve(k);
  for (int i = 0; i < k; ++i) out.top.emplace_back(entries[i].id, logprob(entries[i].id));
  return out;
}

}  // namespace memserve
