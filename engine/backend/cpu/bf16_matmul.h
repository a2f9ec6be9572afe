// The bf16-activation matmul (--cpu_matmul_precision bf16): a BF16 weight
// times activations rounded to bf16, products exact in fp32 and summed in
// fp32, on AVX512-BF16 (`vdpbf16ps`, a few tokens) and AMX tiles (many
// tokens) where the CPU has them. Twice (AVX512-BF16) to ten times (AMX) the
// multiply-adds of the exact fp32 kernels per cycle, for a rounding of x:
// the path llama.cpp takes for bf16 weights. The exact kernels (kernels.h)
// stay the default.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_BF16_MATMUL_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_BF16_MATMUL_H_

#include <cstdint>

namespace memserve {

struct CpuBf16Kernels {
  // Whether `matmul` takes blocks of 16+ tokens on AMX tiles.
  bool amx = false;
  // out[i] = F32ToBf16(x[i]) (round to nearest even) for i < n.
  void (*round_to_bf16)(const float* x, int64_t n, uint16_t* out);
  // y[t * ldy + r] = sum over k < in of x[t][k] * w[r][k] for the rows r < rows
  // of panels [panel_begin, panel_end) and t < tokens, each product exact in
  // fp32, summed in fp32 over k pairs in increasing order (the hardware's
  // order within a pair). `panels`: a PackedWeight in the kBf16Pairs layout
  // with `in_padded` columns (a multiple of PackedWeight::kPairBlockK). `xb`:
  // x rounded to bf16, rows of `ldxb` >= in_padded elements, zero from column
  // `in` on, and RoundUp(tokens, 16) rows (the rows past `tokens` zero: AMX
  // reads 16 at a time).
  void (*matmul)(const uint32_t* panels, int64_t in_padded, int64_t rows, int64_t panel_begin,
                 int64_t panel_end, const uint16_t* xb, int64_t ldxb, int64_t tokens, float* y,
                 int64_t ldy);
};

// The kernels of this CPU: null where it lacks AVX512-BF16 (or the build has
// no x86 kernels). AMX is used where the CPU and the kernel allow it (the
// process asks Linux for the tile state once) unless `allow_amx` is false
// (then vdpbf16ps for every block: tests compare the two).
const CpuBf16Kernels* Bf16Kernels(bool allow_amx = true);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_BF16_MATMUL_H_
