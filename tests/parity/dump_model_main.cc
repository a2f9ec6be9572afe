// dump_model: runs the C++ engine on a token sequence and writes what the
// parity test compares against the PyTorch reference, as JSON:
//   {"prefill_logits": [T][V]   whole sequence in one Forward,
//    "step_logits":    [T-K+1][V] logits at positions K-1..T-1 when the first
//                       K tokens are one chunk and the rest go one by one
//                       through the KV cache,
//    "trace": [{"layer", "indices": [T][heads][knn], "scores": [...]}],
//    "greedy": [N ids] greedy continuation of the whole sequence}
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/model.h"
#include "engine/model_cpu.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "serving checkpoint directory");
ABSL_FLAG(std::string, tokens, "", "comma-separated token ids");
ABSL_FLAG(int, prefix, 1, "tokens in the first chunk of the step-by-step run");
ABSL_FLAG(int, greedy, 32, "greedy tokens to generate after the sequence");
ABSL_FLAG(std::string, out, "", "output JSON file");

namespace {

using memserve::Model;

nlohmann::json Rows(const std::vector<float>& v, int rows, int cols) {
  nlohmann::json out = nlohmann::json::array();
  for (int r = 0; r < rows; ++r) {
    out.push_back(std::vector<float>(v.begin() + static_cast<size_t>(r) * cols,
                                     v.begin() + static_cast<size_t>(r + 1) * cols));
  }
  return out;
}

int Run() {
  std::vector<int> tokens;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',', absl::SkipEmpty())) {
    int id;
    if (!absl::SimpleAtoi(s, &id)) {
      std::cerr << "--tokens: not an integer: " << s << "\n";
      return 2;
    }
    tokens.push_back(id);
  }
  const int prefix = absl::GetFlag(FLAGS_prefix);
  const int n_greedy = absl::GetFlag(FLAGS_greedy);
  if (tokens.empty() || prefix < 1 || prefix > static_cast<int>(tokens.size())) {
    std::cerr << "--tokens must be non-empty and 1 <= --prefix <= len(tokens)\n";
    return 2;
  }
  auto model_or = memserve::LoadCpuModel(absl::GetFlag(FLAGS_model));
  if (!model_or.ok()) {
    std::cerr << model_or.status() << "\n";
    return 1;
  }
  Model& model = **model_or;
  const int vocab = model.config().vocab_size;
  const int T = static_cast<int>(tokens.size());
  nlohmann::json out;

  {  // Whole sequence at once, with the memory trace.
    auto cache = model.NewCache(T);
    std::vector<float> logits;
    std::vector<memserve::MemoryTrace> trace;
    absl::Status st = model.Forward(cache.get(), tokens, /*all_logits=*/true, &logits, &trace);
    if (!st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
    out["prefill_logits"] = Rows(logits, T, vocab);
    out["trace"] = nlohmann::json::array();
    for (const auto& t : trace) {
      out["trace"].push_back({{"layer", t.layer},
                              {"tokens", t.tokens},
                              {"heads", t.heads},
                              {"knn", t.knn},
                              {"indices", t.indices},
                              {"scores", t.scores}});
    }
  }
  {  // Prefix chunk, then one token at a time through the KV cache.
    auto cache = model.NewCache(T + n_greedy);
    std::vector<float> logits;
    nlohmann::json steps = nlohmann::json::array();
    absl::Span<const int> all(tokens);
    absl::Status st = model.Forward(cache.get(), all.subspan(0, prefix), false, &logits);
    if (!st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
    steps.push_back(logits);
    for (int i = prefix; i < T; ++i) {
      st = model.Forward(cache.get(), all.subspan(i, 1), false, &logits);
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
      steps.push_back(logits);
    }
    out["step_logits"] = steps;
    // Greedy continuation through the same cache.
    std::vector<int> greedy;
    for (int i = 0; i < n_greedy; ++i) {
      int best = 0;
      for (int v = 1; v < vocab; ++v) {
        if (logits[v] > logits[best]) best = v;
      }
      greedy.push_back(best);
      if (i + 1 == n_greedy) break;
      int next[1] = {best};
      st = model.Forward(cache.get(), absl::Span<const int>(next, 1), false, &logits);
      if (!st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
    }
    out["greedy"] = greedy;
  }
  std::ofstream f(absl::GetFlag(FLAGS_out));
  f << out.dump();
  if (!f) {
    std::cerr << "cannot write " << absl::GetFlag(FLAGS_out) << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
