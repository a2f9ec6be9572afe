#include "server/service.h"

#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/generate.h"
#include "engine/request/validate.h"
#include "server/grpc_status.h"
#include "server/logging.h"

namespace memserve {
namespace {

using v1::CompleteResponse;
using v1::GenerateResponse;

const absl::Status& LoadingError() {
  static const absl::Status* const kLoading =
      new absl::Status(absl::UnavailableError("the model is loading; retry shortly"));
  return *kLoading;
}

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

double Ms(absl::Time from, absl::Time to) {
  if (from == absl::InfinitePast() || to == absl::InfinitePast()) return 0.0;
  return absl::ToDoubleMilliseconds(to - from);
}

void FillTimings(absl::Time received, const RequestTimings& t, v1::Timings* out) {
  out->set_queue_ms(Ms(received, t.admitted));
  out->set_time_to_first_token_ms(Ms(received, t.first_token));
  out->set_total_ms(Ms(received, t.done));
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

using RequestEndHook = std::function<void(absl::string_view, absl::StatusCode)>;

// The end of one generation call: its log line (id, method, status, tokens,
// timings; server/logging.h) and the server's request metrics.
void RecordRequestEnd(const RequestEndHook& hook, const std::string& id, const char* method,
                      const absl::Status& status, const GenerateResult* result, absl::Time received,
                      const RequestTimings* t) {
  // A server fault is an error; a request the client got wrong, cancelled or
  // let expire is business as usual.
  const absl::StatusCode code = status.code();
  const bool fault = code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
                     code == absl::StatusCode::kDataLoss;
  LogLine line(fault ? LogLevel::kError : LogLevel::kInfo, "request");
  line.Field("id", id)
      .Field("method", method)
      .Field("status", absl::StatusCodeToString(status.code()));
  if (result != nullptr) {
    line.Field("finish", FinishReasonName(result->finish_reason))
        .Field("prompt_tokens", result->prompt_tokens)
        .Field("completion_tokens", result->completion_tokens);
  }
  if (t != nullptr) {
    line.Field("queue_ms", Ms(received, t->admitted))
        .Field("ttft_ms", Ms(received, t->first_token))
        .Field("total_ms", Ms(received, t->done));
  }
  if (!status.ok()) line.Field("error", status.message());
  line.Write();
  if (hook) hook(method, status.code());
}

// The engine side of one call: submits the request and cancels it, also
// when the client cancels before Submit has returned the engine id.
class EngineTicket {
 public:
  absl::Status Submit(Engine* engine, EngineRequest request,
                      std::shared_ptr<RequestObserver> observer) {
    absl::StatusOr<uint64_t> id = engine->Submit(std::move(request), std::move(observer));
    if (!id.ok()) return id.status();
    bool cancel = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id_ = *id;
      cancel = cancelled_;
    }
    if (cancel) engine->Cancel(*id);
    return absl::OkStatus();
  }

  void Cancel(Engine* engine) {
    std::optional<uint64_t> id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      id = id_;
    }
    if (id.has_value()) engine->Cancel(*id);
  }

 private:
  std::mutex mu_;
  bool cancelled_ = false;
  std::optional<uint64_t> id_;
};

// Counts a call as open from construction to destruction (gRPC deletes the
// reactor in OnDone, after the client got the status).
class OpenCall {
 public:
  explicit OpenCall(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
  ~OpenCall() { count_->fetch_sub(1); }
  OpenCall(const OpenCall&) = delete;
  OpenCall& operator=(const OpenCall&) = delete;

 private:
  std::atomic<int>* const count_;
};

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
  StreamCall(Engine* engine, const char* method, std::string request_id,
             std::atomic<int>* open_calls, const RequestEndHook& on_end)
      : open_(open_calls),
        engine_(engine),
        method_(method),
        request_id_(std::move(request_id)),
        on_end_(on_end) {}

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
  const RequestEndHook& on_end_;  // the service's, which outlives every call
  const absl::Time received_ = absl::Now();

