// decode_bench: decode throughput of the C++ model on the CPU, without the
// server. Prefills --prompt_tokens random ids, then decodes --decode_tokens
// greedily through the KV cache; repeats --runs times and prints one JSON line
// per run plus a summary line with the median decode tokens/s.
// --batch 1 uses Model::Forward on one sequence; --batch B > 1 decodes B
// sequences (different random prompts) in lockstep, one Model::ForwardBatch
// per step over a paged cache, the way the engine runs B streams; tokens/s
// is then the aggregate over the B sequences.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/model_cpu.h"

ABSL_FLAG(std::string, model, "", "serving checkpoint directory");
ABSL_FLAG(int, prompt_tokens, 16, "prompt length");
ABSL_FLAG(int, decode_tokens, 64, "tokens decoded per run");
ABSL_FLAG(int, runs, 3, "timed runs (after one warm-up); >= 1");
ABSL_FLAG(int, threads, 0, "CPU threads; 0 = all cores");
ABSL_FLAG(int, memory_shards, 1,
          "column shards of the memory value tables (results do not change)");
ABSL_FLAG(int, batch, 1, "sequences decoded together (ForwardBatch when > 1)");

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

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  memserve::ModelOptions opts;
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.memory_shards = absl::GetFlag(FLAGS_memory_shards);
  auto model_or = memserve::LoadCpuModel(absl::GetFlag(FLAGS_model), opts);
  if (!model_or.ok()) {
    std::cerr << model_or.status() << "\n";
    return 1;
  }
  memserve::Model& model = **model_or;
  const int vocab = model.config().vocab_size;
  const int P = absl::GetFlag(FLAGS_prompt_tokens), D = absl::GetFlag(FLAGS_decode_tokens);
  const int B = absl::GetFlag(FLAGS_batch);
  if (P < 1 || D < 1 || B < 1) {
    std::cerr << "--prompt_tokens, --decode_tokens and --batch must be >= 1\n";
    return 1;
  }
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
      std::cerr << times.status() << "\n";
      return 1;
    }
    if (run == 0) continue;  // warm-up
    const double rate = static_cast<double>(B) * D / times->decode_s;
    rates.push_back(rate);
    std::printf(
        "{\"engine\": \"cpp\", \"run\": %d, \"batch\": %d, \"prefill_tokens\": %d, "
        "\"prefill_s\": %.4f, \"decode_tokens\": %d, \"decode_s\": %.4f, "
        "\"decode_tok_s\": %.2f}\n",
        run, B, P, times->prefill_s, D, times->decode_s, rate);
  }
  std::sort(rates.begin(), rates.end());
  std::printf("{\"engine\": \"cpp\", \"batch\": %d, \"median_decode_tok_s\": %.2f}\n", B,
              rates[rates.size() / 2]);
  return 0;
}
