#include "server/serve.h"

#include <netdb.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/backend_factory.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/runtime/placement_plan.h"
#include "engine/status_macros.h"
#include "grpc/support/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/api/api_core.h"
#include "server/exposure.h"
#include "server/http/http_server.h"
#include "server/logging.h"
#include "server/metrics/metrics_server.h"
#include "server/metrics/registry.h"
#include "server/metrics/serving_metrics.h"
#include "server/parse_error_interceptor.h"
#include "server/service.h"
#include "server/tls_credentials.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "address to serve on, HOST:PORT ([::]:PORT for IPv6); port 0 picks a free port (see "
          "--port_file). A port another process listens on is refused (exit 1). A non-loopback "
          "address needs TLS (--tls_cert) or --insecure");
ABSL_FLAG(bool, insecure, false,
          "allow plaintext on a non-loopback address: --listen without --tls_cert, "
          "--http_listen and --metrics_listen (always plain HTTP); without it such an address "
          "is refused (exit 2)");
ABSL_FLAG(std::string, port_file, "",
          "if set, the bound port is written here (decimal) as soon as the port is bound, "
          "before the model loads (health checks answer there; readiness says when it serves)");
ABSL_FLAG(std::string, http_listen, "",
          "if set, also serve the OpenAI-compatible HTTP API and the chat page here, HOST:PORT "
          "([::]:PORT for IPv6; port 0 picks a free port, see --http_port_file); off by default");
ABSL_FLAG(std::string, http_port_file, "",
          "if set, the bound HTTP port is written here (decimal) as soon as it is bound");
ABSL_FLAG(int, http_threads, 64,
          "HTTP connections served at once (each streaming request holds one); more wait");
ABSL_FLAG(std::string, model_name, "",
          "the model's name in GetModelInfo; default: the --model directory's base name");
ABSL_FLAG(int, max_batch_size, 64, "sequences in one engine step (and running at once)");
ABSL_FLAG(int, max_num_tokens, 2048, "tokens in one engine step (prompt chunks and decodes)");
ABSL_FLAG(int, max_queue, 1024, "waiting requests; beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(int, block_size, 16, "tokens per KV cache block");
ABSL_FLAG(int, num_blocks, 0,
          "KV cache blocks; 0 = enough for --max_batch_size full-context sequences, capped by "
          "--kv_cache_mb");
ABSL_FLAG(int64_t, kv_cache_mb, 4096, "cap of the automatic KV cache size, in MiB");
ABSL_FLAG(int, prefill_chunk, 512,
          "prompt tokens per sequence per step (chunked prefill); 0 = --max_num_tokens");
ABSL_FLAG(int, default_max_tokens, memserve::kDefaultMaxTokens,
          "max_tokens of requests that leave it unset (capped by the context left)");
ABSL_FLAG(absl::Duration, shutdown_timeout, absl::Seconds(30),
          "on SIGTERM, how long in-flight requests may run before they are cancelled (a "
          "duration, e.g. 30s; a bare number is seconds)");
ABSL_FLAG(int64_t, max_request_bytes, int64_t{8} << 20,
          "largest request message accepted, in bytes (1 MiB to 1 GiB)");
ABSL_FLAG(int64_t, max_response_bytes, int64_t{64} << 20,
          "largest gRPC response message sent, in bytes (1 MiB to 1 GiB); a larger one fails "
          "its call with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrent_streams, 1024,
          "gRPC calls open at once on one client connection (HTTP/2 MAX_CONCURRENT_STREAMS, 1 to "
          "65536); the client queues more until one ends");
ABSL_FLAG(int, max_streams_per_client, 0,
          "generation calls (Generate, Complete, Chat, ChatComplete and the HTTP API's) one "
          "client may have open at once; more get RESOURCE_EXHAUSTED (HTTP 429). The client is "
          "its API key with --api_keys_file, else its IP address. 0 = no limit");
ABSL_FLAG(std::string, metrics_listen, "",
          "if set, HOST:PORT of an HTTP endpoint with /metrics (Prometheus), /healthz and "
          "/readyz, apart from the gRPC port (e.g. 127.0.0.1:9090; port 0 picks a free port, "
          "logged); default: off");
ABSL_FLAG(std::string, api_keys_file, "",
          "a file of API keys, one a line (or sha256:<64 hex> for a hashed key; # comments): "
          "every memserve.v1 RPC and /v1/ HTTP route then requires `authorization: Bearer <key>` "
          "(health stays open; docs/security.md)");
ABSL_FLAG(std::string, log_format, "text",
          "log lines on stderr: text (TIMESTAMP LEVEL MESSAGE key=value...) or json (one "
          "object per line)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file: the server's certificate chain; with --tls_key, the gRPC port serves TLS "
          "(the HTTP API and metrics endpoints stay plain HTTP); default: no TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM file: the private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM file: CA certificates; if set, clients must present a certificate signed by one "
          "of them (mTLS); requires --tls_cert and --tls_key");
ABSL_FLAG(absl::Duration, debug_load_delay, absl::ZeroDuration(),
          "testing: wait this long before loading the model (to observe LOADING)");
ABSL_FLAG(absl::Duration, debug_step_delay, absl::ZeroDuration(),
          "testing: sleep this long after every engine step (to hold requests in flight)");

// Defined in memserve_main.cc, shared with `memserve generate`.
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(int, memory_shards);
ABSL_DECLARE_FLAG(std::string, memory_placement);
ABSL_DECLARE_FLAG(std::string, memory_gpus);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, kv_cache_dtype);
ABSL_DECLARE_FLAG(std::string, cpu_matmul_precision);

