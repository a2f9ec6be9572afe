// AVX2 + FMA: 8 lanes. A block of R weight rows x TB tokens keeps R*TB
// accumulators in registers; each weight vector is loaded (and converted from
// bf16) once per block and used for all TB tokens. The kernels over packed
// weights (layout: PackedWeight) broadcast x[t][k] against a column of panel
// rows instead: more multiply-adds per load, the prefill path.
#include <algorithm>
#include <vector>

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

template <typename W>
MEMSERVE_TARGET_AVX2 float Dot(const float* a, const W* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), Load8(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), Load8(b + k + 8), acc1);
  }
  for (; k + 8 <= n; k += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), Load8(b + k), acc0);
  float s = Sum8(_mm256_add_ps(acc0, acc1));
  for (; k < n; ++k) s += a[k] * generic::Load(b + k);
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

template <typename W>
MEMSERVE_TARGET_AVX2 void DotRows(const float* q, const W* rows, int64_t stride, int64_t count,
                                  int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = Dot(q, rows + i * stride, n) * scale;
}

// Column chunks of y stay in registers across all rows: per element the same
// fmadd sequence as Axpy row after row. Eight chunks (a 64-wide head) at a
// time, so that eight independent chains hide the fmadd latency (with one
// chain per chunk each row waited for the previous row's fmadd).
template <typename W>
MEMSERVE_TARGET_AVX2 void AxpyRows(const float* coef, const W* rows, int64_t stride, int64_t count,
                                   float* y, int64_t n) {
  constexpr int kWide = 8;
  int64_t c = 0;
  for (; c + 8 * kWide <= n; c += 8 * kWide) {
    __m256 yv[kWide];
#pragma GCC unroll 8
    for (int j = 0; j < kWide; ++j) yv[j] = _mm256_loadu_ps(y + c + 8 * j);
    for (int64_t i = 0; i < count; ++i) {
      const __m256 a = _mm256_set1_ps(coef[i]);
      const W* row = rows + i * stride + c;
#pragma GCC unroll 8
      for (int j = 0; j < kWide; ++j) yv[j] = _mm256_fmadd_ps(a, Load8(row + 8 * j), yv[j]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < kWide; ++j) _mm256_storeu_ps(y + c + 8 * j, yv[j]);
  }
  for (; c + 8 <= n; c += 8) {
    __m256 yv = _mm256_loadu_ps(y + c);
    for (int64_t i = 0; i < count; ++i) {
      yv = _mm256_fmadd_ps(_mm256_set1_ps(coef[i]), Load8(rows + i * stride + c), yv);
    }
    _mm256_storeu_ps(y + c, yv);
  }
  for (; c < n; ++c) {
    for (int64_t i = 0; i < count; ++i) y[c] += coef[i] * generic::Load(rows + i * stride + c);
  }
}

// --- packed kernels (layout: PackedWeight, packed_weight.h) ---
//
// A column k of a 32-row panel is four 8-row vectors ("quarters"): quarter 0
// = rows 0-7, 1 = rows 8-15, 2 = rows 16-23, 3 = rows 24-31. The panel types
// below read them from the three packed layouts. Every output is one fmadd
// chain over k = 0, 1, ..., in - 1 from 0 (as in the AVX-512 kernels: the
// same bits), whatever the blocking.

// BF16: lanes 0-7 of a column's 16 uint32 hold rows 0-7 (low halves) and
// 16-23 (high halves), lanes 8-15 rows 8-15 and 24-31: a shift or a mask
// gives each quarter.
struct Bf16Panels {
  const uint32_t* data;
  int64_t in;
  MEMSERVE_TARGET_AVX2 const uint32_t* Column(int64_t p, int64_t k) const {
    return data + (p * in + k) * 16;
  }
  MEMSERVE_TARGET_AVX2 __m256 Quarter(int64_t p, int64_t k, int q) const {
    const __m256i v =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Column(p, k) + (q & 1) * 8));
    return _mm256_castsi256_ps(
        q < 2 ? _mm256_slli_epi32(v, 16)
              : _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  MEMSERVE_TARGET_AVX2 void Prefetch(int64_t p, int64_t k) const {
    _mm_prefetch(reinterpret_cast<const char*>(Column(p, k)) + kPanelPrefetchBytes, _MM_HINT_T0);
  }
  MEMSERVE_TARGET_AVX2 void PrefetchL2(int64_t p, int64_t k) const {
    _mm_prefetch(reinterpret_cast<const char*>(Column(p, k)), _MM_HINT_T1);
  }
};

// F32: 32 floats per column, rows in order.
struct F32Panels {
  const float* data;
  int64_t in;
  MEMSERVE_TARGET_AVX2 const float* Column(int64_t p, int64_t k) const {
    return data + (p * in + k) * 32;
  }
  MEMSERVE_TARGET_AVX2 __m256 Quarter(int64_t p, int64_t k, int q) const {
    return _mm256_loadu_ps(Column(p, k) + q * 8);
  }
  MEMSERVE_TARGET_AVX2 void Prefetch(int64_t p, int64_t k) const {
    const char* column = reinterpret_cast<const char*>(Column(p, k));
    _mm_prefetch(column + kPanelPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(column + 64 + kPanelPrefetchBytes, _MM_HINT_T0);
  }
  MEMSERVE_TARGET_AVX2 void PrefetchL2(int64_t p, int64_t k) const {
    const char* column = reinterpret_cast<const char*>(Column(p, k));
    _mm_prefetch(column, _MM_HINT_T1);
    _mm_prefetch(column + 64, _MM_HINT_T1);
  }
};

// I8: 32 int8 per column, rows in order, and per block of kInt8BlockSize
// columns 32 F32 scales: a quarter is float(int8) x scale, rounded to fp32
// (the weight the converter's dequantization gives).
struct I8Panels {
  const int8_t* data;
  const float* scales;
  int64_t in;
  MEMSERVE_TARGET_AVX2 __m256 Quarter(int64_t p, int64_t k, int q) const {
    const __m128i bytes =
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(data + (p * in + k) * 32 + q * 8));
    const __m256 w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    const float* s = scales + (p * (in / kInt8BlockSize) + k / kInt8BlockSize) * 32 + q * 8;
    return _mm256_mul_ps(w, _mm256_loadu_ps(s));
  }
  MEMSERVE_TARGET_AVX2 void Prefetch(int64_t p, int64_t k) const {
    if ((k & 1) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 32) + kPanelPrefetchBytes,
                   _MM_HINT_T0);
    }
  }
  MEMSERVE_TARGET_AVX2 void PrefetchL2(int64_t p, int64_t k) const {
    if ((k & 1) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(data + (p * in + k) * 32), _MM_HINT_T1);
    }
  }
};

