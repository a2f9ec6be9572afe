// The ordering and top-k merge logic of the product-key memory selection
// (kernels/memory_select.h), as __host__ __device__ functions: the CUDA
// kernel runs them on the device, and topk_test.cc runs the same code on the
// CPU against a brute-force sort. Plain C++ when not compiled by nvcc.
//
// Order. Candidates are ranked by (score desc, index asc) where a NaN score
// counts as -inf (RankingScore): the CPU backend's rule for sub-keys (index
// = sub-key j) and for rows (index = a * n_keys + b). It is a strict total
// order on distinct indices, so "the best element strictly after the k-th
// best" is the (k+1)-th best: a top-k is k rounds of an arg-best over the
// elements ranked after the previous pick, which needs no per-element state
// and parallelizes as per-thread arg-bests merged in any order.
#ifndef MEMSERVE_KERNELS_TOPK_H_
#define MEMSERVE_KERNELS_TOPK_H_

#include <cmath>
#include <cstdint>

#include "kernels/bf16_bits.h"  // MEMSERVE_HOST_DEVICE, BitsFloat

namespace memserve::kernels {

// One ranked element; index < 0 means "none" (ranks after every element).
struct Ranked {
  float score;
  int64_t index;
};

MEMSERVE_HOST_DEVICE inline Ranked NoneRanked() { return Ranked{BitsFloat(0xff800000u), -1}; }

// NaN -> -inf; everything else unchanged.
MEMSERVE_HOST_DEVICE inline float RankingScore(float s) {
  return s != s ? BitsFloat(0xff800000u) : s;
}

// Whether a ranks strictly before b: (score desc, index asc), none last.
// Scores must already be RankingScore'd (no NaN).
MEMSERVE_HOST_DEVICE inline bool RankedBefore(const Ranked& a, const Ranked& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// The better of two (either when both are none).
MEMSERVE_HOST_DEVICE inline Ranked RankedBetter(const Ranked& a, const Ranked& b) {
  return RankedBefore(b, a) ? b : a;
}

// Whether x is a candidate of the round after `cursor` (the previous pick,
// or none in the first round): it ranks strictly after the cursor.
MEMSERVE_HOST_DEVICE inline bool RankedAfterCursor(const Ranked& x, const Ranked& cursor) {
  return cursor.index < 0 || RankedBefore(cursor, x);
}

// The best of the elements (RankingScore(s[i]), i) for i = first,
// first + stride, ... < n that rank strictly after `cursor`; none if none.
// REQUIRES: stride >= 1.
MEMSERVE_HOST_DEVICE inline Ranked BestAfter(const float* s, int n, int first, int stride,
                                             const Ranked& cursor) {
  Ranked best = NoneRanked();
  for (int i = first; i < n; i += stride) {
    const Ranked x{RankingScore(s[i]), i};
    if (RankedAfterCursor(x, cursor) && RankedBefore(x, best)) best = x;
  }
  return best;
}

// The candidate pairs of the product-key stage: the pair of ranks (ra, rb)
// (ranks in the two halves' top-knn lists, both sorted best first) can be
// among the best knn rows only if (ra + 1) * (rb + 1) <= knn, since every
// (ra', rb') with ra' <= ra, rb' <= rb ranks before it. Rank ra pairs with
// rb < CandidatesOfRank(knn, ra); rank 0 alone gives knn candidates.
MEMSERVE_HOST_DEVICE inline int CandidatesOfRank(int knn, int ra) { return knn / (ra + 1); }

// The best candidate row of rank ra of the first half that ranks strictly
// after `cursor`: over rb < CandidatesOfRank(knn, ra), the row
// i1[ra] * n_keys + i2[rb] scored s1[ra] + s2[rb] (one fp32 add, as on the
// CPU). s1/i1 and s2/i2 are the halves' top-knn lists (RankingScore'd).
MEMSERVE_HOST_DEVICE inline Ranked BestCandidateAfter(const float* s1, const int32_t* i1,
                                                      const float* s2, const int32_t* i2, int knn,
                                                      int n_keys, int ra, const Ranked& cursor) {
  Ranked best = NoneRanked();
  const int count = CandidatesOfRank(knn, ra);
  const int64_t row0 = static_cast<int64_t>(i1[ra]) * n_keys;
  for (int rb = 0; rb < count; ++rb) {
    const Ranked x{s1[ra] + s2[rb], row0 + i2[rb]};
    if (RankedAfterCursor(x, cursor) && RankedBefore(x, best)) best = x;
  }
  return best;
}

// w[k] = exp(s[k] - s[0]) / sum, the sum taken in k order (s sorted best
// first, so s[0] is the max), as the CPU backend does. A -inf s[0] (every
// score NaN or -inf) gives NaN weights, as on the CPU.
MEMSERVE_HOST_DEVICE inline void SoftmaxOfSorted(const float* s, int k, float* w) {
  float sum = 0.0f;
  for (int i = 0; i < k; ++i) {
#ifdef __CUDA_ARCH__
    w[i] = expf(s[i] - s[0]);
#else
    w[i] = std::exp(s[i] - s[0]);
#endif
    sum += w[i];
  }
  for (int i = 0; i < k; ++i) w[i] /= sum;
}

// The whole selection for one (token, head), sequentially (one thread): the
// reference the CPU tests check against a brute-force sort, and the
// specification the parallel kernel follows round for round.
// head_scores [2, n_keys]; scratch s1, s2 [knn], i1, i2 [knn]; out rows,
// scores, weights [knn]. REQUIRES: 1 <= knn <= n_keys.
MEMSERVE_HOST_DEVICE inline void SelectRowsSequential(const float* head_scores, int n_keys, int knn,
                                                      float* s1, int32_t* i1, float* s2,
                                                      int32_t* i2, int64_t* rows, float* scores,
                                                      float* weights) {
  for (int half = 0; half < 2; ++half) {
    float* s = half == 0 ? s1 : s2;
    int32_t* idx = half == 0 ? i1 : i2;
    Ranked cursor = NoneRanked();
    for (int k = 0; k < knn; ++k) {
      cursor = BestAfter(head_scores + half * n_keys, n_keys, 0, 1, cursor);
      s[k] = cursor.score;
      idx[k] = static_cast<int32_t>(cursor.index);
    }
  }
  Ranked cursor = NoneRanked();
  for (int k = 0; k < knn; ++k) {
    Ranked best = NoneRanked();
    for (int ra = 0; ra < knn; ++ra) {
      best = RankedBetter(best, BestCandidateAfter(s1, i1, s2, i2, knn, n_keys, ra, cursor));
    }
    cursor = best;
    rows[k] = best.index;
    scores[k] = best.score;
  }
  SoftmaxOfSorted(scores, knn, weights);
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_TOPK_H_
