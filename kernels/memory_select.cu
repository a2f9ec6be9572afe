#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/launch_util.cuh"
#include "kernels/memory_select.h"
#include "kernels/topk.h"

namespace memserve::kernels {
namespace {

constexpr int kThreads = 256;  // a multiple of 32
constexpr int kWarps = kThreads / 32;

// The best of the warp's elements, in every lane. Each index lives in one
// lane, so the xor butterfly gives every lane the same answer.
__device__ __forceinline__ Ranked WarpBest(Ranked x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    Ranked other;
    other.score = __shfl_xor_sync(0xffffffffu, x.score, offset);
    other.index =
        static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(x.index), offset));
    x = RankedBetter(x, other);
  }
  return x;
}

// The best of the block's elements, in every thread. scratch: kWarps + 1
// entries of shared memory. Every thread of the block must call it.
__device__ __forceinline__ Ranked BlockBest(Ranked x, Ranked* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  x = WarpBest(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  if (warp == 0) {
    Ranked y = lane < kWarps ? scratch[lane] : NoneRanked();
    y = WarpBest(y);
    if (lane == 0) scratch[kWarps] = y;
  }
  __syncthreads();
  // scratch[kWarps] is rewritten only after the next call's first barrier,
  // which every thread reaches after reading it here.
  return scratch[kWarps];
}

// One block per (token, head) = blockIdx.x. Stage 1, per half: the half's
// scores go to shared memory, then knn rounds of a block-wide BestAfter
// (topk.h) pick the sorted top-knn. Stage 2: thread ra owns the candidates
// of first-half rank ra (BestCandidateAfter); knn rounds pick the rows.
// Then one thread takes the softmax, and the block writes the outputs.
__global__ void __launch_bounds__(kThreads)
    MemorySelectKernel(const float* subkey_scores, int64_t* rows_out, float* weights_out,
                       float* scores_out, int n_keys, int knn) {
  __shared__ float half_scores[kMemorySelectMaxKeys];
  __shared__ float s1[kMemorySelectMaxKnn], s2[kMemorySelectMaxKnn];
  __shared__ int32_t i1[kMemorySelectMaxKnn], i2[kMemorySelectMaxKnn];
  __shared__ float best_scores[kMemorySelectMaxKnn];
  __shared__ int64_t best_rows[kMemorySelectMaxKnn];
  __shared__ float best_weights[kMemorySelectMaxKnn];
  __shared__ Ranked scratch[kWarps + 1];

  const int64_t item = blockIdx.x;
  const float* head_scores = subkey_scores + item * 2 * n_keys;  // [2, n_keys]
  const int tid = threadIdx.x;

  for (int half = 0; half < 2; ++half) {
    for (int j = tid; j < n_keys; j += blockDim.x) {
      half_scores[j] = RankingScore(head_scores[half * n_keys + j]);
    }
    __syncthreads();
    float* s = half == 0 ? s1 : s2;
    int32_t* idx = half == 0 ? i1 : i2;
    Ranked cursor = NoneRanked();
    for (int k = 0; k < knn; ++k) {
      cursor = BlockBest(BestAfter(half_scores, n_keys, tid, blockDim.x, cursor), scratch);
      if (tid == 0) {
        s[k] = cursor.score;
        idx[k] = static_cast<int32_t>(cursor.index);
      }
    }
    __syncthreads();  // half_scores is rewritten; s/idx are complete
  }

  Ranked cursor = NoneRanked();
  for (int k = 0; k < knn; ++k) {
    const Ranked mine =
        tid < knn ? BestCandidateAfter(s1, i1, s2, i2, knn, n_keys, tid, cursor) : NoneRanked();
    cursor = BlockBest(mine, scratch);
    if (tid == 0) {
      best_scores[k] = cursor.score;
      best_rows[k] = cursor.index;
    }
  }
  __syncthreads();
  if (tid == 0) SoftmaxOfSorted(best_scores, knn, best_weights);
  __syncthreads();
  const int64_t out = item * knn;
  for (int k = tid; k < knn; k += blockDim.x) {
    rows_out[out + k] = best_rows[k];
    weights_out[out + k] = best_weights[k];
    if (scores_out != nullptr) scores_out[out + k] = best_scores[k];
  }
}

}  // namespace

absl::Status MemorySelectParams::Validate() const {
  if (subkey_scores == nullptr) {
    return absl::InvalidArgumentError("MemorySelectParams.subkey_scores is null");
  }
  if (rows == nullptr) return absl::InvalidArgumentError("MemorySelectParams.rows is null");
  if (weights == nullptr) return absl::InvalidArgumentError("MemorySelectParams.weights is null");
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("MemorySelectParams.n_tokens must be in [0, 2^31 - 1], got ", n_tokens));
  }
  if (heads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MemorySelectParams.heads must be >= 1, got ", heads));
  }
  if (n_tokens * heads > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MemorySelectParams: n_tokens * heads must be <= 2^31 - 1, got ", n_tokens * heads));
  }
  if (n_keys < 1 || n_keys > kMemorySelectMaxKeys) {
    return absl::InvalidArgumentError(absl::StrCat("MemorySelectParams.n_keys must be in [1, ",
                                                   kMemorySelectMaxKeys, "], got ", n_keys));
  }
  if (knn < 1 || knn > kMemorySelectMaxKnn || knn > n_keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MemorySelectParams.knn must be in [1, min(n_keys, ", kMemorySelectMaxKnn, ")] = [1, ",
        n_keys < kMemorySelectMaxKnn ? n_keys : kMemorySelectMaxKnn, "], got ", knn));
  }
  return absl::OkStatus();
}

absl::Status LaunchMemorySelect(const MemorySelectParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(p.n_tokens * p.heads);
  MemorySelectKernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p.subkey_scores, p.rows, p.weights, p.scores, p.n_keys, p.knn);
  return LaunchStatus("memory_select");
}

}  // namespace memserve::kernels
