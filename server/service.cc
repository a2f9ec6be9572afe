#include "server/service.h"

#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/generate.h"
#include "engine/request/validate.h"
#include "server/api/errors.h"

namespace memserve {
namespace {

using v1::CompleteResponse;
using v1::GenerateResponse;

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillTimings(absl::Time received, const RequestTimings& t, v1::Timings* out) {
  out->set_queue_ms(ElapsedMs(received, t.admitted));
  out->set_time_to_first_token_ms(ElapsedMs(received, t.first_token));
  out->set_total_ms(ElapsedMs(received, t.done));
}

void FillTop(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& top,
             google::protobuf::RepeatedPtrField<v1::TopLogprob>* out) {
  for (const TokenLogprob& t : top) {
    v1::TopLogprob* p = out->Add();
    p->set_id(t.id);
    p->set_logprob(t.logprob);
    p->set_token_bytes(tokenizer.TokenBytes(t.id));
  }
}

// Forwards the engine's events for one request to its call (StreamCall or
// UnaryCall), which outlives the engine request (see StreamCall).
template <typename Call>
class CallObserver : public RequestObserver {
 public:
  explicit CallObserver(Call* call) : call_(call) {}
  void OnToken(const TokenEvent& event) override { call_->OnToken(event); }
  void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) override {
    call_->OnEngineDone(std::move(result), timings);
  }

 private:
  Call* const call_;
};

// When more messages wait behind this one, let gRPC coalesce them into
// fewer frames and syscalls; the last queued message is sent unbuffered, so
// nothing lingers.
grpc::WriteOptions WriteOptionsFor(bool more_queued) {
  grpc::WriteOptions options;
  if (more_queued) options.set_buffer_hint();
  return options;
}

// A server-streaming generation call. gRPC owns it (deleted in OnDone). The
// engine reports to it through Observer; the reactor stays alive until it
// calls Finish, which happens only after the engine's OnDone (or without
// ever submitting), so the observer's raw pointer is always valid.
class StreamCall : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  StreamCall(ApiCore* core, const char* method, std::string request_id,
             ClientStreamLimiter::Slot client_slot)
      : open_(core),
        engine_(core->engine()),
        method_(method),
        request_id_(std::move(request_id)),
        client_slot_(std::move(client_slot)) {}

  void Start(absl::StatusOr<EngineRequest> request);

  // Engine thread.
  void OnToken(const TokenEvent& event);
  void OnEngineDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  // Queues `message` (or just the end when null); writes or finishes if idle.
  void Enqueue(std::optional<GenerateResponse> message, std::optional<grpc::Status> end);
  void FinishNow(const absl::Status& status);

  const OpenCall open_;
  Engine* const engine_;
  const char* const method_;
  const std::string request_id_;
  // Released when the engine is done with the call (or it never reached
  // the engine), before the client can see the end.
  ClientStreamLimiter::Slot client_slot_;
  const absl::Time received_ = absl::Now();

  std::mutex mu_;
  std::deque<GenerateResponse> queue_;  // front is being written while writing_
  bool writing_ = false;
  bool broken_ = false;  // a write failed: the client is gone
  std::optional<grpc::Status> end_;
  EngineTicket ticket_;
};

void StreamCall::FinishNow(const absl::Status& status) {
  client_slot_ = ClientStreamLimiter::Slot();
  open_.core()->RecordRequestEnd(request_id_, method_, status, nullptr, received_, nullptr);
  Finish(ToGrpcStatus(status));
}

void StreamCall::Start(absl::StatusOr<EngineRequest> request) {
  if (!request.ok()) return FinishNow(request.status());
  absl::Status submitted = ticket_.Submit(engine_, *std::move(request),
                                          std::make_shared<CallObserver<StreamCall>>(this));
  if (!submitted.ok()) FinishNow(submitted);
}

void StreamCall::OnCancel() { ticket_.Cancel(engine_); }

