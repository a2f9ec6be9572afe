#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/dtype.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MEMSERVE_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace memserve {

// The inner loops, one table per instruction-set level. Pointers are raw and
// shapes explicit so that the same table serves MatMul (all rows read the
// same x) and the per-head sub-key scores (each group of rows reads its own
// column slice of x).
struct CpuBackend::Kernels {
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
  void (*axpy_rows)(const float* coef, const float* rows, int64_t stride, int64_t count,
                    float* y, int64_t n);
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  void (*axpy_bf16)(float a, const uint16_t* x, float* y, int64_t n);
  // Matmul over a packed weight (PackedWeight below), panels
  // [panel_begin, panel_end): y[t * ldy + r] for the rows r of those panels
  // (r < rows) and t < tokens. Null where the level has no packed kernels
  // (then weights are not packed).
  void (*packed_matmul_bf16)(const uint32_t* panels, int64_t in, int64_t rows,
                             int64_t panel_begin, int64_t panel_end, const float* x, int64_t ldx,
                             int64_t tokens, float* y, int64_t ldy);
  void (*packed_matmul_f32)(const float* panels, int64_t in, int64_t rows, int64_t panel_begin,
                            int64_t panel_end, const float* x, int64_t ldx, int64_t tokens,
                            float* y, int64_t ldy);
};

// A [rows, in] weight repacked for the packed kernels, in panels of
// kPanelRows rows. Panel p holds rows 32p .. 32p + 31 (rows past the end are
// zero) column by column: for each k, 32 values, rows 32p + j and
// 32p + 16 + j in lane j of two 16-lane vectors. BF16: one 64-byte group of
// 16 uint32 per k, lane j = bf16(row 32p + j) | bf16(row 32p + 16 + j) << 16,
// so one shift and one mask give both vectors in fp32. F32: 32 floats per k.
// The kernels then multiply a column of 32 weights by one broadcast x[t][k]:
// each output is the fmadd chain over k = 0, 1, ..., in - 1 from 0, whatever
// the token blocking, so a token's result never depends on the batch.
struct CpuBackend::PackedWeight {
  static constexpr int64_t kPanelRows = 32;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t in = 0;
  int64_t panels = 0;
  std::unique_ptr<void, void (*)(void*)> data{nullptr, std::free};  // 64-byte aligned
};

namespace {

// ---------------------------------------------------------------------------
// Portable kernels. Eight partial sums let the compiler vectorize without
// -ffast-math and keep the rounding independent of the target.

namespace generic {

inline float Load(const float* p) { return *p; }
inline float Load(const uint16_t* p) { return Bf16ToF32(*p); }

template <typename W>
float DotW(const W* w, const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += Load(w + k + j) * x[k + j];
  }
  float tail = 0.0f;
  for (; k < n; ++k) tail += Load(w + k) * x[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <typename W>
void MatMul(const W* w, int64_t ldw, int64_t in, int64_t rows, const float* x, int64_t ldx,
            int64_t tokens, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) y[t * ldy + r] = DotW(w + r * ldw, x + t * ldx, in);
  }
}

template <typename W>
void Axpy(float a, const W* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * Load(x + i);
}

void DotRows(const float* q, const float* rows, int64_t stride, int64_t count, int64_t n,
             float scale, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = DotW(q, rows + i * stride, n) * scale;
}

void AxpyRows(const float* coef, const float* rows, int64_t stride, int64_t count, float* y,
              int64_t n) {
  for (int64_t i = 0; i < count; ++i) Axpy(coef[i], rows + i * stride, y, n);
}

}  // namespace generic

const CpuBackend::Kernels kGenericKernels = {
    CpuIsa::kGeneric,     generic::MatMul<float>, generic::MatMul<uint16_t>,
    generic::DotRows,     generic::AxpyRows,      generic::Axpy<float>,
    generic::Axpy<uint16_t>, nullptr,             nullptr,
};

#ifdef MEMSERVE_X86_KERNELS

// ---------------------------------------------------------------------------
// AVX2 + FMA: 8 lanes. A block of R weight rows x TB tokens keeps R*TB
// accumulators in registers; each weight vector is loaded (and converted from
// bf16) once per block and used for all TB tokens.

#define MEMSERVE_TARGET_AVX2 __attribute__((target("avx2,fma")))

// Weight rows stream from memory once per token at decode sizes. The hardware
// prefetcher alone leaves bandwidth unused with several rows read at once
// (measured: bf16 decode matmul ~12 -> ~17 GB/s), so each row is prefetched
// this far ahead, once per 64 bytes of progress along the row. (A macro, not
// an inline function: GCC 12 drops a conditional prefetch inside an inlined
// helper.)
constexpr int64_t kPrefetchBytes = 512;
#define MEMSERVE_PREFETCH_AHEAD(row, k)                                                       \
  do {                                                                                        \
    if ((((k) * static_cast<int64_t>(sizeof(*(row)))) & 63) == 0) {                           \
      _mm_prefetch(reinterpret_cast<const char*>((row) + (k)) + kPrefetchBytes, _MM_HINT_T0); \
    }                                                                                         \
  } while (0)

