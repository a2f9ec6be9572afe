// The product-key memory lookup on the CPU in two steps (semantics:
// MemorySelectArgs and ValueGather, engine/backend/backend.h): select (sub-key
// scores, the two top-k stages, softmax) and gather (the weighted sum of value
// rows over a column range).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_

#include <cstdint>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace memserve {

// MemorySelectArgs (engine/backend/backend.h) as raw host pointers.
struct CpuMemorySelectArgs {
  int64_t n_tokens = 0;
  int heads = 0;
  int n_keys = 0;
  int knn = 0;
  int k_dim = 0;
  const float* queries = nullptr;  // [n_tokens, heads * k_dim]
  const void* keys = nullptr;      // [2 * heads * n_keys, k_dim / 2] of keys_dtype
  DType keys_dtype = DType::kF32;  // F32 or BF16
  int64_t* rows = nullptr;         // [n_tokens, heads, knn] out
  float* weights = nullptr;        // [n_tokens, heads, knn] out
  float* scores = nullptr;         // optional [n_tokens, heads, knn] out
};

// Owns the sub-key score scratch, reused across calls.
// Thread-safety: one Run at a time.
class CpuMemorySelect {
 public:
  void Run(ThreadPool* pool, const CpuKernels& kernels, const CpuMemorySelectArgs& args);

 private:
  std::vector<float> subkey_scores_;  // [token block, 2 * heads * n_keys]
};

// ValueGather (engine/backend/backend.h) as raw host pointers: columns
// [col_begin, col_end) of out [n_tokens, v_dim].
struct CpuValueGatherArgs {
  int64_t n_tokens = 0;
  int64_t picks = 0;  // heads * knn rows per token
  int64_t v_dim = 0;
  const void* values = nullptr;      // [rows, v_dim] of values_dtype
  DType values_dtype = DType::kF32;  // F32 or BF16
  const int64_t* rows = nullptr;     // [n_tokens, picks]
  const float* weights = nullptr;    // [n_tokens, picks]
  int64_t col_begin = 0;             // REQUIRES: a multiple of 16 (bit-identical sharding)
  int64_t col_end = 0;
  float* out = nullptr;  // [n_tokens, v_dim]
};

void CpuValueGather(ThreadPool* pool, const CpuKernels& kernels, const CpuValueGatherArgs& args);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
