// `memserve serve`: the gRPC server process. Opens the port first (health:
// liveness SERVING, readiness NOT_SERVING), loads the model, serves until
// SIGTERM/SIGINT, then drains (docs/api.md, "Health checking"; flags in
// serve.cc, `memserve --help`).
#ifndef MEMSERVE_SERVER_SERVE_H_
#define MEMSERVE_SERVER_SERVE_H_

#include <string>

namespace memserve {

// Runs the server on the checkpoint in `model_dir` until a signal; returns
// the process exit code: 0 after a drain, 2 for bad flags or a bad
// checkpoint config, 1 for other failures (port in use, corrupt checkpoint).
int RunServe(const std::string& model_dir);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_SERVE_H_
