#include "server/metrics/metrics_server.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace memserve {
namespace metrics {

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& address,
                                                          const std::string& flag) {
  const absl::Status bad = absl::InvalidArgumentError(
      absl::StrCat(flag,
                   ": expected HOST:PORT with a port in 0..65535 (e.g. 127.0.0.1:9090, "
                   "[::1]:9090, 0.0.0.0:0), got '",
                   address, "'"));
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad;
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad;
    host = host.substr(1, host.size() - 2);
  } else if (host.find_first_of("[]:") != std::string::npos) {
    return bad;
  }
  for (const char c : host) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return bad;
  }
  if (port.empty() || port.size() > 5) return bad;
  for (const char c : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return bad;
  }
  int value = 0;
  if (!absl::SimpleAtoi(port, &value) || value > 65535) return bad;
  return std::make_pair(host, value);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const MetricsServerOptions& options) {
  const std::string flag = "--metrics_listen";
  absl::StatusOr<std::pair<std::string, int>> address = ParseHostPort(options.listen, flag);
  if (!address.ok()) return address.status();
  const auto& [host, port] = *address;

  std::unique_ptr<MetricsServer> out(new MetricsServer());
  out->server_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *out->server_;
  const Registry* registry = options.registry;
  http.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Expose(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain; charset=utf-8");
  });
  std::function<Readiness()> readiness = options.readiness;
  http.Get("/readyz", [readiness](const httplib::Request&, httplib::Response& res) {
    const Readiness r = readiness ? readiness() : Readiness::kReady;
    switch (r) {
      case Readiness::kReady:
        res.set_content("ready\n", "text/plain; charset=utf-8");
        return;
      case Readiness::kLoading:
        res.status = 503;
        res.set_content("loading\n", "text/plain; charset=utf-8");
        return;
      case Readiness::kDraining:
        res.status = 503;
        res.set_content("draining\n", "text/plain; charset=utf-8");
        return;
    }
  });

  // httplib's default sets SO_REUSEPORT, with which a second server binds the
  // same port and the kernel splits the scrapes between them; a port in use
  // must fail instead (as the gRPC port does). SO_REUSEADDR alone still
  // allows a restart while old connections linger in TIME_WAIT.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  int bound = port;
  if (port == 0) {
    bound = http.bind_to_any_port(host);
  } else if (!http.bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (", flag,
                     "): the address is in use or not an address of this machine"));
  }
  out->port_ = bound;
  httplib::Server* server = out->server_.get();
  std::atomic<bool>* returned = &out->listen_returned_;
  out->thread_ = std::thread([server, returned] {
    server->listen_after_bind();
    returned->store(true);
  });
  return out;
}

MetricsServer::~MetricsServer() {
  if (!thread_.joinable()) return;
  // stop() only stops a server whose accept loop has started.
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  thread_.join();
}

}  // namespace metrics
}  // namespace memserve
