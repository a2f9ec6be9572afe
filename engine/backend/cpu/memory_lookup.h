// The product-key memory lookup on the CPU (MemoryLookupArgs,
// engine/backend/backend.h): sub-key scores, the two top-k stages, softmax,
// and the weighted gather of value rows.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_

#include <cstdint>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"

namespace memserve {

// Owns the scratch of the lookup, reused across calls.
// Thread-safety: one Run at a time.
class CpuMemoryLookup {
 public:
  void Run(ThreadPool* pool, const CpuKernels& kernels, const MemoryLookupArgs& args);

 private:
  std::vector<float> subkey_scores_;   // [token block, 2 * heads * n_keys]
  std::vector<int64_t> lookup_rows_;   // [token block, heads, knn]
  std::vector<float> lookup_weights_;  // [token block, heads, knn]
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_MEMORY_LOOKUP_H_
