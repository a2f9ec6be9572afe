// memserve: the command-line entry point.
//
//   memserve serve [--model DIR] [--listen HOST:PORT] [serving flags]   (server/serve.h)
//   memserve generate [--model DIR] [--device cpu|cuda] [--kv_cache_dtype auto|f32|bf16]
//       [--cpu_matmul_precision exact|bf16] --prompt TEXT [--max_tokens N]
//   [--temperature T]
//       [--top_k K] [--top_p P] [--min_p M] [--seed S] [--stop S1,S2]
//       [--logprobs K] [--output text|jsonl]
//   memserve [COMMAND] --help
//
// The serve flags are defined in serve.cc, the generate flags here; --model,
// --threads, --device, --memory_shards, --memory_placement, --memory_gpus, --kv_cache_dtype and
// --cpu_matmul_precision belong to both (MemserveProgram below, server/command_line.h). Exit codes:
// 0 success, 2 bad arguments or request (the message names the field), 1 anything else (e.g. a
// corrupt checkpoint, named in the message).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "clients/common/generation_jsonl.h"
#include "engine/backend_factory.h"
#include "engine/generate.h"
#include "engine/load_model.h"
#include "engine/request/validate.h"
#include "server/command_line.h"
#include "server/serve.h"

ABSL_FLAG(std::string, model, "",
          "serving checkpoint directory (config.json, model.safetensors); default: the "
          "bundled demo model (models/demo)");
ABSL_FLAG(std::string, prompt, "", "prompt text (BOS is added)");
ABSL_FLAG(std::optional<int>, max_tokens, std::nullopt,
          "maximum tokens to generate; unset = min(256, the context left after the prompt), "
          "as the server does");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = off");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(double, min_p, 0.0, "drop tokens below min_p * p(best); 0 = off");
ABSL_FLAG(int64_t, seed, -1, "RNG seed; -1 = random");
ABSL_FLAG(std::vector<std::string>, stop, {}, "comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after EOS");
ABSL_FLAG(int, logprobs, 0, "top-n alternatives per token in jsonl output (0..20)");
ABSL_FLAG(std::string, output, "text", "text: stream the text; jsonl: one JSON object per token");
ABSL_FLAG(int, threads, 0, "CPU threads; 0 = all cores");
ABSL_FLAG(int, memory_shards, 1,
          "column shards of the memory value table (1..64); on the CPU, virtual shards that "
          "run the sharded code path with identical results");
ABSL_FLAG(std::string, memory_placement, "auto",
          "where the memory value tables go: auto (device if it fits beside the model and the "
          "K/V cache, else sharded over the GPUs, else host), device (GPU 0), sharded (split by "
          "columns over --memory_gpus GPUs), host (host memory, read over PCIe); on --device cpu "
          "only auto and host (the checkpoint mapping, in place)");
ABSL_FLAG(std::string, memory_gpus, "all",
          "GPUs the memory pool may use (the first N): all, or N in [1, 64]; cuda only");
ABSL_FLAG(std::string, device, "cpu",
          "where the model runs: cpu, or cuda (one NVIDIA GPU; exits 1 saying why when the build "
          "has no CUDA or no GPU is visible)");
ABSL_FLAG(std::string, cpu_matmul_precision, "exact",
          "how the CPU multiplies bf16 weights: exact (fp32 products and sums; a token's result "
          "does not depend on the batch) or bf16 (activations rounded to bf16, fp32 sums, on "
          "AVX512-BF16 and AMX: several times the prefill speed; needs a CPU with AVX512-BF16)");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "element type of the K/V cache: auto (bf16 on cuda, f32 on cpu), f32, or bf16 (cuda "
          "only)");

