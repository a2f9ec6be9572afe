// Weighted gather-sum of bf16 value rows on the GPU: the read half of the
// product-key memory layer (docs/model.md, "The memory layer", step 6).
//
//   out[n, :] = sum_{j < k} weights[n, j] * values[indices[n, j], :]   (fp32 accumulation)
//
// Plain C++ launch API (no CUDA types), TensorRT-LLM style:
// params struct + Validate() + Launch(params, stream).
#ifndef MEMSERVE_KERNELS_VALUE_GATHER_H_
#define MEMSERVE_KERNELS_VALUE_GATHER_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

struct ValueGatherParams {
  const uint16_t* values = nullptr;  // [rows, v_dim] bf16, device (or mapped host) memory
  const int64_t* indices = nullptr;  // [n, k] row ids, device
  const float* weights = nullptr;    // [n, k], device
  float* out = nullptr;              // [n, v_dim] fp32, device
  int64_t rows = 0;
  int v_dim = 0;
  int n = 0;
  int k = 0;

  // InvalidArgument naming the field when a pointer is null or a size is
  // out of range. Indices are NOT checked here (they live on the device);
  // the kernel skips any index outside [0, rows).
  absl::Status Validate() const;
};

// Enqueues the gather on `stream` (a cudaStream_t, nullptr = default stream).
// Returns Internal with the CUDA error string if the launch fails.
absl::Status LaunchValueGather(const ValueGatherParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_VALUE_GATHER_H_
