#include "engine/backend/testing/backend_factories.h"

#include <utility>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/testing/tracing_backend.h"

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
  // The CUDA backend adds {"cuda", ...} here; its factory returns
  // Unavailable when no device is present, and the tests skip it.
  return out;
}

std::unique_ptr<Backend> MakeReferenceBackend() { return Cpu(CpuIsa::kAuto); }

}  // namespace memserve
