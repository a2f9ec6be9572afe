// The metrics endpoint (`memserve serve --metrics_listen HOST:PORT`): a small
// HTTP server (cpp-httplib) on its own port, apart from the gRPC port:
//   GET /metrics  the registry in the Prometheus text format (version 0.0.4)
//   GET /healthz  200 "ok": the process is up (liveness)
//   GET /readyz   200 "ready" once the model is loaded and while not
//                 draining; 503 "loading" / "draining" otherwise (readiness)
// Anything else is 404. docs/metrics.md has the series.
#ifndef MEMSERVE_SERVER_METRICS_METRICS_SERVER_H_
#define MEMSERVE_SERVER_METRICS_METRICS_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "server/metrics/registry.h"

namespace httplib {
class Server;
}

namespace memserve {
namespace metrics {

// What /readyz reports.
enum class Readiness { kLoading, kReady, kDraining };

struct MetricsServerOptions {
  // HOST:PORT ([::1]:PORT for IPv6); port 0 picks a free port (port()).
  std::string listen;
  const Registry* registry = nullptr;    // REQUIRES: outlives the server
  std::function<Readiness()> readiness;  // called per /readyz request, any thread
};

class MetricsServer {
 public:
  // Binds `listen` and serves from threads of its own until destroyed.
  // Errors name --metrics_listen: InvalidArgument for a malformed address or
  // a port outside 0..65535, Unavailable when the address cannot be bound
  // (in use, not an address of this machine).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const MetricsServerOptions& options);
  // Stops serving (open connections are closed) and joins the threads.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

// HOST and PORT of a HOST:PORT address (brackets of an IPv6 host removed);
// InvalidArgument naming `flag` when malformed or the port is not in
// 0..65535.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                          const std::string& flag);

}  // namespace metrics
}  // namespace memserve

#endif  // MEMSERVE_SERVER_METRICS_METRICS_SERVER_H_
