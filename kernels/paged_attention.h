// Causal attention over the paged K/V cache for one step's batch, prefill and
// decode alike (semantics: AttentionShape and BatchDescriptor in
// engine/backend/backend.h; the CPU backend's Attention is the reference).
//
// The batch, as plain device pointers (BatchDescriptor's index tensors):
//   sequence s owns query rows [seq_starts[s], seq_starts[s + 1]); its first
//   row is at position start = positions[seq_starts[s]] and row r at
//   start + (r - seq_starts[s]) (consecutive positions, as on the CPU, which
//   also reads only the first position of each sequence);
//   position j of sequence s lives in cache row
//   block_tables[s * max_blocks + j / block_size] * block_size + j % block_size.
// A query at position p of head h attends to positions j in [lo, p], lo = 0
// or, with sliding_window > 0, max(0, p - sliding_window + 1), reading kv
// head h / (n_heads / n_kv_heads):
//   out[r, h, :] = sum_j softmax_j(scale * q[r, h, :] . k[j, kvh, :]) * v[j, kvh, :]
// with scale = 1 / sqrt(float(head_dim)) (fp32, as on the CPU), fp32
// accumulation and an online (running max) softmax. The cache holds the
// keys and values of every attended position already (write_kv ran first).
//
// Decode (one query row per sequence, many sequences) and prefill (many
// rows per sequence) are the same launch; every value that changes from step
// to step (positions, tables, starts) is read on the device, so a launch
// captured in a CUDA graph stays valid when the backend rewrites the batch
// descriptor in place (n_tokens and n_seqs are launch sizes).
//
// Robustness: the host cannot see the device-side batch, so the kernel
// treats inconsistent entries as masked instead of reading out of bounds: a
// position whose block-table entry is outside [0, cache_rows / block_size)
// or whose block index is >= max_blocks is skipped, and a row that belongs
// to no sequence (outside [seq_starts[0], seq_starts[n_seqs])) or attends
// to nothing is written as zeros.
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (no allocation, no synchronization: graph-capturable).
#ifndef MEMSERVE_KERNELS_PAGED_ATTENTION_H_
#define MEMSERVE_KERNELS_PAGED_ATTENTION_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

struct PagedAttentionParams {
  // [n_tokens, q row stride] fp32, device; head h at columns [h * head_dim, (h + 1) * head_dim).
  const float* q = nullptr;
  const void* k_cache = nullptr;  // [cache_rows, n_kv_heads * head_dim] of cache_type, device
  const void* v_cache = nullptr;  // same layout as k_cache
  ElementType cache_type = ElementType::kBF16;
  float* out = nullptr;  // [n_tokens, n_heads * head_dim] fp32, device (dense); must not overlap q

  // The batch (BatchDescriptor), device pointers.
  const int32_t* seq_starts = nullptr;    // [n_seqs + 1], non-decreasing; last = n_tokens
  const int32_t* positions = nullptr;     // [n_tokens]
  const int32_t* block_tables = nullptr;  // [n_seqs, max_blocks]
  int64_t n_tokens = 0;                   // query rows (launch size); 0 = nothing to do
  int n_seqs = 0;
  int max_blocks = 0;
  int block_size = 0;  // tokens per cache block
  int64_t cache_rows = 0;

  // The shape (AttentionShape).
  int n_heads = 0;
  int n_kv_heads = 0;      // divides n_heads
  int head_dim = 0;        // 1 .. 256
  int sliding_window = 0;  // 0 = unlimited

  // Elements between consecutive rows of q; 0 = n_heads * head_dim (dense).
  // Lets q be read from inside a fused projection output. REQUIRES >=
  // n_heads * head_dim when set.
  int64_t q_stride = 0;

  // Optional host-side hint: an upper bound on (position + 1) over the
  // batch's queries, 0 = unknown. Only the work split uses it (splits are
  // max_context / splits positions long, the last one open-ended); keys past
  // it are still attended to (correctness never depends on it).
  int64_t max_context = 0;
  // Scratch of at least PagedAttentionWorkspaceBytes(*this) bytes, device;
  // may be null when that is 0.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  int64_t effective_q_stride() const {
    return q_stride == 0 ? static_cast<int64_t>(n_heads) * head_dim : q_stride;
  }
  // 1 / sqrt(float(head_dim)), computed as the CPU backend does.
  float scale() const;

  // InvalidArgument naming the field: a null pointer, a size out of range
  // (n_tokens in [0, 2^31 - 1], n_seqs in [0, n_tokens] and >= 1 when
  // n_tokens > 0, max_blocks >= 1, block_size >= 1, cache_rows >= block_size,
  // head_dim in [1, 256], n_heads a positive multiple of n_kv_heads,
  // sliding_window >= 0, q_stride narrower than a row), or a workspace
  // smaller than PagedAttentionWorkspaceBytes.
  absl::Status Validate() const;
};

// The scratch a launch with these params needs (a function of n_tokens,
// n_heads, head_dim and max_context only, so a CUDA graph can own a fixed
// workspace). 0 when every (row, head) is one block; with few (row, head)
// pairs and a known max_context the keys are split across blocks
// (flash-decoding, kernels/paged_attention_index.h AttentionSplits) and the
// partial results need n_tokens * n_heads * splits * (head_dim + 2) floats.
size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams& params);

// Enqueues the attention on `stream` (a cudaStream_t, nullptr = default
// stream). Validate()'s error, or Internal with the CUDA error string.
absl::Status LaunchPagedAttention(const PagedAttentionParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_PAGED_ATTENTION_H_
