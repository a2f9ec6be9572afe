// memserve-bench: serving benchmark of a memserve server, after
// `vllm bench serve` (docs/bench.md has the metrics and the flags).
//
//   memserve-bench --server HOST:PORT [--dataset random|jsonl|sharegpt|demo]
//       [--dataset_path F] [--num_prompts N] [--request_rate R|inf]
//       [--burstiness B] [--max_concurrency C] [--duration 60s]
//       [--goodput "ttft:MS tpot:MS e2el:MS"] [--percentiles 50,90,99]
//       [--sweep request_rate=1,2,inf | max_concurrency=1,4,16] [--out_dir D]
//
// It asks the server for the model (GetModelInfo), draws --num_prompts
// requests from the dataset and fits them to the model's context (token
// counts from Tokenize), sends --num_warmups unmeasured requests (which must
// succeed), then sends the measured ones on the arrival schedule (arrivals.h)
// with at most --max_concurrency in flight, and prints the table of the
// summary (report.h). With --out_dir it writes the JSON result (config,
// summary, per-request arrays); with --sweep it runs one level per value and
// also writes sweep.csv and sweep.png (clients/bench/bench_plot.py).
//
// Exit codes: 0 done (some requests may have failed: see the errors in the
// table); 1 a level had no successful request, a warm-up request failed, or
// an output could not be written; 2 bad command line (or a dataset that does
// not parse or fit, or a warm-up request refused as INVALID_ARGUMENT); 3 the
// server cannot be reached or is UNAVAILABLE.
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/bench/arrivals.h"
#include "clients/bench/datasets.h"
#include "clients/bench/report.h"
#include "clients/bench/runner.h"
#include "clients/cli/cli_lib.h"
#include "memserve/v1/memserve.grpc.pb.h"
#include "nlohmann/json.hpp"

// Connection.
ABSL_FLAG(std::string, server, "localhost:50051", "server address, HOST:PORT");
ABSL_FLAG(std::string, api_key, "",
          "the API key sent as `authorization: Bearer <key>` (memserve serve --api_keys_file); "
          "default: the MEMSERVE_API_KEY environment variable");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "how long to wait for a connection and for the model to load before giving up "
          "(exit 3)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(300), "deadline of each request (inf = none)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file: the CA that signed the server's certificate; set: connect with TLS "
          "(default: plaintext)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file: this client's certificate chain, for a server that requires client "
          "certificates (mTLS); with --tls_key and --tls_ca");
ABSL_FLAG(std::string, tls_key, "", "PEM file: the private key of --tls_cert");

// Dataset.
ABSL_FLAG(std::string, dataset, "random",
          "random (token ids), jsonl ({\"prompt\", \"output_tokens\"|\"answer\"} per line), "
          "sharegpt (a ShareGPT JSON file), demo (the demo model's facts file)");
ABSL_FLAG(std::string, dataset_path, "",
          "the dataset's file (jsonl, sharegpt; demo: default models/demo/facts.jsonl)");
ABSL_FLAG(int, num_prompts, 100, "measured requests (per sweep level)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the arrival times, the random dataset and the draw order");
ABSL_FLAG(int, random_input_len, 32, "random: prompt tokens (BOS included)");
ABSL_FLAG(int, random_output_len, 64, "random: output tokens (max_tokens)");
ABSL_FLAG(double, random_range_ratio, 0.0,
          "random: lengths drawn uniformly from [len * (1 - r), len * (1 + r)], r in [0, 1)");
ABSL_FLAG(std::optional<int>, output_len, std::nullopt,
          "max_tokens of every request, instead of the dataset's expected output length");
ABSL_FLAG(std::optional<bool>, ignore_eos, std::nullopt,
          "--ignore_eos=true|false: generate max_tokens whatever the model says; unset = true "
          "for random, false for the others");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");

// Load.
ABSL_FLAG(double, request_rate, std::numeric_limits<double>::infinity(),
          "requests per second (arrivals: gamma intervals, Poisson with --burstiness 1); "
          "inf = all at once");
ABSL_FLAG(double, burstiness, 1.0,
          "gamma shape of the arrival intervals: 1 = Poisson, < 1 burstier, > 1 more regular");
