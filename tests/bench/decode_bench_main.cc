// decode_bench: decode throughput of the C++ model on --device cpu or cuda,
// without the server. Prefills --prompt_tokens random ids, then decodes
// --decode_tokens greedily through the KV cache; repeats --runs times and
// prints one JSON line per run plus a summary line with the median decode
// tokens/s.
// --batch 1 uses Model::Forward on one sequence; --batch B > 1 decodes B
// sequences (different random prompts) in lockstep, one Model::ForwardBatch
// per step over a paged cache, the way the engine runs B streams; tokens/s
// is then the aggregate over the B sequences. --batch 1,8,64 measures each
// size in turn on one loaded model (one summary line per size, in order).
// The model is built the way the engine builds it (LoadModel: MakeBackend for
// --device, the memory placement plan of --memory_placement / --memory_gpus,
// Model::Load; the K/V cache stays f32 as before); a device this build or
// machine lacks is the factory's one-line error, exit 1. Every summary line
// ends with the memory placement the plan chose.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/types/span.h"
#include "engine/backend_factory.h"
#include "engine/load_model.h"
#include "engine/model.h"
#include "engine/runtime/placement_plan.h"

ABSL_FLAG(std::string, model, "", "serving checkpoint directory");
ABSL_FLAG(int, prompt_tokens, 16, "prompt length");
ABSL_FLAG(int, decode_tokens, 64, "tokens decoded per run");
ABSL_FLAG(int, runs, 3, "timed runs (after one warm-up); >= 1");
ABSL_FLAG(int, threads, 0, "CPU threads; 0 = all cores");
ABSL_FLAG(int, memory_shards, 1,
          "column shards of the memory value tables (results do not change)");
ABSL_FLAG(std::vector<std::string>, batch, {"1"},
          "sequences decoded together (ForwardBatch when > 1); a comma-separated list "
          "measures each size in turn");
ABSL_FLAG(std::string, device, "cpu", "where the model runs: cpu or cuda");
ABSL_FLAG(std::string, cpu_matmul_precision, "exact",
          "exact or bf16 (bf16-rounded activations on AVX512-BF16 / AMX; as memserve serve)");
ABSL_FLAG(std::string, memory_placement, "auto",
          "where the memory value tables go: auto, device, sharded or host (as memserve serve)");
ABSL_FLAG(std::string, memory_gpus, "all", "GPUs the memory pool may use: all or N");

namespace {

struct RunTimes {
  double prefill_s = 0;
  double decode_s = 0;
};

int Argmax(const float* logits, int vocab) {
  return static_cast<int>(std::max_element(logits, logits + vocab) - logits);
}

// One run of B sequences in lockstep: each prefilled alone (ForwardBatch with
// one chunk), then every step one ForwardBatch with one token per sequence.
absl::StatusOr<RunTimes> RunBatch(memserve::Model& model,
                                  const std::vector<std::vector<int>>& prompts, int decode) {
  using memserve::KvBlockId;
  using memserve::StepChunk;
  const int B = static_cast<int>(prompts.size());
  const int P = static_cast<int>(prompts[0].size());
  const int vocab = model.config().vocab_size;
  memserve::PagedKvLayout layout;
  layout.block_size = 16;
  const int blocks_per_seq = (P + decode + layout.block_size - 1) / layout.block_size;
  layout.num_blocks = B * blocks_per_seq;
  layout.kv_dim = static_cast<int64_t>(model.config().n_kv_heads) * model.config().head_dim;
  auto cache_or = model.NewPagedCache(layout);
  if (!cache_or.ok()) return cache_or.status();
  std::vector<std::vector<KvBlockId>> tables(B);
  for (int b = 0; b < B; ++b) {
    for (int i = 0; i < blocks_per_seq; ++i) tables[b].push_back(b * blocks_per_seq + i);
  }
  std::vector<int> next(B);
  std::vector<float> logits;
  RunTimes times;
  auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < B; ++b) {
    const StepChunk c = StepChunk::ForTokens(prompts[b], 0, tables[b], true);
    absl::Status s =
        model.ForwardBatch(cache_or->get(), absl::Span<const StepChunk>(&c, 1), &logits);
    if (!s.ok()) return s;
    next[b] = Argmax(logits.data(), vocab);
  }
  auto t1 = std::chrono::steady_clock::now();
  std::vector<StepChunk> chunks(B);
  for (int i = 0; i < decode; ++i) {
    for (int b = 0; b < B; ++b) {
      chunks[b] = StepChunk::ForTokens(absl::Span<const int>(&next[b], 1), P + i, tables[b], true);
    }
    absl::Status s = model.ForwardBatch(cache_or->get(), chunks, &logits);
    if (!s.ok()) return s;
    for (int b = 0; b < B; ++b) next[b] = Argmax(logits.data() + b * vocab, vocab);
  }
  auto t2 = std::chrono::steady_clock::now();
  times.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  times.decode_s = std::chrono::duration<double>(t2 - t1).count();
  return times;
}