namespace memserve {
namespace {

LogLevel LevelOf(gpr_log_severity severity) {
  switch (severity) {
    case GPR_LOG_SEVERITY_ERROR:
      return LogLevel::kError;
    case GPR_LOG_SEVERITY_INFO:
    case GPR_LOG_SEVERITY_DEBUG:
      return LogLevel::kInfo;
  }
  return LogLevel::kInfo;
}

// gRPC logs through one process-wide function. Ours writes each gRPC log
// line to stderr as one line, except while a GrpcLogCapture is alive: then
// the lines are kept, so that a failure gRPC explains in a multi-line dump
// (e.g. BuildAndStart on a port in use) becomes one line of ours.
ABSL_CONST_INIT absl::Mutex grpc_log_mu(absl::kConstInit);
std::string* grpc_log_capture ABSL_GUARDED_BY(grpc_log_mu) = nullptr;

void GrpcLog(gpr_log_func_args* args) {
  {
    absl::MutexLock lock(&grpc_log_mu);
    if (grpc_log_capture != nullptr) {
      absl::StrAppend(grpc_log_capture, args->message, "\n");
      return;
    }
  }
  LogLine(LevelOf(args->severity), "grpc")
      .Field("source", absl::StrCat(args->file, ":", args->line))
      .Field("message", args->message)
      .Write();
}

class GrpcLogCapture {
 public:
  GrpcLogCapture() {
    absl::MutexLock lock(&grpc_log_mu);
    grpc_log_capture = &text_;
  }
  ~GrpcLogCapture() {
    absl::MutexLock lock(&grpc_log_mu);
    grpc_log_capture = nullptr;
  }
  // What gRPC logged so far.
  std::string text() {
    absl::MutexLock lock(&grpc_log_mu);
    return text_;
  }