namespace avx2 {

MEMSERVE_TARGET_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
MEMSERVE_TARGET_AVX2 inline __m256 Load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
MEMSERVE_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
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

MEMSERVE_TARGET_AVX2 void DotRows(const float* q, const float* rows, int64_t stride,
                                  int64_t count, int64_t n, float scale, float* out) {
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

}  // namespace avx2

const CpuBackend::Kernels kAvx2Kernels = {
    CpuIsa::kAvx2,     avx2::MatMul<float>, avx2::MatMul<uint16_t>, avx2::DotRows,
    avx2::AxpyRows,    avx2::Axpy<float>,   avx2::Axpy<uint16_t>,
    nullptr,           nullptr,
};

// ---------------------------------------------------------------------------
// AVX-512 (F, BW, VL) + FMA: 16 lanes, masked loads for the tails, blocks of
// 4 rows x 4 tokens (16 accumulators of 32 registers).

#define MEMSERVE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

namespace avx512 {

MEMSERVE_TARGET_AVX512 inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
// bf16 -> fp32: widen to 32 bits and shift into the upper half. (The
// all-ones-mask forms avoid GCC 12's bogus -Wmaybe-uninitialized on the
// unmasked intrinsics; they compile to the same instructions.)
MEMSERVE_TARGET_AVX512 inline __m512 Bf16x16ToF32(__m256i h) {
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, h), 16));
}
MEMSERVE_TARGET_AVX512 inline __m512 Load16(const uint16_t* p) {
  return Bf16x16ToF32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
MEMSERVE_TARGET_AVX512 inline __m512 Load16(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
MEMSERVE_TARGET_AVX512 inline __m512 Load16(const uint16_t* p, __mmask16 m) {
  return Bf16x16ToF32(_mm256_maskz_loadu_epi16(m, p));
}
MEMSERVE_TARGET_AVX512 inline float Sum16(__m512 v) {
  // Through memory: GCC 12 warns (bogusly) on the lane-extracting intrinsics.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  const __m256 lo = _mm256_load_ps(lanes);
  const __m256 hi = _mm256_load_ps(lanes + 8);
  return avx2::Sum8(_mm256_add_ps(lo, hi));
}
MEMSERVE_TARGET_AVX512 inline __mmask16 TailMask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

template <int R, int TB, typename W>
MEMSERVE_TARGET_AVX512 void Block(const W* w, int64_t ldw, int64_t in, const float* x, int64_t ldx,
                                  float* y, int64_t ldy) {
  __m512 acc[R][TB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    __m512 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      MEMSERVE_PREFETCH_AHEAD(w + r * ldw, k);
      wv[r] = Load16(w + r * ldw + k);
    }
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (k < in) {
    const __mmask16 m = TailMask(in - k);
    __m512 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = Load16(w + r * ldw + k, m);
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < TB; ++t) y[t * ldy + r] = Sum16(acc[r][t]);
  }
}

template <int R, typename W>
MEMSERVE_TARGET_AVX512 void RowBlock(const W* w, int64_t ldw, int64_t in, const float* x,
                                     int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= tokens; t += 4) Block<R, 4>(w, ldw, in, x + t * ldx, ldx, y + t * ldy, ldy);
  if (t + 2 <= tokens) {
    Block<R, 2>(w, ldw, in, x + t * ldx, ldx, y + t * ldy, ldy);
    t += 2;
  }
  if (t < tokens) Block<R, 1>(w, ldw, in, x + t * ldx, ldx, y + t * ldy, ldy);
}

template <typename W>
MEMSERVE_TARGET_AVX512 void MatMul(const W* w, int64_t ldw, int64_t in, int64_t rows,
                                   const float* x, int64_t ldx, int64_t tokens, float* y,
                                   int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) RowBlock<4>(w + r * ldw, ldw, in, x, ldx, tokens, y + r, ldy);
  for (; r < rows; ++r) RowBlock<1>(w + r * ldw, ldw, in, x, ldx, tokens, y + r, ldy);
}

MEMSERVE_TARGET_AVX512 float Dot(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), acc1);
  }
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
  }
  if (k < n) {
    const __mmask16 m = TailMask(n - k);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), acc1);
  }
  return Sum16(_mm512_add_ps(acc0, acc1));
}

template <typename W>
MEMSERVE_TARGET_AVX512 void Axpy(float a, const W* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, Load16(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 yv = _mm512_maskz_loadu_ps(m, y + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, Load16(x + i, m), yv));
  }
}

MEMSERVE_TARGET_AVX512 void DotRows(const float* q, const float* rows, int64_t stride,
                                    int64_t count, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = Dot(q, rows + i * stride, n) * scale;
}

// Column chunks of y stay in a register across all rows: per element the same
// fmadd sequence as Axpy row after row.
MEMSERVE_TARGET_AVX512 void AxpyRows(const float* coef, const float* rows, int64_t stride,
                                     int64_t count, float* y, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 m = n - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(n - c);
    __m512 yv = _mm512_maskz_loadu_ps(m, y + c);
    for (int64_t i = 0; i < count; ++i) {
      yv = _mm512_fmadd_ps(_mm512_set1_ps(coef[i]), _mm512_maskz_loadu_ps(m, rows + i * stride + c),
                           yv);
    }
    _mm512_mask_storeu_ps(y + c, m, yv);
  }
}