// One run of one sequence through Model::Forward.
absl::StatusOr<RunTimes> RunSingle(memserve::Model& model, const std::vector<int>& prompt,
                                   int decode) {
  const int vocab = model.config().vocab_size;
  auto cache = model.NewCache(static_cast<int>(prompt.size()) + decode);
  std::vector<float> logits;
  RunTimes times;
  auto t0 = std::chrono::steady_clock::now();
  absl::Status s = model.Forward(cache.get(), prompt, false, &logits);
  if (!s.ok()) return s;
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < decode; ++i) {
    int next = Argmax(logits.data(), vocab);
    s = model.Forward(cache.get(), absl::Span<const int>(&next, 1), false, &logits);
    if (!s.ok()) return s;
  }
  auto t2 = std::chrono::steady_clock::now();
  times.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  times.decode_s = std::chrono::duration<double>(t2 - t1).count();
  return times;
}

// The --batch values; InvalidArgument naming --batch unless each is an
// integer >= 1.
absl::StatusOr<std::vector<int>> ParseBatches(const std::vector<std::string>& values) {
  std::vector<int> out;
  for (const std::string& v : values) {
    int b = 0;
    if (!absl::SimpleAtoi(v, &b) || b < 1) {
      return absl::InvalidArgumentError("--batch: '" + v + "' is not an integer >= 1");
    }
    out.push_back(b);
  }
  if (out.empty()) return absl::InvalidArgumentError("--batch: give at least one size");
  return out;
}

// LoadModel: the engine's construction path.
absl::StatusOr<std::unique_ptr<memserve::Model>> LoadOnDevice(const std::string& dir,
                                                              const std::string& device_name) {
  memserve::LoadOptions load;
  load.model_dir = dir;
  absl::StatusOr<memserve::Device> device = memserve::ParseDevice(device_name);
  if (!device.ok()) return device.status();
  load.device = *device;
  load.threads = absl::GetFlag(FLAGS_threads);
  load.memory_shards = absl::GetFlag(FLAGS_memory_shards);
  load.kv_cache_dtype = memserve::KvCacheDtype::kF32;
  absl::StatusOr<memserve::CpuMatMulPrecision> precision =
      memserve::ParseCpuMatMulPrecision(absl::GetFlag(FLAGS_cpu_matmul_precision));
  if (!precision.ok()) return precision.status();
  load.cpu_matmul_precision = *precision;
  absl::StatusOr<memserve::MemoryPlacement> placement =
      memserve::ParseMemoryPlacement(absl::GetFlag(FLAGS_memory_placement));
  if (!placement.ok()) return placement.status();
  load.memory_placement = *placement;
  absl::StatusOr<int> gpus = memserve::ParseMemoryGpus(absl::GetFlag(FLAGS_memory_gpus));
  if (!gpus.ok()) return gpus.status();
  load.memory_gpus = *gpus;
  absl::StatusOr<memserve::LoadedModel> loaded = memserve::LoadModel(load);
  if (!loaded.ok()) return loaded.status();
  return std::move(loaded->model);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int P = absl::GetFlag(FLAGS_prompt_tokens), D = absl::GetFlag(FLAGS_decode_tokens);
  absl::StatusOr<std::vector<int>> batches = ParseBatches(absl::GetFlag(FLAGS_batch));
  if (!batches.ok()) {
    std::cerr << "error: " << batches.status().message() << "\n";
    return 1;
  }
  if (P < 1 || D < 1 || absl::GetFlag(FLAGS_runs) < 1) {
    std::cerr << "error: --prompt_tokens, --decode_tokens and --runs must be >= 1\n";
    return 1;
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  auto model_or = LoadOnDevice(absl::GetFlag(FLAGS_model), device);
  if (!model_or.ok()) {
    std::cerr << "error: " << model_or.status().message() << "\n";
    return 1;
  }
  memserve::Model& model = **model_or;
  const int vocab = model.config().vocab_size;

  for (const int B : *batches) {
    std::mt19937 rng(0);
    std::vector<std::vector<int>> prompts(B, std::vector<int>(P));
    for (auto& prompt : prompts) {
      for (int& t : prompt) t = static_cast<int>(rng() % vocab);
    }
    std::vector<double> rates;
    for (int run = 0; run <= absl::GetFlag(FLAGS_runs); ++run) {
      absl::StatusOr<RunTimes> times =
          B == 1 ? RunSingle(model, prompts[0], D) : RunBatch(model, prompts, D);
      if (!times.ok()) {
        std::cerr << "error: batch " << B << ": " << times.status() << "\n";
        return 1;
      }
      if (run == 0) continue;  // warm-up
      const double rate = static_cast<double>(B) * D / times->decode_s;
      rates.push_back(rate);
      std::printf(
          "{\"engine\": \"cpp\", \"device\": \"%s\", \"run\": %d, \"batch\": %d, "
          "\"prefill_tokens\": %d, \"prefill_s\": %.4f, \"decode_tokens\": %d, "
          "\"decode_s\": %.4f, \"decode_tok_s\": %.2f}\n",
          device.c_str(), run, B, P, times->prefill_s, D, times->decode_s, rate);
    }
    std::sort(rates.begin(), rates.end());
    std::printf(
        "{\"engine\": \"cpp\", \"device\": \"%s\", \"batch\": %d, "
        "\"median_decode_tok_s\": %.2f, \"memory_placement\": \"%s\"}\n",
        device.c_str(), B, rates[rates.size() / 2],
        memserve::MemoryPlacementName(model.memory_pool().placement()));
    std::fflush(stdout);
  }
  return 0;
}
