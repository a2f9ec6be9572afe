// AVX-512 (F, BW, VL) + FMA: 16 lanes, masked loads for the tails, blocks of
// 4 rows x 4 tokens (16 accumulators of 32 registers), and the kernels over
// packed weights (layout: PackedWeight, packed_weight.h).
#include <algorithm>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/simd.h"

namespace memserve {

#ifdef MEMSERVE_X86_KERNELS

namespace avx512 {
namespace {

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

template <typename W>
MEMSERVE_TARGET_AVX512 float Dot(const float* a, const W* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), Load16(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), Load16(b + k + 16), acc1);
  }
  for (; k + 16 <= n; k += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), Load16(b + k), acc0);
  if (k < n) {
    const __mmask16 m = TailMask(n - k);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), Load16(b + k, m), acc1);
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

template <typename W>
MEMSERVE_TARGET_AVX512 void DotRows(const float* q, const W* rows, int64_t stride, int64_t count,
                                    int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = Dot(q, rows + i * stride, n) * scale;
}

// Column chunks of y stay in registers across all rows: per element the same
// fmadd sequence as Axpy row after row. Four chunks (a 64-wide head) at a
// time: four independent chains hide the fmadd latency.
template <typename W>
MEMSERVE_TARGET_AVX512 void AxpyRows(const float* coef, const W* rows, int64_t stride,
                                     int64_t count, float* y, int64_t n) {
  constexpr int kWide = 4;
  int64_t c = 0;
  for (; c + 16 * kWide <= n; c += 16 * kWide) {
    __m512 yv[kWide];
#pragma GCC unroll 4
    for (int j = 0; j < kWide; ++j) yv[j] = _mm512_loadu_ps(y + c + 16 * j);
    for (int64_t i = 0; i < count; ++i) {
      const __m512 a = _mm512_set1_ps(coef[i]);
      const W* row = rows + i * stride + c;
#pragma GCC unroll 4
      for (int j = 0; j < kWide; ++j) yv[j] = _mm512_fmadd_ps(a, Load16(row + 16 * j), yv[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < kWide; ++j) _mm512_storeu_ps(y + c + 16 * j, yv[j]);
  }
  for (; c < n; c += 16) {
    const __mmask16 m = n - c >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(n - c);
    __m512 yv = _mm512_maskz_loadu_ps(m, y + c);
    for (int64_t i = 0; i < count; ++i) {
      yv = _mm512_fmadd_ps(_mm512_set1_ps(coef[i]), Load16(rows + i * stride + c, m), yv);
    }
    _mm512_mask_storeu_ps(y + c, m, yv);
  }
}

// exp of 16 lanes (vexp, simd.h): the polynomial of Exp8, times 2^n by
// scalef; below kExpMin 0 and above kExpMax inf as Exp8, NaN stays NaN.
MEMSERVE_TARGET_AVX512 inline __m512 Exp16(__m512 x) {
  using namespace vexp;
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  const __m512 c = _mm512_maskz_min_ps(all, _mm512_set1_ps(100.0f),
                                       _mm512_maskz_max_ps(all, _mm512_set1_ps(-100.0f), x));
  const __m512 n = _mm512_maskz_roundscale_ps(all, _mm512_mul_ps(c, _mm512_set1_ps(kLog2e)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), c);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP5));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  __m512 y = _mm512_maskz_scalef_ps(all, p, n);
  y = _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_LT_OQ), y);
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMax), _CMP_GT_OQ),
                            _mm512_set1_ps(__builtin_inff()));
}

// Softmax over 16 lanes as AVX2's (masked tails: -inf past n, not stored).
MEMSERVE_TARGET_AVX512 inline __mmask16 MaskBelow(int64_t i, int64_t n) {
  return n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(n - i);
}

MEMSERVE_TARGET_AVX512 void Softmax(float* x, int64_t n) {
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
  __m512 m = neg_inf;
  for (int64_t i = 0; i < n; i += 16) {
    m = _mm512_maskz_max_ps(all, m, _mm512_mask_loadu_ps(neg_inf, MaskBelow(i, n), x + i));
  }
  alignas(64) float lanes[16];  // (through memory: see Sum16)
  _mm512_store_ps(lanes, m);
  float max = lanes[0];
  for (int j = 1; j < 16; ++j) max = std::max(max, lanes[j]);
  const __m512 shift = _mm512_set1_ps(max);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 e =
        Exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, MaskBelow(i, n), x + i), shift));
    _mm512_mask_storeu_ps(x + i, MaskBelow(i, n), e);
    acc = _mm512_add_ps(acc, e);
  }
  const __m512 sum = _mm512_set1_ps(Sum16(acc));
  for (int64_t i = 0; i < n; i += 16) {
    _mm512_mask_storeu_ps(x + i, MaskBelow(i, n),
                          _mm512_div_ps(_mm512_maskz_loadu_ps(MaskBelow(i, n), x + i), sum));
  }
}

