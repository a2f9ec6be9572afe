// Which kernels the CUDA backend's memory lookup (MemorySelect +
// ValueGather) runs, chosen per process by MEMSERVE_CUDA_MEMORY_KERNELS for
// before/after measurements (tools/device_check.sh runs decode_bench both
// ways):
//   product_key (default, or unset/empty): kernels/product_key.h: the
//       sub-key scores by its split kernel up to 16 tokens (by the fp32 GEMM
//       above), the radix-select selection, the 16-byte gather that writes a
//       column slice in place;
//   legacy: the first path: the GEMM (bf16 keys widened to fp32 on every
//       call), kernels/memory_select (knn rounds of arg-best per stage) and
//       kernels/value_gather (one bf16 scalar per thread per row; a column
//       slice through a scratch copy).
// Both give the CPU's rows for the same sub-key scores (near-ties aside).
// Plain C++ (memory_kernels_test runs it on the CPU).
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_KERNELS_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_KERNELS_H_

#include "absl/status/statusor.h"

namespace memserve::cuda {

enum class MemoryKernels { kProductKey, kLegacy };

inline constexpr const char kMemoryKernelsEnv[] = "MEMSERVE_CUDA_MEMORY_KERNELS";

const char* MemoryKernelsName(MemoryKernels k);

// The choice named by `value` (the variable's value; null = unset):
// InvalidArgument naming MEMSERVE_CUDA_MEMORY_KERNELS and the choices for
// anything else.
absl::StatusOr<MemoryKernels> ParseMemoryKernels(const char* value);

// ParseMemoryKernels(getenv(MEMSERVE_CUDA_MEMORY_KERNELS)).
absl::StatusOr<MemoryKernels> MemoryKernelsFromEnv();

}  // namespace memserve::cuda

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_MEMORY_KERNELS_H_
