// The compute device a model runs on, and the one place where the backend
// for a device is built (Engine::Create and `memserve generate` reach it
// through LoadModel, engine/load_model.h).
#ifndef MEMSERVE_ENGINE_BACKEND_FACTORY_H_
#define MEMSERVE_ENGINE_BACKEND_FACTORY_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/backend.h"
#include "engine/runtime/tensor.h"

namespace memserve {

// Device and DeviceName ("cpu", "cuda": the --device value and
// ModelInfo.backend) are in engine/runtime/tensor.h.

// The --device flag's value. InvalidArgument naming --device and the
// choices for anything but "cpu" and "cuda".
absl::StatusOr<Device> ParseDevice(absl::string_view name);

// OK when this build can run a model on `device`. Unimplemented (one line
// naming --device) for cuda: the CUDA backend is issue 11. Needs no model,
// so callers check it before loading.
absl::Status CheckDeviceAvailable(Device device);

// Where the backend on `device` keeps the memory value table(s), as
// ModelInfo.memory.placement says it: "cpu-mmap" on the CPU (used in place
// from the checkpoint mapping).
const char* ValueTablePlacement(Device device);

// The backend for `device` with `threads` CPU threads (0 = one per hardware
// thread), for Model::Load: the one place a backend is built. Errors: those
// of CheckDeviceAvailable.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(Device device, int threads);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_FACTORY_H_
