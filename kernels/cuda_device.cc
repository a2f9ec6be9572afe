#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

namespace memserve::kernels {

std::vector<CudaDeviceInfo> ListCudaDevices(std::string* why_none) {
  std::vector<CudaDeviceInfo> out;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // cudaErrorInsufficientDriver (35) / cudaErrorNoDevice (100) on machines
    // without a GPU: report "none".
    if (why_none != nullptr) *why_none = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    info.multiprocessors = prop.multiProcessorCount;
    out.push_back(info);
  }
  if (out.empty() && why_none != nullptr) *why_none = "no CUDA devices";
  return out;
}

}  // namespace memserve::kernels
