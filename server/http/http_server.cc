#include "server/http/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/api/errors.h"
#include "server/http/chat_page.h"
#include "server/http/connection.h"
#include "server/http/openai.h"

namespace memserve {
namespace {

using nlohmann::json;

// How often a waiting handler checks whether its client went away.
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
constexpr char kJson[] = "application/json";
constexpr char kTimeoutHeader[] = "X-Request-Timeout-Ms";
constexpr char kRequestIdHeader[] = "X-Request-Id";

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(DumpJson(body), kJson);
}

void ReplyError(httplib::Response& res, const absl::Status& status, const char* code = nullptr) {
  res.status = ToHttpError(status.code()).status;
  res.set_content(ErrorBody(status, code), kJson);
}

// The deadline the X-Request-Timeout-Ms header sets, InfiniteFuture without
// it.
absl::StatusOr<absl::Time> Deadline(const httplib::Request& req, absl::Time received) {
  if (!req.has_header(kTimeoutHeader)) return absl::InfiniteFuture();
  const std::string value = req.get_header_value(kTimeoutHeader);
  int64_t ms = 0;
  if (!absl::SimpleAtoi(value, &ms) || ms < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        kTimeoutHeader, " must be a positive integer (milliseconds), got '", value, "'"));
  }
  return received + absl::Milliseconds(ms);
}

// One generation request, shared by the handler thread (and its content
// provider, for a stream) and the engine's observer: the engine's events
// wait in a mailbox until the handler takes them. Counts as an open call
// (ApiCore::open_calls) until both are done with it.
class HttpCall {
 public:
  HttpCall(ApiCore* core, Engine* engine, std::string id, Endpoint endpoint, absl::Time received,
           ClientStreamLimiter::Slot client_slot)
      : open_(core),
        engine_(engine),
        id_(std::move(id)),
        endpoint_(endpoint),
        received_(received),
        client_slot_(std::move(client_slot)) {}

  struct Events {
    std::vector<TokenEvent> tokens;
    std::optional<absl::StatusOr<GenerateResult>> done;  // set once, with the last tokens
  };

  absl::Status Submit(EngineRequest request, std::shared_ptr<HttpCall> self);
  // Stops the engine request (idempotent; a no-op once it ended).
  void Cancel() { ticket_.Cancel(engine_); }

  // Waits up to `timeout` for events and takes them.
  Events Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                 [&] { return !tokens_.empty() || done_.has_value(); });
    Events events;
    events.tokens.assign(std::make_move_iterator(tokens_.begin()),
                         std::make_move_iterator(tokens_.end()));
    tokens_.clear();
    if (done_.has_value()) events.done = std::move(done_);
    done_.reset();
    return events;
  }

  // Engine thread.
  void OnToken(const TokenEvent& event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.push_back(event);
    }
    cv_.notify_one();
  }
  void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) {
    client_slot_ = ClientStreamLimiter::Slot();  // before the client can see the end
    open_.core()->RecordRequestEnd(id_, EndpointPath(endpoint_), result.status(),
                                   result.ok() ? &*result : nullptr, received_, &timings);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = std::move(result);
    }
    cv_.notify_one();
  }

 private:
  const OpenCall open_;
  Engine* const engine_;
  const std::string id_;
  const Endpoint endpoint_;
  const absl::Time received_;
  ClientStreamLimiter::Slot client_slot_;  // engine thread (OnDone), then the destructor
  EngineTicket ticket_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> tokens_;                       // guarded by mu_
  std::optional<absl::StatusOr<GenerateResult>> done_;  // guarded by mu_
};

class CallObserver : public RequestObserver {
 public:
  explicit CallObserver(std::shared_ptr<HttpCall> call) : call_(std::move(call)) {}
  void OnToken(const TokenEvent& event) override { call_->OnToken(event); }
  void OnDone(absl::StatusOr<GenerateResult> result, const RequestTimings& timings) override {
    call_->OnDone(std::move(result), timings);
  }

 private:
  const std::shared_ptr<HttpCall> call_;
};

absl::Status HttpCall::Submit(EngineRequest request, std::shared_ptr<HttpCall> self) {
  return ticket_.Submit(engine_, std::move(request),
                        std::make_shared<CallObserver>(std::move(self)));
}