// --- packed kernels (layout: CpuBackend::PackedWeight) ---

// The two 16-row weight vectors of column k of a packed panel. (The masked
// shift: see Bf16x16ToF32.)
MEMSERVE_TARGET_AVX512 inline void PanelColumn(const uint32_t* panel, int64_t k, __m512* lo,
                                               __m512* hi) {
  const __m512i v = _mm512_loadu_si512(panel + k * 16);
  *lo = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(static_cast<__mmask16>(0xFFFF), v, 16));
  *hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
MEMSERVE_TARGET_AVX512 inline void PanelColumn(const float* panel, int64_t k, __m512* lo,
                                               __m512* hi) {
  *lo = _mm512_loadu_ps(panel + k * 32);
  *hi = _mm512_loadu_ps(panel + k * 32 + 16);
}
// Elements of P per panel column: 16 uint32 (bf16 pairs) or 32 floats.
template <typename P>
constexpr int64_t PanelColumnElems() {
  return std::is_same<P, float>::value ? 32 : 16;
}
// Packed panels stream from memory once per block of tokens; prefetch this
// far ahead (the hardware prefetcher alone leaves bandwidth unused).
constexpr int64_t kPanelPrefetchBytes = 2048;

// NP consecutive panels (32 * NP rows) x TB tokens: 2 * NP * TB accumulators.
// `panel` = the first panel; `rows_left` = rows from its first row to the end.
template <int NP, int TB, typename P>
MEMSERVE_TARGET_AVX512 void PackedBlock(const P* panel, int64_t in, const float* x, int64_t ldx,
                                        float* y, int64_t ldy, int64_t rows_left) {
  const int64_t panel_stride = in * PanelColumnElems<P>();
  __m512 acc[2 * NP][TB];
#pragma GCC unroll 8
  for (int i = 0; i < 2 * NP; ++i) {
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < in; ++k) {
    __m512 w[2 * NP];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      const P* pq = panel + q * panel_stride;
      const char* column = reinterpret_cast<const char*>(pq + k * PanelColumnElems<P>());
      // The bound is a constexpr local: with the template call in the loop
      // condition itself, GCC 12 ignores the unroll pragma and warns
      // "ignoring loop annotation" for every instantiation.
      constexpr int64_t kColumnBytes = PanelColumnElems<P>() * sizeof(P);
#pragma GCC unroll 2
      for (int64_t line = 0; line < kColumnBytes; line += 64) {
        _mm_prefetch(column + line + kPanelPrefetchBytes, _MM_HINT_T0);
      }
      PanelColumn(pq, k, &w[2 * q], &w[2 * q + 1]);
    }
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
#pragma GCC unroll 8
      for (int i = 0; i < 2 * NP; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xb, acc[i][t]);
    }
  }
  for (int i = 0; i < 2 * NP; ++i) {
    const int64_t r0 = 16 * i;
    if (r0 >= rows_left) break;
    const __mmask16 m = rows_left - r0 >= 16 ? static_cast<__mmask16>(0xFFFF)
                                             : TailMask(rows_left - r0);
    for (int t = 0; t < TB; ++t) _mm512_mask_storeu_ps(y + t * ldy + r0, m, acc[i][t]);
  }
}

// One panel x `tb` (1..12) tokens.
template <typename P>
MEMSERVE_TARGET_AVX512 void PackedBlockTokens(int tb, const P* panel, int64_t in, const float* x,
                                              int64_t ldx, float* y, int64_t ldy,
                                              int64_t rows_left) {
  switch (tb) {
#define MEMSERVE_CASE(n) \
  case n:                \
    return PackedBlock<1, n>(panel, in, x, ldx, y, ldy, rows_left);
    MEMSERVE_CASE(1)
    MEMSERVE_CASE(2)
    MEMSERVE_CASE(3)
    MEMSERVE_CASE(4)
    MEMSERVE_CASE(5)
    MEMSERVE_CASE(6)
    MEMSERVE_CASE(7)
    MEMSERVE_CASE(8)
    MEMSERVE_CASE(9)
    MEMSERVE_CASE(10)
    MEMSERVE_CASE(11)
    MEMSERVE_CASE(12)
#undef MEMSERVE_CASE
  }
}

// Up to 12 tokens per block (24 accumulators + 2 weight vectors + the
// broadcast fit the 32 registers); T tokens are split into equal blocks.
// One token: four panels at once, so that 8 independent fmadd chains hide
// the latency while the weights stream from memory.
template <typename P>
MEMSERVE_TARGET_AVX512 void PackedMatMul(const P* panels, int64_t in, int64_t rows,
                                         int64_t panel_begin, int64_t panel_end, const float* x,
                                         int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  constexpr int64_t kMaxTb = 12;
  const int64_t panel_stride = in * PanelColumnElems<P>();
  int64_t p = panel_begin;
  if (tokens == 1) {
    for (; p + 4 <= panel_end; p += 4) {
      PackedBlock<4, 1>(panels + p * panel_stride, in, x, ldx, y + p * 32, ldy, rows - p * 32);
    }
  }
  const int64_t blocks = (tokens + kMaxTb - 1) / kMaxTb;
  const int64_t tb = (tokens + blocks - 1) / blocks;
  for (; p < panel_end; ++p) {
    for (int64_t t = 0; t < tokens; t += tb) {
      PackedBlockTokens(static_cast<int>(std::min(tb, tokens - t)), panels + p * panel_stride, in,
                        x + t * ldx, ldx, y + t * ldy + p * 32, ldy, rows - p * 32);
    }
  }
}

}  // namespace avx512

