// Causal attention over a contiguous or paged K/V cache on the CPU
// (AttentionShape, engine/backend/backend.h).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_

#include <cstdint>

#include "absl/types/span.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace memserve {

// One sequence's part of an attention call, as raw host pointers:
// `n_tokens` new query tokens at positions start_pos .. start_pos + n_tokens
// - 1 against a cache that already holds positions 0 .. start_pos + n_tokens
// - 1 (semantics: AttentionShape, engine/backend/backend.h). Cache rows hold
// n_kv_heads * head_dim elements of kv_dtype (F32, or BF16 for
// --kv_cache_dtype bf16: widened exactly as they are read). Contiguous cache (block_table ==
// nullptr): position j is row j. Paged cache: position j is row block_table[j / block_size] *
// block_size + j % block_size. Both give bit-identical results for the same keys and values.
struct CpuAttentionSeq {
  int64_t n_tokens = 0;
  int64_t start_pos = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int sliding_window = 0;
  const float* q = nullptr;              // [n_tokens, n_heads, head_dim], rotated
  DType kv_dtype = DType::kF32;          // of k_cache and v_cache: F32 or BF16
  const void* k_cache = nullptr;         // rows of [n_kv_heads, head_dim]
  const void* v_cache = nullptr;         // same layout as k_cache
  const int32_t* block_table = nullptr;  // optional
  int block_size = 0;
  float* out = nullptr;  // [n_tokens, n_heads * head_dim]
};

// Runs every sequence of `seqs` in one parallel pass over (sequence, token,
// head) items. Scratch is thread-local (no allocation once a thread has seen
// the longest context).
void CpuAttention(ThreadPool* pool, const CpuKernels& kernels,
                  absl::Span<const CpuAttentionSeq> seqs);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_ATTENTION_H_
