// The model on the CPU backend: what callers that do not choose a device use
// (memserve's CPU default, tests, benchmarks). Engine::Create picks the
// backend from EngineOptions instead.
#ifndef MEMSERVE_ENGINE_MODEL_CPU_H_
#define MEMSERVE_ENGINE_MODEL_CPU_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model.h"

namespace memserve {

// Model::Load(dir, MakeBackend(Device::kCpu, options.num_threads)), the model
// owning the backend.
absl::StatusOr<std::unique_ptr<Model>> LoadCpuModel(const std::string& dir,
                                                    const ModelOptions& options = {});

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_MODEL_CPU_H_
