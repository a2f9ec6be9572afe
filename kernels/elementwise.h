// Element-wise and per-row fp32 ops on the GPU (the CPU backend's SwiGlu,
// Add and SigmoidGateRows are the references):
//
//   SwiGlu:          y[i] = silu(a[i]) * b[i],  silu(v) = v / (1 + exp(-v))
//   Add:             y[i] += x[i]               (exact, as on the CPU)
//   SigmoidGateRows: x[r, c] *= sigmoid(gate[r]), sigmoid(v) = 1 / (1 + exp(-v))
//
// exp is CUDA's expf (within 2 ulp of the CPU's std::exp), so SwiGlu and the
// gate match the CPU to a few ulp, not bit for bit.
//
// Plain C++ launch APIs (no CUDA types); each Launch only enqueues one
// kernel on the stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_ELEMENTWISE_H_
#define MEMSERVE_KERNELS_ELEMENTWISE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

struct SwiGluParams {
  const float* a = nullptr;  // [n] fp32, device
  const float* b = nullptr;  // [n] fp32, device
  float* y = nullptr;        // [n] fp32, device; may equal a or b (not overlap partially)
  int64_t n = 0;             // 0 = nothing to do

  // InvalidArgument naming the field: a null pointer or n outside [0, 2^40].
  absl::Status Validate() const;
};
absl::Status LaunchSwiGlu(const SwiGluParams& params, void* stream);

struct AddParams {
  const float* x = nullptr;  // [n] fp32, device
  float* y = nullptr;        // [n] fp32, device; y += x
  int64_t n = 0;             // 0 = nothing to do

  // InvalidArgument naming the field: a null pointer or n outside [0, 2^40].
  absl::Status Validate() const;
};
absl::Status LaunchAdd(const AddParams& params, void* stream);

struct SigmoidGateRowsParams {
  const float* gate = nullptr;  // [rows] fp32, device (one gate logit per row)
  float* x = nullptr;           // [rows, cols] fp32, device, scaled in place
  int64_t rows = 0;             // 0 = nothing to do
  int64_t cols = 0;

  // InvalidArgument naming the field: a null pointer, rows outside
  // [0, 2^31 - 1], cols outside [1, 2^24].
  absl::Status Validate() const;
};
absl::Status LaunchSigmoidGateRows(const SigmoidGateRowsParams& params, void* stream);

// Each Launch enqueues its op on `stream` (a cudaStream_t, nullptr = default
// stream) and returns Validate()'s error, or Internal with the CUDA error
// string if the launch fails.

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_ELEMENTWISE_H_
