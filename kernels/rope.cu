#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/launch_util.cuh"
#include "kernels/rope.h"

namespace memserve::kernels {
namespace {

constexpr int kThreads = 256;

// One thread per (token, head, pair), grid-stride. The explicit _rn
// intrinsics keep every product and sum rounded on its own (nvcc would
// otherwise contract c * x0 - s * x1 into a fused multiply-add), so the
// result is bit-identical to the CPU's.
__global__ void RopeKernel(float* x, const int32_t* positions, const float* cos_sin,
                           int64_t n_tokens, int n_heads, int half, int max_positions,
                           int64_t token_stride) {
  const int64_t pairs_per_token = static_cast<int64_t>(n_heads) * half;
  const int64_t total = n_tokens * pairs_per_token;
  const float* sin_table = cos_sin + static_cast<int64_t>(max_positions) * half;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < total;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = item / pairs_per_token;
    const int64_t within = item - t * pairs_per_token;  // h * half + i
    const int h = static_cast<int>(within / half);
    const int i = static_cast<int>(within - static_cast<int64_t>(h) * half);
    const int32_t pos = positions[t];
    if (pos < 0 || pos >= max_positions) continue;  // the backend validates positions
    const float c = cos_sin[static_cast<int64_t>(pos) * half + i];
    const float s = sin_table[static_cast<int64_t>(pos) * half + i];
    float* v = x + t * token_stride + static_cast<int64_t>(h) * (2 * half) + 2 * i;
    const float x0 = v[0];
    const float x1 = v[1];
    v[0] = __fsub_rn(__fmul_rn(c, x0), __fmul_rn(s, x1));
    v[1] = __fadd_rn(__fmul_rn(s, x0), __fmul_rn(c, x1));
  }
}

}  // namespace

absl::Status RopeParams::Validate() const {
  if (x == nullptr) return absl::InvalidArgumentError("RopeParams.x is null");
  if (positions == nullptr) return absl::InvalidArgumentError("RopeParams.positions is null");
  if (cos_sin == nullptr) return absl::InvalidArgumentError("RopeParams.cos_sin is null");
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeParams.n_tokens must be in [0, 2^31 - 1], got ", n_tokens));
  }
  if (n_heads < 1 || n_heads > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeParams.n_heads must be in [1, 65536], got ", n_heads));
  }
  if (head_dim < 2 || head_dim > 1024 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeParams.head_dim must be even and in [2, 1024], got ", head_dim));
  }
  if (max_positions < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeParams.max_positions must be >= 1, got ", max_positions));
  }
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  if (token_stride != 0 && token_stride < row) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeParams.token_stride must be 0 or >= n_heads * head_dim = ", row, ", got ",
                     token_stride));
  }
  return absl::OkStatus();
}

absl::Status LaunchRope(const RopeParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const int half = p.head_dim / 2;
  const int64_t total = p.n_tokens * p.n_heads * half;
  RopeKernel<<<GridStrideBlocks(total, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p.x, p.positions, p.cos_sin, p.n_tokens, p.n_heads, half, p.max_positions,
      p.effective_token_stride());
  return LaunchStatus("rope");
}

}  // namespace memserve::kernels
