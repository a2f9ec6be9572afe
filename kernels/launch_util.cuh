// Internal helpers of the kernels' .cu files (CUDA syntax; not a public
// header): the launch-status check every Launch ends with, and grid sizing.
#ifndef MEMSERVE_KERNELS_LAUNCH_UTIL_CUH_
#define MEMSERVE_KERNELS_LAUNCH_UTIL_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace memserve::kernels {

// OK, or Internal naming `kernel` with the CUDA error string when the last
// launch on this thread failed (bad configuration, no device, a sticky
// error from an earlier fault).
inline absl::Status LaunchStatus(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(kernel, " launch: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

// Blocks of `threads` for a grid-stride loop over `n` items: enough to fill
// the device (the loop covers the rest), never 0. REQUIRES: n >= 1.
inline unsigned GridStrideBlocks(int64_t n, int threads) {
  constexpr int64_t kMaxBlocks = 4096;  // 132 SMs x 31 blocks of 256 threads
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// Whether p is aligned to `bytes` (a power of two).
inline bool AlignedTo(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_LAUNCH_UTIL_CUH_