void StreamCall::OnToken(const TokenEvent& event) {
  GenerateResponse message;
  v1::Token* token = message.mutable_token();
  token->set_id(event.id);
  token->set_text(event.text);
  token->set_logprob(event.logprob);
  FillTop(engine_->tokenizer(), event.top, token->mutable_top_logprobs());
  Enqueue(std::move(message), std::nullopt);
}

void StreamCall::OnEngineDone(absl::StatusOr<GenerateResult> result,
                              const RequestTimings& timings) {
  client_slot_ = ClientStreamLimiter::Slot();
  open_.core()->RecordRequestEnd(request_id_, method_, result.status(),
                                 result.ok() ? &*result : nullptr, received_, &timings);
  if (!result.ok()) return Enqueue(std::nullopt, ToGrpcStatus(result.status()));
  GenerateResponse message;
  v1::Final* final = message.mutable_final();
  final->set_finish_reason(ToProto(result->finish_reason));
  final->set_trailing_text(result->trailing_text);
  final->mutable_usage()->set_prompt_tokens(result->prompt_tokens);
  final->mutable_usage()->set_completion_tokens(result->completion_tokens);
  FillTimings(received_, timings, final->mutable_timings());
  final->set_request_id(request_id_);
  if (result->finish_reason == FinishReason::kStop) {
    if (result->stop_token_id >= 0) {
      final->set_stop_token_id(result->stop_token_id);
    } else {
      final->set_stop_string(result->stop_string);
    }
  }
  Enqueue(std::move(message), grpc::Status::OK);
}

void StreamCall::Enqueue(std::optional<GenerateResponse> message, std::optional<grpc::Status> end) {
  const GenerateResponse* write = nullptr;
  bool buffer = false;
  std::optional<grpc::Status> finish;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (message.has_value() && !broken_) queue_.push_back(*std::move(message));
    if (end.has_value()) end_ = std::move(end);
    if (writing_) return;  // OnWriteDone continues
    if (!queue_.empty()) {
      writing_ = true;
      write = &queue_.front();
      buffer = queue_.size() > 1;
    } else if (end_.has_value()) {
      finish = end_;
    }
  }
  // Outside the lock: gRPC may run reactions inline. After Finish this
  // object may be deleted at any moment.
  if (write != nullptr) {
    StartWrite(write, WriteOptionsFor(buffer));
  } else if (finish.has_value()) {
    Finish(*finish);
  }
}

void StreamCall::OnWriteDone(bool ok) {
  const GenerateResponse* write = nullptr;
  bool buffer = false;
  std::optional<grpc::Status> finish;
  bool cancel_engine = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
    if (!ok && !broken_) {
      broken_ = true;
      queue_.clear();
      cancel_engine = true;
    }
    if (!queue_.empty()) {
      write = &queue_.front();
      buffer = queue_.size() > 1;
    } else {
      writing_ = false;
      if (end_.has_value()) finish = end_;
    }
  }
  if (cancel_engine) ticket_.Cancel(engine_);
  if (write != nullptr) {
    StartWrite(write, WriteOptionsFor(buffer));
  } else if (finish.has_value()) {
    Finish(*finish);
  }
}