 private:
  std::string text_;
};

// OK if `listen` is HOST:PORT with a port in 0..65535 (IPv6 hosts in
// brackets), or (if `allow_unix`) a gRPC unix socket address
// ("unix:PATH"); else InvalidArgument naming `flag`. The host is resolved
// later, by the server.
absl::Status CheckListenAddress(const std::string& flag, const std::string& listen,
                                bool allow_unix) {
  if (allow_unix &&
      (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:"))) {
    return absl::OkStatus();
  }
  const absl::Status bad = absl::InvalidArgumentError(absl::StrCat(
      flag, ": expected HOST:PORT with a port in 0..65535 (e.g. 127.0.0.1:",
      flag == "--listen" ? "50051" : "8000", ", [::]:", flag == "--listen" ? "50051" : "8000",
      ", localhost:0), got '", listen, "'"));
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad;
  const std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  const bool bracketed = host.front() == '[' && host.back() == ']' && host.size() > 2;
  if (!bracketed && host.find_first_of("[]:") != std::string::npos) return bad;
  for (const char c : host) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return bad;
  }
  if (port.empty() || port.size() > 5) return bad;
  for (const char c : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return bad;
  }
  int value = 0;
  if (!absl::SimpleAtoi(port, &value) || value > 65535) return bad;
  return absl::OkStatus();
}

// The host (without IPv6 brackets) and port of a HOST:PORT that
// CheckListenAddress accepted.
HttpServerOptions HttpAddress(const std::string& listen) {
  HttpServerOptions options;
  const size_t colon = listen.rfind(':');
  options.host = listen.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[') {
    options.host = options.host.substr(1, options.host.size() - 2);
  }
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &options.port)) options.port = 0;
  return options;
}

// Why gRPC could not listen, from what it logged: the system or resolver
// error it quotes (e.g. "address already in use"), else "".
std::string ListenFailureReason(const std::string& grpc_log) {
  std::vector<std::string> known;
  for (const int error : {EADDRINUSE, EADDRNOTAVAIL, EACCES, EAFNOSUPPORT}) {
    known.push_back(std::strerror(error));
  }
  for (const int error : {EAI_NONAME, EAI_AGAIN, EAI_FAIL}) known.push_back(gai_strerror(error));
  for (const std::string& text : known) {
    if (absl::StrContains(grpc_log, text)) return absl::AsciiStrToLower(text);
  }
  return "";
}

// SIGHUP: re-reads --api_keys_file (when the server has keys) and the TLS
// files (when it serves TLS). What fails to load is kept as it was, with one
// ERROR line; what loads is used by the next call (keys) or the next
// handshake (certificates, within about a second). Open calls and
// connections are not touched.
void ReloadOnSighup(const std::string& api_keys_file, ApiCore* core, ReloadableTls* tls,
                    const TlsFiles& tls_files) {
  LogLine line(LogLevel::kInfo, "reloaded");
  line.Field("signal", "SIGHUP");
  bool any_failed = false;
  if (!api_keys_file.empty()) {
    absl::StatusOr<ApiKeys> loaded = ApiKeys::Load(api_keys_file, "--api_keys_file");
    if (loaded.ok()) {
      line.Field("api_keys", static_cast<int64_t>(loaded->size()));
      core->SetApiKeys(std::make_shared<const ApiKeys>(*std::move(loaded)));
    } else {
      any_failed = true;
      LogError(absl::StrCat("reload (SIGHUP): ", loaded.status().message(),
                            "; keeping the previous API keys"));
      line.Field("api_keys", "unchanged");
    }
  }
  if (tls != nullptr) {
    if (absl::Status s = tls->Reload(); s.ok()) {
      line.Field("tls_cert", tls_files.cert);
    } else {
      any_failed = true;
      LogError(
          absl::StrCat("reload (SIGHUP): ", s.message(), "; keeping the previous certificate"));
      line.Field("tls_cert", "unchanged");
    }
  }
  if (api_keys_file.empty() && tls == nullptr) line.Field("note", "no --api_keys_file or TLS");
  line.Field("ok", !any_failed);
  line.Write();
}

// Writes `port` to `path` atomically (write a temporary, then rename), so a
// reader never sees a partial number.
bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << port << "\n";
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

// "cuda:0=1024,cuda:1=1024" (device=bytes, in device order); "none" when empty.
std::string MemoryDeviceBytesField(const std::vector<DeviceBytes>& devices) {
  std::vector<std::string> parts;
  for (const DeviceBytes& d : devices) parts.push_back(absl::StrCat(d.device, "=", d.bytes));
  return parts.empty() ? "none" : absl::StrJoin(parts, ",");
}

}  // namespace

