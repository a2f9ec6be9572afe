// Product-key memory selection on the GPU: steps 3-5 of docs/model.md "The
// memory layer" (the CPU backend's MemorySelect, engine/backend/cpu/
// memory_lookup.cc, is the reference; semantics: MemorySelectArgs and
// MemoryLookupArgs in engine/backend/backend.h). Step 2, the sub-key scores,
// is a GEMM the backend runs first; this kernel takes its output:
//
//   subkey_scores[t, h, half, j] = q[t, h, half] . keys[h, half, j]
//   ([n_tokens, heads, 2, n_keys] fp32, dense: the [heads, 2] groups of a
//   strided batched GEMM over the keys [heads, 2, n_keys, k_dim / 2] and the
//   queries [n_tokens, heads, 2, k_dim / 2]).
//
// For every token t and head h:
//   1. top-knn of each half's scores, ordered by (score desc, index asc);
//      a NaN score counts as -inf;
//   2. the candidate rows a * n_keys + b of the pairs of ranks (ra, rb) with
//      (ra + 1) * (rb + 1) <= knn, scored s1[ra] + s2[rb] (one fp32 add);
//   3. their top-knn ordered by (score desc, row asc);
//   4. w = softmax of those knn scores (fp32: exp(s - s_max), summed in
//      rank order, then divided).
// Output [n_tokens, heads, knn], rank order: rows[t, h, k] (int64),
// weights[t, h, k] and, when requested, the pre-softmax scores[t, h, k].
// Rows and scores are identical to the CPU's for the same sub-key scores
// (same order, same tie rule, same fp32 add); weights differ by CUDA's
// expf (a few ulp). The ordering and merging logic is kernels/topk.h,
// shared with the CPU tests.
//
// The backend should compute the sub-key scores in fp32 (fp32 keys, fp32
// queries, no TF32), as the CPU does, so that only near-ties can select
// other rows than the CPU backend.
//
// A straightforward version: one block per (token, head), knn rounds of a
// block-wide arg-best per stage. The fused fast kernel is a later issue.
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_MEMORY_SELECT_H_
#define MEMSERVE_KERNELS_MEMORY_SELECT_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

// Limits of this kernel (one half's scores sit in shared memory).
inline constexpr int kMemorySelectMaxKnn = 64;
inline constexpr int kMemorySelectMaxKeys = 8192;

struct MemorySelectParams {
  const float* subkey_scores = nullptr;  // [n_tokens, heads, 2, n_keys] fp32, device
  int64_t* rows = nullptr;               // [n_tokens, heads, knn] out, device
  float* weights = nullptr;              // [n_tokens, heads, knn] out, device
  float* scores = nullptr;               // optional [n_tokens, heads, knn] out, device
  int64_t n_tokens = 0;                  // 0 = nothing to do
  int heads = 0;
  int n_keys = 0;  // 1 .. kMemorySelectMaxKeys
  int knn = 0;     // 1 .. min(n_keys, kMemorySelectMaxKnn)

  // InvalidArgument naming the field: a null required pointer, n_tokens
  // outside [0, 2^31 - 1], heads < 1, n_tokens * heads > 2^31 - 1, n_keys or
  // knn out of range.
  absl::Status Validate() const;
};

// Enqueues the selection on `stream` (a cudaStream_t, nullptr = default
// stream). Validate()'s error, or Internal with the CUDA error string.
absl::Status LaunchMemorySelect(const MemorySelectParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_MEMORY_SELECT_H_
