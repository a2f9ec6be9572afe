// fp32 <-> bf16 conversion of dense arrays on the GPU: activations to bf16
// for the bf16 GEMMs (round to nearest even; NaN stays NaN), and bf16 back
// to fp32 (exact). Bit-identical to engine/dtype.h's F32ToBf16 / Bf16ToF32
// (the same formulas, kernels/bf16_bits.h).
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_CONVERT_H_
#define MEMSERVE_KERNELS_CONVERT_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

struct F32ToBf16Params {
  const float* x = nullptr;  // [n] fp32, device
  uint16_t* y = nullptr;     // [n] bf16 bits, device; must not overlap x
  int64_t n = 0;             // 0 = nothing to do

  // InvalidArgument naming the field: a null pointer or n outside [0, 2^40].
  absl::Status Validate() const;
};
absl::Status LaunchF32ToBf16(const F32ToBf16Params& params, void* stream);

struct Bf16ToF32Params {
  const uint16_t* x = nullptr;  // [n] bf16 bits, device
  float* y = nullptr;           // [n] fp32, device; must not overlap x
  int64_t n = 0;                // 0 = nothing to do

  // InvalidArgument naming the field: a null pointer or n outside [0, 2^40].
  absl::Status Validate() const;
};
absl::Status LaunchBf16ToF32(const Bf16ToF32Params& params, void* stream);

// Each Launch enqueues the conversion on `stream` (a cudaStream_t, nullptr =
// default stream) and returns Validate()'s error, or Internal with the CUDA
// error string.

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_CONVERT_H_
