// Helpers shared by the per-ISA kernel files (internal to engine/backend/cpu).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/dtype.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MEMSERVE_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace memserve {
namespace generic {

inline float Load(const float* p) { return *p; }
inline float Load(const uint16_t* p) { return Bf16ToF32(*p); }

}  // namespace generic

// The tokens of a multi-token matmul go in equal blocks of at most
// `max_block` (the kernels' register blocking): the block size.
inline int64_t TokenBlock(int64_t tokens, int64_t max_block) {
  const int64_t blocks = (tokens + max_block - 1) / max_block;
  return (tokens + blocks - 1) / blocks;
}

// x (`tokens` rows of `in` floats, `ldx` apart) packed per block of `block`
// tokens into *out: the block at token t is [in][n] (n = its tokens) at
// out->data() + t * in, so the block's values of one k are adjacent (one
// stream for the kernel instead of n rows that may be 4 KiB apart, the same
// L1 set). Returns out->data().
inline const float* PackTokenBlocks(const float* x, int64_t ldx, int64_t tokens, int64_t in,
                                    int64_t block, std::vector<float>* out) {
  out->resize(static_cast<size_t>(tokens * in));
  for (int64_t t = 0; t < tokens; t += block) {
    const int64_t n = std::min(block, tokens - t);
    float* xp = out->data() + t * in;
    for (int64_t j = 0; j < n; ++j) {
      const float* row = x + (t + j) * ldx;
      for (int64_t k = 0; k < in; ++k) xp[k * n + j] = row[k];
    }
  }
  return out->data();
}

// fn(std::integral_constant<int, n>()) for n in [kFirst, kLast]: a run-time
// token count as the template argument of a kernel's register blocking.
// (fn is a lambda; it must only call the kernel, not use intrinsics itself:
// a lambda does not inherit its enclosing function's target attribute.)
template <int kLast, int kFirst = 1, typename Fn>
inline void WithTokenCount(int n, Fn&& fn) {
  if constexpr (kFirst <= kLast) {
    if (n == kFirst) {
      fn(std::integral_constant<int, kFirst>());
      return;
    }
    WithTokenCount<kLast, kFirst + 1>(n, fn);
  }
}

#ifdef MEMSERVE_X86_KERNELS

#define MEMSERVE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MEMSERVE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

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

// Packed panels (PackedWeight) stream from memory once per block of tokens;
// every packed kernel (AVX2, AVX-512, bf16) prefetches this far ahead along
// a panel (the hardware prefetcher alone leaves bandwidth unused).
constexpr int64_t kPanelPrefetchBytes = 2048;

// exp(x) for the vector kernels (Cephes' expf): x = n ln2 + r with |r| <=
// ln2 / 2 (ln2 in two parts, so r is exact), exp(r) by a degree-7
// polynomial, times 2^n. Within 2 ulp; 0 below kExpMin, inf above kExpMax.
namespace vexp {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpMin = -87.3365447505f;  // exp(kExpMin) = the least normal float
constexpr float kExpMax = 88.7228391117f;   // exp(kExpMax) = the largest float
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace vexp

namespace avx2 {

// exp of 8 lanes (vexp). 2^n in two factors built in the exponent field
// (n up to +-128 does not fit one); x clamped to +-100 first so that n fits
// an int (NaN passes through the clamp and stays NaN), then below kExpMin 0
// and above kExpMax inf.
MEMSERVE_TARGET_AVX2 inline __m256 Exp8(__m256 x) {
  using namespace vexp;
  const __m256 c = _mm256_min_ps(_mm256_set1_ps(100.0f), _mm256_max_ps(_mm256_set1_ps(-100.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(c, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), c);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_LT_OQ), y);
  return _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()),
                          _mm256_cmp_ps(x, _mm256_set1_ps(kExpMax), _CMP_GT_OQ));
}

MEMSERVE_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace avx2

namespace avx512 {

// The lanes below n (n <= 16) of a masked load or store.
MEMSERVE_TARGET_AVX512 inline __mmask16 TailMask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

}  // namespace avx512

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_
