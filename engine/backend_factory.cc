#include "engine/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"

namespace memserve {

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("--device must be cpu or cuda, got '", name, "'"));
}

absl::Status CheckDeviceAvailable(Device device) {
  switch (device) {
    case Device::kCpu:
      return absl::OkStatus();
    case Device::kCuda:
      return absl::UnimplementedError(
          "--device cuda: this build has no CUDA backend yet (issue 11); use --device cpu");
  }
  return absl::InvalidArgumentError("--device: unknown device");
}

const char* ValueTablePlacement(Device device) {
  return device == Device::kCpu ? "cpu-mmap" : "gpu-sharded";
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(Device device, int threads) {
  if (absl::Status s = CheckDeviceAvailable(device); !s.ok()) return s;
  CpuBackend::Options options;
  options.num_threads = threads;
  return std::make_unique<CpuBackend>(options);
}

}  // namespace memserve
