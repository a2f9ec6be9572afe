// AVX512-BF16 and AMX kernels of the bf16-activation matmul (bf16_matmul.h)
// over the kBf16Pairs panels (packed_weight.h): lane j of a panel's pair kp
// holds rows 32p + j's columns 2kp and 2kp + 1, which is both the operand
// of `vdpbf16ps` (16 lanes x one broadcast x pair) and, read with a stride of
// 128 bytes, an AMX B tile (16 pairs x 16 rows).
#include "engine/backend/cpu/bf16_matmul.h"

#include <algorithm>
#include <cstring>

#include "engine/backend/cpu/cpu_isa.h"
#include "engine/backend/cpu/simd.h"
#include "engine/dtype.h"

#ifdef MEMSERVE_X86_KERNELS
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace memserve {

#ifdef MEMSERVE_X86_KERNELS

#define MEMSERVE_TARGET_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#define MEMSERVE_TARGET_AMX \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,amx-tile,amx-bf16")))

namespace bf16 {
namespace {

constexpr int64_t kPanelRows = 32;
// uint32 per pair of a panel (32 rows x a bf16 pair).
constexpr int64_t kPairElems = 32;

MEMSERVE_TARGET_BF16 void RoundToBf16(const float* x, int64_t n, uint16_t* out) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i bias = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  // (The all-ones-mask forms of the shifts and the narrowing avoid GCC 12's
  // bogus -Wmaybe-uninitialized on the unmasked intrinsics.)
  const __mmask16 all = static_cast<__mmask16>(0xFFFF);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_loadu_si512(x + i);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(v, abs_mask), inf);
    // F32ToBf16: bits + 0x7fff + the kept part's lowest bit, or a quiet NaN.
    const __m512i high = _mm512_maskz_srli_epi32(all, v, 16);
    const __m512i lsb = _mm512_and_si512(high, one);
    __m512i r = _mm512_maskz_srli_epi32(all, _mm512_add_epi32(v, _mm512_add_epi32(bias, lsb)), 16);
    r = _mm512_mask_or_epi32(r, nan, high, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_maskz_cvtepi32_epi16(all, r));
  }
  for (; i < n; ++i) out[i] = F32ToBf16(x[i]);
}

MEMSERVE_TARGET_BF16 inline __m512i BroadcastPair(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return _mm512_set1_epi32(pair);
}

// NP consecutive panels (32 * NP rows) x TB tokens with vdpbf16ps: 2 * NP *
// TB accumulators, each weight vector loaded once per pair for all TB
// tokens.
template <int NP, int TB>
MEMSERVE_TARGET_BF16 void DpBlock(const uint32_t* panel, int64_t pairs, const uint16_t* xb,
                                  int64_t ldxb, float* y, int64_t ldy, int64_t rows_left) {
  const int64_t panel_stride = pairs * kPairElems;
  __m512 acc[2 * NP][TB];
#pragma GCC unroll 8
  for (int i = 0; i < 2 * NP; ++i) {
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t kp = 0; kp < pairs; ++kp) {
    __m512i w[2 * NP];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      const uint32_t* column = panel + q * panel_stride + kp * kPairElems;
      _mm_prefetch(reinterpret_cast<const char*>(column) + kPanelPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(column) + 64 + kPanelPrefetchBytes, _MM_HINT_T0);
      w[2 * q] = _mm512_loadu_si512(column);
      w[2 * q + 1] = _mm512_loadu_si512(column + 16);
    }
#pragma GCC unroll 12
    for (int t = 0; t < TB; ++t) {
      const __m512bh xv = (__m512bh)BroadcastPair(xb + t * ldxb + 2 * kp);
#pragma GCC unroll 8
      for (int i = 0; i < 2 * NP; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], (__m512bh)w[i], xv);
    }
  }
  for (int i = 0; i < 2 * NP; ++i) {
    const int64_t r0 = 16 * i;
    if (r0 >= rows_left) break;
    const __mmask16 m =
        rows_left - r0 >= 16 ? static_cast<__mmask16>(0xFFFF) : avx512::TailMask(rows_left - r0);
    for (int t = 0; t < TB; ++t) _mm512_mask_storeu_ps(y + t * ldy + r0, m, acc[i][t]);
  }
}