const CpuBackend::Kernels kAvx512Kernels = {
    CpuIsa::kAvx512,     avx512::MatMul<float>, avx512::MatMul<uint16_t>, avx512::DotRows,
    avx512::AxpyRows,    avx512::Axpy<float>,   avx512::Axpy<uint16_t>,
    avx512::PackedMatMul<uint32_t>, avx512::PackedMatMul<float>,
};

#endif  // MEMSERVE_X86_KERNELS

const CpuBackend::Kernels* KernelsFor(CpuIsa isa) {
#ifdef MEMSERVE_X86_KERNELS
  if (isa == CpuIsa::kAvx512) return &kAvx512Kernels;
  if (isa == CpuIsa::kAvx2) return &kAvx2Kernels;
#endif
  (void)isa;
  return &kGenericKernels;
}

CpuIsa DetectIsa() {
#ifdef MEMSERVE_X86_KERNELS
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return CpuIsa::kAvx512;
  }
  if (fma && __builtin_cpu_supports("avx2")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kGeneric;
}

int IsaRank(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return 2;
    case CpuIsa::kAvx2:
      return 1;
    default:
      return 0;
  }
}

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

template <typename T>
void GrowTo(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
}

// The k best of s[0..n) sorted by (score desc, index asc), written to
// (out_s, out_i). NaN scores count as -inf. REQUIRES: 1 <= k <= n.
void TopKSubKeys(const float* s, int n, int k, float* out_s, int32_t* out_i) {
  int size = 0;
  for (int j = 0; j < n; ++j) {
    float v = s[j];
    if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
    if (size == k) {
      // Later indices lose ties, so only a strictly larger score enters.
      if (!(v > out_s[k - 1])) continue;
      --size;
    }
    int p = size;
    while (p > 0 && v > out_s[p - 1]) {
      out_s[p] = out_s[p - 1];
      out_i[p] = out_i[p - 1];
      --p;
    }
    out_s[p] = v;
    out_i[p] = j;
    ++size;
  }
}

inline bool RowBefore(float sa, int64_t ra, float sb, int64_t rb) {
  return sa > sb || (sa == sb && ra < rb);
}

// Thread-local scratch: no allocation once a thread has seen the largest size.
struct LookupScratch {
  std::vector<float> s1, s2, best_s;
  std::vector<int32_t> i1, i2;
  std::vector<int64_t> best_r;
};
LookupScratch& ThreadLookupScratch() {
  thread_local LookupScratch scratch;
  return scratch;
}
std::vector<float>& ThreadAttentionScratch() {
  thread_local std::vector<float> scratch;
  return scratch;
}

}  // namespace

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool CpuIsaSupported(CpuIsa isa) {
  static const CpuIsa detected = DetectIsa();
  if (isa == CpuIsa::kAuto || isa == CpuIsa::kGeneric) return true;
  return IsaRank(isa) <= IsaRank(detected);
}

