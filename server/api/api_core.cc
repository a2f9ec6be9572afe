#include "server/api/api_core.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/request/validate.h"
#include "server/logging.h"

namespace memserve {

absl::Status LoadingError() {
  return absl::UnavailableError("the model is loading; retry shortly");
}

absl::Status ApiCore::Authorize(absl::string_view method,
                                std::optional<absl::string_view> authorization) const {
  std::shared_ptr<const ApiKeys> keys;
  {
    absl::MutexLock lock(&keys_mu_);
    keys = api_keys_;
  }
  if (keys == nullptr) return absl::OkStatus();
  const std::optional<ApiKeys::Failure> failure = keys->Check(authorization);
  if (!failure.has_value()) return absl::OkStatus();
  LogLine(LogLevel::kWarning, "unauthenticated")
      .Field("method", method)
      .Field("auth", ApiKeys::FailureName(*failure))
      .Write();
  return ApiKeys::Error(*failure);
}

absl::StatusOr<ClientStreamLimiter::Slot> ApiCore::AdmitClient(
    std::optional<absl::string_view> authorization, absl::string_view peer_host) {
  if (options_.max_streams_per_client <= 0) return ClientStreamLimiter::Slot();
  bool keys_on = false;
  {
    absl::MutexLock lock(&keys_mu_);
    keys_on = api_keys_ != nullptr;
  }
  std::string client;
  if (keys_on && authorization.has_value()) {
    if (const std::optional<absl::string_view> key = BearerKey(*authorization); key.has_value()) {
      // The key's digest, so that the key itself is not kept.
      const Sha256Digest digest = Sha256(*key);
      client =
          absl::StrCat("key:", absl::BytesToHexString(absl::string_view(
                                   reinterpret_cast<const char*>(digest.data()), digest.size())));
    }
  }
  if (client.empty()) client = absl::StrCat("peer:", peer_host);
  return client_streams_.Acquire(client);
}

void ApiCore::SetApiKeys(std::shared_ptr<const ApiKeys> keys) {
  absl::MutexLock lock(&keys_mu_);
  api_keys_ = std::move(keys);
}

std::string ApiCore::RequestId(absl::string_view client_id) {
  if (!client_id.empty() && ValidateRequestId(client_id).ok()) return std::string(client_id);
  return absl::StrCat("req-", next_request_number_.fetch_add(1));
}

template <typename Request>
absl::StatusOr<EngineRequest> ApiCore::PrepareImpl(const Request& request, const std::string& id,
                                                   absl::Time deadline,
                                                   const ApiFieldNames& names) {
  Engine* engine = engine_.load();
  if (engine == nullptr) return LoadingError();
  ConvertOptions convert = options_.convert;
  convert.chat_template = engine->model().config().chat_template;
  absl::StatusOr<EngineRequest> out =
      ToEngineRequest(request, engine->tokenizer(), engine->model().config(), convert, names);
  if (!out.ok()) return out.status();
  out->id = id;
  out->deadline = deadline;
  return out;
}

absl::StatusOr<EngineRequest> ApiCore::Prepare(const v1::GenerateRequest& request,
                                               const std::string& id, absl::Time deadline,
                                               const ApiFieldNames& names) {
  return PrepareImpl(request, id, deadline, names);
}

absl::StatusOr<EngineRequest> ApiCore::Prepare(const v1::ChatRequest& request,
                                               const std::string& id, absl::Time deadline,
                                               const ApiFieldNames& names) {
  return PrepareImpl(request, id, deadline, names);
}

v1::ServerStatus ApiCore::Status() const {
  v1::ServerStatus status;
  Engine* engine = engine_.load();
  status.set_version(kVersion);
  status.set_uptime_s(absl::ToDoubleSeconds(absl::Now() - started_));
  if (engine == nullptr) {
    status.set_state(draining_.load() ? v1::SERVING_STATE_DRAINING : v1::SERVING_STATE_LOADING);
    return status;
  }
  const EngineStats s = engine->Stats();
  status.set_state(draining_.load() || s.draining ? v1::SERVING_STATE_DRAINING
                                                  : v1::SERVING_STATE_SERVING);
  status.set_running(s.running);
  status.set_waiting(s.waiting);
  status.set_kv_blocks_used(s.kv_blocks_used);
  status.set_kv_blocks_total(s.kv_blocks_total);
  status.set_kv_block_tokens(s.kv_block_tokens);
  status.set_kv_usage(
      s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  status.set_requests_served(s.requests_served);
  status.set_preemptions(s.preemptions);
  return status;
}

absl::Status EngineTicket::Submit(Engine* engine, EngineRequest request,
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

void EngineTicket::Cancel(Engine* engine) {
  std::optional<uint64_t> id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    id = id_;
  }
  if (id.has_value()) engine->Cancel(*id);
}

double ElapsedMs(absl::Time from, absl::Time to) {
  if (from == absl::InfinitePast() || to == absl::InfinitePast()) return 0.0;
  return absl::ToDoubleMilliseconds(to - from);
}

void ApiCore::RecordRequestEnd(const std::string& id, absl::string_view method,
                               const absl::Status& status, const GenerateResult* result,
                               absl::Time received, const RequestTimings* t) const {
  // A server fault is an error; a request the client got wrong, cancelled or
  // let expire is business as usual.
  const absl::StatusCode code = status.code();
  const bool fault = code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
                     code == absl::StatusCode::kDataLoss;
  LogLine line(fault ? LogLevel::kError : LogLevel::kInfo, "request");
  line.Field("id", id).Field("method", method).Field("status", absl::StatusCodeToString(code));
  if (result != nullptr) {
    line.Field("finish", FinishReasonName(result->finish_reason))
        .Field("prompt_tokens", result->prompt_tokens)
        .Field("completion_tokens", result->completion_tokens);
  }
  if (t != nullptr) {
    line.Field("queue_ms", ElapsedMs(received, t->admitted))
        .Field("ttft_ms", ElapsedMs(received, t->first_token))
        .Field("total_ms", ElapsedMs(received, t->done));
  }
  if (!status.ok()) line.Field("error", status.message());
  line.Write();
  if (options_.on_request_end) options_.on_request_end(method, code);
}

}  // namespace memserve
