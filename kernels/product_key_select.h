// The selection logic of the product-key lookup kernel (kernels/product_key.h)
// as __host__ __device__ functions: the CUDA kernel runs them on the device,
// product_key_select_test.cc runs the same code on the CPU (through
// SelectRowsRadix, a sequential emulation of the kernel) against
// SelectRowsSequential (topk.h) and the CPU backend's MemorySelect.
//
// Rank keys. A (score, index) pair becomes one uint64_t whose unsigned order
// is the selection's order (score desc, index asc; NaN as -inf; -0 as +0):
// the high 32 bits are the score's bits made order-preserving, the low 32
// bits are ~index. Indices are distinct, so the keys of one list are
// distinct and "the k best" is "every key >= the k-th largest key".
//
// Top-k by radix select. The k-th largest key is found 8 bits at a time,
// from the top: a pass histograms the next byte of the keys that match the
// bytes decided so far, and the byte whose bin holds the k-th key (counting
// from the top bin) is decided. Selection ends once the bin holding the
// k-th key holds exactly the keys still needed (then every key with the
// decided prefix is in), at the latest after 8 passes. Random fp32 scores
// usually end after 2-3 passes; exact ties continue into the index bits.
// The selected keys (exactly k) are then sorted by rank counting.
//
// The kernel finds a pass's byte with one warp: lane l sums the 8 bins
// 255 - 8l .. 248 - 8l (LaneBinSum), a warp scan gives each lane the count
// of the bins above its own, and the lane whose bins cross `need` finds the
// byte (FindDigitInLane). The emulation runs the same functions lane by lane.
#ifndef MEMSERVE_KERNELS_PRODUCT_KEY_SELECT_H_
#define MEMSERVE_KERNELS_PRODUCT_KEY_SELECT_H_

#include <cstdint>

#include "kernels/bf16_bits.h"  // MEMSERVE_HOST_DEVICE, FloatBits, BitsFloat
#include "kernels/topk.h"       // RankingScore, CandidatesOfRank, SoftmaxOfSorted