ABSL_FLAG(std::optional<int>, max_concurrency, std::nullopt,
          "most requests in flight; others wait for a slot (unset = no limit)");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "stop sending new requests this long after the start (e.g. 60s); 0 = no limit");
ABSL_FLAG(int, num_warmups, 1, "unmeasured requests first, one at a time");

// Report.
ABSL_FLAG(std::string, percentiles, "50,90,99", "percentiles to report, in (0, 100]");
ABSL_FLAG(std::string, goodput, "",
          "SLOs for goodput, e.g. \"ttft:100 tpot:10 e2el:1000\" (ms; any of the three)");
ABSL_FLAG(double, itl_merge_us, 50,
          "token messages arriving within this many microseconds of the previous one are one "
          "delivery; its gap is split over its tokens (0 = every message on its own)");
ABSL_FLAG(std::string, sweep, "",
          "request_rate=V1,V2,... or max_concurrency=V1,V2,...: one benchmark per value");
ABSL_FLAG(std::string, out_dir, "",
          "write result.json (a sweep: PARAMETER_VALUE.json per level, sweep.csv, sweep.png) here");
ABSL_FLAG(bool, plot, true, "with --sweep and --out_dir: draw sweep.png (python3-matplotlib)");
ABSL_FLAG(std::string, plot_script, "",
          "the plot script; default: clients/bench/bench_plot.py in the runfiles or the "
          "current directory");

