// memserve-loadgen: measures a memserve server under concurrent streaming
// Generate calls.
//
//   memserve-loadgen --server HOST:PORT --streams 8 --requests 200
//       --max_tokens 128 [--prompt TEXT | --prompts_file F.jsonl] [--json_out F.json]
//
// It first asks the server for the model (GetModelInfo) and the prompts'
// lengths (Tokenize): without --max_tokens it picks the largest value up to
// 128 that fits the model's context after the longest prompt, and a
// --max_tokens that cannot fit is refused before any call. Each of --streams
// threads then runs streaming Generate calls back to back, until --requests
// calls were started in all or --duration has passed. The --warmup unmeasured
// calls must succeed (else it stops: nothing would be measured but errors).
// Per measured call it records the time to the first token (TTFT), the times
// between consecutive token messages (ITL) and the tokens received.
// Throughput and latencies count only the calls that succeeded; failed calls
// are reported apart, by status code with the server's message.
//
// Exit codes: 0 the run finished (some measured calls may have failed: see
// the report); 1 no measured call succeeded, a warm-up call failed, or
// --json_out could not be written; 2 bad command line (also a --max_tokens
// that does not fit the model, or a warm-up call refused as
// INVALID_ARGUMENT); 3 the server cannot be reached or is UNAVAILABLE.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "clients/cli/cli_lib.h"
#include "clients/loadgen/loadgen_lib.h"
#include "memserve/v1/memserve.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:50051", "server address, HOST:PORT");
ABSL_FLAG(int, streams, 1, "concurrent client streams (threads), each one call at a time");
ABSL_FLAG(std::optional<int>, requests, std::nullopt,
          "measured calls in all streams together; default 100, or unlimited with --duration");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "stop starting calls after this long (e.g. 60s); 0 = no limit");
ABSL_FLAG(int, warmup, 1, "unmeasured calls before the measured phase");
ABSL_FLAG(std::string, prompt, "The memory layer of this model", "the prompt of every call");
ABSL_FLAG(std::string, prompts_file, "",
          "JSON lines {\"prompt\": ...}; calls cycle through them (instead of --prompt)");
ABSL_FLAG(std::optional<int>, max_tokens, std::nullopt,
          "max_tokens of every call; unset = 128, or less so that the longest prompt plus "
          "max_tokens fits the model's context (GetModelInfo)");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "RNG seed of every call (call i uses seed + i); unset = random");
ABSL_FLAG(bool, ignore_eos, true,
          "ignore EOS, so that every call generates exactly max_tokens tokens");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(300), "deadline of each call");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "how long to wait for a connection before giving up (exit 3)");
ABSL_FLAG(std::string, json_out, "", "also write the report as a JSON object to this file");

namespace memserve {
namespace loadgen {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kProgram[] = "memserve-loadgen";

void Error(const std::string& message) { std::cerr << kProgram << ": " << message << "\n"; }

int UsageError(const std::string& message) {
  Error(absl::StrCat(message, " (see --help)"));
  return cli::kExitUsage;
}

// A failed preparatory call: one line, and its exit code.
int RpcError(const std::string& what, const grpc::Status& status) {
  Error(absl::StrCat(what, " failed: ", cli::FormatStatus(status)));
  return cli::ExitCodeFor(status.error_code());
}

// The code cli::StatusCodeName calls `name`; UNKNOWN for none.
grpc::StatusCode StatusCodeNamed(const std::string& name) {
  for (int i = 0; i <= grpc::StatusCode::UNAUTHENTICATED; ++i) {
    const auto code = static_cast<grpc::StatusCode>(i);
    if (cli::StatusCodeName(code) == name) return code;
  }
  return grpc::StatusCode::UNKNOWN;
}

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Plan {
  std::vector<std::string> prompts;
  v1::SamplingParams sampling;
  std::optional<uint64_t> seed;
  absl::Duration timeout;
};

// One streaming Generate call, measured. Never fails: errors are recorded.
RequestRecord RunOne(v1::MemServe::Stub& stub, const Plan& plan, int64_t index,
                     const std::string& id_prefix) {
  v1::GenerateRequest req;
  req.set_text(plan.prompts[index % plan.prompts.size()]);
  *req.mutable_sampling() = plan.sampling;
  if (plan.seed) req.mutable_sampling()->set_seed(*plan.seed + static_cast<uint64_t>(index));
  req.set_request_id(absl::StrCat(id_prefix, index));

  grpc::ClientContext ctx;
  if (plan.timeout != absl::InfiniteDuration() && plan.timeout > absl::ZeroDuration()) {
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(plan.timeout));
  }
  RequestRecord rec;
  const Clock::time_point start = Clock::now();
  Clock::time_point last = start;
  bool got_final = false;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_token()) {
      const Clock::time_point now = Clock::now();
      if (rec.completion_tokens == 0) {
        rec.ttft_ms = MsBetween(start, now);
      } else {
        rec.itl_ms.push_back(MsBetween(last, now));
      }
      last = now;
      ++rec.completion_tokens;
    } else if (msg.has_final()) {
      got_final = true;
    }
  }
  const grpc::Status status = reader->Finish();
  rec.latency_ms = MsBetween(start, Clock::now());
  if (!status.ok()) {
    rec.code = cli::StatusCodeName(status.error_code());
    rec.message = status.error_message();
  } else if (!got_final) {
    rec.code = "INTERNAL";
    rec.message = "the stream ended OK without a final message";
  }
  return rec;
}

