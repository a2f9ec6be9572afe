// The product-key memory lookup on the GPU (docs/model.md "The memory
// layer", steps 3-7; the CPU backend's MemorySelect + ValueGather,
// engine/backend/cpu/memory_lookup.cc, is the reference), in three kernels
// that kernels/dev/product_key_lookup.cu times against today's path
// (cuBLAS GEMM + memory_select + value_gather):
//
//   1. scores: subkey_scores[t, h, half, j] = q[t, h, half] . keys[h, half, j]
//      (fp32 accumulation; keys fp32 or bf16, read as they are stored). The
//      keys of one (token, head, half) are split across blocks so that a
//      small batch fills the GPU. For large batches a GEMM (cuBLAS) is
//      faster; the backend picks (ProductKeyUseScoreKernel).
//   2. select: one block per (token, head): the top-knn of each half by a
//      radix select (both halves at once, one half per 128 threads), the
//      candidate pairs (ra + 1) * (rb + 1) <= knn, their top-knn by the same
//      radix select, the softmax (kernels/product_key_select.h; the order is
//      (score desc, index asc), NaN as -inf, -0 as +0: the CPU's rows and
//      scores for the same sub-key scores).
//   3. gather: out[t, c] = sum_{h,k} w[t,h,k] * values[rows[t,h,k], col_begin + c]
//      over a column slice of a table whose rows are row_stride apart,
//      16-byte loads, fp32 accumulators, output fp32 or bf16 with a row
//      stride. Grid (token, column chunk); a token's heads * knn rows are
//      split over the block's warps and row slots (ProductKeyGatherShapeOf:
//      below 64 tokens 64-column chunks of 16 warps x 4 slots, so one
//      token's rows spread over many blocks), 4 rows in flight per slot,
//      summed in a fixed order.
//
// Rows and scores equal the CPU's for the same sub-key scores. The scores
// kernel sums in another order than the CPU's GEMM (last bits), so only
// near-ties can select other rows. The gather's sum order (per warp, then
// over warps) differs from the CPU's (h, k) order: fp32 rounding only. A
// column's result does not depend on the slice (sharding-invariant).
//
// Plain C++ launch API (no CUDA types); Launch validates, then only enqueues
// kernels on the stream (no allocation, no synchronization:
// graph-capturable). Device data cannot be checked by Validate(): a row
// outside [0, table_rows) is skipped by the gather.
#ifndef MEMSERVE_KERNELS_PRODUCT_KEY_H_
#define MEMSERVE_KERNELS_PRODUCT_KEY_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

inline constexpr int kProductKeyMaxKnn = 64;
inline constexpr int kProductKeyMaxKeys = 8192;
// The candidate pairs of knn = 64 (product_key_select.h CandidateCount).
inline constexpr int kProductKeyMaxCandidates = 280;
// k_dim / 2 elements of a query half live in shared memory.
inline constexpr int kProductKeyMaxHalfDim = 8192;

struct ProductKeyScoresParams {
  const float* queries =
      nullptr;  // [n_tokens, query_stride] fp32, head h = cols [h*k_dim, (h+1)*k_dim)
  const void* keys = nullptr;  // [heads, 2, n_keys, k_dim / 2] of keys_type
  ElementType keys_type = ElementType::kF32;
  float* subkey_scores = nullptr;  // [n_tokens, heads, 2, n_keys] out
  int64_t n_tokens = 0;            // 0 = nothing to do
  int heads = 0;
  int n_keys = 0;            // 1 .. kProductKeyMaxKeys
  int k_dim = 0;             // even, k_dim / 2 <= kProductKeyMaxHalfDim
  int64_t query_stride = 0;  // elements between query rows; 0 = heads * k_dim

  int64_t effective_query_stride() const {
    return query_stride == 0 ? static_cast<int64_t>(heads) * k_dim : query_stride;
  }
  // InvalidArgument naming the field and the limit.
  absl::Status Validate() const;
};

// Blocks each (token, head, half)'s keys are split over: enough blocks to
// fill a 132-SM GPU (~4 per SM) with >= 64 keys each, 1 for large batches.
int ProductKeyScoreSplits(int64_t n_tokens, int heads, int n_keys);

// Whether the scores kernel should compute a batch's sub-key scores (small
// batches) rather than a GEMM (it re-reads the keys for every token).
inline bool ProductKeyUseScoreKernel(int64_t n_tokens) { return n_tokens <= 16; }