namespace memserve {
namespace bench {
namespace {

constexpr char kProgram[] = "memserve-bench";
constexpr int kMaxNumPrompts = 10'000'000;
constexpr int kMaxConcurrency = 100'000;
constexpr int kMaxLen = 1 << 20;
constexpr char kDemoFacts[] = "models/demo/facts.jsonl";

void Error(const std::string& message) { std::cerr << kProgram << ": " << message << "\n"; }

int UsageError(const std::string& message) {
  Error(absl::StrCat(message, " (see --help)"));
  return cli::kExitUsage;
}

int RpcError(const std::string& what, const grpc::Status& status) {
  Error(absl::StrCat(what, " failed: ", cli::FormatStatus(status)));
  return cli::ExitCodeFor(status.error_code());
}

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

std::string FormatRate(double rate) { return std::isinf(rate) ? "inf" : absl::StrCat(rate); }

// One value of --sweep (or the single run).
struct Level {
  std::string parameter;  // "request_rate", "max_concurrency", or "" (no sweep)
  std::string value;
  double request_rate = 0;
  std::optional<int> max_concurrency;
};

absl::StatusOr<std::vector<Level>> ParseSweep(absl::string_view sweep, const Level& base) {
  if (sweep.empty()) return std::vector<Level>{base};
  const std::vector<absl::string_view> kv = absl::StrSplit(sweep, absl::MaxSplits('=', 1));
  if (kv.size() != 2 || (kv[0] != "request_rate" && kv[0] != "max_concurrency")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sweep must be request_rate=V1,V2,... or max_concurrency=V1,V2,..., got '", sweep, "'"));
  }
  std::vector<Level> levels;
  for (absl::string_view v : absl::StrSplit(kv[1], ',')) {
    v = absl::StripAsciiWhitespace(v);
    Level level = base;
    level.parameter = std::string(kv[0]);
    level.value = std::string(v);
    if (kv[0] == "request_rate") {
      double rate = 0;
      if (!absl::SimpleAtod(v, &rate) || !(rate > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--sweep: request_rate '", v, "' must be a number > 0 (or inf)"));
      }
      level.request_rate = rate;
      level.value = FormatRate(rate);
    } else {
      int c = 0;
      if (!absl::SimpleAtoi(v, &c) || c < 1 || c > kMaxConcurrency) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--sweep: max_concurrency '", v, "' must be an integer in [1, ", kMaxConcurrency, "]"));
      }
      level.max_concurrency = c;
    }
    levels.push_back(std::move(level));
  }
  if (levels.size() < 2) {
    return absl::InvalidArgumentError("--sweep needs at least two values");
  }
  return levels;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// The plot script: --plot_script, else in this binary's runfiles, else
// relative to the current directory (the repository root).
std::string FindPlotScript(const char* argv0) {
  const std::string flag = absl::GetFlag(FLAGS_plot_script);
  if (!flag.empty()) return flag;
  const std::string runfiles =
      absl::StrCat(argv0, ".runfiles/memserve/clients/bench/bench_plot.py");
  if (access(runfiles.c_str(), R_OK) == 0) return runfiles;
  return "clients/bench/bench_plot.py";
}

// Runs /usr/bin/python3 SCRIPT CSV PNG; OK when it exits 0.
absl::Status Plot(const std::string& script, const std::string& csv, const std::string& png) {
  std::vector<std::string> args = {"/usr/bin/python3", script, csv, png};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return absl::InternalError("cannot run /usr/bin/python3");
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(script, " failed (exit status ",
                                            WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                                            "); the CSV is written"));
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<char*> rest = cli::ParseCommandLineWithExitCodes(
      argc, argv, "clients/bench/",
      "serving benchmark of a memserve server (after `vllm bench serve`): streaming Generate\n"
      "requests on a Poisson/gamma arrival schedule and/or a concurrency limit; reports TTFT,\n"
      "TPOT, per-token ITL, E2EL (mean, median, std, percentiles), throughputs, goodput and\n"
      "errors by status code.\n\n"
      "  memserve-bench --server HOST:PORT [--dataset random|jsonl|sharegpt|demo]\n"
      "      [--dataset_path F] [--num_prompts N] [--request_rate R|inf] [--burstiness B]\n"
      "      [--max_concurrency C] [--goodput \"ttft:MS tpot:MS e2el:MS\"]\n"
      "      [--sweep request_rate=1,2,inf | max_concurrency=1,4,16] [--out_dir D]\n\n"
      "exit codes: 0 done; 1 a level without any successful request, a failed warm-up, or an\n"
      "output not written; 2 bad command line or dataset; 3 server unreachable or UNAVAILABLE.");
  if (rest.size() > 1) return UsageError(absl::StrCat("unexpected argument '", rest[1], "'"));

  // Every flag is checked before anything is sent.
  const std::string dataset = absl::GetFlag(FLAGS_dataset);
  if (dataset != "random" && dataset != "jsonl" && dataset != "sharegpt" && dataset != "demo") {
    return UsageError(
        absl::StrCat("--dataset must be random, jsonl, sharegpt or demo, got '", dataset, "'"));
  }
  std::string dataset_path = absl::GetFlag(FLAGS_dataset_path);
  if (dataset == "demo" && dataset_path.empty()) dataset_path = kDemoFacts;
  if ((dataset == "jsonl" || dataset == "sharegpt") && dataset_path.empty()) {
    return UsageError(absl::StrCat("--dataset ", dataset, " needs --dataset_path"));
  }
  if (dataset == "random" && !dataset_path.empty()) {
    return UsageError("--dataset_path is not used by --dataset random");
  }
  const int num_prompts = absl::GetFlag(FLAGS_num_prompts);
  if (num_prompts < 1 || num_prompts > kMaxNumPrompts) {
    return UsageError(
        absl::StrCat("--num_prompts must be in [1, ", kMaxNumPrompts, "], got ", num_prompts));
  }
  const int input_len = absl::GetFlag(FLAGS_random_input_len);
  if (input_len < 1 || input_len > kMaxLen) {
    return UsageError(
        absl::StrCat("--random_input_len must be in [1, ", kMaxLen, "], got ", input_len));
  }
  const int output_len = absl::GetFlag(FLAGS_random_output_len);
  if (output_len < 1 || output_len > kMaxLen) {
    return UsageError(
        absl::StrCat("--random_output_len must be in [1, ", kMaxLen, "], got ", output_len));
  }
  const double range_ratio = absl::GetFlag(FLAGS_random_range_ratio);
  if (!(range_ratio >= 0 && range_ratio < 1)) {
    return UsageError(absl::StrCat("--random_range_ratio must be in [0, 1), got ", range_ratio));
  }
  const std::optional<int> output_len_flag = absl::GetFlag(FLAGS_output_len);
  if (output_len_flag && (*output_len_flag < 1 || *output_len_flag > kMaxLen)) {
    return UsageError(
        absl::StrCat("--output_len must be in [1, ", kMaxLen, "], got ", *output_len_flag));
  }
  ArrivalOptions arrivals;
  arrivals.request_rate = absl::GetFlag(FLAGS_request_rate);
  arrivals.burstiness = absl::GetFlag(FLAGS_burstiness);
  arrivals.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = ValidateArrivals(arrivals); !s.ok()) {
    return UsageError(std::string(s.message()));
  }
  const std::optional<int> max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  if (max_concurrency && (*max_concurrency < 1 || *max_concurrency > kMaxConcurrency)) {
    return UsageError(absl::StrCat("--max_concurrency must be in [1, ", kMaxConcurrency, "], got ",
                                   *max_concurrency));
  }
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  if (duration < absl::ZeroDuration()) return UsageError("--duration must be >= 0");
  const int num_warmups = absl::GetFlag(FLAGS_num_warmups);
  if (num_warmups < 0 || num_warmups > 1000) {
    return UsageError(absl::StrCat("--num_warmups must be in [0, 1000], got ", num_warmups));
  }
  absl::StatusOr<std::vector<double>> percentiles =
      ParsePercentiles(absl::GetFlag(FLAGS_percentiles));
  if (!percentiles.ok()) return UsageError(std::string(percentiles.status().message()));
  absl::StatusOr<Slo> slo = ParseGoodput(absl::GetFlag(FLAGS_goodput));
  if (!slo.ok()) return UsageError(std::string(slo.status().message()));
  const double itl_merge_us = absl::GetFlag(FLAGS_itl_merge_us);
  if (!(itl_merge_us >= 0 && itl_merge_us <= 1e6)) {
    return UsageError(absl::StrCat("--itl_merge_us must be in [0, 1000000], got ", itl_merge_us));
  }
  const double temperature = absl::GetFlag(FLAGS_temperature);
  Level base;
  base.request_rate = arrivals.request_rate;
  base.max_concurrency = max_concurrency;
  absl::StatusOr<std::vector<Level>> levels = ParseSweep(absl::GetFlag(FLAGS_sweep), base);
  if (!levels.ok()) return UsageError(std::string(levels.status().message()));
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (!out_dir.empty()) {
    struct stat st;
    if (stat(out_dir.c_str(), &st) != 0 && mkdir(out_dir.c_str(), 0755) != 0) {
      return UsageError(absl::StrCat("--out_dir: cannot create ", out_dir));
    }
  }