// Stores acc (rows r0 .. r0 + 7 of one token) to y, the rows below
// rows_left only.
MEMSERVE_TARGET_AVX2 inline void StoreRows(__m256 acc, int64_t r0, int64_t rows_left, float* y) {
  if (rows_left - r0 >= 8) {
    _mm256_storeu_ps(y + r0, acc);
  } else if (r0 < rows_left) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (int64_t i = 0; i < rows_left - r0; ++i) y[r0 + i] = lanes[i];
  }
}

// Panels p .. p + NP - 1 (32 * NP rows) x TB tokens (4 * NP * TB
// accumulators; the decode sizes): each weight vector is loaded once and
// used for the TB broadcasts held in registers.
template <int NP, int TB, typename Panels>
MEMSERVE_TARGET_AVX2 void PackedPanels(const Panels& w, int64_t p, const float* x, int64_t ldx,
                                       float* y, int64_t ldy, int64_t rows_left) {
  __m256 acc[4 * NP][TB];
#pragma GCC unroll 16
  for (int i = 0; i < 4 * NP; ++i) {
#pragma GCC unroll 2
    for (int t = 0; t < TB; ++t) acc[i][t] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < w.in; ++k) {
    __m256 xb[TB];
#pragma GCC unroll 2
    for (int t = 0; t < TB; ++t) xb[t] = _mm256_broadcast_ss(x + t * ldx + k);
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) {
      w.Prefetch(p + j, k);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m256 wv = w.Quarter(p + j, k, q);
#pragma GCC unroll 2
        for (int t = 0; t < TB; ++t) {
          acc[4 * j + q][t] = _mm256_fmadd_ps(wv, xb[t], acc[4 * j + q][t]);
        }
      }
    }
  }
  // (Unrolled: an array indexed by a loop variable would live in memory, and
  // GCC 12 then stores every accumulator on every k.)