std::vector<CpuIsa> SupportedCpuIsas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (CpuIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

CpuBackend::CpuBackend(const Options& options) {
  CpuIsa isa = options.isa;
  if (isa == CpuIsa::kAuto || !CpuIsaSupported(isa)) isa = SupportedCpuIsas().back();
  isa_ = isa;
  kernels_ = KernelsFor(isa);
  pool_ = std::make_unique<ThreadPool>(options.num_threads);
}

CpuBackend::~CpuBackend() = default;

namespace {

// y[t * ldy + r] += bias[r] for r in [r_begin, r_end), t in [t_begin, t_end);
// nothing when bias is null.
void AddBias(const void* bias, DType bias_dtype, int64_t r_begin, int64_t r_end, int64_t t_begin,
             int64_t t_end, float* y, int64_t ldy) {
  if (bias == nullptr) return;
  for (int64_t t = t_begin; t < t_end; ++t) {
    float* yt = y + t * ldy;
    if (bias_dtype == DType::kF32) {
      const float* b = static_cast<const float*>(bias);
      for (int64_t r = r_begin; r < r_end; ++r) yt[r] += b[r];
    } else {
      const uint16_t* b = static_cast<const uint16_t*>(bias);
      for (int64_t r = r_begin; r < r_end; ++r) yt[r] += Bf16ToF32(b[r]);
    }
  }
}

// How a matmul is split over the thread pool: tasks are (range of row units,
// tile of tokens), where a unit is a weight row (unpacked) or a 32-row panel
// (packed). Tokens go in tiles so that a tile of x stays in L2 while the
// weights of a task stream through L1; at decode sizes (a few tokens) every
// weight is read from memory once and used for all tokens. Tasks: about 4
// per thread, each with enough multiply-adds to amortize scheduling.
class MatMulTasks {
 public:
  static constexpr int64_t kTokenTile = 64;

  // `units` row units of `macs_per_unit_token` multiply-adds per token each;
  // unit ranges are multiples of `unit_align` (except the last).
  MatMulTasks(int64_t units, int64_t macs_per_unit_token, int64_t unit_align, int64_t n_tokens,
              int threads)
      : units_(units), n_tokens_(n_tokens), token_tiles_((n_tokens + kTokenTile - 1) / kTokenTile) {
    constexpr int64_t kMinTaskMacs = 1 << 15;
    const int64_t tile_tokens = std::min(n_tokens, kTokenTile);
    const int64_t chunks_wanted =
        std::max<int64_t>(1, (static_cast<int64_t>(threads) * 4 + token_tiles_ - 1) / token_tiles_);
    int64_t chunk = (units + chunks_wanted - 1) / chunks_wanted;
    chunk = std::max(chunk, kMinTaskMacs / std::max<int64_t>(1, macs_per_unit_token * tile_tokens));
    unit_chunk_ = std::max(unit_align, (chunk + unit_align - 1) / unit_align * unit_align);
    unit_chunks_ = (units + unit_chunk_ - 1) / unit_chunk_;
  }

  int64_t count() const { return unit_chunks_ * token_tiles_; }
  // Task `task`'s units [*u_begin, *u_end) and tokens [*t_begin, *t_end).
  void Get(int64_t task, int64_t* u_begin, int64_t* u_end, int64_t* t_begin,
           int64_t* t_end) const {
    *u_begin = (task % unit_chunks_) * unit_chunk_;
    *u_end = std::min(units_, *u_begin + unit_chunk_);
    *t_begin = (task / unit_chunks_) * kTokenTile;
    *t_end = std::min(n_tokens_, *t_begin + kTokenTile);
  }

 private:
  int64_t units_, n_tokens_, token_tiles_;
  int64_t unit_chunk_ = 1, unit_chunks_ = 1;
};

// Copies panel p of a [rows, in] weight into the layout of
// CpuBackend::PackedWeight (`out` = the start of the packed weight).
void PackPanelBf16(const uint16_t* w, int64_t rows, int64_t in, int64_t p, uint32_t* out) {
  uint32_t* panel = out + p * in * 16;
  std::memset(panel, 0, static_cast<size_t>(in * 16) * sizeof(uint32_t));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    const int64_t j = r - p * 32;
    uint32_t* col = panel + j % 16;
    const int shift = j < 16 ? 0 : 16;
    for (int64_t k = 0; k < in; ++k) col[k * 16] |= static_cast<uint32_t>(w[r * in + k]) << shift;
  }
}

void PackPanelF32(const float* w, int64_t rows, int64_t in, int64_t p, float* out) {
  float* panel = out + p * in * 32;
  std::memset(panel, 0, static_cast<size_t>(in * 32) * sizeof(float));
  for (int64_t r = p * 32; r < std::min(rows, p * 32 + 32); ++r) {
    float* col = panel + (r - p * 32);
    for (int64_t k = 0; k < in; ++k) col[k * 32] = w[r * in + k];
  }
}

}  // namespace

void CpuBackend::PrepareMatMulWeights(absl::Span<const TensorView* const> weights) {
  const Kernels& kern = *kernels_;
  if (kern.packed_matmul_bf16 == nullptr || kern.packed_matmul_f32 == nullptr) return;
  for (const TensorView* w : weights) {
    if (w == nullptr || w->data == nullptr || w->shape.size() != 2 ||
        w->shape[0] < kMinPackedRows || w->shape[1] < 1 ||
        packed_.count(w->data) != 0) {
      continue;
    }
    auto pw = std::make_unique<PackedWeight>();
    pw->dtype = w->dtype;
    pw->rows = w->shape[0];
    pw->in = w->shape[1];
    pw->panels = (pw->rows + PackedWeight::kPanelRows - 1) / PackedWeight::kPanelRows;
    const size_t bytes = static_cast<size_t>(pw->panels * PackedWeight::kPanelRows * pw->in) *
                         DTypeSize(w->dtype);
    pw->data.reset(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (pw->data == nullptr) continue;  // out of memory: this weight stays unpacked
    const PackedWeight& pwr = *pw;
    pool_->ParallelFor(pw->panels, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        if (w->dtype == DType::kBF16) {
          PackPanelBf16(static_cast<const uint16_t*>(w->data), pwr.rows, pwr.in, p,
                        static_cast<uint32_t*>(pwr.data.get()));
        } else {
          PackPanelF32(static_cast<const float*>(w->data), pwr.rows, pwr.in, p,
                       static_cast<float*>(pwr.data.get()));
        }
      }
    });
    packed_.emplace(w->data, std::move(pw));
  }
}

