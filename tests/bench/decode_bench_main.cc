// decode_bench: batch-1 decode throughput of the C++ engine on the CPU.
// Prefills --prompt_tokens random ids, then decodes --decode_tokens greedily
// through the KV cache; repeats --runs times and prints one JSON line per run
// plus a summary line with the median decode tokens/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/model.h"

ABSL_FLAG(std::string, model, "", "serving checkpoint directory");
ABSL_FLAG(int, prompt_tokens, 16, "prompt length");
ABSL_FLAG(int, decode_tokens, 64, "tokens decoded per run");
ABSL_FLAG(int, runs, 3, "timed runs (after one warm-up); >= 1");
ABSL_FLAG(int, threads, 0, "CPU threads; 0 = all cores");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  memserve::ModelOptions opts;
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  auto model_or = memserve::Model::Load(absl::GetFlag(FLAGS_model), opts);
  if (!model_or.ok()) {
    std::cerr << model_or.status() << "\n";
    return 1;
  }
  memserve::Model& model = **model_or;
  const int vocab = model.config().vocab_size;
  const int P = absl::GetFlag(FLAGS_prompt_tokens), D = absl::GetFlag(FLAGS_decode_tokens);
  std::mt19937 rng(0);
  std::vector<int> prompt(P);
  for (int& t : prompt) t = static_cast<int>(rng() % vocab);

  std::vector<double> rates;
  for (int run = 0; run <= absl::GetFlag(FLAGS_runs); ++run) {
    auto cache = model.NewCache(P + D);
    std::vector<float> logits;
    auto t0 = std::chrono::steady_clock::now();
    if (!model.Forward(cache.get(), prompt, false, &logits).ok()) return 1;
    auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < D; ++i) {
      int next = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (!model.Forward(cache.get(), absl::Span<const int>(&next, 1), false, &logits).ok()) {
        return 1;
      }
    }
    auto t2 = std::chrono::steady_clock::now();
    const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t2 - t1).count();
    if (run == 0) continue;  // warm-up
    rates.push_back(D / decode_s);
    std::printf("{\"engine\": \"cpp\", \"run\": %d, \"prefill_tokens\": %d, \"prefill_s\": %.4f, "
                "\"decode_tokens\": %d, \"decode_s\": %.4f, \"decode_tok_s\": %.2f}\n",
                run, P, prefill_s, D, decode_s, D / decode_s);
  }
  if (rates.empty()) return 0;
  std::sort(rates.begin(), rates.end());
  std::printf("{\"engine\": \"cpp\", \"median_decode_tok_s\": %.2f}\n", rates[rates.size() / 2]);
  return 0;
}
