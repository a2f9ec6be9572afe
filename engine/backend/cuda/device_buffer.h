// DeviceBuffer: a Buffer of the CUDA backend at a device address: device
// memory (cudaMalloc, freed with the buffer) or host memory the GPU reads
// through a mapped device pointer (host placement of the value tables,
// memory_placement_cuda.h), released by its own function. And the one
// record of which device is current on a thread (UseDevice).
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "engine/backend/cuda/cuda_check.h"
#include "engine/runtime/tensor.h"

namespace memserve::cuda {

class DeviceBuffer : public Buffer {
 public:
  // `ptr` is a device address; `release` (default: cudaFree(ptr)) runs when
  // the buffer dies.
  DeviceBuffer(const Backend* backend, const char* type, void* ptr, size_t size,
               std::function<void()> release = nullptr)
      : Buffer(backend, Device::kCuda, type, size), ptr_(ptr), release_(std::move(release)) {}
  ~DeviceBuffer() override {
    if (release_) {
      release_();
    } else if (ptr_ != nullptr) {
      cudaFree(ptr_);
    }
  }
  void* ptr() const { return ptr_; }

 private:
  void* ptr_;
  std::function<void()> release_;
};

// Makes `device` current on the calling thread, remembered per thread (one
// record for every caller, so the common case costs no driver call): code
// that switches devices uses this, never cudaSetDevice directly.
inline absl::Status UseDevice(int device) {
  thread_local int current = -1;
  if (current == device) return absl::OkStatus();
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return CudaError(err, "cudaSetDevice", __FILE__, __LINE__);
  current = device;
  return absl::OkStatus();
}

// The device address of t's first byte. REQUIRES: t is on a DeviceBuffer
// (a tensor of a CUDA backend).
template <typename T>
T* DevicePtr(const Tensor& t) {
  return reinterpret_cast<T*>(
      static_cast<char*>(static_cast<const DeviceBuffer*>(t.buffer)->ptr()) + t.offset);
}

}  // namespace memserve::cuda

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_DEVICE_BUFFER_H_