void CpuBackend::PackedMatMul(const PackedWeight& w, const TensorView* bias, const float* x,
                              int64_t n_tokens, float* y) {
  if (n_tokens <= 0) return;
  // Within a task every panel is read from memory once and used for all
  // tokens of the tile (up to 12 tokens per pass, further passes hit the cache).
  const MatMulTasks tasks(w.panels, w.in * PackedWeight::kPanelRows, /*unit_align=*/1, n_tokens,
                          pool_->num_threads());
  const Kernels& kern = *kernels_;
  const void* bias_data = bias != nullptr ? bias->data : nullptr;
  const DType bias_dtype = bias != nullptr ? bias->dtype : DType::kF32;
  pool_->ParallelFor(tasks.count(), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      int64_t p_begin, p_end, t_begin, t_end;
      tasks.Get(task, &p_begin, &p_end, &t_begin, &t_end);
      const float* xt = x + t_begin * w.in;
      float* yt = y + t_begin * w.rows;
      if (w.dtype == DType::kBF16) {
        kern.packed_matmul_bf16(static_cast<const uint32_t*>(w.data.get()), w.in, w.rows, p_begin,
                                p_end, xt, w.in, t_end - t_begin, yt, w.rows);
      } else {
        kern.packed_matmul_f32(static_cast<const float*>(w.data.get()), w.in, w.rows, p_begin,
                               p_end, xt, w.in, t_end - t_begin, yt, w.rows);
      }
      AddBias(bias_data, bias_dtype, p_begin * PackedWeight::kPanelRows,
              std::min(w.rows, p_end * PackedWeight::kPanelRows), t_begin, t_end, y, w.rows);
    }
  });
}

void CpuBackend::GroupedMatMul(const void* w, DType w_dtype, int64_t rows, int64_t in,
                               int64_t rows_per_group, int64_t x_group_stride, const void* bias,
                               DType bias_dtype, const float* x, int64_t ldx, int64_t n_tokens,
                               float* y, int64_t ldy) {
  if (rows <= 0 || n_tokens <= 0) return;
  // Row ranges in multiples of 4 (the kernels' row block).
  const MatMulTasks tasks(rows, in, /*unit_align=*/4, n_tokens, pool_->num_threads());
  const Kernels& kern = *kernels_;

  auto run_task = [&](int64_t task) {
    int64_t r_begin, r_end, t_begin, t_end;
    tasks.Get(task, &r_begin, &r_end, &t_begin, &t_end);
    for (int64_t r = r_begin; r < r_end;) {
      const int64_t g = r / rows_per_group;
      const int64_t seg_end = std::min(r_end, (g + 1) * rows_per_group);
      const float* xs = x + t_begin * ldx + g * x_group_stride;
      float* ys = y + t_begin * ldy + r;
      if (w_dtype == DType::kF32) {
        kern.matmul_f32(static_cast<const float*>(w) + r * in, in, in, seg_end - r, xs, ldx,
                        t_end - t_begin, ys, ldy);
      } else {
        kern.matmul_bf16(static_cast<const uint16_t*>(w) + r * in, in, in, seg_end - r, xs, ldx,
                         t_end - t_begin, ys, ldy);
      }
      r = seg_end;
    }
    AddBias(bias, bias_dtype, r_begin, r_end, t_begin, t_end, y, ldy);
  };
  pool_->ParallelFor(tasks.count(), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) run_task(task);
  });
}

void CpuBackend::MatMul(const float* x, int64_t n_tokens, const TensorView& w,
                        const TensorView* bias, float* y) {
  const auto packed = packed_.find(w.data);
  if (packed != packed_.end()) {
    PackedMatMul(*packed->second, bias, x, n_tokens, y);
    return;
  }
  const int64_t out = w.shape[0];
  const int64_t in = w.shape[1];
  GroupedMatMul(w.data, w.dtype, out, in, /*rows_per_group=*/out, /*x_group_stride=*/0,
                bias != nullptr ? bias->data : nullptr, bias != nullptr ? bias->dtype : DType::kF32,
                x, in, n_tokens, y, out);
}

void CpuBackend::RmsNorm(const float* x, int64_t n_tokens, const TensorView& weight, float eps,
                         float* y) {
  const int64_t dim = weight.shape[0];
  const bool bf16 = weight.dtype == DType::kBF16;
  const float* wf = static_cast<const float*>(weight.data);
  const uint16_t* wb = static_cast<const uint16_t*>(weight.data);
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* xt = x + t * dim;
          float* yt = y + t * dim;
          double sum_sq = 0.0;
          for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xt[i]) * xt[i];
          const float mean = static_cast<float>(sum_sq / static_cast<double>(dim));
          const float inv = 1.0f / std::sqrt(mean + eps);
          for (int64_t i = 0; i < dim; ++i) {
            yt[i] = (xt[i] * inv) * (bf16 ? Bf16ToF32(wb[i]) : wf[i]);
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)));
}

void CpuBackend::Embedding(const TensorView& table, absl::Span<const int> ids, float* y) {
  const int64_t dim = table.shape[1];
  const char* base = static_cast<const char*>(table.data);
  const size_t row_bytes = static_cast<size_t>(dim) * DTypeSize(table.dtype);
  for (size_t t = 0; t < ids.size(); ++t) {
    ConvertToF32(table.dtype, base + static_cast<size_t>(ids[t]) * row_bytes,
                 static_cast<size_t>(dim), y + t * dim);
  }
}