  std::mutex mu_;
  std::deque<GenerateResponse> queue_;  // front is being written while writing_
  bool writing_ = false;
  bool broken_ = false;  // a write failed: the client is gone
  std::optional<grpc::Status> end_;
  EngineTicket ticket_;
};

void StreamCall::FinishNow(const absl::Status& status) {
  RecordRequestEnd(on_end_, request_id_, method_, status, nullptr, received_, nullptr);
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
  RecordRequestEnd(on_end_, request_id_, method_, result.status(), result.ok() ? &*result : nullptr,
                   received_, &timings);
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
  UnaryCall(Engine* engine, const char* method, std::string request_id, CompleteResponse* response,
            std::atomic<int>* open_calls, const RequestEndHook& on_end)
      : open_(open_calls),
        engine_(engine),
        method_(method),
        request_id_(std::move(request_id)),
        on_end_(on_end),
        response_(response) {}

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
    RecordRequestEnd(on_end_, request_id_, method_, status, nullptr, received_, nullptr);
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
    RecordRequestEnd(on_end_, request_id_, method_, result.status(),
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
  const RequestEndHook& on_end_;  // the service's, which outlives every call
  CompleteResponse* const response_;
  const absl::Time received_ = absl::Now();
  EngineTicket ticket_;
};

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

MemServeService::MemServeService(const ServiceOptions& options) : options_(options) {}

void MemServeService::SetEngine(Engine* engine) { engine_.store(engine); }
void MemServeService::SetDraining() { draining_.store(true); }

template <typename Request>
absl::StatusOr<EngineRequest> MemServeService::Prepare(grpc::CallbackServerContext* context,
                                                       const Request& request,
                                                       std::string* request_id) {
  *request_id = request.request_id();
  if (request_id->empty() || !ValidateRequestId(*request_id).ok()) {
    // An invalid id is reported by ToEngineRequest; log under a server one.
    *request_id = absl::StrCat("req-", next_request_number_.fetch_add(1));
  }
  Engine* engine = engine_.load();
  if (engine == nullptr) return LoadingError();
  ConvertOptions convert = options_.convert;
  convert.chat_template = engine->model().config().chat_template;
  absl::StatusOr<EngineRequest> out =
      ToEngineRequest(request, engine->tokenizer(), engine->model().config(), convert);
  if (!out.ok()) return out.status();
  out->id = *request_id;
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    out->deadline = absl::FromChrono(deadline);
  }
  return out;
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Stream(
    grpc::CallbackServerContext* context, const char* method, absl::StatusOr<EngineRequest> request,
    const std::string& request_id) {
  (void)context;
  auto* call =
      new StreamCall(engine_.load(), method, request_id, &open_calls_, options_.on_request_end);
  call->Start(std::move(request));
  return call;
}

grpc::ServerUnaryReactor* MemServeService::Unary(grpc::CallbackServerContext* context,
                                                 const char* method,
                                                 absl::StatusOr<EngineRequest> request,
                                                 const std::string& request_id,
                                                 CompleteResponse* response) {
  (void)context;
  auto* call = new UnaryCall(engine_.load(), method, request_id, response, &open_calls_,
                             options_.on_request_end);
  call->Start(std::move(request));
  return call;
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  std::string id;
  absl::StatusOr<EngineRequest> r = Prepare(context, *request, &id);
  return Stream(context, "Generate", std::move(r), id);
}

grpc::ServerUnaryReactor* MemServeService::Complete(grpc::CallbackServerContext* context,
                                                    const v1::GenerateRequest* request,
                                                    CompleteResponse* response) {
  std::string id;
  absl::StatusOr<EngineRequest> r = Prepare(context, *request, &id);
  return Unary(context, "Complete", std::move(r), id, response);
}

grpc::ServerWriteReactor<GenerateResponse>* MemServeService::Chat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  std::string id;
  absl::StatusOr<EngineRequest> r = Prepare(context, *request, &id);
  return Stream(context, "Chat", std::move(r), id);
}

grpc::ServerUnaryReactor* MemServeService::ChatComplete(grpc::CallbackServerContext* context,
                                                        const v1::ChatRequest* request,
                                                        CompleteResponse* response) {
  std::string id;
  absl::StatusOr<EngineRequest> r = Prepare(context, *request, &id);
  return Unary(context, "ChatComplete", std::move(r), id, response);
}

grpc::ServerUnaryReactor* MemServeService::Tokenize(grpc::CallbackServerContext* context,
                                                    const v1::TokenizeRequest* request,
                                                    v1::TokenizeResponse* response) {
  Engine* engine = engine_.load();
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
  Engine* engine = engine_.load();
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
  (void)request;
  Engine* engine = engine_.load();
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
  l->set_default_max_tokens(options_.convert.default_max_tokens);
  l->set_max_request_bytes(options_.max_request_bytes);
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* MemServeService::GetServerStatus(
    grpc::CallbackServerContext* context, const v1::GetServerStatusRequest* request,
    v1::ServerStatus* status) {
  (void)request;
  Engine* engine = engine_.load();
  status->set_version(kVersion);
  status->set_uptime_s(absl::ToDoubleSeconds(absl::Now() - started_));
  if (engine == nullptr) {
    status->set_state(draining_.load() ? v1::SERVING_STATE_DRAINING : v1::SERVING_STATE_LOADING);
    return Answer(context, absl::OkStatus());
  }
  const EngineStats s = engine->Stats();
  status->set_state(draining_.load() || s.draining ? v1::SERVING_STATE_DRAINING
                                                   : v1::SERVING_STATE_SERVING);
  status->set_running(s.running);
  status->set_waiting(s.waiting);
  status->set_kv_blocks_used(s.kv_blocks_used);
  status->set_kv_blocks_total(s.kv_blocks_total);
  status->set_kv_block_tokens(s.kv_block_tokens);
  status->set_kv_usage(
      s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  status->set_requests_served(s.requests_served);
  status->set_preemptions(s.preemptions);
  return Answer(context, absl::OkStatus());
}

}  // namespace memserve