#pragma GCC unroll 16
  for (int i = 0; i < 4 * NP; ++i) {
#pragma GCC unroll 2
    for (int t = 0; t < TB; ++t) StoreRows(acc[i][t], 8 * i, rows_left, y + t * ldy);
  }
}

// Half of panel p (quarters 2h and 2h + 1: 16 rows) x TB tokens (2 * TB
// accumulators; up to 6 tokens: 12 accumulators, 2 weight vectors and the
// broadcast fit the 16 registers). The blocks of many tokens (prefill).
// `next` >= 0: bring panel `next` into L2 along the way (the last pass over
// panel p, so that the memory keeps streaming while the cached passes
// compute).
template <int TB, typename Panels>
MEMSERVE_TARGET_AVX2 void PackedHalfPanel(const Panels& w, int64_t p, int h, const float* xp,
                                          float* y, int64_t ldy, int64_t rows_left, int64_t next) {
  __m256 acc[2][TB];
#pragma GCC unroll 6
  for (int t = 0; t < TB; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
  for (int64_t k = 0; k < w.in; ++k) {
    if (h == 0) w.Prefetch(p, k);
    if (next >= 0) w.PrefetchL2(next, k);
    const __m256 w0 = w.Quarter(p, k, 2 * h);
    const __m256 w1 = w.Quarter(p, k, 2 * h + 1);
#pragma GCC unroll 6
    for (int t = 0; t < TB; ++t) {
      const __m256 xb = _mm256_broadcast_ss(xp + k * TB + t);
      acc[0][t] = _mm256_fmadd_ps(w0, xb, acc[0][t]);
      acc[1][t] = _mm256_fmadd_ps(w1, xb, acc[1][t]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < TB; ++t) {
    StoreRows(acc[0][t], 16 * h, rows_left, y + t * ldy);
    StoreRows(acc[1][t], 16 * h + 8, rows_left, y + t * ldy);
  }
}

// Panels [panel_begin, panel_end) of w x `tokens` tokens. One token: four
// panels at once (16 independent fmadd chains and four weight streams keep
// the memory busy; measured 7-14% more GB/s than three panels, though one
// accumulator then lives in memory); two tokens: one panel x 2. More: half panels
// x up to 6 tokens, T tokens split into equal blocks.
template <typename Panels>
MEMSERVE_TARGET_AVX2 void PackedMatMul(const Panels& w, int64_t rows, int64_t panel_begin,
                                       int64_t panel_end, const float* x, int64_t ldx,
                                       int64_t tokens, float* y, int64_t ldy) {
  int64_t p = panel_begin;
  if (tokens <= 2) {
    if (tokens == 1) {
      for (; p + 4 <= panel_end; p += 4) {
        PackedPanels<4, 1>(w, p, x, ldx, y + p * 32, ldy, rows - p * 32);
      }
      for (; p < panel_end; ++p) PackedPanels<1, 1>(w, p, x, ldx, y + p * 32, ldy, rows - p * 32);
    } else {
      for (; p < panel_end; ++p) PackedPanels<1, 2>(w, p, x, ldx, y + p * 32, ldy, rows - p * 32);
    }
    return;
  }
  constexpr int kMaxTb = 6;
  const int64_t tb = TokenBlock(tokens, kMaxTb);
  thread_local std::vector<float> packed_x;
  const float* xp = PackTokenBlocks(x, ldx, tokens, w.in, tb, &packed_x);
  for (; p < panel_end; ++p) {
    const int64_t rows_left = rows - p * 32;
    const int halves = rows_left > 16 ? 2 : 1;
    for (int h = 0; h < halves; ++h) {
      for (int64_t t = 0; t < tokens; t += tb) {
        const bool last = h == halves - 1 && t + tb >= tokens;
        const int64_t next = last && p + 1 < panel_end ? p + 1 : -1;
        WithTokenCount<kMaxTb>(static_cast<int>(std::min(tb, tokens - t)), [&](auto n) {
          PackedHalfPanel<decltype(n)::value>(w, p, h, xp + t * w.in, y + t * ldy + p * 32, ldy,
                                              rows_left, next);
        });
      }
    }
  }
}

// Softmax over 8 lanes: the max (exact), the numerators and their sum
// (lane sums, then Sum8), then each divided by the sum. Lanes past n hold
// -inf (exp 0) and are not stored.
// (x[i .. i + 8), -inf past n.)
MEMSERVE_TARGET_AVX2 inline __m256 LoadOrNegInf(const float* x, int64_t i, int64_t n) {
  if (n - i >= 8) return _mm256_loadu_ps(x + i);
  alignas(32) float lanes[8];
  for (int64_t j = 0; j < 8; ++j) lanes[j] = i + j < n ? x[i + j] : -__builtin_inff();
  return _mm256_load_ps(lanes);
}
MEMSERVE_TARGET_AVX2 inline void StoreBelow(float* x, int64_t i, int64_t n, __m256 v) {
  if (n - i >= 8) {
    _mm256_storeu_ps(x + i, v);
    return;
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  for (int64_t j = i; j < n; ++j) x[j] = lanes[j - i];
}

MEMSERVE_TARGET_AVX2 void Softmax(float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  for (int64_t i = 0; i < n; i += 8) m = _mm256_max_ps(m, LoadOrNegInf(x, i, n));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float max = lanes[0];
  for (int j = 1; j < 8; ++j) max = std::max(max, lanes[j]);
  const __m256 shift = _mm256_set1_ps(max);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(LoadOrNegInf(x, i, n), shift));
    StoreBelow(x, i, n, e);
    acc = _mm256_add_ps(acc, e);
  }
  const __m256 sum = _mm256_set1_ps(Sum8(acc));
  for (int64_t i = 0; i < n; i += 8) StoreBelow(x, i, n, _mm256_div_ps(LoadOrNegInf(x, i, n), sum));
}

MEMSERVE_TARGET_AVX2 void SiluMul(const float* a, const float* b, float* y, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 av = _mm256_loadu_ps(a + i);
    const __m256 e = Exp8(_mm256_sub_ps(zero, av));
    _mm256_storeu_ps(
        y + i, _mm256_mul_ps(_mm256_div_ps(av, _mm256_add_ps(one, e)), _mm256_loadu_ps(b + i)));
  }
  if (i < n) {
    alignas(32) float la[8] = {0, 0, 0, 0, 0, 0, 0, 0}, lb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; ++j) {
      la[j - i] = a[j];
      lb[j - i] = b[j];
    }
    const __m256 av = _mm256_load_ps(la);
    const __m256 e = Exp8(_mm256_sub_ps(zero, av));
    _mm256_store_ps(la,
                    _mm256_mul_ps(_mm256_div_ps(av, _mm256_add_ps(one, e)), _mm256_load_ps(lb)));
    for (int64_t j = i; j < n; ++j) y[j] = la[j - i];
  }
}