void CpuBackend::Rope(float* x, int64_t n_tokens, int n_heads, int head_dim,
                      const int32_t* positions, const RopeTable& table) {
  const int half = head_dim / 2;
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* c = table.cos.data() + static_cast<size_t>(positions[t]) * half;
          const float* s = table.sin.data() + static_cast<size_t>(positions[t]) * half;
          for (int h = 0; h < n_heads; ++h) {
            float* v = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; ++i) {
              const float x0 = v[2 * i];
              const float x1 = v[2 * i + 1];
              v[2 * i] = c[i] * x0 - s[i] * x1;
              v[2 * i + 1] = s[i] * x0 + c[i] * x1;
            }
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 8192 / std::max(1, n_heads * head_dim)));
}

void CpuBackend::Attention(absl::Span<const AttentionArgs> seqs) {
  // Work items are (sequence, token, head) triples numbered consecutively;
  // first_item[s] is the first item of sequence s.
  std::vector<int64_t> first_item(seqs.size() + 1, 0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    first_item[s + 1] = first_item[s] + seqs[s].n_tokens * seqs[s].n_heads;
  }
  const Kernels& kern = *kernels_;
  pool_->ParallelFor(first_item.back(), [&](int64_t begin, int64_t end) {
    std::vector<float>& scores = ThreadAttentionScratch();
    size_t s =
        std::upper_bound(first_item.begin(), first_item.end(), begin) - first_item.begin() - 1;
    for (int64_t item = begin; item < end; ++item) {
      while (item >= first_item[s + 1]) ++s;
      const AttentionArgs& a = seqs[s];
      const int64_t local = item - first_item[s];
      const int64_t t = local / a.n_heads;
      const int h = static_cast<int>(local % a.n_heads);
      const int hd = a.head_dim;
      const int64_t row_floats = static_cast<int64_t>(a.n_kv_heads) * hd;
      const int64_t head_offset = static_cast<int64_t>(h / (a.n_heads / a.n_kv_heads)) * hd;
      const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
      const int64_t pos = a.start_pos + t;
      const int64_t lo =
          a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
      const int64_t n = pos - lo + 1;
      GrowTo(&scores, static_cast<size_t>(n));
      // Positions [lo, pos] in runs that are contiguous in the cache (one
      // block each when paged): fn(first index into scores, count, offset of
      // the run's first kv head vector in k_cache / v_cache).
      auto for_each_run = [&](auto&& fn) {
        if (a.block_table == nullptr) {
          fn(int64_t{0}, n, lo * row_floats + head_offset);
          return;
        }
        for (int64_t j = lo; j <= pos;) {
          const int64_t offset = j % a.block_size;
          const int64_t count = std::min<int64_t>(a.block_size - offset, pos + 1 - j);
          const int64_t r = static_cast<int64_t>(a.block_table[j / a.block_size]) * a.block_size;
          fn(j - lo, count, (r + offset) * row_floats + head_offset);
          j += count;
        }
      };
      const float* q = a.q + (t * a.n_heads + h) * hd;
      for_each_run([&](int64_t first, int64_t count, int64_t offset) {
        kern.dot_rows(q, a.k_cache + offset, row_floats, count, hd, scale, scores.data() + first);
      });
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) max_score = std::max(max_score, scores[j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      for (int64_t j = 0; j < n; ++j) scores[j] /= sum;
      float* out = a.out + (t * a.n_heads + h) * hd;
      std::fill(out, out + hd, 0.0f);
      for_each_run([&](int64_t first, int64_t count, int64_t offset) {
        kern.axpy_rows(scores.data() + first, a.v_cache + offset, row_floats, count, out, hd);
      });
    }
  });
}

void CpuBackend::SwiGlu(const float* a, const float* b, int64_t n, float* y) {
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] = Silu(a[i]) * b[i];
      },
      /*min_chunk=*/16384);
}

void CpuBackend::Add(const float* x, int64_t n, float* y) {
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] += x[i];
      },
      /*min_chunk=*/65536);
}

void CpuBackend::SigmoidGateRows(const float* gate, int64_t rows, int64_t cols, float* x) {
  for (int64_t r = 0; r < rows; ++r) {
    const float g = Sigmoid(gate[r]);
    float* xr = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) xr[c] *= g;
  }
}

