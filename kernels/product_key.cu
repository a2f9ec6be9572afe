#include <cuda_runtime.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/launch_util.cuh"
#include "kernels/product_key.h"
#include "kernels/product_key_select.h"

namespace memserve::kernels {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;

// --- 1. sub-key scores ---

constexpr int kScoreWarps = 8;
constexpr int kScoreUnroll = 4;  // keys in flight per warp

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ float Widen(uint16_t v) { return Bf16BitsToF32(v); }

// 16 bytes of T as floats (8 bf16 or 4 fp32) into f[0..16 / sizeof(T)).
__device__ __forceinline__ void Widen16(const uint4& v, uint16_t /*tag*/, float* f) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = BitsFloat(w[i] << 16);
    f[2 * i + 1] = BitsFloat(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void Widen16(const uint4& v, float /*tag*/, float* f) {
  f[0] = BitsFloat(v.x);
  f[1] = BitsFloat(v.y);
  f[2] = BitsFloat(v.z);
  f[3] = BitsFloat(v.w);
}

// Grid (groups = n_tokens * heads * 2, splits); group g = (t * heads + h) * 2
// + half reads query columns [(g % (2 heads)) * half_dim, + half_dim) of row
// t and the key rows of (h, half); block y takes keys [y * per_split, ...).
// Each warp takes every kScoreWarps-th key, kScoreUnroll at a time; lane l
// sums its elements (16-byte vectors when `vec`) in order, then a butterfly.
template <typename K>
__global__ void __launch_bounds__(kScoreWarps * 32)
    ProductKeyScoresKernel(const float* __restrict__ queries, int64_t query_stride,
                           const K* __restrict__ keys, float* __restrict__ scores, int heads,
                           int n_keys, int half_dim, int per_split, bool vec) {
  extern __shared__ float q[];  // [half_dim]
  const int64_t group = blockIdx.x;
  const int64_t t = group / (2 * heads);
  const int hh = static_cast<int>(group % (2 * heads));  // 2 h + half
  const float* q_src = queries + t * query_stride + static_cast<int64_t>(hh) * half_dim;
  for (int i = threadIdx.x; i < half_dim; i += blockDim.x) q[i] = q_src[i];
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j_begin = blockIdx.y * per_split;
  const int j_end = min(n_keys, j_begin + per_split);
  const K* k_base = keys + static_cast<int64_t>(hh) * n_keys * half_dim;
  float* out = scores + group * n_keys;
  constexpr int kPer16 = 16 / sizeof(K);
  for (int j0 = j_begin + warp; j0 < j_end; j0 += kScoreWarps * kScoreUnroll) {
    float acc[kScoreUnroll];
#pragma unroll
    for (int u = 0; u < kScoreUnroll; ++u) acc[u] = 0.0f;
    if (vec) {
      for (int e = lane * kPer16; e < half_dim; e += 32 * kPer16) {
        uint4 v[kScoreUnroll];
#pragma unroll
        for (int u = 0; u < kScoreUnroll; ++u) {
          const int j = j0 + u * kScoreWarps;
          v[u] = j < j_end ? __ldg(reinterpret_cast<const uint4*>(
                                 k_base + static_cast<int64_t>(j) * half_dim + e))
                           : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kScoreUnroll; ++u) {
          float f[kPer16];
          Widen16(v[u], K{}, f);
#pragma unroll
          for (int i = 0; i < kPer16; ++i) acc[u] += q[e + i] * f[i];
        }
      }
    } else {
      for (int e = lane; e < half_dim; e += 32) {
#pragma unroll
        for (int u = 0; u < kScoreUnroll; ++u) {
          const int j = j0 + u * kScoreWarps;
          if (j < j_end) acc[u] += q[e] * Widen(k_base[static_cast<int64_t>(j) * half_dim + e]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kScoreUnroll; ++u) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        acc[u] += __shfl_xor_sync(kFullMask, acc[u], offset);
      }
      const int j = j0 + u * kScoreWarps;
      if (lane == 0 && j < j_end) out[j] = acc[u];
    }
  }
}

// --- 2. select ---

constexpr int kSelectThreads = 256;
constexpr int kHalfThreads = kSelectThreads / 2;

// bar.sync on barrier `id` for `threads` threads (a multiple of 32): id 0
// with the whole block is __syncthreads; ids 1 and 2 sync one half each.
__device__ __forceinline__ void GroupSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

struct RadixShared {
  uint32_t hist[kRadixBins];
  RadixState state;
  uint32_t count;
};

// The k largest of the n distinct keys key_of(0..n), sorted descending, into
// out[0..k), by the `threads` threads of a group (thread `tid` of it) that
// sync on barrier `bar`: RadixTopKSequential's passes, in parallel. `sel`:
// k keys of scratch. Every thread of the group must call it.
template <typename KeyOf>
__device__ void GroupRadixTopK(const KeyOf& key_of, int n, int k, int tid, int threads, int bar,
                               RadixShared* sh, uint64_t* sel, uint64_t* out) {
  RadixState s = RadixStart(static_cast<uint32_t>(k));
  if (tid == 0) sh->count = 0;
  while (!RadixFinished(s)) {
    for (int b = tid; b < kRadixBins; b += threads) sh->hist[b] = 0;
    GroupSync(bar, threads);
    for (int i = tid; i < n; i += threads) {
      const uint64_t key = key_of(i);
      if (RadixMatches(s, key)) atomicAdd(&sh->hist[RadixDigit(s, key)], 1u);
    }
    GroupSync(bar, threads);
    if (tid < 32) {
      const uint32_t mine = LaneBinSum(sh->hist, tid);
      uint32_t inclusive = mine;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const uint32_t v = __shfl_up_sync(kFullMask, inclusive, offset);
        if (tid >= offset) inclusive += v;
      }
      const uint32_t above = inclusive - mine;
      if (LaneHoldsNeed(above, mine, s.need)) {
        sh->state = RadixAdvanceInLane(s, sh->hist, tid, above);
      }
    }
    GroupSync(bar, threads);
    s = sh->state;
  }
  const uint64_t threshold = RadixThreshold(s);
  for (int i = tid; i < n; i += threads) {
    const uint64_t key = key_of(i);
    if (key >= threshold) {
      const uint32_t slot = atomicAdd(&sh->count, 1u);
      if (slot < static_cast<uint32_t>(k)) sel[slot] = key;  // exactly k (distinct keys)
    }
  }
  GroupSync(bar, threads);
  for (int i = tid; i < k; i += threads) out[RankAmong(sel, k, i)] = sel[i];
  GroupSync(bar, threads);
}

// One block per (token, head) = blockIdx.x; threads [0, 128) select half 0,
// [128, 256) half 1, then the block selects among the candidates and warp 0
// takes the softmax and writes the outputs.
__global__ void __launch_bounds__(kSelectThreads)
    ProductKeySelectKernel(const float* __restrict__ subkey_scores, int64_t* __restrict__ rows_out,
                           float* __restrict__ weights_out, float* __restrict__ scores_out,
                           int n_keys, int knn) {
  __shared__ RadixShared radix[2];
  __shared__ uint64_t sel[2][kProductKeyMaxKnn];
  __shared__ uint64_t top[2][kProductKeyMaxKnn];
  __shared__ uint64_t cand[kProductKeyMaxCandidates];
  __shared__ uint64_t best[kProductKeyMaxKnn];

  const int64_t item = blockIdx.x;
  const int half = threadIdx.x / kHalfThreads;
  const float* s = subkey_scores + (item * 2 + half) * n_keys;
  GroupRadixTopK([s](int i) { return RankKey(__ldg(s + i), static_cast<uint32_t>(i)); }, n_keys,
                 knn, static_cast<int>(threadIdx.x) - half * kHalfThreads, kHalfThreads, 1 + half,
                 &radix[half], sel[half], top[half]);
  __syncthreads();
  const int count = CandidateCount(knn);
  for (int c = threadIdx.x; c < count; c += kSelectThreads) {
    int ra = 0, rb = 0;
    CandidatePair(knn, c, &ra, &rb);
    cand[c] = CandidateKey(top[0][ra], top[1][rb], n_keys);
  }
  __syncthreads();
  const uint64_t* cands = cand;
  GroupRadixTopK([cands](int i) { return cands[i]; }, count, knn, threadIdx.x, kSelectThreads, 0,
                 &radix[0], sel[0], best);
  if (threadIdx.x >= 32) return;
  // Softmax (fp32, max = the first score; the sum as a warp tree) and out.
  const int lane = threadIdx.x;
  const float s0 = RankKeyScore(best[0]);
  const float e0 = lane < knn ? expf(RankKeyScore(best[lane]) - s0) : 0.0f;
  const float e1 = lane + 32 < knn ? expf(RankKeyScore(best[lane + 32]) - s0) : 0.0f;
  float sum = e0 + e1;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(kFullMask, sum, offset);
  const int64_t out = item * knn;
  for (int k = lane, i = 0; k < knn; k += 32, ++i) {
    rows_out[out + k] = RankKeyIndex(best[k]);
    weights_out[out + k] = (i == 0 ? e0 : e1) / sum;
    if (scores_out != nullptr) scores_out[out + k] = RankKeyScore(best[k]);
  }
}

// --- 3. gather ---

constexpr int kGatherUnroll = 4;  // rows in flight per (warp, row slot)

// 8 consecutive elements of a row from p (16-byte loads when `vec`, else
// element by element, those at or past `valid` read as 0).
__device__ __forceinline__ void Load8(const uint16_t* p, bool vec, int valid, float* f) {
  if (vec && valid >= 8) {
    Widen16(__ldg(reinterpret_cast<const uint4*>(p)), uint16_t{}, f);
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = i < valid ? Bf16BitsToF32(__ldg(p + i)) : 0.0f;
}
__device__ __forceinline__ void Load8(const float* p, bool vec, int valid, float* f) {
  if (vec && valid >= 8) {
    Widen16(__ldg(reinterpret_cast<const uint4*>(p)), float{}, f);
    Widen16(__ldg(reinterpret_cast<const uint4*>(p + 4)), float{}, f + 4);
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = i < valid ? __ldg(p + i) : 0.0f;
}

__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(uint16_t* p, float v) { *p = F32ToBf16Bits(v); }

// Grid (n_tokens, column chunks of 8 * kLanes). A warp's lanes are
// 32 / kLanes row slots of kLanes lanes; lane (slot, l) owns the chunk's
// columns 8 l .. 8 l + 7. Slot s of warp w sums the token's picks
// q, q + kWarps * kSlots, ... with q = w * kSlots + s (kGatherUnroll rows in
// flight); the slots' sums meet in a butterfly, the warps' in warp order in
// shared memory. A column's sum order depends on (kWarps, kLanes) only, not
// on the chunk or the slice. `values` points at the slice's first column of
// row 0.
template <typename V, typename O, int kWarps, int kLanes>
__global__ void __launch_bounds__(kWarps * 32)
    ProductKeyGatherKernel(const V* __restrict__ values, int64_t table_rows, int64_t row_stride,
                           int width, const int64_t* __restrict__ rows,
                           const float* __restrict__ weights, int picks, O* __restrict__ out,
                           int64_t out_stride, bool vec) {
  constexpr int kSlots = 32 / kLanes;
  constexpr int kCols = 8 * kLanes;
  __shared__ float partial[kWarps][kCols];
  const int64_t t = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slot = lane / kLanes, l = lane % kLanes;
  const int c0 = blockIdx.y * kCols + l * 8;
  const int valid = width - c0;  // columns of this lane's 8 inside the slice
  const int64_t* r = rows + t * picks;
  const float* w = weights + t * picks;
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
  constexpr int kStride = kWarps * kSlots;
  for (int p0 = warp * kSlots + slot; p0 < picks; p0 += kStride * kGatherUnroll) {
    int64_t row[kGatherUnroll];
    float wt[kGatherUnroll];
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      const int p = p0 + u * kStride;
      row[u] = p < picks ? __ldg(r + p) : -1;
      wt[u] = p < picks ? __ldg(w + p) : 0.0f;
    }
    float f[kGatherUnroll][8];
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      if (row[u] >= 0 && row[u] < table_rows && valid > 0) {
        Load8(values + row[u] * row_stride + c0, vec, valid, f[u]);
      } else {
        row[u] = -1;
      }
    }
#pragma unroll
    for (int u = 0; u < kGatherUnroll; ++u) {
      if (row[u] < 0) continue;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += wt[u] * f[u][i];
    }
  }
#pragma unroll
  for (int offset = kLanes; offset < 32; offset *= 2) {
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += __shfl_xor_sync(kFullMask, acc[i], offset);
  }
  if (slot == 0) {
#pragma unroll
    for (int i = 0; i < 8; ++i) partial[warp][l * 8 + i] = acc[i];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < kCols; c += kWarps * 32) {
    const int col = blockIdx.y * kCols + c;
    if (col >= width) continue;
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) sum += partial[k][c];
    Store(out + t * out_stride + col, sum);
  }
}

template <typename V, typename O, int kWarps, int kLanes>
void LaunchGatherShape(const ProductKeyGatherParams& p, cudaStream_t stream) {
  const int width = static_cast<int>(p.col_end - p.col_begin);
  constexpr int kCols = 8 * kLanes;
  const dim3 grid(static_cast<unsigned>(p.n_tokens),
                  static_cast<unsigned>((width + kCols - 1) / kCols));
  ProductKeyGatherKernel<V, O, kWarps, kLanes><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const V*>(p.values) + p.col_begin, p.table_rows, p.effective_row_stride(), width,
      p.rows, p.weights, p.picks, static_cast<O*>(p.out), p.effective_out_stride(), p.vectorized());
}

