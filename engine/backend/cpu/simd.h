// Helpers shared by the per-ISA kernel files (internal to engine/backend/cpu).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_

#include <cstdint>

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

namespace avx2 {

MEMSERVE_TARGET_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace avx2

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_SIMD_H_