namespace memserve {
namespace {

// The bundled demo model: ./models/demo when run from the repository root,
// else the copy in the binary's Bazel runfiles.
std::string DefaultModelDir() {
  const std::string in_repo = "models/demo";
  if (std::filesystem::exists(in_repo + "/config.json")) return in_repo;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::string runfiles = exe.string() + ".runfiles/memserve/models/demo";
    if (std::filesystem::exists(runfiles + "/config.json")) return runfiles;
  }
  return in_repo;  // the load error will name it
}

int ExitCodeFor(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Fail(const absl::Status& s) {
  std::cerr << "error: " << s.message() << "\n";
  return ExitCodeFor(s);
}

int RunGenerate() {
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output != "text" && output != "jsonl") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--output must be 'text' or 'jsonl', got '", output, "'")));
  }
  std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) dir = DefaultModelDir();

  GenerateOptions opts;
  opts.prompt = absl::GetFlag(FLAGS_prompt);
  const std::optional<int> max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens) opts.max_tokens = *max_tokens;
  opts.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  opts.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  opts.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  opts.sampling.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  const int64_t seed = absl::GetFlag(FLAGS_seed);
  if (seed < -1) return Fail(absl::InvalidArgumentError("--seed must be >= 0 (or -1 for random)"));
  opts.sampling.has_seed = seed >= 0;
  opts.sampling.seed = seed >= 0 ? static_cast<uint64_t>(seed) : 0;
  opts.stop = absl::GetFlag(FLAGS_stop);
  opts.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  opts.logprobs = absl::GetFlag(FLAGS_logprobs);
  // Check what needs no model first, so bad flags fail fast.
  if (absl::Status s = ValidateSamplingParams(opts.sampling); !s.ok()) return Fail(s);
  LoadOptions load;
  load.model_dir = dir;
  load.threads = absl::GetFlag(FLAGS_threads);
  load.memory_shards = absl::GetFlag(FLAGS_memory_shards);
  absl::StatusOr<Device> device = ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  load.device = *device;
  absl::StatusOr<MemoryPoolFlags> pool_flags = ParseMemoryPoolFlags(*device);
  if (!pool_flags.ok()) return Fail(pool_flags.status());
  load.memory_placement = pool_flags->placement;
  load.memory_gpus = pool_flags->gpus;
  absl::StatusOr<KvCacheDtype> kv_dtype = ParseKvCacheDtype(absl::GetFlag(FLAGS_kv_cache_dtype));
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  if (absl::Status s = ResolveKvCacheDtype(*device, *kv_dtype).status(); !s.ok()) return Fail(s);
  load.kv_cache_dtype = *kv_dtype;
  absl::StatusOr<CpuMatMulPrecision> precision =
      ParseCpuMatMulPrecision(absl::GetFlag(FLAGS_cpu_matmul_precision));
  if (!precision.ok()) return Fail(precision.status());
  if (absl::Status s = CheckCpuMatMulPrecision(*device, *precision); !s.ok()) return Fail(s);
  load.cpu_matmul_precision = *precision;

  absl::StatusOr<LoadedModel> loaded = LoadModel(load);
  if (!loaded.ok()) return Fail(loaded.status());
  const std::unique_ptr<Model>& model = loaded->model;
  const std::unique_ptr<Tokenizer>& tokenizer = loaded->tokenizer;
  if (!max_tokens && !opts.prompt.empty()) {
    // The server's rule for an unset max_tokens (docs/api.md), from the one
    // request module; a prompt that leaves no room fails here.
    absl::StatusOr<std::vector<int>> ids = tokenizer->Encode(opts.prompt, /*add_bos=*/true);
    if (!ids.ok()) return Fail(ids.status());
    absl::StatusOr<int> resolved = ResolveMaxTokens(std::nullopt, static_cast<int>(ids->size()),
                                                    kDefaultMaxTokens, model->config());
    if (!resolved.ok()) return Fail(resolved.status());
    opts.max_tokens = *resolved;
  }

  const bool jsonl = output == "jsonl";
  auto on_token = [&](const TokenEvent& ev) {
    if (jsonl) {
      jsonl::TokenLine line{ev.id, ev.text, ev.logprob, {}};
      for (const TokenLogprob& t : ev.top) {
        line.top.push_back({t.id, t.logprob, tokenizer->TokenBytes(t.id)});
      }
      std::cout << jsonl::FormatToken(line) << "\n";
    } else {
      std::cout << ev.text;
    }
    std::cout.flush();
  };
  auto result = Generate(*model, *tokenizer, opts, on_token);
  if (!result.ok()) return Fail(result.status());
  if (jsonl) {
    jsonl::FinalLine fin;
    fin.finish_reason = FinishReasonName(result->finish_reason);
    fin.text = result->trailing_text;
    fin.prompt_tokens = result->prompt_tokens;
    fin.completion_tokens = result->completion_tokens;
    if (!result->stop_string.empty()) fin.stop_string = result->stop_string;
    if (result->stop_token_id >= 0) fin.stop_token_id = result->stop_token_id;
    std::cout << jsonl::FormatFinal(fin) << "\n";
  } else {
    std::cout << result->trailing_text << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace memserve

const memserve::Program& MemserveProgram() {
  static const auto* program = new memserve::Program{
      "memserve",
      "inference for memory-augmented Llama models.",
      "Exit codes: 0 ok; 2 bad arguments (the message names the flag); 1 anything else (a "
      "model that does not load, a port in use).",
      {{"serve",
        "[--model DIR] [--listen HOST:PORT] [flags]",
        "the gRPC server (memserve.v1, docs/api.md): loads the model, serves it until SIGTERM, "
        "then drains",
        {"server/serve.cc"},
        {"model", "threads", "device", "memory_shards", "memory_placement", "memory_gpus",
         "kv_cache_dtype", "cpu_matmul_precision"}},
       {"generate",
        "[--model DIR] --prompt TEXT [flags]",
        "one request in this process, no server; the text (or JSONL) goes to stdout",
        {"server/memserve_main.cc"},
        {}}}};
  return *program;
}

int main(int argc, char** argv) {
  const memserve::Program& program = MemserveProgram();
  absl::StatusOr<memserve::ParsedCommandLine> command_line =
      memserve::ParseCommandLine(program, argc, argv);
  if (!command_line.ok()) return memserve::Fail(command_line.status());
  if (command_line->help) {
    std::cout << memserve::HelpText(program, command_line->command);
    return 0;
  }
  if (command_line->command == nullptr) {
    std::cerr << memserve::HelpText(program, nullptr);
    return 2;
  }
  const std::string cmd = command_line->command->name;
  if (!command_line->args.empty()) {
    return memserve::Fail(absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", command_line->args[0], "' (see memserve ", cmd, " --help)")));
  }
  if (cmd == "generate") return memserve::RunGenerate();
  std::string dir = absl::GetFlag(FLAGS_model);
  return memserve::RunServe(dir.empty() ? memserve::DefaultModelDir() : dir);
}
