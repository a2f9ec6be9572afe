// Discovery of visible CUDA devices. Having no driver or no GPU is a normal
// answer (an empty list), not an error: memserve then runs on the CPU.
#ifndef MEMSERVE_KERNELS_CUDA_DEVICE_H_
#define MEMSERVE_KERNELS_CUDA_DEVICE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace memserve::kernels {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int64_t total_memory_bytes = 0;
  int multiprocessors = 0;
};

// Lists visible devices. When none can be used, returns an empty list and,
// if `why_none` is given, the CUDA runtime's reason (e.g. no driver).
std::vector<CudaDeviceInfo> ListCudaDevices(std::string* why_none = nullptr);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_CUDA_DEVICE_H_