// Runs calls [0, limit) (limit < 0: unlimited) on `streams` threads until
// `end` (if set), and returns their records.
std::vector<RequestRecord> RunPhase(v1::MemServe::Stub& stub, const Plan& plan, int streams,
                                    int64_t limit, std::optional<Clock::time_point> end,
                                    const std::string& id_prefix) {
  std::atomic<int64_t> next{0};
  std::vector<std::vector<RequestRecord>> per_stream(streams);
  std::vector<std::thread> threads;
  threads.reserve(streams);
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      while (true) {
        if (end && Clock::now() >= *end) return;
        const int64_t i = next.fetch_add(1);
        if (limit >= 0 && i >= limit) return;
        per_stream[s].push_back(RunOne(stub, plan, i, id_prefix));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<RequestRecord> all;
  for (std::vector<RequestRecord>& v : per_stream) {
    all.insert(all.end(), std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
  }
  return all;
}

int Main(int argc, char** argv) {
  std::vector<char*> rest = cli::ParseCommandLineWithExitCodes(
      argc, argv, "clients/loadgen/",
      "load generator for a memserve server: concurrent streaming Generate calls;\n"
      "reports decode throughput, TTFT and inter-token latency.\n\n"
      "  memserve-loadgen --server HOST:PORT --streams N --requests R [--max_tokens T]\n"
      "      [--prompt TEXT | --prompts_file F.jsonl] [--duration 60s] [--json_out F.json]\n\n"
      "Without --max_tokens it picks what fits the model's context (GetModelInfo).\n"
      "Throughput counts successful calls only; failures are listed by status code.\n\n"
      "exit codes: 0 finished; 1 no measured call succeeded, a warm-up call failed, or\n"
      "--json_out failed; 2 bad command line (or --max_tokens that does not fit the model);\n"
      "3 server unreachable or UNAVAILABLE.");
  if (rest.size() > 1) return UsageError(absl::StrCat("unexpected argument '", rest[1], "'"));

  const int streams = absl::GetFlag(FLAGS_streams);
  if (streams < 1 || streams > 4096) return UsageError("--streams must be in [1, 4096]");
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  if (duration < absl::ZeroDuration()) return UsageError("--duration must be >= 0");
  const std::optional<int> requests_flag = absl::GetFlag(FLAGS_requests);
  if (requests_flag && *requests_flag < 1) return UsageError("--requests must be >= 1");
  const int warmup = absl::GetFlag(FLAGS_warmup);
  if (warmup < 0) return UsageError("--warmup must be >= 0");
  const std::optional<int> max_tokens_flag = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens_flag && *max_tokens_flag < 1) return UsageError("--max_tokens must be >= 1");
  // Without --requests: 100 calls, or as many as --duration allows.
  const int64_t limit =
      requests_flag ? *requests_flag : (duration > absl::ZeroDuration() ? -1 : 100);

  Plan plan;
  const std::string prompts_file = absl::GetFlag(FLAGS_prompts_file);
  if (!prompts_file.empty()) {
    std::ifstream in(prompts_file, std::ios::binary);
    if (!in) return UsageError(absl::StrCat("--prompts_file: cannot read ", prompts_file));
    std::stringstream content;
    content << in.rdbuf();
    absl::StatusOr<std::vector<std::string>> prompts = ParsePromptsJsonl(content.str());
    if (!prompts.ok()) {
      return UsageError(
          absl::StrCat("--prompts_file ", prompts_file, ": ", prompts.status().message()));
    }
    plan.prompts = *std::move(prompts);
  } else {
    plan.prompts = {absl::GetFlag(FLAGS_prompt)};
  }
  const std::string target = absl::GetFlag(FLAGS_server);
  std::shared_ptr<grpc::Channel> channel = cli::MakeChannel(target);
  const grpc::Status connected = cli::WaitForServer(channel, absl::GetFlag(FLAGS_connect_timeout));
  if (!connected.ok()) {
    Error(cli::CannotReachMessage(target, connected));
    return cli::kExitUnreachable;
  }
  std::unique_ptr<v1::MemServe::Stub> stub = v1::MemServe::NewStub(channel);

  // What fits the model: its context, and the longest prompt in tokens.
  v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineAfter(absl::GetFlag(FLAGS_connect_timeout)));
    const grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return RpcError("GetModelInfo", s);
  }
  int longest_prompt = 0;
  for (const std::string& prompt :
       std::set<std::string>(plan.prompts.begin(), plan.prompts.end())) {
    v1::TokenizeRequest req;
    req.set_text(prompt);
    v1::TokenizeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineAfter(absl::GetFlag(FLAGS_connect_timeout)));
    const grpc::Status s = stub->Tokenize(&ctx, req, &resp);
    if (!s.ok()) return RpcError("Tokenize of a prompt", s);
    longest_prompt = std::max(longest_prompt, resp.token_ids_size());
  }
  const absl::StatusOr<int> max_tokens =
      PickMaxTokens(max_tokens_flag, longest_prompt, info.max_seqlen());
  if (!max_tokens.ok()) return UsageError(std::string(max_tokens.status().message()));

  cli::SamplingOptions sampling;
  sampling.temperature = absl::GetFlag(FLAGS_temperature);
  sampling.max_tokens = *max_tokens;
  sampling.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  plan.sampling = cli::BuildSamplingParams(sampling);
  plan.seed = absl::GetFlag(FLAGS_seed);
  plan.timeout = absl::GetFlag(FLAGS_timeout);

  std::cout << absl::StrFormat(
                   "%s: %s, model %s (context %d tokens), longest prompt %d tokens, "
                   "max_tokens %d%s\n",
                   kProgram, target, info.model_name(), info.max_seqlen(), longest_prompt,
                   *max_tokens, max_tokens_flag ? "" : " (picked to fit the context)")
            << std::flush;

  if (warmup > 0) {
    const std::vector<RequestRecord> records =
        RunPhase(*stub, plan, std::min(streams, warmup), warmup, std::nullopt, "loadgen-warmup-");
    const Report w = MakeReport(records, std::min(streams, warmup), 1.0);
    if (!w.errors.empty()) {
      // Measuring now would only time errors.
      const auto& [code, e] = *w.errors.begin();
      Error(absl::StrCat("warm-up failed: ", w.requests - w.ok, " of ", w.requests,
                         " call(s) failed, e.g. ", code, ": ", e.example, "; nothing measured"));
      return cli::ExitCodeFor(StatusCodeNamed(code));
    }
  }

  std::optional<Clock::time_point> end;
  const Clock::time_point start = Clock::now();
  if (duration > absl::ZeroDuration()) {
    end = start + std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(duration));
  }
  const std::vector<RequestRecord> records = RunPhase(*stub, plan, streams, limit, end, "loadgen-");
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();

  const Report report = MakeReport(records, streams, wall_s);
  std::cout << FormatReport(report) << std::flush;

  int code = report.ok > 0 ? cli::kExitOk : cli::kExitOther;
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream out(json_out);
    out << ReportToJson(report).dump(2) << "\n";
    out.close();
    if (!out) {
      Error(absl::StrCat("cannot write --json_out ", json_out));
      code = cli::kExitOther;
    }
  }
  if (report.ok == 0) Error("no measured call succeeded");
  return code;
}

}  // namespace
}  // namespace loadgen
}  // namespace memserve

int main(int argc, char** argv) { return memserve::loadgen::Main(argc, argv); }
