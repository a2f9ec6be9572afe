// ApiCore: what the transports of `memserve serve` (the gRPC service and the
// HTTP API) share, so that they cannot drift: the engine once it is loaded,
// the drain state, request ids, the count of open generation calls, request
// conversion with the server's options (request_convert.h), the engine side
// of a call (EngineTicket) and the one log line per request.
#ifndef MEMSERVE_SERVER_API_API_CORE_H_
#define MEMSERVE_SERVER_API_API_CORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/request/request.h"
#include "memserve/v1/memserve.pb.h"
#include "server/api/auth.h"
#include "server/api/client_limits.h"
#include "server/api/request_convert.h"

namespace memserve {

inline constexpr char kVersion[] = "memserve 0.1.0";

struct ApiOptions {
  ConvertOptions convert;         // chat_template comes from the model's config
  int64_t max_request_bytes = 0;  // the server's receive limit (both transports)
  // Called once per generation call of either transport when it ends (where
  // its log line is written), with the method (a gRPC method name or an HTTP
  // path) and the final status code: the server's request metrics. Any
  // thread; must not block. May be empty.
  std::function<void(absl::string_view method, absl::StatusCode code)> on_request_end;
  // --api_keys_file: when set, every call of either transport except health
  // must present one of these keys (ApiCore::Authorize). Null: no keys.
  // The initial keys: ApiCore::SetApiKeys replaces them.
  std::shared_ptr<const ApiKeys> api_keys;
  // --max_streams_per_client: open generation calls per client (AdmitClient);
  // 0: no limit.
  int max_streams_per_client = 0;
};

// Thread-safe.
class ApiCore {
 public:
  explicit ApiCore(const ApiOptions& options)
      : options_(options),
        client_streams_(options.max_streams_per_client),
        api_keys_(options.api_keys) {}

  // The loaded engine; until then generation and model calls answer
  // LoadingError(). Call once. The engine must outlive every call.
  void SetEngine(Engine* engine) { engine_.store(engine); }
  // Null while the model loads.
  Engine* engine() const { return engine_.load(); }
  // From now on the server reports DRAINING (the engine refuses new work).
  void SetDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  const ApiOptions& options() const { return options_; }
  absl::Time started() const { return started_; }

  // The id a call is logged and answered under: `client_id` when it is a
  // valid request id (engine/request/validate.h) and not empty, else a
  // server-assigned "req-N". (An invalid client id is reported by Prepare.)
  std::string RequestId(absl::string_view client_id);

  // The engine request for a call: converted and validated with the
  // server's options and the model's chat template, `names` naming the
  // fields in errors; its id and deadline (InfiniteFuture = none) set.
  // Errors: Unavailable while the model loads, InvalidArgument.
  absl::StatusOr<EngineRequest> Prepare(const v1::GenerateRequest& request, const std::string& id,
                                        absl::Time deadline, const ApiFieldNames& names = {});
  absl::StatusOr<EngineRequest> Prepare(const v1::ChatRequest& request, const std::string& id,
                                        absl::Time deadline, const ApiFieldNames& names = {});

  // The API-key check of both transports, before anything else of a call:
  // OK when the server has no keys or `authorization` (the header's value,
  // nullopt when absent) presents one; else Unauthenticated (ApiKeys::Error)
  // and one log line `unauthenticated method=... auth=missing|invalid` (never
  // the key).
  absl::Status Authorize(absl::string_view method,
                         std::optional<absl::string_view> authorization) const;

  // Counts a generation call against its client's --max_streams_per_client
  // until the returned slot is destroyed; ResourceExhausted naming the flag
  // when the client has that many open. The client is the presented API key
  // when the server has keys (call after Authorize), else `peer_host` (the
  // peer's address without its port).
  absl::StatusOr<ClientStreamLimiter::Slot> AdmitClient(
      std::optional<absl::string_view> authorization, absl::string_view peer_host);

  // Replaces the keys Authorize checks (--api_keys_file reloaded on SIGHUP):
  // calls authorized from now on use `keys`; calls already authorized go on.
  // REQUIRES: keys != nullptr.
  void SetApiKeys(std::shared_ptr<const ApiKeys> keys);

  // Generation calls of both transports not yet done: after a drain, the
  // server waits for this to reach 0 (every client got its last message)
  // before it shuts down. OpenCall counts one call.
  int open_calls() const { return open_calls_.load(); }

  // ServerStatus as GetServerStatus reports it (also while loading).
  v1::ServerStatus Status() const;

  // The end of one generation call: its log line (id, method, status,
  // tokens, timings; server/logging.h) and options().on_request_end.
  // `timings` is null when the request never reached the engine.
  void RecordRequestEnd(const std::string& id, absl::string_view method, const absl::Status& status,
                        const GenerateResult* result, absl::Time received,
                        const RequestTimings* timings) const;

 private:
  friend class OpenCall;
  template <typename Request>
  absl::StatusOr<EngineRequest> PrepareImpl(const Request& request, const std::string& id,
                                            absl::Time deadline, const ApiFieldNames& names);

  const ApiOptions options_;
  ClientStreamLimiter client_streams_;
  mutable absl::Mutex keys_mu_;
  std::shared_ptr<const ApiKeys> api_keys_ ABSL_GUARDED_BY(keys_mu_);
  const absl::Time started_ = absl::Now();
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_request_number_{1};
  std::atomic<int> open_calls_{0};
};

// Unavailable("the model is loading; retry shortly").
absl::Status LoadingError();

// Counts a call as open (ApiCore::open_calls) from construction to
// destruction.
class OpenCall {
 public:
  explicit OpenCall(ApiCore* core) : core_(core) { core_->open_calls_.fetch_add(1); }
  ~OpenCall() { core_->open_calls_.fetch_sub(1); }
  ApiCore* core() const { return core_; }
  OpenCall(const OpenCall&) = delete;
  OpenCall& operator=(const OpenCall&) = delete;

 private:
  ApiCore* const core_;
};

// The engine side of one call: submits the request and cancels it, also
// when the client went away before Submit returned the engine id.
// Thread-safe.
class EngineTicket {
 public:
  absl::Status Submit(Engine* engine, EngineRequest request,
                      std::shared_ptr<RequestObserver> observer);
  // Cancels the request (now, or as soon as Submit has it). Idempotent.
  void Cancel(Engine* engine);

 private:
  std::mutex mu_;
  bool cancelled_ = false;      // guarded by mu_
  std::optional<uint64_t> id_;  // guarded by mu_
};

// Milliseconds from `from` to `to`; 0 when either never happened
// (InfinitePast).
double ElapsedMs(absl::Time from, absl::Time to);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_API_API_CORE_H_