// The two shapes of ProductKeyGatherShapeOf.
template <typename V, typename O>
void LaunchGatherTyped(const ProductKeyGatherParams& p, cudaStream_t stream) {
  const ProductKeyGatherShape shape = ProductKeyGatherShapeOf(p.n_tokens);
  if (shape.warps == 16) {
    LaunchGatherShape<V, O, 16, 8>(p, stream);
  } else {
    LaunchGatherShape<V, O, 4, 32>(p, stream);
  }
}

}  // namespace

absl::Status LaunchProductKeyScores(const ProductKeyScoresParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const int half_dim = p.k_dim / 2;
  const int splits = ProductKeyScoreSplits(p.n_tokens, p.heads, p.n_keys);
  const int per_split = (p.n_keys + splits - 1) / splits;
  const dim3 grid(static_cast<unsigned>(p.n_tokens * p.heads * 2), static_cast<unsigned>(splits));
  // At most kProductKeyMaxHalfDim floats (32 KB): no opt-in beyond 48 KB needed.
  const size_t smem = static_cast<size_t>(half_dim) * sizeof(float);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.keys_type == ElementType::kBF16) {
    const bool vec = half_dim % 8 == 0 && AlignedTo(p.keys, 16);
    ProductKeyScoresKernel<uint16_t><<<grid, kScoreWarps * 32, smem, s>>>(
        p.queries, p.effective_query_stride(), static_cast<const uint16_t*>(p.keys),
        p.subkey_scores, p.heads, p.n_keys, half_dim, per_split, vec);
  } else {
    const bool vec = half_dim % 4 == 0 && AlignedTo(p.keys, 16);
    ProductKeyScoresKernel<float><<<grid, kScoreWarps * 32, smem, s>>>(
        p.queries, p.effective_query_stride(), static_cast<const float*>(p.keys), p.subkey_scores,
        p.heads, p.n_keys, half_dim, per_split, vec);
  }
  return LaunchStatus("product_key scores");
}