// A unary generation call: the engine's events accumulate in the response,
// which only the engine thread touches until Finish.
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(ApiCore* core, const char* method, std::string request_id, CompleteResponse* response,
            ClientStreamLimiter::Slot client_slot)
      : open_(core),
        engine_(core->engine()),
        method_(method),
        request_id_(std::move(request_id)),
        response_(response),
        client_slot_(std::move(client_slot)) {}

  void Start(absl::StatusOr<EngineRequest> request) {
    if (!request.ok()) return FinishNow(request.status());
    absl::Status submitted = ticket_.Submit(engine_, *std::move(request),
                                            std::make_shared<CallObserver<UnaryCall>>(this));
    if (!submitted.ok()) FinishNow(submitted);
  }

  void OnCancel() override { ticket_.Cancel(engine_); }
  void OnDone() override { delete this; }

 private:
  friend class CallObserver<UnaryCall>;

  void FinishNow(const absl::Status& status) {
    client_slot_ = ClientStreamLimiter::Slot();
    open_.core()->RecordRequestEnd(request_id_, method_, status, nullptr, received_, nullptr);
    Finish(ToGrpcStatus(status));
  }

  void OnToken(const TokenEvent& event) {
    response_->add_token_ids(event.id);
    response_->add_token_logprobs(event.logprob);
    if (!event.top.empty()) {
      FillTop(engine_->tokenizer(), event.top, response_->add_top_logprobs()->mutable_top());
    }
  }

  void OnEngineDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) {
    client_slot_ = ClientStreamLimiter::Slot();
    open_.core()->RecordRequestEnd(request_id_, method_, result.status(),
                                   result.ok() ? &*result : nullptr, received_, &timings);
    if (!result.ok()) {
      response_->Clear();  // an error returns no partial output
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    response_->set_text(result->text);
    response_->set_finish_reason(ToProto(result->finish_reason));
    response_->mutable_usage()->set_prompt_tokens(result->prompt_tokens);
    response_->mutable_usage()->set_completion_tokens(result->completion_tokens);
    FillTimings(received_, timings, response_->mutable_timings());
    response_->set_request_id(request_id_);
    if (result->finish_reason == FinishReason::kStop) {
      if (result->stop_token_id >= 0) {
        response_->set_stop_token_id(result->stop_token_id);
      } else {
        response_->set_stop_string(result->stop_string);
      }
    }
    Finish(grpc::Status::OK);
  }

  const OpenCall open_;
  Engine* const engine_;
  const char* const method_;
  const std::string request_id_;
  CompleteResponse* const response_;
  ClientStreamLimiter::Slot client_slot_;  // released as in StreamCall
  const absl::Time received_ = absl::Now();
  EngineTicket ticket_;
};

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

MemServeService::MemServeService(ApiCore* core) : core_(core) {}

