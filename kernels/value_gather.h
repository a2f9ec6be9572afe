// Weighted gather-sum of bf16 value rows on the GPU: the read half of the
// product-key memory layer (docs/model.md, "The memory layer", step 6).
//
//   out[n, c] = sum_{j < k} weights[n, j] * values[indices[n, j], col0 + c]   (fp32 accumulation)
//   for c in [0, v_dim)
//
// The value table may be wider than the slice read: rows are `row_stride`
// elements apart, and the kernel reads columns [col0, col0 + v_dim) of each,
// so one shard of a table split along its columns (docs/model.md, DESIGN.md
// "The memory pool") gathers its own slice of the output.
//
// Plain C++ launch API (no CUDA types), TensorRT-LLM style:
// params struct + Validate() + Launch(params, stream).
#ifndef MEMSERVE_KERNELS_VALUE_GATHER_H_
#define MEMSERVE_KERNELS_VALUE_GATHER_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

struct ValueGatherParams {
  const uint16_t* values = nullptr;  // [rows, row_stride] bf16, device (or mapped host) memory
  // Or an fp32 table [rows, row_stride] (same rules); exactly one of values
  // and values_f32 is set.
  const float* values_f32 = nullptr;
  const int64_t* indices = nullptr;  // [n, k] row ids, device
  const float* weights = nullptr;    // [n, k], device
  float* out = nullptr;              // [n, out_stride] fp32, device; columns [0, v_dim) written
  int64_t rows = 0;
  int v_dim = 0;  // columns gathered (the slice's width)
  int n = 0;
  int k = 0;
  // Elements between the starts of consecutive rows of `values`; 0 = v_dim
  // (a dense table read whole). REQUIRES col0 + v_dim <= row_stride.
  int64_t row_stride = 0;
  int64_t col0 = 0;  // first column read, >= 0
  // Elements between consecutive rows of `out`; 0 = v_dim (dense). Lets a
  // shard write its slice straight into its columns of a wider output (out
  // then points at the slice's first column). REQUIRES >= v_dim when set.
  int64_t out_stride = 0;

  // row_stride, or v_dim when it is 0.
  int64_t effective_row_stride() const { return row_stride == 0 ? v_dim : row_stride; }
  // out_stride, or v_dim when it is 0.
  int64_t effective_out_stride() const { return out_stride == 0 ? v_dim : out_stride; }

  // InvalidArgument naming the field when a pointer is null (or both tables
  // are set) or a size is out of range (including a slice [col0, col0 + v_dim)
  // past row_stride). Indices are NOT checked here (they live on the device);
  // the kernel skips any index outside [0, rows).
  absl::Status Validate() const;
};

// Enqueues the gather on `stream` (a cudaStream_t, nullptr = default stream).
// Returns Internal with the CUDA error string if the launch fails.
absl::Status LaunchValueGather(const ValueGatherParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_VALUE_GATHER_H_
