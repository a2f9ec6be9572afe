// Helpers of the kernels' GPU tests: device arrays made from host vectors,
// the skip when no CUDA device is visible, and error measures.
#ifndef MEMSERVE_KERNELS_KERNEL_TEST_UTIL_H_
#define MEMSERVE_KERNELS_KERNEL_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cuda_device.h"

namespace memserve::kernels {

// Skips the calling test, saying why, when no CUDA device is visible.
#define MEMSERVE_SKIP_WITHOUT_GPU()                                                    \
  do {                                                                                 \
    std::string memserve_why_no_gpu;                                                   \
    if (::memserve::kernels::ListCudaDevices(&memserve_why_no_gpu).empty()) {          \
      GTEST_SKIP() << "no CUDA device (" << memserve_why_no_gpu << "); runs on a GPU"; \
    }                                                                                  \
  } while (0)

// `n` elements of T in device memory (contents unspecified, or a copy of a
// host vector). A failing CUDA call is a test failure (ADD_FAILURE); get()
// is then null.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    const cudaError_t err = cudaMalloc(&data_, std::max<size_t>(n, 1) * sizeof(T));
    if (err != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc(" << n * sizeof(T) << "): " << cudaGetErrorString(err);
      data_ = nullptr;
    }
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    if (data_ != nullptr && !host.empty()) {
      const cudaError_t err =
          cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
      if (err != cudaSuccess) ADD_FAILURE() << "cudaMemcpy to device: " << cudaGetErrorString(err);
    }
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return data_; }
  size_t size() const { return n_; }

  // The contents, after all work on the device finished (a failure is a test
  // failure, and an empty vector).
  std::vector<T> Read() const {
    std::vector<T> host(n_);
    if (data_ == nullptr) return {};
    cudaError_t err = cudaDeviceSynchronize();
    if (err == cudaSuccess && n_ > 0) {
      err = cudaMemcpy(host.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    }
    if (err != cudaSuccess) {
      ADD_FAILURE() << "reading a device array: " << cudaGetErrorString(err);
      return {};
    }
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};

// Whether `s` is an error whose message contains `text`.
inline bool StatusMentions(const absl::Status& s, const std::string& text) {
  return !s.ok() && s.message().find(text) != std::string::npos;
}

// sum (got - want)^2 / sum want^2 (0 when both are all zeros; infinity on a
// size mismatch or a NaN).
inline double Nmse(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double err = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    err += d * d;
    ref += static_cast<double>(want[i]) * want[i];
  }
  if (std::isnan(err)) return INFINITY;
  return ref == 0.0 ? err : err / ref;
}

// Elements whose bits differ (infinity-safe; NaN == NaN by bits).
inline int64_t BitMismatches(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    n += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  }
  return n;
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_KERNEL_TEST_UTIL_H_