namespace {

std::optional<absl::string_view> AuthorizationOf(grpc::CallbackServerContext* context) {
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

// The peer's IP address as the HTTP API sees it, without the port
// ("ipv4:10.0.0.7:51234" -> "10.0.0.7", "ipv6:[::1]:5" or
// "ipv6:%5B::1%5D:5" -> "::1"); another kind of peer (a unix socket) as it
// is.
std::string PeerHost(const std::string& peer) {
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:")) return peer;
  std::string host = peer.substr(5);
  const size_t colon = host.rfind(':');
  if (colon != std::string::npos) host.resize(colon);
  absl::StrReplaceAll({{"%5B", ""}, {"%5D", ""}, {"[", ""}, {"]", ""}}, &host);
  return host;
}

}  // namespace

absl::Status MemServeService::Authorize(grpc::CallbackServerContext* context, const char* method) {
  return core_->Authorize(method, AuthorizationOf(context));
}

template <typename Request>
absl::StatusOr<EngineRequest> MemServeService::Prepare(grpc::CallbackServerContext* context,
                                                       const char* method, const Request& request,
                                                       std::string* request_id,
                                                       ClientStreamLimiter::Slot* client_slot) {
  // An invalid id is reported by Prepare; the call is logged under a server one.
  *request_id = core_->RequestId(request.request_id());
  if (absl::Status s = Authorize(context, method); !s.ok()) return s;
  absl::Time deadline = absl::InfiniteFuture();
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = absl::FromChrono(context->deadline());
  }
  absl::StatusOr<EngineRequest> prepared = core_->Prepare(request, *request_id, deadline);
  if (!prepared.ok()) return prepared;
  absl::StatusOr<ClientStreamLimiter::Slot> slot =
      core_->AdmitClient(AuthorizationOf(context), PeerHost(context->peer()));
  if (!slot.ok()) return slot.status();
  *client_slot = *std::move(slot);
  return prepared;
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Stream(
    grpc::CallbackServerContext* context, const char* method, absl::StatusOr<EngineRequest> request,
    const std::string& request_id, ClientStreamLimiter::Slot client_slot) {
  (void)context;
  auto* call = new StreamCall(core_, method, request_id, std::move(client_slot));
  call->Start(std::move(request));
  return call;
}

grpc::ServerUnaryReactor* MemServeService::Unary(grpc::CallbackServerContext* context,
                                                 const char* method,
                                                 absl::StatusOr<EngineRequest> request,
                                                 const std::string& request_id,
                                                 CompleteResponse* response,
                                                 ClientStreamLimiter::Slot client_slot) {
  (void)context;
  auto* call = new UnaryCall(core_, method, request_id, response, std::move(client_slot));
  call->Start(std::move(request));
  return call;
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string id;
  ClientStreamLimiter::Slot slot;
  absl::StatusOr<EngineRequest> r = Prepare(context, "Generate", *request, &id, &slot);
  return Stream(context, "Generate", std::move(r), id, std::move(slot));
}

grpc::ServerUnaryReactor* MemServeService::Complete(grpc::CallbackServerContext* context,
                                                    const v1::GenerateRequest* request,
                                                    CompleteResponse* response) {
  std::string id;
  ClientStreamLimiter::Slot slot;
  absl::StatusOr<EngineRequest> r = Prepare(context, "Complete", *request, &id, &slot);
  return Unary(context, "Complete", std::move(r), id, response, std::move(slot));
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Chat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  std::string id;
  ClientStreamLimiter::Slot slot;
  absl::StatusOr<EngineRequest> r = Prepare(context, "Chat", *request, &id, &slot);
  return Stream(context, "Chat", std::move(r), id, std::move(slot));
}

grpc::ServerUnaryReactor* MemServeService::ChatComplete(grpc::CallbackServerContext* context,
                                                        const v1::ChatRequest* request,
                                                        CompleteResponse* response) {
  std::string id;
  ClientStreamLimiter::Slot slot;
  absl::StatusOr<EngineRequest> r = Prepare(context, "ChatComplete", *request, &id, &slot);
  return Unary(context, "ChatComplete", std::move(r), id, response, std::move(slot));
}

grpc::ServerUnaryReactor* MemServeService::Tokenize(grpc::CallbackServerContext* context,
                                                    const v1::TokenizeRequest* request,
                                                    v1::TokenizeResponse* response) {
  if (absl::Status s = Authorize(context, "Tokenize"); !s.ok()) return Answer(context, s);
  Engine* engine = core_->engine();
  if (engine == nullptr) return Answer(context, LoadingError());
  if (absl::Status s = ValidateTextBytes("text", request->text()); !s.ok()) {
    return Answer(context, s);
  }
  const bool add_bos = request->has_add_bos() ? request->add_bos() : true;
  absl::StatusOr<std::vector<int>> ids = engine->tokenizer().Encode(request->text(), add_bos);
  if (!ids.ok()) return Answer(context, ids.status());
  for (int id : *ids) {
    response->add_token_ids(id);
    if (request->return_token_bytes())
      response->add_token_bytes(engine->tokenizer().TokenBytes(id));
  }
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemServeService::Detokenize(grpc::CallbackServerContext* context,
                                                      const v1::DetokenizeRequest* request,
                                                      v1::DetokenizeResponse* response) {
  if (absl::Status s = Authorize(context, "Detokenize"); !s.ok()) return Answer(context, s);
  Engine* engine = core_->engine();
  if (engine == nullptr) return Answer(context, LoadingError());
  const auto& ids = request->token_ids();
  if (absl::Status s = ValidateTokenIds(
          "token_ids", absl::MakeConstSpan(ids.data(), static_cast<size_t>(ids.size())),
          engine->Info().config.vocab_size);
      !s.ok()) {
    return Answer(context, s);
  }
  response->set_text(
      engine->tokenizer().Decode(absl::MakeConstSpan(ids.data(), static_cast<size_t>(ids.size()))));
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemServeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                        const v1::GetModelInfoRequest* request,
                                                        v1::ModelInfo* info) {
  if (absl::Status s = Authorize(context, "GetModelInfo"); !s.ok()) return Answer(context, s);
  (void)request;
  Engine* engine = core_->engine();
  if (engine == nullptr) return Answer(context, LoadingError());
  const EngineInfo& e = engine->Info();
  const ModelConfig& c = e.config;
  info->set_model_name(e.model_name);
  info->set_architecture("llama");
  info->set_dim(c.dim);
  info->set_n_layers(c.n_layers);
  info->set_n_heads(c.n_heads);
  info->set_n_kv_heads(c.n_kv_heads);
  info->set_head_dim(c.head_dim);
  info->set_ffn_hidden_dim(c.ffn_hidden_dim);
  info->set_vocab_size(c.vocab_size);
  info->set_max_seqlen(e.context_length);
  info->set_sliding_window(c.sliding_window);
  info->set_rope_theta(c.rope_theta);
  v1::MemoryLayerConfig* m = info->mutable_memory();
  for (int layer : c.memory.layers) m->add_layers(layer);
  if (!c.memory.layers.empty()) {
    m->set_heads(c.memory.heads);
    m->set_knn(c.memory.knn);
    m->set_n_keys(c.memory.n_keys);
    m->set_rows(c.memory.rows());
    m->set_k_dim(c.memory.k_dim);
    m->set_v_dim(c.memory.v_dim);
    m->set_shared_values(c.memory.share_values);
    m->set_gated(c.memory.gated);
    m->set_swilu_projection(c.memory.swilu_projection);
    m->set_value_proj(c.memory.value_proj);
    m->set_placement(e.value_table_placement);
    m->set_value_table_bytes(e.value_table_bytes);
    m->set_memory_placement(e.memory_placement);
    m->set_shards(e.memory_shards);
    for (const DeviceBytes& d : e.memory_device_bytes) {
      v1::MemoryDeviceBytes* out = m->add_device_bytes();
      out->set_device(d.device);
      out->set_bytes(d.bytes);
    }
    m->set_plan(e.memory_plan);
  }
  v1::TokenizerInfo* t = info->mutable_tokenizer();
  t->set_kind(e.tokenizer);
  t->set_vocab_size(c.vocab_size);
  t->set_bos_id(e.bos_id);
  t->set_eos_id(e.eos_id);
  info->set_chat_template(c.chat_template);
  info->set_backend(e.device);
  v1::Limits* l = info->mutable_limits();
  const SchedulerOptions& s = engine->scheduler_options();
  l->set_max_batch_size(s.max_batch_size);
  l->set_max_num_tokens(s.max_num_tokens);
  l->set_max_queue(s.max_queue);
  l->set_max_prompt_bytes(static_cast<int64_t>(kMaxPromptBytes));
  l->set_max_stop_strings(kMaxStopStrings);
  l->set_max_stop_string_bytes(kMaxStopStringBytes);
  l->set_max_stop_token_ids(kMaxStopTokenIds);
  l->set_max_logprobs(kMaxLogprobs);
  l->set_default_max_tokens(core_->options().convert.default_max_tokens);
  l->set_max_request_bytes(core_->options().max_request_bytes);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemServeService::GetServerStatus(
    grpc::CallbackServerContext* context, const v1::GetServerStatusRequest* request,
    v1::ServerStatus* status) {
  if (absl::Status s = Authorize(context, "GetServerStatus"); !s.ok()) return Answer(context, s);
  (void)request;
  *status = core_->Status();
  return Answer(context, absl::OkStatus());
}

}  // namespace memserve
