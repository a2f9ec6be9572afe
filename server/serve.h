// `memserve serve`: the gRPC server process. Binds the port first (health:
// liveness SERVING, readiness NOT_SERVING), loads the model, only then logs
// "listening", serves until SIGTERM/SIGINT, then drains (docs/api.md,
// "Health checking"; docs/operations.md, "Lifecycle"; flags in serve.cc,
// `memserve serve --help`).
#ifndef MEMSERVE_SERVER_SERVE_H_
#define MEMSERVE_SERVER_SERVE_H_

#include <string>

namespace memserve {

// Runs the server on the checkpoint in `model_dir` until a signal; returns
// the process exit code: 0 after a drain, 2 for bad flags (a malformed
// --listen included) or a bad checkpoint config, 1 for other failures (port
// in use, not a serving checkpoint, corrupt checkpoint), each after one
// stderr line.
int RunServe(const std::string& model_dir);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_SERVE_H_