MEMSERVE_TARGET_AVX512 void SiluMul(const float* a, const float* b, float* y, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(n - i);
    const __m512 av = _mm512_maskz_loadu_ps(m, a + i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), av));
    const __m512 s = _mm512_div_ps(av, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, b + i)));
  }
}

// --- packed kernels (layout: PackedWeight, packed_weight.h) ---
//
// The panel types give the two 16-row weight vectors of column k of panel p
// (rows 0-15, rows 16-31) in fp32, and prefetch ahead along the panel. Every
// output is one fmadd chain over k = 0, 1, ..., in - 1 from 0 (the same bits
// as the AVX2 kernels), whatever the blocking.

// BF16: 16 uint32 per column, lane j = rows j (low half) and 16 + j (high
// half): a shift and a mask. (The masked shift: see Bf16x16ToF32.)
struct Bf16Panels {
  const uint32_t* data;
  int64_t in;
  MEMSERVE_TARGET_AVX512 void Column(int64_t p, int64_t k, __m512* lo, __m512* hi) const {
    const __m512i v = _mm512_loadu_si512(data + (p * in + k) * 16);
    *lo = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(static_cast<__mmask16>(0xFFFF), v, 16));
    *hi =
        _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  MEMSERVE_TARGET_AVX512 void Prefetch(int64_t p, int64_t k) const {
    _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 16) + kPanelPrefetchBytes,
                 _MM_HINT_T0);
  }
  MEMSERVE_TARGET_AVX512 void PrefetchL2(int64_t p, int64_t k) const {
    _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 16), _MM_HINT_T1);
  }
};

// F32: 32 floats per column, rows in order.
struct F32Panels {
  const float* data;
  int64_t in;
  MEMSERVE_TARGET_AVX512 void Column(int64_t p, int64_t k, __m512* lo, __m512* hi) const {
    const float* column = data + (p * in + k) * 32;
    *lo = _mm512_loadu_ps(column);
    *hi = _mm512_loadu_ps(column + 16);
  }
  MEMSERVE_TARGET_AVX512 void Prefetch(int64_t p, int64_t k) const {
    const char* column = reinterpret_cast<const char*>(data + (p * in + k) * 32);
    _mm_prefetch(column + kPanelPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(column + 64 + kPanelPrefetchBytes, _MM_HINT_T0);
  }
  MEMSERVE_TARGET_AVX512 void PrefetchL2(int64_t p, int64_t k) const {
    const char* column = reinterpret_cast<const char*>(data + (p * in + k) * 32);
    _mm_prefetch(column, _MM_HINT_T1);
    _mm_prefetch(column + 64, _MM_HINT_T1);
  }
};

// I8: 32 int8 per column, rows in order, and per block of kInt8BlockSize
// columns 32 F32 scales: each weight is float(int8) x its scale rounded to
// fp32 (the converter's dequantized weight, as AVX2's I8Panels).
struct I8Panels {
  const int8_t* data;
  const float* scales;
  int64_t in;
  MEMSERVE_TARGET_AVX512 void Column(int64_t p, int64_t k, __m512* lo, __m512* hi) const {
    const __mmask16 all = static_cast<__mmask16>(0xFFFF);
    const int8_t* column = data + (p * in + k) * 32;
    const float* s = scales + (p * (in / kInt8BlockSize) + k / kInt8BlockSize) * 32;
    const __m512i q_lo =
        _mm512_maskz_cvtepi8_epi32(all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(column)));
    const __m512i q_hi = _mm512_maskz_cvtepi8_epi32(
        all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(column + 16)));
    *lo = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(all, q_lo), _mm512_loadu_ps(s));
    *hi = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(all, q_hi), _mm512_loadu_ps(s + 16));
  }
  MEMSERVE_TARGET_AVX512 void Prefetch(int64_t p, int64_t k) const {
    if ((k & 1) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 32) + kPanelPrefetchBytes,
                   _MM_HINT_T0);
    }
  }
  MEMSERVE_TARGET_AVX512 void PrefetchL2(int64_t p, int64_t k) const {
    if ((k & 1) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 32), _MM_HINT_T1);
    }
  }
};

