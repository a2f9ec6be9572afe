// AVX2 + FMA: 8 lanes. A block of R weight rows x TB tokens keeps R*TB
// accumulators in registers; each weight vector is loaded (and converted from
// bf16) once per block and used for all TB tokens.
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/simd.h"

namespace memserve {

#ifdef MEMSERVE_X86_KERNELS

namespace avx2 {
namespace {

MEMSERVE_TARGET_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
MEMSERVE_TARGET_AVX2 inline __m256 Load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <int R, int TB, typename W>
MEMSERVE_TARGET_AVX2 void Block(const W* w, int64_t ldw, int64_t in, const float* x, int64_t ldx,
                                float* y, int64_t ldy) {
  __m256 acc[R][TB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      MEMSERVE_PREFETCH_AHEAD(w + r * ldw, k);
      wv[r] = Load8(w + r * ldw + k);
    }
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < TB; ++t) {
      float s = Sum8(acc[r][t]);
      for (int64_t kk = k; kk < in; ++kk) s += generic::Load(w + r * ldw + kk) * x[t * ldx + kk];
      y[t * ldy + r] = s;
    }
  }
}

template <int R, typename W>
MEMSERVE_TARGET_AVX2 void RowBlock(const W* w, int64_t ldw, int64_t in, const float* x, int64_t ldx,
                                   int64_t tokens, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 2 <= tokens; t += 2) Block<R, 2>(w, ldw, in, x + t * ldx, ldx, y + t * ldy, ldy);
  if (t < tokens) Block<R, 1>(w, ldw, in, x + t * ldx, ldx, y + t * ldy, ldy);
}

template <typename W>
MEMSERVE_TARGET_AVX2 void MatMul(const W* w, int64_t ldw, int64_t in, int64_t rows, const float* x,
                                 int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) RowBlock<4>(w + r * ldw, ldw, in, x, ldx, tokens, y + r, ldy);
  for (; r < rows; ++r) RowBlock<1>(w + r * ldw, ldw, in, x, ldx, tokens, y + r, ldy);
}

MEMSERVE_TARGET_AVX2 float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  for (; k + 8 <= n; k += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
  float s = Sum8(_mm256_add_ps(acc0, acc1));
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

template <typename W>
MEMSERVE_TARGET_AVX2 void Axpy(float a, const W* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, Load8(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * generic::Load(x + i);
}

MEMSERVE_TARGET_AVX2 void DotRows(const float* q, const float* rows, int64_t stride, int64_t count,
                                  int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = Dot(q, rows + i * stride, n) * scale;
}

// Column chunks of y stay in a register across all rows: per element the same
// fmadd sequence as Axpy row after row.
MEMSERVE_TARGET_AVX2 void AxpyRows(const float* coef, const float* rows, int64_t stride,
                                   int64_t count, float* y, int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 yv = _mm256_loadu_ps(y + c);
    for (int64_t i = 0; i < count; ++i) {
      yv = _mm256_fmadd_ps(_mm256_set1_ps(coef[i]), _mm256_loadu_ps(rows + i * stride + c), yv);
    }
    _mm256_storeu_ps(y + c, yv);
  }
  for (; c < n; ++c) {
    for (int64_t i = 0; i < count; ++i) y[c] += coef[i] * rows[i * stride + c];
  }
}

}  // namespace
}  // namespace avx2

const CpuKernels* Avx2Kernels() {
  static const CpuKernels kernels = {
      CpuIsa::kAvx2,  avx2::MatMul<float>, avx2::MatMul<uint16_t>, avx2::DotRows,
      avx2::AxpyRows, avx2::Axpy<float>,   avx2::Axpy<uint16_t>,   nullptr,
      nullptr,
  };
  return &kernels;
}

#else

const CpuKernels* Avx2Kernels() { return nullptr; }

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve
