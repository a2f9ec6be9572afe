// The CPU backend's inner loops, one function table per instruction-set
// level (portable C++, AVX2+FMA, AVX-512), chosen at run time. Pointers are raw
// and shapes explicit so that the same table serves MatMul (all rows read the
// same x) and the per-head sub-key scores (each group of rows reads its own
// column slice of x).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_KERNELS_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_KERNELS_H_

#include <cstdint>

#include "engine/backend/cpu/cpu_isa.h"

namespace memserve {

struct CpuKernels {
  CpuIsa isa;
  // y[t * ldy + r] = dot(w[r * ldw .. + in], x[t * ldx .. + in])
  // for r < rows, t < tokens.
  void (*matmul_f32)(const float* w, int64_t ldw, int64_t in, int64_t rows, const float* x,
                     int64_t ldx, int64_t tokens, float* y, int64_t ldy);
  void (*matmul_bf16)(const uint16_t* w, int64_t ldw, int64_t in, int64_t rows, const float* x,
                      int64_t ldx, int64_t tokens, float* y, int64_t ldy);
  // out[i] = dot(q[0 .. n), rows[i * stride .. + n)) * scale for i < count
  // (attention scores of consecutive cache rows).
  void (*dot_rows)(const float* q, const float* rows, int64_t stride, int64_t count, int64_t n,
                   float scale, float* out);
  // y[0 .. n) += coef[i] * rows[i * stride .. + n) for i = 0, 1, ..., count - 1
  // in that order; each element's result is that of count successive axpy_f32
  // calls (attention's weighted sum of values).
  void (*axpy_rows)(const float* coef, const float* rows, int64_t stride, int64_t count, float* y,
                    int64_t n);
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  void (*axpy_bf16)(float a, const uint16_t* x, float* y, int64_t n);
  // Matmul over a packed weight (layout: PackedWeight, packed_weight.h),
  // panels [panel_begin, panel_end): y[t * ldy + r] for the rows r of those
  // panels (r < rows) and t < tokens. Null where the level has no packed
  // kernels (then weights are not packed).
  void (*packed_matmul_bf16)(const uint32_t* panels, int64_t in, int64_t rows, int64_t panel_begin,
                             int64_t panel_end, const float* x, int64_t ldx, int64_t tokens,
                             float* y, int64_t ldy);
  void (*packed_matmul_f32)(const float* panels, int64_t in, int64_t rows, int64_t panel_begin,
                            int64_t panel_end, const float* x, int64_t ldx, int64_t tokens,
                            float* y, int64_t ldy);
  // dot_rows and axpy_rows over BF16 rows (a --kv_cache_dtype bf16 cache),
  // each row widened to fp32 exactly: the same arithmetic as on an F32 cache
  // holding the bf16 values.
  void (*dot_rows_bf16)(const float* q, const uint16_t* rows, int64_t stride, int64_t count,
                        int64_t n, float scale, float* out);
  void (*axpy_rows_bf16)(const float* coef, const uint16_t* rows, int64_t stride, int64_t count,
                         float* y, int64_t n);
  // packed_matmul_* over an I8 packed weight (int8 panels and their block
  // scales: PackedWeight): each weight is float(int8) x its block's scale.
  // Null where the level has none (then I8 weights are dequantized to F32 at
  // load).
  void (*packed_matmul_i8)(const int8_t* panels, const float* scales, int64_t in, int64_t rows,
                           int64_t panel_begin, int64_t panel_end, const float* x, int64_t ldx,
                           int64_t tokens, float* y, int64_t ldy);
  // Softmax in place (attention's weights): x[i] = exp(x[i] - max) / sum
  // for i < n, where max is the largest x and sum the sum of the
  // numerators (in an order fixed per level). The vector levels' exp is
  // within 2 ulp of the true value (0 below exp's normal range), the generic
  // level's is std::exp. REQUIRES: n >= 1.
  void (*softmax)(float* x, int64_t n);
  // y[i] = a[i] / (1 + exp(-a[i])) * b[i] for i < n (SwiGLU's silu(a) * b),
  // with exp as in softmax.
  void (*silu_mul)(const float* a, const float* b, float* y, int64_t n);
};

// The table of `isa`. REQUIRES: CpuIsaSupported(isa) and isa != kAuto.
const CpuKernels& KernelsFor(CpuIsa isa);

// The per-level tables (kernels_{generic,avx2,avx512}.cc); the x86 ones are
// null when this build has no x86 kernels.
const CpuKernels& GenericKernels();
const CpuKernels* Avx2Kernels();
const CpuKernels* Avx512Kernels();

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_KERNELS_H_
