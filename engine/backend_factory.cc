#include "engine/backend_factory.h"

#include "absl/strings/str_cat.h"

namespace memserve {

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "unknown";
}

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

absl::StatusOr<ModelOptions> MakeBackend(Device device, int threads) {
  if (absl::Status s = CheckDeviceAvailable(device); !s.ok()) return s;
  ModelOptions options;
  options.num_threads = threads;
  return options;
}

}  // namespace memserve
