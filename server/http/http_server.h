// HttpServer: the OpenAI-compatible HTTP API of `memserve serve` (docs/api.md,
// "HTTP API"), in the same process and over the same engine as the gRPC
// service, on cpp-httplib (Debian's libcpp-httplib):
//   POST /v1/completions, POST /v1/chat/completions   (stream: server-sent events)
//   GET  /v1/models, /v1/models/{id}, /health, and / (the chat page)
// Requests go through ApiCore (server/api/): the same conversion and
// validation, the same bounded engine queue, the same drain, the same log
// line as gRPC. A request whose client disconnects is cancelled (its KV
// blocks freed); the header X-Request-Timeout-Ms sets a deadline.
#ifndef MEMSERVE_SERVER_HTTP_HTTP_SERVER_H_
#define MEMSERVE_SERVER_HTTP_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/api/api_core.h"

namespace memserve {

struct HttpServerOptions {
  std::string host;  // numeric or a name; "::" for every IPv6 (and IPv4) address
  int port = 0;      // 0 = the system picks one (port())
  // Connections served at once (each streaming request holds one thread);
  // more wait for a free thread.
  int threads = 64;
  // Largest request body, in bytes; beyond it 413 (ApiOptions.max_request_bytes).
  int64_t max_request_bytes = int64_t{8} << 20;
};

class HttpServer {
 public:
  // Binds the port (SO_REUSEADDR, not SO_REUSEPORT: a port another process
  // listens on is refused) but does not serve until Start. Errors:
  // Unavailable naming the address and the reason (e.g. "address already in
  // use"). REQUIRES: `core` outlives the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                            ApiCore* core);
  // Stop().
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Serves on a thread of its own until Stop.
  void Start();
  // Closes the listening socket, ends open streams and waits for every
  // handler to return. Call after the engine drained (so that no request is
  // left waiting for tokens). Idempotent.
  void Stop();

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl, int port);

  std::unique_ptr<Impl> impl_;
  const int port_;
  std::thread thread_;  // runs the accept loop between Start and Stop
};

}  // namespace memserve

#endif  // MEMSERVE_SERVER_HTTP_HTTP_SERVER_H_