absl::Status LaunchProductKeySelect(const ProductKeySelectParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(p.n_tokens * p.heads);
  ProductKeySelectKernel<<<blocks, kSelectThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p.subkey_scores, p.rows, p.weights, p.scores, p.n_keys, p.knn);
  return LaunchStatus("product_key select");
}

absl::Status LaunchProductKeyGather(const ProductKeyGatherParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool bf16_in = p.values_type == ElementType::kBF16;
  const bool bf16_out = p.out_type == ElementType::kBF16;
  if (bf16_in && !bf16_out) LaunchGatherTyped<uint16_t, float>(p, s);
  if (bf16_in && bf16_out) LaunchGatherTyped<uint16_t, uint16_t>(p, s);
  if (!bf16_in && !bf16_out) LaunchGatherTyped<float, float>(p, s);
  if (!bf16_in && bf16_out) LaunchGatherTyped<float, uint16_t>(p, s);
  return LaunchStatus("product_key gather");
}

absl::Status LaunchProductKeyLookup(const ProductKeyLookupParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  char* ws = static_cast<char*>(p.workspace);
  const size_t picks = static_cast<size_t>(p.n_tokens) * p.heads * p.knn;
  const size_t score_bytes =
      (static_cast<size_t>(p.n_tokens) * p.heads * 2 * p.n_keys * sizeof(float) + 255) / 256 * 256;
  float* subkey_scores = reinterpret_cast<float*>(ws);
  int64_t* rows = p.rows;
  float* weights = p.weights;
  if (rows == nullptr) {
    rows = reinterpret_cast<int64_t*>(ws + score_bytes);
    weights = reinterpret_cast<float*>(ws + score_bytes + (picks * 8 + 255) / 256 * 256);
  }
  ProductKeyScoresParams sp;
  sp.queries = p.queries;
  sp.query_stride = p.query_stride;
  sp.keys = p.keys;
  sp.keys_type = p.keys_type;
  sp.subkey_scores = subkey_scores;
  sp.n_tokens = p.n_tokens;
  sp.heads = p.heads;
  sp.n_keys = p.n_keys;
  sp.k_dim = p.k_dim;
  const absl::Status scored = LaunchProductKeyScores(sp, stream);
  if (!scored.ok()) return scored;
  ProductKeySelectParams sel;
  sel.subkey_scores = subkey_scores;
  sel.rows = rows;
  sel.weights = weights;
  sel.scores = p.scores;
  sel.n_tokens = p.n_tokens;
  sel.heads = p.heads;
  sel.n_keys = p.n_keys;
  sel.knn = p.knn;
  const absl::Status selected = LaunchProductKeySelect(sel, stream);
  if (!selected.ok()) return selected;
  ProductKeyGatherParams g;
  g.values = p.values;
  g.values_type = p.values_type;
  g.table_rows = p.table_rows;
  g.row_stride = p.row_stride;
  g.col_begin = p.col_begin;
  g.col_end = p.col_end;
  g.rows = rows;
  g.weights = weights;
  g.picks = p.heads * p.knn;
  g.n_tokens = p.n_tokens;
  g.out = p.out;
  g.out_type = p.out_type;
  g.out_stride = p.out_stride;
  return LaunchProductKeyGather(g, stream);
}

}  // namespace memserve::kernels