// vdpbf16ps: one token over four panels at once (8 chains, four weight
// streams), else one panel x up to 12 tokens (24 accumulators).
MEMSERVE_TARGET_BF16 void DpMatMul(const uint32_t* panels, int64_t in_padded, int64_t rows,
                                   int64_t panel_begin, int64_t panel_end, const uint16_t* xb,
                                   int64_t ldxb, int64_t tokens, float* y, int64_t ldy) {
  constexpr int kMaxTb = 12;
  const int64_t pairs = in_padded / 2;
  const int64_t panel_stride = pairs * kPairElems;
  int64_t p = panel_begin;
  if (tokens == 1) {
    for (; p + 4 <= panel_end; p += 4) {
      DpBlock<4, 1>(panels + p * panel_stride, pairs, xb, ldxb, y + p * kPanelRows, ldy,
                    rows - p * kPanelRows);
    }
  }
  const int64_t tb = TokenBlock(tokens, kMaxTb);
  for (; p < panel_end; ++p) {
    for (int64_t t = 0; t < tokens; t += tb) {
      WithTokenCount<kMaxTb>(static_cast<int>(std::min(tb, tokens - t)), [&](auto n) {
        DpBlock<1, decltype(n)::value>(panels + p * panel_stride, pairs, xb + t * ldxb, ldxb,
                                       y + t * ldy + p * kPanelRows, ldy, rows - p * kPanelRows);
      });
    }
  }
}

// --- AMX ---

// Tiles: 0-3 accumulators (tokens t0 .. t0 + 15 x rows 0-15, x rows 16-31;
// tokens t0 + 16 .. t0 + 31 x the same), 4-5 x (16 tokens x 32 columns
// each), 6-7 the panel (16 pairs x rows 0-15, x rows 16-31). All 16 rows of
// 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Where accumulator tile of tokens t .. t + 15 x rows r0 .. r0 + 15 goes:
// straight into y when it lies inside (tokens, rows_left), else into
// `scratch` (16 x 16) and then the part inside is copied (FinishTile).
// (The tile number of _tile_stored must be a literal: MEMSERVE_STORE_TILE.)
struct TileOut {
  float* dst;
  int64_t stride_bytes;
  int64_t n_t, n_r;  // tokens and rows inside
  float* final_dst;  // the scratch's destination, or null
};
inline TileOut PlanTile(float* y, int64_t ldy, int64_t t, int64_t tokens, int64_t r0,
                        int64_t rows_left, float* scratch) {
  TileOut out;
  out.n_t = std::min<int64_t>(16, tokens - t);
  out.n_r = std::min<int64_t>(16, rows_left - r0);
  float* dst = y + t * ldy + r0;
  if (out.n_t == 16 && out.n_r == 16) {
    out.dst = dst;
    out.stride_bytes = ldy * static_cast<int64_t>(sizeof(float));
    out.final_dst = nullptr;
  } else {
    out.dst = scratch;
    out.stride_bytes = 64;
    out.final_dst = dst;
  }
  return out;
}
inline void FinishTile(const TileOut& out, int64_t ldy) {
  if (out.final_dst == nullptr) return;
  for (int64_t i = 0; i < out.n_t; ++i) {
    std::memcpy(out.final_dst + i * ldy, out.dst + i * 16, out.n_r * sizeof(float));
  }
}
#define MEMSERVE_STORE_TILE(tile, y, ldy, t, tokens, r0, rows_left, scratch)                  \
  do {                                                                                        \
    if ((t) < (tokens) && (r0) < (rows_left)) {                                               \
      const TileOut out_ = PlanTile((y), (ldy), (t), (tokens), (r0), (rows_left), (scratch)); \
      _tile_stored(tile, out_.dst, out_.stride_bytes);                                        \
      FinishTile(out_, (ldy));                                                                \
    }                                                                                         \
  } while (0)

