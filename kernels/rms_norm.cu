#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/launch_util.cuh"
#include "kernels/rms_norm.h"

namespace memserve::kernels {
namespace {

constexpr int kThreads = 256;  // a multiple of 32

__device__ __forceinline__ float LoadWeight(const float* w, int i) { return w[i]; }
__device__ __forceinline__ float LoadWeight(const uint16_t* w, int i) {
  return Bf16BitsToF32(w[i]);
}

// One block per row (strided over rows past the grid). The fp64 sum of
// squares (each fp32 square is exact in fp64) is reduced per warp by
// shuffles, then across warps in shared memory.
template <typename W>
__global__ void RmsNormKernel(const float* x, const W* weight, float* y, int64_t n_tokens, int dim,
                              float eps) {
  __shared__ double warp_sums[kThreads / 32];
  __shared__ float row_inv;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const float* xt = x + t * dim;
    float* yt = y + t * dim;
    double sum = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const double v = xt[i];
      sum += v * v;
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < warps; ++w) total += warp_sums[w];
      const float mean = static_cast<float>(total / static_cast<double>(dim));
      row_inv = 1.0f / sqrtf(mean + eps);
    }
    __syncthreads();
    const float inv = row_inv;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
      yt[i] = (xt[i] * inv) * LoadWeight(weight, i);
    __syncthreads();  // row_inv and warp_sums are reused by the next row
  }
}

}  // namespace

absl::Status RmsNormParams::Validate() const {
  if (x == nullptr) return absl::InvalidArgumentError("RmsNormParams.x is null");
  if (weight == nullptr) return absl::InvalidArgumentError("RmsNormParams.weight is null");
  if (y == nullptr) return absl::InvalidArgumentError("RmsNormParams.y is null");
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNormParams.n_tokens must be in [0, 2^31 - 1], got ", n_tokens));
  }
  if (dim < 1 || dim > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNormParams.dim must be in [1, 2^20], got ", dim));
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNormParams.eps must be finite and >= 0, got ", eps));
  }
  return absl::OkStatus();
}

absl::Status LaunchRmsNorm(const RmsNormParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const int threads = p.dim >= kThreads ? kThreads : (p.dim + 31) / 32 * 32;
  const unsigned blocks = static_cast<unsigned>(p.n_tokens < 65536 ? p.n_tokens : 65536);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.weight_type == ElementType::kF32) {
    RmsNormKernel<<<blocks, threads, 0, s>>>(p.x, static_cast<const float*>(p.weight), p.y,
                                             p.n_tokens, p.dim, p.eps);
  } else {
    RmsNormKernel<<<blocks, threads, 0, s>>>(p.x, static_cast<const uint16_t*>(p.weight), p.y,
                                             p.n_tokens, p.dim, p.eps);
  }
  return LaunchStatus("rms_norm");
}

}  // namespace memserve::kernels