// Panels p .. p + NP - 1 (32 * NP rows) x TB tokens: 2 * NP * TB
// accumulators. `rows_left` = rows from panel p's first row to the end.
// x[t][k] is at x[t * ldx + k * kx] (kx = 1: rows of x; kx = TB, ldx = 1:
// x packed per block, the TB values of one k adjacent).
template <int NP, int TB, typename Panels>
MEMSERVE_TARGET_AVX512 void PackedBlock(const Panels& w, int64_t p, const float* x, int64_t ldx,
                                        int64_t kx, float* y, int64_t ldy, int64_t rows_left,
                                        int64_t next = -1) {
  __m512 acc[2 * NP][TB];
#pragma GCC unroll 8
  for (int i = 0; i < 2 * NP; ++i) {
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.in; ++k) {
    __m512 wv[2 * NP];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      w.Prefetch(p + q, k);
      w.Column(p + q, k, &wv[2 * q], &wv[2 * q + 1]);
    }
    if (next >= 0) w.PrefetchL2(next, k);
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + k * kx]);
#pragma GCC unroll 8
      for (int i = 0; i < 2 * NP; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xb, acc[i][t]);
    }
  }
  for (int i = 0; i < 2 * NP; ++i) {
    const int64_t r0 = 16 * i;
    if (r0 >= rows_left) break;
    const __mmask16 m =
        rows_left - r0 >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(rows_left - r0);
    for (int t = 0; t < TB; ++t) _mm512_mask_storeu_ps(y + t * ldy + r0, m, acc[i][t]);
  }
}

// Up to 12 tokens per block (24 accumulators + 2 weight vectors + the
// broadcast fit the 32 registers); T tokens are split into equal blocks, x
// packed per block ([in][n]: the block's values of one k adjacent, one
// stream instead of n rows that may be 4 KiB apart, the same L1 set).
// One token: four panels at once, so that 8 independent fmadd chains hide
// the latency while the weights stream from memory.
template <typename Panels>
MEMSERVE_TARGET_AVX512 void PackedMatMul(const Panels& w, int64_t rows, int64_t panel_begin,
                                         int64_t panel_end, const float* x, int64_t ldx,
                                         int64_t tokens, float* y, int64_t ldy) {
  constexpr int kMaxTb = 12;
  const int64_t in = w.in;
  int64_t p = panel_begin;
  if (tokens == 1) {
    for (; p + 4 <= panel_end; p += 4) {
      PackedBlock<4, 1>(w, p, x, ldx, 1, y + p * 32, ldy, rows - p * 32);
    }
    for (; p < panel_end; ++p) PackedBlock<1, 1>(w, p, x, ldx, 1, y + p * 32, ldy, rows - p * 32);
    return;
  }
  const int64_t tb = TokenBlock(tokens, kMaxTb);
  thread_local std::vector<float> packed_x;
  const float* xp = PackTokenBlocks(x, ldx, tokens, in, tb, &packed_x);
  for (; p < panel_end; ++p) {
    for (int64_t t = 0; t < tokens; t += tb) {
      // The last block over panel p brings panel p + 1 into L2 as it goes,
      // so that the memory keeps streaming while it computes.
      const int64_t next = t + tb >= tokens && p + 1 < panel_end ? p + 1 : -1;
      WithTokenCount<kMaxTb>(static_cast<int>(std::min(tb, tokens - t)), [&](auto n) {
        PackedBlock<1, decltype(n)::value>(w, p, xp + t * in, 1, decltype(n)::value,
                                           y + t * ldy + p * 32, ldy, rows - p * 32, next);
      });
    }
  }
}

MEMSERVE_TARGET_AVX512 void PackedMatMulBf16(const uint32_t* panels, int64_t in, int64_t rows,
                                             int64_t panel_begin, int64_t panel_end, const float* x,
                                             int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  PackedMatMul(Bf16Panels{panels, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}
MEMSERVE_TARGET_AVX512 void PackedMatMulF32(const float* panels, int64_t in, int64_t rows,
                                            int64_t panel_begin, int64_t panel_end, const float* x,
                                            int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  PackedMatMul(F32Panels{panels, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}
MEMSERVE_TARGET_AVX512 void PackedMatMulI8(const int8_t* panels, const float* scales, int64_t in,
                                           int64_t rows, int64_t panel_begin, int64_t panel_end,
                                           const float* x, int64_t ldx, int64_t tokens, float* y,
                                           int64_t ldy) {
  PackedMatMul(I8Panels{panels, scales, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}

}  // namespace
}  // namespace avx512

const CpuKernels* Avx512Kernels() {
  static const CpuKernels kernels = {
      CpuIsa::kAvx512,
      avx512::MatMul<float>,
      avx512::MatMul<uint16_t>,
      avx512::DotRows<float>,
      avx512::AxpyRows<float>,
      avx512::Axpy<float>,
      avx512::Axpy<uint16_t>,
      avx512::PackedMatMulBf16,
      avx512::PackedMatMulF32,
      avx512::DotRows<uint16_t>,
      avx512::AxpyRows<uint16_t>,
      avx512::PackedMatMulI8,
      avx512::Softmax,
      avx512::SiluMul,
  };
  return &kernels;
}

#else

const CpuKernels* Avx512Kernels() { return nullptr; }

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve
