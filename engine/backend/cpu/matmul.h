// The CPU matmuls: split over a thread pool into (row range, token tile)
// tasks, each running one kernel of a CpuKernels table.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_MATMUL_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_MATMUL_H_

#include <cstdint>

#include "engine/backend/cpu/bf16_matmul.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/packed_weight.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"

namespace memserve {

// y[t * ldy + r] = dot(w[r, :], x[t * ldx + g(r) * x_group_stride : + in])
// (+ bias[r]) for r < rows, t < n_tokens, where g(r) = r / rows_per_group:
// rows of one group read their own column slice of x (used for per-head
// sub-keys). w [rows, in] F32|BF16 (row stride in); bias [rows] or null.
void GroupedMatMul(ThreadPool* pool, const CpuKernels& kernels, const void* w, DType w_dtype,
                   int64_t rows, int64_t in, int64_t rows_per_group, int64_t x_group_stride,
                   const void* bias, DType bias_dtype, const float* x, int64_t ldx,
                   int64_t n_tokens, float* y, int64_t ldy);

// y [n_tokens, w.rows] = x [n_tokens, w.in] times the packed weight (+ bias).
// A kBf16Pairs weight runs on `bf16` (x rounded to bf16 first); the others on
// `kernels`' packed kernels. REQUIRES: the kernels of w's layout (bf16 not
// null for kBf16Pairs).
void PackedMatMul(ThreadPool* pool, const CpuKernels& kernels, const CpuBf16Kernels* bf16,
                  const PackedWeight& w, const void* bias, DType bias_dtype, const float* x,
                  int64_t n_tokens, float* y);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_MATMUL_H_