absl::Status LaunchProductKeyScores(const ProductKeyScoresParams& params, void* stream);

struct ProductKeySelectParams {
  const float* subkey_scores = nullptr;  // [n_tokens, heads, 2, n_keys] fp32, device
  int64_t* rows = nullptr;               // [n_tokens, heads, knn] out, rank order
  float* weights = nullptr;              // [n_tokens, heads, knn] out
  float* scores = nullptr;               // optional [n_tokens, heads, knn] out, pre-softmax
  int64_t n_tokens = 0;
  int heads = 0;
  int n_keys = 0;  // 1 .. kProductKeyMaxKeys
  int knn = 0;     // 1 .. min(n_keys, kProductKeyMaxKnn)

  absl::Status Validate() const;
};

absl::Status LaunchProductKeySelect(const ProductKeySelectParams& params, void* stream);

struct ProductKeyGatherParams {
  const void* values = nullptr;  // [table_rows, row_stride] of values_type
  ElementType values_type = ElementType::kBF16;
  int64_t table_rows = 0;
  int64_t row_stride = 0;  // elements between rows; 0 = col_end
  int64_t col_begin = 0;   // the slice read: columns [col_begin, col_end)
  int64_t col_end = 0;
  const int64_t* rows = nullptr;   // [n_tokens, picks]
  const float* weights = nullptr;  // [n_tokens, picks]
  int picks = 0;                   // heads * knn, 1 .. 2^20
  int64_t n_tokens = 0;
  void* out = nullptr;  // [n_tokens, out_stride] of out_type, at the slice's first column
  ElementType out_type = ElementType::kF32;
  int64_t out_stride = 0;  // elements between out rows; 0 = col_end - col_begin

  int64_t effective_row_stride() const { return row_stride == 0 ? col_end : row_stride; }
  int64_t effective_out_stride() const {
    return out_stride == 0 ? col_end - col_begin : out_stride;
  }
  // Whether the 16-byte path applies (else 2- or 4-byte loads): the table,
  // the slice's start and the row stride all 16-byte aligned.
  bool vectorized() const;
  absl::Status Validate() const;
};

// The gather's block shape for a batch: `warps` warps, each split into
// 32 / lanes row slots of `lanes` lanes (8 columns a lane), so a block covers
// 8 * lanes columns. Below 64 tokens, 16 warps x 4 slots over 64 columns:
// one token's rows spread over many blocks (32 for 2048 columns) with 64
// rows in flight each; from 64 tokens, 4 warps x 1 slot over 256 columns.
// The sum order depends on the shape, hence on n_tokens only.
struct ProductKeyGatherShape {
  int warps;
  int lanes;
};
inline ProductKeyGatherShape ProductKeyGatherShapeOf(int64_t n_tokens) {
  return n_tokens < 64 ? ProductKeyGatherShape{16, 8} : ProductKeyGatherShape{4, 32};
}

absl::Status LaunchProductKeyGather(const ProductKeyGatherParams& params, void* stream);

// The whole lookup (scores kernel, select, gather) in three launches.
struct ProductKeyLookupParams {
  const float* queries = nullptr;  // as ProductKeyScoresParams
  int64_t query_stride = 0;
  const void* keys = nullptr;
  ElementType keys_type = ElementType::kF32;
  const void* values = nullptr;  // as ProductKeyGatherParams
  ElementType values_type = ElementType::kBF16;
  int64_t table_rows = 0;
  int64_t row_stride = 0;
  int64_t col_begin = 0;
  int64_t col_end = 0;
  void* out = nullptr;
  ElementType out_type = ElementType::kF32;
  int64_t out_stride = 0;
  int64_t* rows = nullptr;   // optional [n_tokens, heads, knn] out (else in the workspace)
  float* weights = nullptr;  // optional, likewise
  float* scores = nullptr;   // optional pre-softmax scores
  int64_t n_tokens = 0;
  int heads = 0;
  int n_keys = 0;
  int knn = 0;
  int k_dim = 0;
  void* workspace = nullptr;  // device, ProductKeyLookupWorkspaceBytes
  size_t workspace_bytes = 0;

  absl::Status Validate() const;
};

// The workspace the lookup needs: the sub-key scores, and rows/weights
// unless given.
size_t ProductKeyLookupWorkspaceBytes(const ProductKeyLookupParams& params);

absl::Status LaunchProductKeyLookup(const ProductKeyLookupParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_PRODUCT_KEY_H_