  // The dataset's entries (before the model is known).
  std::vector<DatasetEntry> entries;
  if (dataset != "random") {
    absl::StatusOr<std::string> content = ReadFile(dataset_path);
    if (!content.ok()) {
      return UsageError(absl::StrCat("--dataset_path: ", content.status().message()));
    }
    absl::StatusOr<std::vector<DatasetEntry>> parsed =
        dataset == "jsonl"      ? ParseJsonlDataset(*content)
        : dataset == "sharegpt" ? ParseShareGptDataset(*content)
                                : ParseDemoFacts(*content);
    if (!parsed.ok()) {
      return UsageError(absl::StrCat("--dataset_path ", dataset_path, " (", dataset,
                                     "): ", parsed.status().message()));
    }
    entries = *std::move(parsed);
  }

  const std::string target = absl::GetFlag(FLAGS_server);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      cli::ChannelCredentialsFor({absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                                  absl::GetFlag(FLAGS_tls_key)});
  if (!credentials.ok()) return UsageError(std::string(credentials.status().message()));
  cli::DropGrpcLogs();
  std::shared_ptr<grpc::Channel> channel = cli::MakeChannel(
      target, *std::move(credentials), cli::ApiKeyFromFlagOrEnv(absl::GetFlag(FLAGS_api_key)));
  const absl::Duration connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  const grpc::Status connected = cli::WaitForServer(channel, connect_timeout);
  if (!connected.ok()) {
    Error(cli::CannotReachMessage(target, connected));
    return cli::kExitUnreachable;
  }
  std::unique_ptr<v1::MemServe::Stub> stub = v1::MemServe::NewStub(channel);
  // A server still loading its model answers UNAVAILABLE: wait for it, up to
  // --connect_timeout.
  v1::ModelInfo info;
  const absl::Time ready_by = absl::Now() + connect_timeout;
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineAfter(connect_timeout));
    const grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() >= ready_by) {
      return RpcError("GetModelInfo", s);
    }
    absl::SleepFor(absl::Milliseconds(100));
  }

  if (dataset == "random") {
    RandomDatasetOptions r;
    r.count = num_prompts;
    r.input_len = input_len;
    r.output_len = output_len;
    r.range_ratio = range_ratio;
    r.seed = arrivals.seed;
    r.vocab_size =
        info.tokenizer().vocab_size() > 0 ? info.tokenizer().vocab_size() : info.vocab_size();
    r.bos_id = info.tokenizer().bos_id();
    r.eos_id = info.tokenizer().eos_id();
    entries = MakeRandomDataset(r);
  }
  grpc::Status tokenize_error;
  const TokenCounter count_tokens = [&](const std::string& text,
                                        bool add_bos) -> absl::StatusOr<int> {
    v1::TokenizeRequest req;
    req.set_text(text);
    req.set_add_bos(add_bos);
    v1::TokenizeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineAfter(connect_timeout));
    tokenize_error = stub->Tokenize(&ctx, req, &resp);
    if (!tokenize_error.ok()) return absl::UnavailableError("Tokenize");
    return resp.token_ids_size();
  };
  PrepareOptions prepare;
  prepare.num_prompts = num_prompts + num_warmups;
  prepare.seed = arrivals.seed;
  prepare.output_len = output_len_flag;
  prepare.max_seqlen = info.max_seqlen();
  PrepareReport prepared;
  absl::StatusOr<std::vector<BenchRequest>> requests =
      PrepareRequests(entries, prepare, count_tokens, &prepared);
  if (!requests.ok()) {
    if (!tokenize_error.ok()) return RpcError("Tokenize of a prompt", tokenize_error);
    return UsageError(absl::StrCat("--dataset ", dataset, ": ", requests.status().message()));
  }
  std::vector<BenchRequest> warmups(requests->begin(), requests->begin() + num_warmups);
  requests->erase(requests->begin(), requests->begin() + num_warmups);

  const bool ignore_eos = absl::GetFlag(FLAGS_ignore_eos).value_or(dataset == "random");
  cli::SamplingOptions sampling;
  sampling.temperature = temperature;
  sampling.ignore_eos = ignore_eos;
  RunOptions run;
  run.sampling = cli::BuildSamplingParams(sampling);
  run.timeout = absl::GetFlag(FLAGS_timeout);
  run.itl_merge_ms = itl_merge_us / 1000.0;
  run.duration = duration;

  std::cout << absl::StrFormat(
                   "%s: %s, model %s (context %d tokens); dataset %s%s: %d prompts "
                   "(%d skipped: no room in the context; %d with max_tokens clipped to fit), "
                   "ignore_eos %s\n",
                   kProgram, target, info.model_name(), info.max_seqlen(), dataset,
                   dataset_path.empty() ? "" : absl::StrCat(" (", dataset_path, ")"), num_prompts,
                   prepared.skipped, prepared.clipped, ignore_eos ? "true" : "false")
            << std::flush;

  if (num_warmups > 0) {
    RunOptions w = run;
    w.requests = warmups;
    w.arrival_s.assign(warmups.size(), 0.0);
    w.max_concurrency = 1;
    w.duration = absl::ZeroDuration();
    w.id_prefix = "bench-warmup-";
    const RunResult result = Run(*stub, w);
    for (const RequestRecord& r : result.records) {
      if (r.ok()) continue;
      Error(absl::StrCat("warm-up failed: ", r.code, ": ", r.message, "; nothing measured"));
      grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
      for (int i = 0; i <= grpc::StatusCode::UNAUTHENTICATED; ++i) {
        if (cli::StatusCodeName(static_cast<grpc::StatusCode>(i)) == r.code) {
          code = static_cast<grpc::StatusCode>(i);
        }
      }
      return cli::ExitCodeFor(code);
    }
  }

  nlohmann::json config = {
      {"date", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone())},
      {"server", target},
      {"model_name", info.model_name()},
      {"backend", info.backend()},
      {"max_seqlen", info.max_seqlen()},
      {"dataset", dataset},
      {"dataset_path", dataset_path},
      {"num_prompts", num_prompts},
      {"skipped_prompts", prepared.skipped},
      {"clipped_max_tokens", prepared.clipped},
      {"seed", arrivals.seed},
      {"burstiness", arrivals.burstiness},
      {"duration_limit_s", absl::ToDoubleSeconds(duration)},
      {"num_warmups", num_warmups},
      {"temperature", temperature},
      {"ignore_eos", ignore_eos},
      {"output_len", output_len_flag ? nlohmann::json(*output_len_flag) : nlohmann::json()},
      {"percentiles", *percentiles},
      {"goodput_slo_ms",
       {{"ttft", slo->ttft_ms ? nlohmann::json(*slo->ttft_ms) : nlohmann::json()},
        {"tpot", slo->tpot_ms ? nlohmann::json(*slo->tpot_ms) : nlohmann::json()},
        {"e2el", slo->e2el_ms ? nlohmann::json(*slo->e2el_ms) : nlohmann::json()}}},
      {"itl_merge_us", itl_merge_us},
  };
  if (dataset == "random") {
    config["random_input_len"] = input_len;
    config["random_output_len"] = output_len;
    config["random_range_ratio"] = range_ratio;
  }

  int exit_code = cli::kExitOk;
  const bool sweeping = levels->size() > 1;
  std::vector<std::string> csv = {CsvHeader(*percentiles)};
  for (const Level& level : *levels) {
    ArrivalOptions a = arrivals;
    a.request_rate = level.request_rate;
    run.requests = *requests;
    run.arrival_s = ArrivalTimes(static_cast<int64_t>(requests->size()), a);
    run.max_concurrency = level.max_concurrency;
    run.id_prefix =
        sweeping ? absl::StrCat("bench-", level.parameter, "-", level.value, "-") : "bench-";
    const std::string load =
        absl::StrCat("request rate ", FormatRate(level.request_rate), ", burstiness ",
                     arrivals.burstiness, ", max concurrency ",
                     level.max_concurrency ? absl::StrCat(*level.max_concurrency) : "unlimited");
    std::cout << absl::StrFormat("%s: %d requests, %s\n", kProgram, requests->size(), load)
              << std::flush;
    const RunResult result = Run(*stub, run);
    const Summary summary = MakeSummary(result.records, result.duration_s, *percentiles, *slo);
    const std::string title = sweeping ? absl::StrCat("Serving Benchmark Result (", level.parameter,
                                                      "=", level.value, ")")
                                       : "Serving Benchmark Result";
    std::cout << FormatTable(summary, title) << std::flush;
    if (summary.completed == 0) {
      Error(absl::StrCat("no request succeeded (", load, ")"));
      exit_code = cli::kExitOther;
    }
    if (sweeping) csv.push_back(CsvRow(level.parameter, level.value, summary));
    if (!out_dir.empty()) {
      nlohmann::json c = config;
      c["request_rate"] = FormatRate(level.request_rate);
      c["max_concurrency"] =
          level.max_concurrency ? nlohmann::json(*level.max_concurrency) : nlohmann::json();
      if (sweeping) c["sweep"] = {{"parameter", level.parameter}, {"value", level.value}};
      const nlohmann::json j = {{"config", c},
                                {"summary", SummaryToJson(summary)},
                                {"requests", RecordsToJson(result.records)}};
      const std::string path = absl::StrCat(
          out_dir, "/", sweeping ? absl::StrCat(level.parameter, "_", level.value) : "result",
          ".json");
      if (absl::Status s = WriteFile(path, j.dump(1) + "\n"); !s.ok()) {
        Error(std::string(s.message()));
        exit_code = cli::kExitOther;
      }
    }
  }
  if (sweeping && !out_dir.empty()) {
    const std::string csv_path = absl::StrCat(out_dir, "/sweep.csv");
    if (absl::Status s = WriteFile(csv_path, absl::StrJoin(csv, "\n") + "\n"); !s.ok()) {
      Error(std::string(s.message()));
      return cli::kExitOther;
    }
    std::cout << absl::StrFormat("%s: wrote %s\n", kProgram, csv_path);
    if (absl::GetFlag(FLAGS_plot)) {
      const std::string png = absl::StrCat(out_dir, "/sweep.png");
      if (absl::Status s = Plot(FindPlotScript(argv[0]), csv_path, png); !s.ok()) {
        Error(absl::StrCat("plot: ", s.message()));
        return cli::kExitOther;
      }
      std::cout << absl::StrFormat("%s: wrote %s\n", kProgram, png);
    }
  }
  return exit_code;
}

}  // namespace
}  // namespace bench
}  // namespace memserve

int main(int argc, char** argv) { return memserve::bench::Main(argc, argv); }