// One step of a stream (cpp-httplib calls it until it returns false or the
// stream is done): writes the events that arrived within kPollInterval.
// False (the connection is dropped) when the client went away; the engine
// request is then cancelled.
bool PumpStream(HttpCall& call, OpenAiResponse& response, Endpoint endpoint, int socket,
                httplib::DataSink& sink) {
  HttpCall::Events events = call.Wait(kPollInterval);
  for (const TokenEvent& token : events.tokens) {
    const std::string chunk = response.TokenChunk(token);
    if (!sink.write(chunk.data(), chunk.size())) {
      call.Cancel();
      return false;
    }
  }
  if (events.done.has_value()) {
    const std::string tail = events.done->ok()
                                 ? response.FinalChunks(**events.done)
                                 : ErrorEvents(RenameFields(endpoint, events.done->status()));
    if (!sink.write(tail.data(), tail.size())) return false;
    sink.done();
    return true;
  }
  if (events.tokens.empty() && PeerClosed(socket)) {
    call.Cancel();
    return false;
  }
  return true;
}

json ModelCard(const EngineInfo& info, absl::Time started) {
  return {{"id", info.model_name},
          {"object", "model"},
          {"created", absl::ToUnixSeconds(started)},
          {"owned_by", "memserve"},
          {"root", info.model_name},
          {"parent", nullptr},
          {"max_model_len", info.context_length}};
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(const HttpServerOptions& options, ApiCore* core) : options_(options), core_(core) {
    const int threads = options.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_socket_options([this](int sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
      listen_socket_ = sock;
    });
    server_.set_payload_max_length(static_cast<size_t>(options.max_request_bytes));
    server_.set_keep_alive_timeout(2);
    // API keys (--api_keys_file): every /v1/ route, before routing, so that
    // no handler (nor the engine) sees an unauthenticated call; /health and
    // the static page / stay open.
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!absl::StartsWith(req.path, "/v1/")) return httplib::Server::HandlerResponse::Unhandled;
      const std::string header = req.get_header_value("Authorization");
      std::optional<absl::string_view> authorization;
      if (req.has_header("Authorization")) authorization = header;
      absl::Status status = core_->Authorize(req.path, authorization);
      if (status.ok()) return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      ReplyError(res, status, "invalid_api_key");
      return httplib::Server::HandlerResponse::Handled;
    });
    server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      Generation(Endpoint::kCompletions, req, res);
    });
    server_.Post("/v1/chat/completions",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   Generation(Endpoint::kChatCompletions, req, res);
                 });
    server_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      Engine* engine = core_->engine();
      if (engine == nullptr) return ReplyError(res, LoadingError());
      Reply(res, 200,
            {{"object", "list"},
             {"data", json::array({ModelCard(engine->Info(), core_->started())})}});
    });
    server_.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      Engine* engine = core_->engine();
      if (engine == nullptr) return ReplyError(res, LoadingError());
      const std::string name = req.matches[1];
      if (name != engine->Info().model_name) {
        return ReplyError(res, ModelNotFound(name, engine->Info().model_name), "model_not_found");
      }
      Reply(res, 200, ModelCard(engine->Info(), core_->started()));
    });
    server_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      switch (core_->Status().state()) {
        case v1::SERVING_STATE_SERVING:
          return Reply(res, 200, {{"status", "serving"}});
        case v1::SERVING_STATE_DRAINING:
          return Reply(res, 503, {{"status", "draining"}});
        default:
          return Reply(res, 503, {{"status", "loading"}});
      }
    });
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_content(kChatPageHtml, "text/html; charset=utf-8");
    });
    server_.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          const char* code = nullptr;
          absl::Status status;
          switch (res.status) {
            case 404:
              status = absl::NotFoundError(absl::StrCat(
                  "no route ", req.method, " ", req.path,
                  " (routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, "
                  "GET /health, GET /)"));
              break;
            case 413:
              status = absl::InvalidArgumentError(
                  absl::StrCat("the request body is over --max_request_bytes (",
                               options_.max_request_bytes, " bytes)"));
              code = "request_too_large";
              break;
            default:
              status = absl::InvalidArgumentError(
                  absl::StrCat("HTTP ", res.status, ": the request could not be processed"));
              break;
          }
          res.set_content(ErrorBody(status, code), kJson);
          return httplib::Server::HandlerResponse::Handled;
        }));
  }

  httplib::Server& server() { return server_; }

  // cpp-httplib 0.11 listens with a backlog of 5: more simultaneous
  // connections overflow it and are reset. Listening again on the bound
  // socket raises the backlog (Linux).
  void RaiseListenBacklog() {
    if (listen_socket_ >= 0) listen(listen_socket_, SOMAXCONN);
  }

 private:
  static absl::Status ModelNotFound(const std::string& asked, const std::string& served) {
    return absl::NotFoundError(absl::StrCat(
        "model: `", asked, "` does not exist; this server serves `", served, "` (GET /v1/models)"));
  }

  void Generation(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);

  const HttpServerOptions options_;
  ApiCore* const core_;
  httplib::Server server_;
  int listen_socket_ = -1;  // the socket set_socket_options saw (the listening one)
};

