// cuda_devices: prints the visible CUDA devices, or says there are none.
// Always exits 0: "no GPU" is a normal configuration (CPU backend).
#include <cstdio>
#include <string>

#include "kernels/cuda_device.h"

int main() {
  std::string why;
  auto devices = memserve::kernels::ListCudaDevices(&why);
  if (devices.empty()) {
    std::printf("no CUDA devices (%s); memserve will use the CPU backend\n", why.c_str());
    return 0;
  }
  for (const auto& d : devices) {
    std::printf("cuda:%d %s sm_%d%d memory=%.1fGiB sms=%d\n", d.index, d.name.c_str(),
                d.compute_major, d.compute_minor,
                static_cast<double>(d.total_memory_bytes) / (1024.0 * 1024 * 1024),
                d.multiprocessors);
  }
  return 0;
}
