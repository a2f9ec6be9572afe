// MemServeService: the memserve.v1.MemServe gRPC service (callback API)
// over an Engine. Thin: each call converts its request (request_convert.h),
// submits it to the engine and relays the engine's events to the client;
// cancellation and deadlines go back to the engine. docs/api.md is the
// contract.
#ifndef MEMSERVE_SERVER_SERVICE_H_
#define MEMSERVE_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "memserve/v1/memserve.grpc.pb.h"
#include "server/request_convert.h"

namespace memserve {

inline constexpr char kServiceName[] = "memserve.v1.MemServe";
inline constexpr char kVersion[] = "memserve 0.1.0";

struct ServiceOptions {
  ConvertOptions convert;         // chat_template comes from the model's config
  int64_t max_request_bytes = 0;  // the server's receive limit, for ModelInfo.limits
  // Called once per generation call when it ends (where its log line is
  // written), with the method and final status code: the server's metrics.
  // Any thread; must not block. May be empty.
  std::function<void(absl::string_view method, absl::StatusCode code)> on_request_end;
};

// Thread-safe: gRPC calls the methods from its threads.
class MemServeService final : public v1::MemServe::CallbackService {
 public:
  explicit MemServeService(const ServiceOptions& options);

  // The loaded engine; until then generation calls and GetModelInfo answer
  // UNAVAILABLE ("the model is loading"). Call once. The engine must outlive
  // every call (shut the server down before destroying it).
  void SetEngine(Engine* engine);
  // From now on GetServerStatus says DRAINING (the engine refuses new work).
  void SetDraining();
  // Generation calls (Generate, Complete, Chat, ChatComplete) not yet done:
  // after a drain, the server waits for this to reach 0 (every client got its
  // final message) before it shuts down.
  int open_calls() const { return open_calls_.load(); }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::CompleteResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* ChatComplete(grpc::CallbackServerContext* context,
                                         const v1::ChatRequest* request,
                                         v1::CompleteResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServerStatus(grpc::CallbackServerContext* context,
                                            const v1::GetServerStatusRequest* request,
                                            v1::ServerStatus* response) override;

 private:
  // The engine request for a call, with its id and deadline set; or the
  // error to answer with.
  template <typename Request>
  absl::StatusOr<EngineRequest> Prepare(grpc::CallbackServerContext* context,
                                        const Request& request, std::string* request_id);
  grpc::ServerWriteReactor<v1::GenerateResponse>* Stream(grpc::CallbackServerContext* context,
                                                         const char* method,
                                                         absl::StatusOr<EngineRequest> request,
                                                         const std::string& request_id);
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const char* method,
                                  absl::StatusOr<EngineRequest> request,
                                  const std::string& request_id, v1::CompleteResponse* response);

  const ServiceOptions options_;
  const absl::Time started_ = absl::Now();
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_request_number_{1};
  std::atomic<int> open_calls_{0};
};

}  // namespace memserve

#endif  // MEMSERVE_SERVER_SERVICE_H_