void HttpServer::Impl::Generation(Endpoint endpoint, const httplib::Request& req,
                                  httplib::Response& res) {
  const absl::Time received = absl::Now();
  const char* method = EndpointPath(endpoint);
  const std::string client_id = req.get_header_value(kRequestIdHeader);
  const std::string id = core_->RequestId(client_id);
  res.set_header(kRequestIdHeader, id);
  const auto fail = [&](const absl::Status& status, const char* code = nullptr) {
    core_->RecordRequestEnd(id, method, status, nullptr, received, nullptr);
    ReplyError(res, status, code);
  };

  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, req.body);
  if (!parsed.ok()) return fail(parsed.status());
  Engine* engine = core_->engine();
  if (engine == nullptr) return fail(LoadingError());
  const EngineInfo& info = engine->Info();
  if (!parsed->model.empty() && parsed->model != info.model_name) {
    return fail(ModelNotFound(parsed->model, info.model_name), "model_not_found");
  }
  absl::StatusOr<absl::Time> deadline = Deadline(req, received);
  if (!deadline.ok()) return fail(deadline.status());
  // The client's id goes through the shared conversion, which checks it.
  absl::StatusOr<EngineRequest> request;
  if (endpoint == Endpoint::kCompletions) {
    parsed->generate.set_request_id(client_id);
    request = core_->Prepare(parsed->generate, id, *deadline, HttpFieldNames());
  } else {
    parsed->chat.set_request_id(client_id);
    request = core_->Prepare(parsed->chat, id, *deadline, HttpFieldNames());
  }
  if (!request.ok()) return fail(RenameFields(endpoint, request.status()));
  const std::string authorization_header = req.get_header_value("Authorization");
  std::optional<absl::string_view> authorization;
  if (req.has_header("Authorization")) authorization = authorization_header;
  absl::StatusOr<ClientStreamLimiter::Slot> client_slot =
      core_->AdmitClient(authorization, req.remote_addr);
  if (!client_slot.ok()) return fail(client_slot.status());

  const int socket = FindConnectionSocket(req.local_port, req.remote_addr, req.remote_port);
  auto call =
      std::make_shared<HttpCall>(core_, engine, id, endpoint, received, *std::move(client_slot));
  if (absl::Status s = call->Submit(*std::move(request), call); !s.ok()) {
    return fail(RenameFields(endpoint, s));
  }
  auto response = std::make_shared<OpenAiResponse>(*parsed, id, absl::ToUnixSeconds(received),
                                                   info.model_name, &engine->tokenizer());
  if (parsed->stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [call, response, endpoint, socket](size_t, httplib::DataSink& sink) {
          return PumpStream(*call, *response, endpoint, socket, sink);
        },
        // After the stream, also when it failed: a no-op once the request ended.
        [call](bool) { call->Cancel(); });
    return;
  }
  bool cancelled = false;
  for (;;) {
    HttpCall::Events events = call->Wait(kPollInterval);
    for (const TokenEvent& token : events.tokens) response->Add(token);
    if (events.done.has_value()) {
      if (!events.done->ok()) return ReplyError(res, RenameFields(endpoint, events.done->status()));
      res.status = 200;
      res.set_content(response->Body(**events.done), kJson);
      return;
    }
    if (!cancelled && PeerClosed(socket)) {
      call->Cancel();
      cancelled = true;
    }
  }
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                               ApiCore* core) {
  auto impl = std::make_unique<Impl>(options, core);
  errno = 0;
  int port = options.port;
  bool bound = false;
  if (port == 0) {
    port = impl->server().bind_to_any_port(options.host);
    bound = port > 0;
  } else {
    bound = impl->server().bind_to_port(options.host, port);
  }
  if (!bound) {
    const int error = errno;
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.host, ":", options.port, " (--http_listen)",
        error != 0 ? ": " : "", error != 0 ? absl::AsciiStrToLower(std::strerror(error)) : ""));
  }
  impl->RaiseListenBacklog();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl), port));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { impl_->server().listen_after_bind(); });
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  // stop() only acts on a running server: wait until the thread got there.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (!impl_->server().is_running() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  impl_->server().stop();
  thread_.join();
}

}  // namespace memserve
