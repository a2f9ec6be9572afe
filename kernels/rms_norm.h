// RMSNorm of fp32 rows on the GPU (docs/model.md, "Backbone"; the CPU
// backend's RmsNorm is the reference):
//
//   y[t, i] = (x[t, i] * inv[t]) * weight[i],
//   inv[t]  = 1 / sqrt(float(sum_i x[t, i]^2 / dim) + eps)
//
// The sum of squares is accumulated in fp64, as on the CPU, so the mean
// (rounded to fp32) almost always matches the CPU bit for bit; the rest is
// correctly rounded fp32 arithmetic in the same order.
//
// Plain C++ launch API (no CUDA types): params struct + Validate() +
// Launch(params, stream). Launch only enqueues work on `stream` (no
// allocation, no synchronization), so it can be captured in a CUDA graph.
#ifndef MEMSERVE_KERNELS_RMS_NORM_H_
#define MEMSERVE_KERNELS_RMS_NORM_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

struct RmsNormParams {
  const float* x = nullptr;      // [n_tokens, dim] fp32, device
  const void* weight = nullptr;  // [dim] of weight_type, device
  ElementType weight_type = ElementType::kF32;
  float* y = nullptr;    // [n_tokens, dim] fp32, device; may equal x (in place)
  int64_t n_tokens = 0;  // 0 = nothing to do
  int dim = 0;
  float eps = 1e-5f;

  // InvalidArgument naming the field: a null pointer, n_tokens < 0 or
  // > 2^31 - 1, dim outside [1, 2^20], eps negative or not finite.
  absl::Status Validate() const;
};

// Enqueues y = RmsNorm(x) on `stream` (a cudaStream_t; nullptr = the legacy
// default stream). Validate()'s error, or Internal with the CUDA error string
// if the launch fails.
absl::Status LaunchRmsNorm(const RmsNormParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_RMS_NORM_H_
