#include "engine/model_cpu.h"

#include <utility>

#include "engine/backend/cpu/cpu_backend.h"

namespace memserve {

absl::StatusOr<std::unique_ptr<Model>> LoadCpuModel(const std::string& dir,
                                                    const ModelOptions& options) {
  CpuBackend::Options backend_options;
  backend_options.num_threads = options.num_threads;
  return Model::Load(dir, std::make_unique<CpuBackend>(backend_options), options);
}

}  // namespace memserve
