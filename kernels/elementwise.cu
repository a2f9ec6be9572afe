#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/elementwise.h"
#include "kernels/launch_util.cuh"

namespace memserve::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxElements = int64_t{1} << 40;

__device__ __forceinline__ float Silu(float v) { return v / (1.0f + expf(-v)); }

// y[i] = silu(a[i]) * b[i]; n4 float4 groups when vectorized, then the tail.
__global__ void SwiGluKernel(const float* a, const float* b, float* y, int64_t n, bool vec4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      const float4 av = reinterpret_cast<const float4*>(a)[i];
      const float4 bv = reinterpret_cast<const float4*>(b)[i];
      reinterpret_cast<float4*>(y)[i] =
          make_float4(Silu(av.x) * bv.x, Silu(av.y) * bv.y, Silu(av.z) * bv.z, Silu(av.w) * bv.w);
    }
    done = n4 * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) y[i] = Silu(a[i]) * b[i];
}

__global__ void AddKernel(const float* x, float* y, int64_t n, bool vec4) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += stride) {
      const float4 xv = reinterpret_cast<const float4*>(x)[i];
      float4 yv = reinterpret_cast<float4*>(y)[i];
      yv.x += xv.x;
      yv.y += xv.y;
      yv.z += xv.z;
      yv.w += xv.w;
      reinterpret_cast<float4*>(y)[i] = yv;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) y[i] += x[i];
}

// One block (row) per blockIdx.x, strided over rows past the grid; threads
// stride over the columns.
__global__ void SigmoidGateRowsKernel(const float* gate, float* x, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float g = 1.0f / (1.0f + expf(-gate[r]));
    float* xr = x + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) xr[c] *= g;
  }
}

absl::Status CheckN(const char* params, int64_t n) {
  if (n < 0 || n > kMaxElements) {
    return absl::InvalidArgumentError(absl::StrCat(params, ".n must be in [0, 2^40], got ", n));
  }
  return absl::OkStatus();
}

absl::Status NullError(const char* field) {
  return absl::InvalidArgumentError(absl::StrCat(field, " is null"));
}

}  // namespace

absl::Status SwiGluParams::Validate() const {
  if (a == nullptr) return NullError("SwiGluParams.a");
  if (b == nullptr) return NullError("SwiGluParams.b");
  if (y == nullptr) return NullError("SwiGluParams.y");
  return CheckN("SwiGluParams", n);
}

absl::Status LaunchSwiGlu(const SwiGluParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = AlignedTo(p.a, 16) && AlignedTo(p.b, 16) && AlignedTo(p.y, 16);
  SwiGluKernel<<<GridStrideBlocks(vec4 ? (p.n + 3) / 4 : p.n, kThreads), kThreads, 0,
                 static_cast<cudaStream_t>(stream)>>>(p.a, p.b, p.y, p.n, vec4);
  return LaunchStatus("swiglu");
}

absl::Status AddParams::Validate() const {
  if (x == nullptr) return NullError("AddParams.x");
  if (y == nullptr) return NullError("AddParams.y");
  return CheckN("AddParams", n);
}

absl::Status LaunchAdd(const AddParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = AlignedTo(p.x, 16) && AlignedTo(p.y, 16);
  AddKernel<<<GridStrideBlocks(vec4 ? (p.n + 3) / 4 : p.n, kThreads), kThreads, 0,
              static_cast<cudaStream_t>(stream)>>>(p.x, p.y, p.n, vec4);
  return LaunchStatus("add");
}

absl::Status SigmoidGateRowsParams::Validate() const {
  if (gate == nullptr) return NullError("SigmoidGateRowsParams.gate");
  if (x == nullptr) return NullError("SigmoidGateRowsParams.x");
  if (rows < 0 || rows > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("SigmoidGateRowsParams.rows must be in [0, 2^31 - 1], got ", rows));
  }
  if (cols < 1 || cols > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SigmoidGateRowsParams.cols must be in [1, 2^24], got ", cols));
  }
  return absl::OkStatus();
}

absl::Status LaunchSigmoidGateRows(const SigmoidGateRowsParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.rows == 0) return absl::OkStatus();
  const int threads = p.cols >= kThreads ? kThreads : static_cast<int>((p.cols + 31) / 32 * 32);
  const unsigned blocks = static_cast<unsigned>(p.rows < 65536 ? p.rows : 65536);
  SigmoidGateRowsKernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(p.gate, p.x,
                                                                                   p.rows, p.cols);
  return LaunchStatus("sigmoid_gate_rows");
}

}  // namespace memserve::kernels
