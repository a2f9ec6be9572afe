// MemServeService: the memserve.v1.MemServe gRPC service (callback API)
// over an Engine. Thin: each call converts its request (ApiCore::Prepare,
// shared with the HTTP API), submits it to the engine and relays the
// engine's events to the client; cancellation and deadlines go back to the
// engine. docs/api.md is the contract.
#ifndef MEMSERVE_SERVER_SERVICE_H_
#define MEMSERVE_SERVER_SERVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "memserve/v1/memserve.grpc.pb.h"
#include "server/api/api_core.h"

namespace memserve {

inline constexpr char kServiceName[] = "memserve.v1.MemServe";

// Thread-safe: gRPC calls the methods from its threads. The engine, the
// drain state and the open-call count live in `core` (shared with the HTTP
// API): until core->SetEngine, generation calls and GetModelInfo answer
// UNAVAILABLE ("the model is loading"); after core->SetDraining,
// GetServerStatus says DRAINING.
class MemServeService final : public v1::MemServe::CallbackService {
 public:
  // REQUIRES: `core` outlives the service.
  explicit MemServeService(ApiCore* core);

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
  // The API-key check (ApiCore::Authorize) of a call's `authorization`
  // metadata: every method calls it first.
  absl::Status Authorize(grpc::CallbackServerContext* context, const char* method);
  // The engine request for a call (after Authorize), with its id and
  // deadline set, and its client's slot (ApiCore::AdmitClient) in
  // `client_slot`; or the error to answer with.
  template <typename Request>
  absl::StatusOr<EngineRequest> Prepare(grpc::CallbackServerContext* context, const char* method,
                                        const Request& request, std::string* request_id,
                                        ClientStreamLimiter::Slot* client_slot);
  grpc::ServerWriteReactor<v1::GenerateResponse>* Stream(grpc::CallbackServerContext* context,
                                                         const char* method,
                                                         absl::StatusOr<EngineRequest> request,
                                                         const std::string& request_id,
                                                         ClientStreamLimiter::Slot client_slot);
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const char* method,
                                  absl::StatusOr<EngineRequest> request,
                                  const std::string& request_id, v1::CompleteResponse* response,
                                  ClientStreamLimiter::Slot client_slot);

  ApiCore* const core_;
};

}  // namespace memserve

#endif  // MEMSERVE_SERVER_SERVICE_H_
