#include "engine/backend/testing/backend_factories.h"

#include <utility>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/testing/step_graph_emulator.h"
#include "engine/backend/testing/tracing_backend.h"
#ifdef MEMSERVE_HAS_CUDA
#include "engine/backend/cuda/cuda_backend.h"
#endif

namespace memserve {
namespace {

std::unique_ptr<Backend> Cpu(CpuIsa isa) {
  CpuBackend::Options options;
  options.num_threads = 2;
  options.isa = isa;
  return std::make_unique<CpuBackend>(options);
}

}  // namespace

std::vector<BackendFactory> AllBackendFactories() {
  std::vector<BackendFactory> out;
  out.push_back(
      {"cpu", []() -> absl::StatusOr<std::unique_ptr<Backend>> { return Cpu(CpuIsa::kAuto); }});
  out.push_back({"cpu_generic", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
                   return Cpu(CpuIsa::kGeneric);
                 }});
  out.push_back({"tracing_cpu", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
                   return std::unique_ptr<Backend>(
                       std::make_unique<TracingBackend>(Cpu(CpuIsa::kAuto)));
                 }});
  out.push_back({"graph_cpu", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
                   return std::unique_ptr<Backend>(
                       std::make_unique<StepGraphEmulator>(Cpu(CpuIsa::kAuto)));
                 }});
  // Unavailable (naming why) where no CUDA device is visible: the tests
  // skip it. Absent from builds without the CUDA toolkit.
#ifdef MEMSERVE_HAS_CUDA
  out.push_back({"cuda", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
                   CudaBackend::Options options;
                   options.log_placement_bytes = 0;
                   absl::StatusOr<std::unique_ptr<CudaBackend>> cuda = CudaBackend::Create(options);
                   if (!cuda.ok()) return cuda.status();
                   return std::unique_ptr<Backend>(std::move(*cuda));
                 }});
#endif
  return out;
}

std::unique_ptr<Backend> MakeReferenceBackend() { return Cpu(CpuIsa::kAuto); }

}  // namespace memserve
