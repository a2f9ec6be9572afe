// The backends every cross-backend test runs on (backend_ops_test,
// model_on_backends_test): each factory makes a fresh backend, or says why
// it cannot (e.g. no CUDA device), in which case the test skips it.
// A new backend adds its factory to AllBackendFactories().
#ifndef MEMSERVE_ENGINE_BACKEND_TESTING_BACKEND_FACTORIES_H_
#define MEMSERVE_ENGINE_BACKEND_TESTING_BACKEND_FACTORIES_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace memserve {

struct BackendFactory {
  std::string name;  // a test-name suffix: [A-Za-z0-9_]
  std::function<absl::StatusOr<std::unique_ptr<Backend>>()> make;
};

// gtest prints a factory by its name.
inline void PrintTo(const BackendFactory& factory, std::ostream* os) { *os << factory.name; }

// cpu (best ISA), cpu_generic (portable kernels), tracing_cpu (TracingBackend
// over cpu: operands must be its own buffers, new memory is NaN), graph_cpu
// (StepGraphEmulator over cpu: the model's decode graphs, emulated), and in
// builds with the CUDA toolkit cuda (device 0; Unavailable without a GPU).
std::vector<BackendFactory> AllBackendFactories();

// The reference the others are compared with: the CPU backend.
std::unique_ptr<Backend> MakeReferenceBackend();

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_TESTING_BACKEND_FACTORIES_H_
