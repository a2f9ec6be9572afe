#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/convert.h"
#include "kernels/launch_util.cuh"

namespace memserve::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxElements = int64_t{1} << 40;

// y[i] = bf16(x[i]); with vec4, groups of 4 (16-byte loads, 8-byte stores),
// then the tail.
__global__ void F32ToBf16Kernel(const float* x, uint16_t* y, int64_t n, bool vec4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      uint2 out;
      out.x = static_cast<uint32_t>(F32ToBf16Bits(v.x)) |
              (static_cast<uint32_t>(F32ToBf16Bits(v.y)) << 16);
      out.y = static_cast<uint32_t>(F32ToBf16Bits(v.z)) |
              (static_cast<uint32_t>(F32ToBf16Bits(v.w)) << 16);
      reinterpret_cast<uint2*>(y)[i] = out;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) y[i] = F32ToBf16Bits(x[i]);
}

__global__ void Bf16ToF32Kernel(const uint16_t* x, float* y, int64_t n, bool vec4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      const uint2 v = reinterpret_cast<const uint2*>(x)[i];
      reinterpret_cast<float4*>(y)[i] =
          make_float4(BitsFloat(v.x << 16), BitsFloat(v.x & 0xffff0000u), BitsFloat(v.y << 16),
                      BitsFloat(v.y & 0xffff0000u));
    }
    done = n4 * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) y[i] = Bf16BitsToF32(x[i]);
}

absl::Status CheckN(const char* params, int64_t n) {
  if (n < 0 || n > kMaxElements) {
    return absl::InvalidArgumentError(absl::StrCat(params, ".n must be in [0, 2^40], got ", n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status F32ToBf16Params::Validate() const {
  if (x == nullptr) return absl::InvalidArgumentError("F32ToBf16Params.x is null");
  if (y == nullptr) return absl::InvalidArgumentError("F32ToBf16Params.y is null");
  return CheckN("F32ToBf16Params", n);
}

absl::Status LaunchF32ToBf16(const F32ToBf16Params& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = AlignedTo(p.x, 16) && AlignedTo(p.y, 8);
  F32ToBf16Kernel<<<GridStrideBlocks(vec4 ? (p.n + 3) / 4 : p.n, kThreads), kThreads, 0,
                    static_cast<cudaStream_t>(stream)>>>(p.x, p.y, p.n, vec4);
  return LaunchStatus("f32_to_bf16");
}

absl::Status Bf16ToF32Params::Validate() const {
  if (x == nullptr) return absl::InvalidArgumentError("Bf16ToF32Params.x is null");
  if (y == nullptr) return absl::InvalidArgumentError("Bf16ToF32Params.y is null");
  return CheckN("Bf16ToF32Params", n);
}

absl::Status LaunchBf16ToF32(const Bf16ToF32Params& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = AlignedTo(p.x, 8) && AlignedTo(p.y, 16);
  Bf16ToF32Kernel<<<GridStrideBlocks(vec4 ? (p.n + 3) / 4 : p.n, kThreads), kThreads, 0,
                    static_cast<cudaStream_t>(stream)>>>(p.x, p.y, p.n, vec4);
  return LaunchStatus("bf16_to_f32");
}

}  // namespace memserve::kernels
