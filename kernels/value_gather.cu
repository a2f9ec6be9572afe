#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/value_gather.h"

namespace memserve::kernels {
namespace {

__device__ __forceinline__ float Widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float Widen(float v) { return v; }

// One block per output row n; threads stride over the v_dim columns of the
// slice. Each thread keeps an fp32 accumulator per column it owns. `values`
// already points at column col0 of row 0; rows are row_stride apart. T is
// __nv_bfloat16 or float.
template <typename T>
__global__ void ValueGatherKernel(const T* __restrict__ values,
                                  const int64_t* __restrict__ indices,
                                  const float* __restrict__ weights,
                                  float* __restrict__ out, int64_t rows,
                                  int64_t row_stride, int v_dim, int k) {
  const int n = blockIdx.x;
  const int64_t* idx = indices + static_cast<int64_t>(n) * k;
  const float* w = weights + static_cast<int64_t>(n) * k;
  for (int c = threadIdx.x; c < v_dim; c += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < k; ++j) {
      const int64_t row = idx[j];
      if (row < 0 || row >= rows) continue;
      acc += w[j] * Widen(values[row * row_stride + c]);
    }
    out[static_cast<int64_t>(n) * v_dim + c] = acc;
  }
}

}  // namespace

absl::Status ValueGatherParams::Validate() const {
  if (values == nullptr && values_f32 == nullptr) {
    return absl::InvalidArgumentError("ValueGatherParams.values is null (and values_f32 too)");
  }
  if (values != nullptr && values_f32 != nullptr) {
    return absl::InvalidArgumentError(
        "ValueGatherParams: values and values_f32 are both set; set exactly one");
  }
  if (indices == nullptr) return absl::InvalidArgumentError("ValueGatherParams.indices is null");
  if (weights == nullptr) return absl::InvalidArgumentError("ValueGatherParams.weights is null");
  if (out == nullptr) return absl::InvalidArgumentError("ValueGatherParams.out is null");
  if (rows <= 0) return absl::InvalidArgumentError(absl::StrCat("ValueGatherParams.rows must be > 0, got ", rows));
  if (v_dim <= 0) return absl::InvalidArgumentError(absl::StrCat("ValueGatherParams.v_dim must be > 0, got ", v_dim));
  if (n < 0 || n > (1 << 30)) return absl::InvalidArgumentError(absl::StrCat("ValueGatherParams.n must be in [0, 2^30], got ", n));
  if (k <= 0 || k > 4096) return absl::InvalidArgumentError(absl::StrCat("ValueGatherParams.k must be in [1, 4096], got ", k));
  if (row_stride < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ValueGatherParams.row_stride must be >= 0 (0 = v_dim), got ", row_stride));
  }
  if (col0 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("ValueGatherParams.col0 must be >= 0, got ", col0));
  }
  if (col0 + v_dim > effective_row_stride()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ValueGatherParams: the slice [col0, col0 + v_dim) = [", col0, ", ", col0 + v_dim,
        ") is past the row (row_stride ", effective_row_stride(), ")"));
  }
  return absl::OkStatus();
}

absl::Status LaunchValueGather(const ValueGatherParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n == 0) return absl::OkStatus();
  const int threads = p.v_dim >= 256 ? 256 : ((p.v_dim + 31) / 32) * 32;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.values != nullptr) {
    ValueGatherKernel<<<p.n, threads, 0, s>>>(
        reinterpret_cast<const __nv_bfloat16*>(p.values) + p.col0, p.indices, p.weights, p.out,
        p.rows, p.effective_row_stride(), p.v_dim, p.k);
  } else {
    ValueGatherKernel<<<p.n, threads, 0, s>>>(p.values_f32 + p.col0, p.indices, p.weights, p.out,
                                              p.rows, p.effective_row_stride(), p.v_dim, p.k);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("value_gather launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memserve::kernels
