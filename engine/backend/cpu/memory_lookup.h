// The product-key memory lookup on the CPU (semantics: MemoryLookupArgs,
// engine/backend/backend.h): sub-key scores, the two top-k stages, softmax,
// and the weighted gather of value rows.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_

#include <cstdint>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace memserve {

// MemoryLookupArgs (engine/backend/backend.h) as raw host pointers.
struct CpuMemoryLookupArgs {
  int64_t n_tokens = 0;
  int heads = 0;
  int n_keys = 0;
  int knn = 0;
  int k_dim = 0;
  int v_dim = 0;
  const float* queries = nullptr;    // [n_tokens, heads * k_dim]
  const void* keys = nullptr;        // [2 * heads * n_keys, k_dim / 2] of keys_dtype
  DType keys_dtype = DType::kF32;    // F32 or BF16
  const void* values = nullptr;      // [n_keys^2, v_dim] of values_dtype
  DType values_dtype = DType::kF32;  // F32 or BF16
  float* out = nullptr;              // [n_tokens, v_dim]
  int64_t* out_indices = nullptr;    // optional [n_tokens, heads, knn]
  float* out_scores = nullptr;       // optional [n_tokens, heads, knn]
};

// Owns the scratch of the lookup, reused across calls.
// Thread-safety: one Run at a time.
class CpuMemoryLookup {
 public:
  void Run(ThreadPool* pool, const CpuKernels& kernels, const CpuMemoryLookupArgs& args);

 private:
  std::vector<float> subkey_scores_;   // [token block, 2 * heads * n_keys]
  std::vector<int64_t> lookup_rows_;   // [token block, heads, knn]
  std::vector<float> lookup_weights_;  // [token block, heads, knn]
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