absl::StatusOr<MemoryPoolFlags> ParseMemoryPoolFlags(Device device) {
  MemoryPoolFlags flags;
  ASSIGN_OR_RETURN(flags.placement, ParseMemoryPlacement(absl::GetFlag(FLAGS_memory_placement)));
  ASSIGN_OR_RETURN(flags.gpus, ParseMemoryGpus(absl::GetFlag(FLAGS_memory_gpus)));
  RETURN_IF_ERROR(CheckMemoryPlacement(device, flags.placement, flags.gpus));
  return flags;
}

int RunServe(const std::string& model_dir) {
  {
    absl::StatusOr<LogFormat> format = ParseLogFormat(absl::GetFlag(FLAGS_log_format));
    if (!format.ok()) {
      LogError(format.status().message());
      return 2;
    }
    SetLogFormat(*format);
  }
  // SIGTERM, SIGINT and SIGHUP are taken with sigwait below; block them before any
  // thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);  // reload keys and certificates (ReloadOnSighup)
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  EngineOptions engine_options;
  engine_options.model_dir = model_dir;
  engine_options.threads = absl::GetFlag(FLAGS_threads);
  engine_options.memory_shards = absl::GetFlag(FLAGS_memory_shards);
  engine_options.model_name = absl::GetFlag(FLAGS_model_name);
  SchedulerOptions& sched = engine_options.scheduler;
  sched.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  sched.max_num_tokens = absl::GetFlag(FLAGS_max_num_tokens);
  sched.max_queue = absl::GetFlag(FLAGS_max_queue);
  sched.block_size = absl::GetFlag(FLAGS_block_size);
  sched.num_blocks = absl::GetFlag(FLAGS_num_blocks);
  sched.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  engine_options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mb) << 20;
  engine_options.debug_step_delay = absl::GetFlag(FLAGS_debug_step_delay);
  // Check the flags that need no model first, so that mistakes fail fast.
  {
    absl::StatusOr<Device> device = ParseDevice(absl::GetFlag(FLAGS_device));
    if (!device.ok()) {
      LogError(device.status().message());
      return 2;
    }
    absl::StatusOr<KvCacheDtype> kv_dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
    if (!kv_dtype.ok()) {
      LogError(kv_dtype.status().message());
      return 2;
    }
    if (absl::Status s = ResolveKvCacheDtype(*device, *kv_dtype).status(); !s.ok()) {
      LogError(s.message());
      return 2;
    }
    absl::StatusOr<CpuMatMulPrecision> precision =
        ParseCpuMatMulPrecision(absl::GetFlag(FLAGS_cpu_matmul_precision));
    if (!precision.ok()) {
      LogError(precision.status().message());
      return 2;
    }
    if (absl::Status s = CheckCpuMatMulPrecision(*device, *precision); !s.ok()) {
      LogError(s.message());
      return 2;
    }
    engine_options.cpu_matmul_precision = *precision;
    absl::StatusOr<MemoryPoolFlags> pool_flags = ParseMemoryPoolFlags(*device);
    if (!pool_flags.ok()) {
      LogError(pool_flags.status().message());
      return 2;
    }
    engine_options.memory_placement = pool_flags->placement;
    engine_options.memory_gpus = pool_flags->gpus;
    if (absl::Status s = CheckDeviceAvailable(*device); !s.ok()) {
      LogError(s.message());
      return 1;
    }
    engine_options.device = *device;
    engine_options.kv_cache_dtype = *kv_dtype;
  }
  {
    SchedulerOptions check = sched;
    if (check.num_blocks == 0) check.num_blocks = 1;
    if (absl::Status s = check.Validate(); !s.ok()) {
      LogError(s.message());
      return 2;
    }
  }
  const int default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  if (default_max_tokens < 1) {
    LogError(absl::StrCat("--default_max_tokens must be >= 1, got ", default_max_tokens));
    return 2;
  }
  const int64_t max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (max_request_bytes < (int64_t{1} << 20) || max_request_bytes > (int64_t{1} << 30)) {
    LogError(
        absl::StrCat("--max_request_bytes must be in [1 MiB, 1 GiB], got ", max_request_bytes));
    return 2;
  }

  const int64_t max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  if (max_response_bytes < (int64_t{1} << 20) || max_response_bytes > (int64_t{1} << 30)) {
    LogError(
        absl::StrCat("--max_response_bytes must be in [1 MiB, 1 GiB], got ", max_response_bytes));
    return 2;
  }
  const int max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  if (max_concurrent_streams < 1 || max_concurrent_streams > 65536) {
    LogError(absl::StrCat("--max_concurrent_streams must be in [1, 65536], got ",
                          max_concurrent_streams));
    return 2;
  }

  const int max_streams_per_client = absl::GetFlag(FLAGS_max_streams_per_client);
  if (max_streams_per_client < 0 || max_streams_per_client > (1 << 20)) {
    LogError(absl::StrCat("--max_streams_per_client must be in [0, 1048576] (0 = no limit), got ",
                          max_streams_per_client));
    return 2;
  }

  const std::string listen = absl::GetFlag(FLAGS_listen);
  if (absl::Status s = CheckListenAddress("--listen", listen, /*allow_unix=*/true); !s.ok()) {
    LogError(s.message());
    return 2;
  }
  TlsFiles tls_files;
  tls_files.cert = absl::GetFlag(FLAGS_tls_cert);
  tls_files.key = absl::GetFlag(FLAGS_tls_key);
  tls_files.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  // Null: plaintext. Reloaded on SIGHUP.
  std::unique_ptr<ReloadableTls> tls_credentials;
  {
    absl::StatusOr<std::unique_ptr<ReloadableTls>> created = TlsFromFlags(tls_files);
    if (!created.ok()) {
      LogError(created.status().message());
      return created.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    tls_credentials = *std::move(created);
  }
  const bool tls = tls_credentials != nullptr;
  const bool insecure = absl::GetFlag(FLAGS_insecure);
  if (absl::Status s = CheckPlaintextExposure("--listen", listen, tls, insecure); !s.ok()) {
    LogError(s.message());
    return 2;
  }
  const std::string http_listen = absl::GetFlag(FLAGS_http_listen);
  if (!http_listen.empty()) {
    if (absl::Status s = CheckListenAddress("--http_listen", http_listen, /*allow_unix=*/false);
        !s.ok()) {
      LogError(s.message());
      return 2;
    }
    if (absl::Status s = CheckPlaintextExposure("--http_listen", http_listen, false, insecure);
        !s.ok()) {
      LogError(s.message());
      return 2;
    }
  }
  const int http_threads = absl::GetFlag(FLAGS_http_threads);
  if (http_threads < 1 || http_threads > 4096) {
    LogError(absl::StrCat("--http_threads must be in [1, 4096], got ", http_threads));
    return 2;
  }

  std::shared_ptr<const ApiKeys> api_keys;
  const std::string api_keys_file = absl::GetFlag(FLAGS_api_keys_file);
  if (const std::string& path = api_keys_file; !path.empty()) {
    absl::StatusOr<ApiKeys> loaded = ApiKeys::Load(path, "--api_keys_file");
    if (!loaded.ok()) {
      LogError(loaded.status().message());
      return 2;
    }
    api_keys = std::make_shared<const ApiKeys>(*std::move(loaded));
  }

  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    absl::StatusOr<std::pair<std::string, int>> address =
        metrics::ParseHostPort(metrics_listen, "--metrics_listen");
    if (!address.ok()) {
      LogError(address.status().message());
      return 2;
    }
    if (absl::Status s =
            CheckPlaintextExposure("--metrics_listen", metrics_listen, false, insecure);
        !s.ok()) {
      LogError(s.message());
      return 2;
    }
  }

  // The metrics (docs/metrics.md): the registry and the series outlive the
  // engine (its stats observer) and the gRPC service (which counts requests);
  // the endpoint, which reads the engine at each scrape, stops before the
  // engine is destroyed (declared after it, below).
  metrics::Registry registry;
  std::unique_ptr<metrics::ServingMetrics> serving_metrics;
  std::atomic<metrics::ServingMetrics*> request_metrics{nullptr};
  std::atomic<metrics::Readiness> readiness{metrics::Readiness::kLoading};

  // What the gRPC service and the HTTP API share (server/api/); both count
  // their requests in the metrics through on_request_end.
  ApiOptions api_options;
  api_options.convert.default_max_tokens = default_max_tokens;
  api_options.max_request_bytes = max_request_bytes;
  api_options.api_keys = api_keys;
  api_options.max_streams_per_client = max_streams_per_client;
  api_options.on_request_end = [&request_metrics](absl::string_view method, absl::StatusCode code) {
    metrics::ServingMetrics* m = request_metrics.load();
    if (m != nullptr) m->RecordRequest(method, code);
  };
  ApiCore core(api_options);
  MemServeService service(&core);

  // The port is bound before the model loads, so that a port in use fails
  // at once and health probes answer during a long load (liveness SERVING,
  // readiness NOT_SERVING); the "listening" line waits for the model.
  gpr_set_log_function(GrpcLog);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      listen, tls ? tls_credentials->credentials() : grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default: a second server on the same port
  // would then start, and the kernel would split connections between them.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_request_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(max_response_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, max_concurrent_streams);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewParseErrorInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server;
  {
    GrpcLogCapture capture;
    server = builder.BuildAndStart();
    if (server == nullptr || port == 0) {
      const std::string reason = ListenFailureReason(capture.text());
      if (tls && reason.empty()) {
        // gRPC parses the PEM blocks when the port is added: a malformed
        // certificate or key, or a key that does not match, ends here.
        LogError(absl::StrCat("cannot listen on ", listen, " with TLS: gRPC rejected --tls_cert ",
                              absl::GetFlag(FLAGS_tls_cert), " / --tls_key ",
                              absl::GetFlag(FLAGS_tls_key),
                              " (a malformed PEM block, or a key that does not match)"));
        return 2;
      }
      LogError(absl::StrCat("cannot listen on ", listen, " (--listen)", reason.empty() ? "" : ": ",
                            reason));
      return 1;
    }
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, false);
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, port)) {
    LogError(absl::StrCat("cannot write --port_file ", port_file));
    server->Shutdown();
    return 1;
  }
  std::unique_ptr<Engine> engine;
  std::unique_ptr<metrics::MetricsServer> metrics_server;  // destroyed before the engine
  if (!metrics_listen.empty()) {
    metrics::MetricsServerOptions options;
    options.listen = metrics_listen;
    options.registry = &registry;
    options.readiness = [&readiness] { return readiness.load(); };
    absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> started =
        metrics::MetricsServer::Start(options);
    if (!started.ok()) {
      LogError(started.status().message());
      server->Shutdown();
      return 1;
    }
    metrics_server = std::move(*started);
    LogLine(LogLevel::kInfo, "metrics endpoint")
        .Field("listen", metrics_listen)
        .Field("port", metrics_server->port())
        .Field("paths", "/metrics /healthz /readyz")
        .Write();
  }
  // The HTTP port too is bound before the model loads (/health answers 503
  // "loading" meanwhile).
  std::unique_ptr<HttpServer> http;
  if (!http_listen.empty()) {
    HttpServerOptions http_options = HttpAddress(http_listen);
    http_options.threads = http_threads;
    http_options.max_request_bytes = max_request_bytes;
    absl::StatusOr<std::unique_ptr<HttpServer>> created = HttpServer::Create(http_options, &core);
    if (!created.ok()) {
      LogError(created.status().message());
      server->Shutdown();
      return 1;
    }
    http = std::move(*created);
    const std::string http_port_file = absl::GetFlag(FLAGS_http_port_file);
    if (!http_port_file.empty() && !WritePortFile(http_port_file, http->port())) {
      LogError(absl::StrCat("cannot write --http_port_file ", http_port_file));
      server->Shutdown();
      return 1;
    }
    http->Start();
  }
  LogLine(LogLevel::kInfo, "loading").Field("model_dir", model_dir).Field("port", port).Write();
  if (api_keys != nullptr) {
    LogLine(LogLevel::kInfo, "api keys required")
        .Field("keys", static_cast<int64_t>(api_keys->size()))
        .Write();
  }

  absl::SleepFor(absl::GetFlag(FLAGS_debug_load_delay));
  const absl::Time load_start = absl::Now();
  absl::Status load_status = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(engine_options);
    if (!created.ok()) return created.status();
    engine = std::move(*created);
    return absl::OkStatus();
  }();
  if (!load_status.ok()) {
    LogError(load_status.message());
    server->Shutdown();
    return load_status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  const double load_ms = absl::ToDoubleMilliseconds(absl::Now() - load_start);
  {
    absl::StatusOr<std::unique_ptr<metrics::ServingMetrics>> created =
        metrics::ServingMetrics::Create(&registry, *engine);
    if (!created.ok()) {
      LogError(created.status().message());
      server->Shutdown();
      return 1;
    }
    serving_metrics = std::move(*created);
    engine->SetStatsObserver(serving_metrics.get());
    request_metrics.store(serving_metrics.get());
  }
  core.SetEngine(engine.get());
  health->SetServingStatus(kServiceName, true);
  readiness.store(metrics::Readiness::kReady);
  const EngineInfo& info = engine->Info();
  LogLine(LogLevel::kInfo, "ready")
      .Field("listen", listen)
      .Field("port", port)
      .Field("tls", tls ? (absl::GetFlag(FLAGS_tls_client_ca).empty() ? "on" : "mtls") : "off")
      .Field("model", info.model_name)
      .Field("model_dir", info.model_dir)
      .Field("device", info.device)
      .Field("cpu_matmul",
             CpuMatMulKernels(engine_options.device, engine_options.cpu_matmul_precision))
      .Field("layers", info.config.n_layers)
      .Field("context", info.context_length)
      .Field("load_ms", load_ms)
      .Field("memory_placement",
             info.value_table_placement.empty() ? std::string("none") : info.value_table_placement)
      .Field("memory_bytes", info.value_table_bytes)
      .Field("memory_shards", info.memory_shards)
      .Field("memory_plan",
             info.memory_placement.empty() ? std::string("none") : info.memory_placement)
      .Field("memory_device_bytes", MemoryDeviceBytesField(info.memory_device_bytes))
      .Field("memory_plan_summary",
             info.memory_plan.empty() ? std::string("none") : info.memory_plan)
      .Field("kv_blocks", info.kv_blocks)
      .Field("kv_block_tokens", info.kv_block_tokens)
      .Field("kv_cache_bytes", info.kv_cache_bytes)
      .Field("http_port", http ? http->port() : 0)
      .Write();

  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    ReloadOnSighup(api_keys_file, &core, tls_credentials.get(), tls_files);
  }
  const absl::Duration timeout = absl::GetFlag(FLAGS_shutdown_timeout);
  LogLine(LogLevel::kInfo, "draining")
      .Field("signal", signal_number)
      .Field("timeout", absl::FormatDuration(timeout))
      .Write();
  health->SetServingStatus(kServiceName, false);
  readiness.store(metrics::Readiness::kDraining);
  core.SetDraining();
  engine->Drain(timeout);
  // Every engine request has ended; let the calls deliver their last
  // messages (up to 5 s for slow clients), then stop the server: Shutdown
  // with an immediate deadline cancels what is left (health Watch streams)
  // and does not wait for idle client connections.
  const absl::Time flush_deadline = absl::Now() + absl::Seconds(5);
  while (core.open_calls() > 0 && absl::Now() < flush_deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (http) http->Stop();
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
  metrics_server.reset();  // it reads the engine at each scrape
  engine.reset();
  LogInfo("stopped");
  return 0;
}

}  // namespace memserve