// One panel x 16 tokens (tiles 0-1) or x 32 tokens (kTwo: tiles 0-3) over
// all columns, left in the accumulator tiles. x0: the first token's row of
// the block; rows x_stride bytes apart.
template <bool kTwo>
MEMSERVE_TARGET_AMX inline void AmxBlock(const uint32_t* panel, int64_t in_padded,
                                         const uint16_t* x0, int64_t x_stride) {
  constexpr int64_t kPanelStride = kPairElems * sizeof(uint32_t);  // 128 bytes
  const uint16_t* x1 = x0 + 16 * (x_stride / static_cast<int64_t>(sizeof(uint16_t)));
  _tile_zero(0);
  _tile_zero(1);
  if (kTwo) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k0 = 0; k0 < in_padded; k0 += 32) {
    const uint32_t* b = panel + (k0 / 2) * kPairElems;
    _tile_loadd(6, b, kPanelStride);
    _tile_loadd(7, b + 16, kPanelStride);
    _tile_loadd(4, x0 + k0, x_stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (kTwo) {
      _tile_loadd(5, x1 + k0, x_stride);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

MEMSERVE_TARGET_AMX void AmxMatMul(const uint32_t* panels, int64_t in_padded, int64_t rows,
                                   int64_t panel_begin, int64_t panel_end, const uint16_t* xb,
                                   int64_t ldxb, int64_t tokens, float* y, int64_t ldy) {
  TileConfig config;
  for (int i = 0; i < 8; ++i) {
    config.rows[i] = 16;
    config.colsb[i] = 64;
  }
  _tile_loadconfig(&config);
  const int64_t pairs = in_padded / 2;
  const int64_t x_stride = ldxb * static_cast<int64_t>(sizeof(uint16_t));
  alignas(64) float scratch[16 * 16];
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const uint32_t* panel = panels + p * pairs * kPairElems;
    const int64_t rows_left = rows - p * kPanelRows;
    float* yp = y + p * kPanelRows;
    for (int64_t t0 = 0; t0 < tokens; t0 += 32) {
      const uint16_t* x0 = xb + t0 * ldxb;
      if (t0 + 16 < tokens) {
        AmxBlock<true>(panel, in_padded, x0, x_stride);
      } else {
        AmxBlock<false>(panel, in_padded, x0, x_stride);
      }
      MEMSERVE_STORE_TILE(0, yp, ldy, t0, tokens, 0, rows_left, scratch);
      MEMSERVE_STORE_TILE(1, yp, ldy, t0, tokens, 16, rows_left, scratch);
      if (t0 + 16 < tokens) {
        MEMSERVE_STORE_TILE(2, yp, ldy, t0 + 16, tokens, 0, rows_left, scratch);
        MEMSERVE_STORE_TILE(3, yp, ldy, t0 + 16, tokens, 16, rows_left, scratch);
      }
    }
  }
  // Back to the initial tile state: a context switch then saves no tile data.
  _tile_release();
}

// Blocks of this many tokens or more go to AMX (below, vdpbf16ps reads each
// weight once for all tokens at a lower setup cost).
constexpr int64_t kAmxMinTokens = 16;

MEMSERVE_TARGET_AMX void AmxOrDpMatMul(const uint32_t* panels, int64_t in_padded, int64_t rows,
                                       int64_t panel_begin, int64_t panel_end, const uint16_t* xb,
                                       int64_t ldxb, int64_t tokens, float* y, int64_t ldy) {
  if (tokens >= kAmxMinTokens) {
    AmxMatMul(panels, in_padded, rows, panel_begin, panel_end, xb, ldxb, tokens, y, ldy);
  } else {
    DpMatMul(panels, in_padded, rows, panel_begin, panel_end, xb, ldxb, tokens, y, ldy);
  }
}

bool CpuHasAvx512Bf16() {
  if (!CpuIsaSupported(CpuIsa::kAvx512)) return false;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return (eax >> 5) & 1u;
}

// AMX-TILE and AMX-BF16 in CPUID, and Linux's permission for this process
// to use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM; refused by
// kernels or hypervisors without AMX support).
bool AmxUsable() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (((edx >> 22) & 1u) == 0 || ((edx >> 24) & 1u) == 0) return false;
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

}  // namespace
}  // namespace bf16

const CpuBf16Kernels* Bf16Kernels(bool allow_amx) {
  static const bool has_bf16 = bf16::CpuHasAvx512Bf16();
  if (!has_bf16) return nullptr;
  static const CpuBf16Kernels dp = {false, bf16::RoundToBf16, bf16::DpMatMul};
  if (!allow_amx) return &dp;
  static const bool has_amx = bf16::AmxUsable();
  static const CpuBf16Kernels amx = {true, bf16::RoundToBf16, bf16::AmxOrDpMatMul};
  return has_amx ? &amx : &dp;
}

#else

const CpuBf16Kernels* Bf16Kernels(bool) { return nullptr; }

#endif  // MEMSERVE_X86_KERNELS

}  // namespace memserve