MEMSERVE_TARGET_AVX2 void PackedMatMulBf16(const uint32_t* panels, int64_t in, int64_t rows,
                                           int64_t panel_begin, int64_t panel_end, const float* x,
                                           int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  PackedMatMul(Bf16Panels{panels, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}
MEMSERVE_TARGET_AVX2 void PackedMatMulF32(const float* panels, int64_t in, int64_t rows,
                                          int64_t panel_begin, int64_t panel_end, const float* x,
                                          int64_t ldx, int64_t tokens, float* y, int64_t ldy) {
  PackedMatMul(F32Panels{panels, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}
MEMSERVE_TARGET_AVX2 void PackedMatMulI8(const int8_t* panels, const float* scales, int64_t in,
                                         int64_t rows, int64_t panel_begin, int64_t panel_end,
                                         const float* x, int64_t ldx, int64_t tokens, float* y,
                                         int64_t ldy) {
  PackedMatMul(I8Panels{panels, scales, in}, rows, panel_begin, panel_end, x, ldx, tokens, y, ldy);
}

}  // namespace
}  // namespace avx2

const CpuKernels* Avx2Kernels() {
  // clang-format off
  static const CpuKernels kernels = {
      CpuIsa::kAvx2,
      avx2::MatMul<float>,
      avx2::MatMul<uint16_t>,
      avx2::DotRows<float>,
      avx2::AxpyRows<float>,
      avx2::Axpy<float>,
      avx2::Axpy<uint16_t>,
      avx2::PackedMatMulBf16,
      avx2::PackedMatMulF32,
      avx2::DotRows<uint16_t>,
      avx2::AxpyRows<uint16_t>,
      avx2::PackedMatMulI8,
      avx2::Softmax,
      avx2::SiluMul,
  };
  // clang-format on

  return &kernels;
}

#else

const CpuKernels* Avx2Kernels() { return nullptr; }

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve
