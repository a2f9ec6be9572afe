#include "engine/model_cpu.h"

#include <utility>

#include "engine/backend_factory.h"

namespace memserve {

absl::StatusOr<std::unique_ptr<Model>> LoadCpuModel(const std::string& dir,
                                                    const ModelOptions& options) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(Device::kCpu, options.num_threads);
  if (!backend.ok()) return backend.status();
  return Model::Load(dir, std::move(*backend), options);
}

}  // namespace memserve