namespace memserve::kernels {

inline constexpr int kRadixBins = 256;
inline constexpr int kRadixLanes = 32;  // kRadixBins / 8 bins per lane

// The order-preserving key of (score, index); larger = ranks first.
MEMSERVE_HOST_DEVICE inline uint64_t RankKey(float score, uint32_t index) {
  float s = RankingScore(score);  // NaN -> -inf
  if (s == 0.0f) s = 0.0f;        // -0 -> +0 (they tie, as on the CPU)
  const uint32_t bits = FloatBits(s);
  const uint32_t ordered = (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | static_cast<uint64_t>(~index);
}

MEMSERVE_HOST_DEVICE inline float RankKeyScore(uint64_t key) {
  const uint32_t ordered = static_cast<uint32_t>(key >> 32);
  return BitsFloat((ordered & 0x80000000u) != 0 ? (ordered & 0x7fffffffu) : ~ordered);
}

MEMSERVE_HOST_DEVICE inline uint32_t RankKeyIndex(uint64_t key) {
  return ~static_cast<uint32_t>(key);
}

// The product-key candidates: the pairs of ranks (ra, rb) with
// (ra + 1) * (rb + 1) <= knn (topk.h CandidatesOfRank), numbered ra-major.
MEMSERVE_HOST_DEVICE inline int CandidateCount(int knn) {
  int count = 0;
  for (int ra = 0; ra < knn; ++ra) count += CandidatesOfRank(knn, ra);
  return count;
}

// Candidate number c (0 <= c < CandidateCount(knn)) as its pair of ranks.
MEMSERVE_HOST_DEVICE inline void CandidatePair(int knn, int c, int* ra, int* rb) {
  int r = 0;
  while (c >= CandidatesOfRank(knn, r)) {
    c -= CandidatesOfRank(knn, r);
    ++r;
  }
  *ra = r;
  *rb = c;
}

// The key of candidate (ra, rb) from the halves' sorted top-knn keys: score
// s1 + s2 (one fp32 add, as on the CPU; a NaN sum ranks as -inf), row
// i1 * n_keys + i2.
MEMSERVE_HOST_DEVICE inline uint64_t CandidateKey(uint64_t k1, uint64_t k2, int n_keys) {
  const float score = RankKeyScore(k1) + RankKeyScore(k2);
  const uint32_t row = RankKeyIndex(k1) * static_cast<uint32_t>(n_keys) + RankKeyIndex(k2);
  return RankKey(score, row);
}

// The state of one radix select: the bytes decided so far (the top
// `decided_bits` bits of `prefix`), the keys still needed among those that
// match them, and whether every matching key is in (`done`).
struct RadixState {
  uint64_t prefix;
  int decided_bits;
  uint32_t need;
  bool done;
};

MEMSERVE_HOST_DEVICE inline RadixState RadixStart(uint32_t k) { return RadixState{0, 0, k, false}; }

MEMSERVE_HOST_DEVICE inline bool RadixFinished(const RadixState& s) {
  return s.done || s.decided_bits >= 64;
}

// Whether `key` matches the decided bytes (every key does at the start).
MEMSERVE_HOST_DEVICE inline bool RadixMatches(const RadixState& s, uint64_t key) {
  return s.decided_bits == 0 ||
         (key >> (64 - s.decided_bits)) == (s.prefix >> (64 - s.decided_bits));
}

// The byte of `key` this pass histograms. REQUIRES: !RadixFinished(s).
MEMSERVE_HOST_DEVICE inline int RadixDigit(const RadixState& s, uint64_t key) {
  return static_cast<int>((key >> (56 - s.decided_bits)) & 0xffu);
}

// Lane `lane`'s share of the bins, high bins first: 255 - 8 lane down to
// 248 - 8 lane.
MEMSERVE_HOST_DEVICE inline uint32_t LaneBinSum(const uint32_t* hist, int lane) {
  uint32_t sum = 0;
  for (int i = 0; i < 8; ++i) sum += hist[kRadixBins - 1 - 8 * lane - i];
  return sum;
}

// Whether lane `lane` holds the bin of the need-th key: `above` = the keys
// in the bins of the lanes before it, `mine` = LaneBinSum.
MEMSERVE_HOST_DEVICE inline bool LaneHoldsNeed(uint32_t above, uint32_t mine, uint32_t need) {
  return above < need && need <= above + mine;
}

// Within the lane that holds it: advances `s` past this pass (the byte
// decided, the keys of the bins above it no longer needed, done when its bin
// holds exactly the keys still needed). `above` as for LaneHoldsNeed.
MEMSERVE_HOST_DEVICE inline RadixState RadixAdvanceInLane(const RadixState& s, const uint32_t* hist,
                                                          int lane, uint32_t above) {
  RadixState next = s;
  for (int i = 0; i < 8; ++i) {
    const int digit = kRadixBins - 1 - 8 * lane - i;
    const uint32_t count = hist[digit];
    if (above + count >= s.need) {
      next.prefix = s.prefix | (static_cast<uint64_t>(digit) << (56 - s.decided_bits));
      next.decided_bits = s.decided_bits + 8;
      next.need = s.need - above;
      next.done = count == next.need;
      return next;
    }
    above += count;
  }
  return next;  // not reached when LaneHoldsNeed(above, LaneBinSum, need)
}

// Once RadixFinished: a key is selected iff key >= RadixThreshold.
MEMSERVE_HOST_DEVICE inline uint64_t RadixThreshold(const RadixState& s) { return s.prefix; }

// The rank of sel[i] among the k distinct keys sel[0..k) (0 = largest).
MEMSERVE_HOST_DEVICE inline int RankAmong(const uint64_t* sel, int k, int i) {
  int rank = 0;
  for (int m = 0; m < k; ++m) rank += sel[m] > sel[i] ? 1 : 0;
  return rank;
}

// The k largest of the n distinct keys key_of(0..n), sorted descending, into
// out[0..k), exactly as the kernel computes them (passes of a histogram and
// a lane-by-lane byte search, then a rank sort). Returns the passes taken.
// `sel` is scratch of k keys. REQUIRES: 1 <= k <= n.
template <typename KeyOf>
inline int RadixTopKSequential(const KeyOf& key_of, int n, int k, uint64_t* sel, uint64_t* out) {
  RadixState s = RadixStart(static_cast<uint32_t>(k));
  int passes = 0;
  while (!RadixFinished(s)) {
    uint32_t hist[kRadixBins] = {};
    for (int i = 0; i < n; ++i) {
      const uint64_t key = key_of(i);
      if (RadixMatches(s, key)) ++hist[RadixDigit(s, key)];
    }
    uint32_t above = 0;
    for (int lane = 0; lane < kRadixLanes; ++lane) {
      const uint32_t mine = LaneBinSum(hist, lane);
      if (LaneHoldsNeed(above, mine, s.need)) {
        s = RadixAdvanceInLane(s, hist, lane, above);
        break;
      }
      above += mine;
    }
    ++passes;
  }
  const uint64_t threshold = RadixThreshold(s);
  int count = 0;
  for (int i = 0; i < n; ++i) {
    const uint64_t key = key_of(i);
    if (key >= threshold && count < k) sel[count++] = key;
  }
  for (int i = 0; i < count; ++i) out[RankAmong(sel, count, i)] = sel[i];
  return passes;
}

// The whole selection of one (token, head) as the kernel computes it:
// head_scores [2, n_keys]; scratch top1, top2, sel [knn] and cand
// [CandidateCount(knn)]; out rows, scores, weights [knn]. Rows and scores
// equal SelectRowsSequential's (topk.h) and the CPU backend's.
// REQUIRES: 1 <= knn <= n_keys, n_keys^2 < 2^32.
inline void SelectRowsRadix(const float* head_scores, int n_keys, int knn, uint64_t* top1,
                            uint64_t* top2, uint64_t* sel, uint64_t* cand, int64_t* rows,
                            float* scores, float* weights) {
  for (int half = 0; half < 2; ++half) {
    const float* s = head_scores + static_cast<int64_t>(half) * n_keys;
    RadixTopKSequential([s](int i) { return RankKey(s[i], static_cast<uint32_t>(i)); }, n_keys, knn,
                        sel, half == 0 ? top1 : top2);
  }
  const int count = CandidateCount(knn);
  for (int c = 0; c < count; ++c) {
    int ra = 0, rb = 0;
    CandidatePair(knn, c, &ra, &rb);
    cand[c] = CandidateKey(top1[ra], top2[rb], n_keys);
  }
  uint64_t* best = top1;  // top1 is no longer needed
  RadixTopKSequential([cand](int i) { return cand[i]; }, count, knn, sel, best);
  for (int k = 0; k < knn; ++k) {
    rows[k] = RankKeyIndex(best[k]);
    scores[k] = RankKeyScore(best[k]);
  }
  SoftmaxOfSorted(scores, knn, weights);
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_PRODUCT_KEY_SELECT_H_
