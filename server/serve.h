// `memserve serve`: the gRPC server process. Binds the port first (health:
// liveness SERVING, readiness NOT_SERVING), loads the model, only then logs
// "listening", serves until SIGTERM/SIGINT, then drains (docs/api.md,
// "Health checking"; docs/operations.md, "Lifecycle"; flags in serve.cc,
// `memserve serve --help`).
#ifndef MEMSERVE_SERVER_SERVE_H_
#define MEMSERVE_SERVER_SERVE_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/runtime/memory_pool.h"
#include "engine/runtime/tensor.h"

namespace memserve {

// --memory_placement and --memory_gpus (defined in memserve_main.cc, shared
// by serve and generate), parsed and checked for `device` (ParseMemoryPlacement,
// ParseMemoryGpus, CheckMemoryPlacement): InvalidArgument, one line naming the
// flag and the accepted values.
struct MemoryPoolFlags {
  MemoryPlacement placement = MemoryPlacement::kAuto;
  int gpus = 0;  // 0 = all
};
absl::StatusOr<MemoryPoolFlags> ParseMemoryPoolFlags(Device device);

// Runs the server on the checkpoint in `model_dir` until a signal; returns
// the process exit code: 0 after a drain, 2 for bad flags (a malformed
// --listen included) or a bad checkpoint config, 1 for other failures (port
// in use, not a serving checkpoint, corrupt checkpoint), each after one
// stderr line.
int RunServe(const std::string& model_dir);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_SERVE_H_