void CpuBackend::MemoryLookup(const MemoryLookupArgs& a) {
  const int heads = a.heads;
  const int n_keys = a.n_keys;
  const int knn = a.knn;
  const int64_t half = a.k_dim / 2;
  const int64_t v_dim = a.v_dim;
  const int64_t key_rows = 2LL * heads * n_keys;
  const int64_t q_stride = static_cast<int64_t>(heads) * a.k_dim;
  const Kernels& kern = *kernels_;
  const int threads = pool_->num_threads();
  // Tokens per block bound the sub-key score scratch (block x key_rows floats).
  constexpr int64_t kTokenBlock = 64;

  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kTokenBlock) {
    const int64_t nb = std::min(kTokenBlock, a.n_tokens - t0);
    GrowTo(&subkey_scores_, static_cast<size_t>(nb * key_rows));
    GrowTo(&lookup_rows_, static_cast<size_t>(nb * heads * knn));
    GrowTo(&lookup_weights_, static_cast<size_t>(nb * heads * knn));
    float* scores = subkey_scores_.data();

    // 1. Sub-key scores: keys row r = (h, half_idx, j) belongs to group
    //    g = 2h + half_idx = r / n_keys and reads query columns
    //    [g * k_dim/2, (g+1) * k_dim/2).  scores [nb, key_rows].
    GroupedMatMul(a.keys->data, a.keys->dtype, key_rows, half, /*rows_per_group=*/n_keys,
                  /*x_group_stride=*/half, nullptr, DType::kF32, a.queries + t0 * q_stride,
                  q_stride, nb, scores, key_rows);

    // 2. Per (token, head): top-knn per half, candidate pairs, top-knn rows,
    //    softmax.
    pool_->ParallelFor(nb * heads, [&](int64_t begin, int64_t end) {
      LookupScratch& s = ThreadLookupScratch();
      GrowTo(&s.s1, knn);
      GrowTo(&s.s2, knn);
      GrowTo(&s.i1, knn);
      GrowTo(&s.i2, knn);
      GrowTo(&s.best_s, knn);
      GrowTo(&s.best_r, knn);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t t = item / heads;
        const int h = static_cast<int>(item % heads);
        const float* head_scores = scores + t * key_rows + 2LL * h * n_keys;
        TopKSubKeys(head_scores, n_keys, knn, s.s1.data(), s.i1.data());
        TopKSubKeys(head_scores + n_keys, n_keys, knn, s.s2.data(), s.i2.data());
        // Both lists are sorted, so pair (ia, ib) is beaten by every
        // (ia', ib') with ia' <= ia, ib' <= ib: only (ia+1)*(ib+1) <= knn
        // can be among the best knn.
        int size = 0;
        for (int ia = 0; ia < knn; ++ia) {
          const int nb_max = knn / (ia + 1);
          for (int ib = 0; ib < nb_max; ++ib) {
            const float v = s.s1[ia] + s.s2[ib];
            const int64_t row = static_cast<int64_t>(s.i1[ia]) * n_keys + s.i2[ib];
            if (size == knn) {
              if (!RowBefore(v, row, s.best_s[knn - 1], s.best_r[knn - 1])) continue;
              --size;
            }
            int p = size;
            while (p > 0 && RowBefore(v, row, s.best_s[p - 1], s.best_r[p - 1])) {
              s.best_s[p] = s.best_s[p - 1];
              s.best_r[p] = s.best_r[p - 1];
              --p;
            }
            s.best_s[p] = v;
            s.best_r[p] = row;
            ++size;
          }
        }
        // Softmax over the knn scores (sorted, so the first is the max).
        float* w = lookup_weights_.data() + item * knn;
        int64_t* rows = lookup_rows_.data() + item * knn;
        float sum = 0.0f;
        for (int k = 0; k < knn; ++k) {
          w[k] = std::exp(s.best_s[k] - s.best_s[0]);
          sum += w[k];
        }
        for (int k = 0; k < knn; ++k) {
          w[k] /= sum;
          rows[k] = s.best_r[k];
        }
        const int64_t out_off = ((t0 + t) * heads + h) * static_cast<int64_t>(knn);
        if (a.out_indices != nullptr) std::copy(rows, rows + knn, a.out_indices + out_off);
        if (a.out_scores != nullptr) {
          std::copy(s.best_s.begin(), s.best_s.begin() + knn, a.out_scores + out_off);
        }
      }
    });

    // 3. Weighted gather of value rows, summed over heads, fp32 accumulation.
    //    Tasks are (token, column block); small batches split columns so that
    //    all threads take part.
    const int64_t col_blocks =
        std::max<int64_t>(1, std::min<int64_t>(v_dim / 64, (2LL * threads + nb - 1) / nb));
    const int64_t col_block = ((v_dim + col_blocks - 1) / col_blocks + 15) / 16 * 16;
    const int64_t n_col_blocks = (v_dim + col_block - 1) / col_block;
    const bool bf16_values = a.values->dtype == DType::kBF16;
    pool_->ParallelFor(nb * n_col_blocks, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / n_col_blocks;
        const int64_t c0 = (task % n_col_blocks) * col_block;
        const int64_t cn = std::min(v_dim, c0 + col_block) - c0;
        float* out = a.out + (t0 + t) * v_dim + c0;
        std::fill(out, out + cn, 0.0f);
        const float* w = lookup_weights_.data() + t * heads * knn;
        const int64_t* rows = lookup_rows_.data() + t * heads * knn;
        for (int64_t i = 0; i < static_cast<int64_t>(heads) * knn; ++i) {
          if (bf16_values) {
            kern.axpy_bf16(
                w[i], static_cast<const uint16_t*>(a.values->data) + rows[i] * v_dim + c0, out, cn);
          } else {
            kern.axpy_f32(w[i], static_cast<const float*>(a.values->data) + rows[i] * v_dim + c0,
                          out, cn);
          }
        }
      }
    });
  }
}

}  // namespace memserve
