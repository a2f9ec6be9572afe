// llamacpp_logprobs: the llama.cpp half of tools/bench_vs_llamacpp.sh's agreement check.
//
// NOT part of the Bazel build: the script compiles it against the reader's own llama.cpp build
// (its public llama.h API only; no llama.cpp code is copied here):
//   llamacpp_logprobs MODEL.gguf THREADS PROMPT_IDS FORCED_IDS
// PROMPT_IDS and FORCED_IDS are comma-separated token ids. The prompt is evaluated in one batch;
// then for each forced id, in order, one JSON line is printed and the forced id is fed as the
// next token (teacher forcing), so every step sees the same context as memserve did:
//   {"step": i, "argmax": A, "argmax_logprob": LA, "forced": F, "forced_logprob": LF}
// logprobs are log-softmax over the full vocabulary, in double, of the fp32 logits. The K/V cache
// is f32 and flash attention is off: llama.cpp's CPU flash-attention path rounds to f16 (with it,
// logprobs move by ~1e-3 against an fp64 reference; without it, by ~1e-6). Exit 1 with a one-line
// error on any failure.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "llama.h"

namespace {

bool ParseIds(const char* text, std::vector<llama_token>* out) {
  std::string s(text);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    char* rest = nullptr;
    const long v = std::strtol(item.c_str(), &rest, 10);
    if (item.empty() || *rest != '\0' || v < 0) return false;
    out->push_back(static_cast<llama_token>(v));
    pos = end + 1;
  }
  return !out->empty();
}

void Quiet(enum ggml_log_level level, const char* text, void* /*user*/) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL.gguf THREADS PROMPT_IDS FORCED_IDS\n", argv[0]);
    return 1;
  }
  const int threads = std::atoi(argv[2]);
  std::vector<llama_token> prompt, forced;
  if (threads < 1 || !ParseIds(argv[3], &prompt) || !ParseIds(argv[4], &forced)) {
    std::fprintf(stderr, "error: THREADS must be >= 1 and the id lists comma-separated ids\n");
    return 1;
  }
  if (std::getenv("LLAMACPP_LOGPROBS_VERBOSE") == nullptr) llama_log_set(Quiet, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (model == nullptr) {
    std::fprintf(stderr, "error: llama.cpp could not load %s\n", argv[1]);
    return 1;
  }
  llama_context_params cp = llama_context_default_params();
  const int n_ctx = static_cast<int>(prompt.size() + forced.size()) + 8;
  cp.n_ctx = n_ctx;
  cp.n_batch = n_ctx;
  cp.n_ubatch = n_ctx;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) {
    std::fprintf(stderr, "error: llama.cpp could not create a context\n");
    return 1;
  }
  const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  if (vocab <= 0) {
    std::fprintf(stderr, "error: the model reports %d vocabulary entries\n", vocab);
    return 1;
  }
  if (llama_decode(ctx, llama_batch_get_one(prompt.data(), static_cast<int32_t>(prompt.size())))) {
    std::fprintf(stderr, "error: llama_decode failed on the prompt\n");
    return 1;
  }
  for (size_t i = 0; i < forced.size(); ++i) {
    const float* logits = llama_get_logits_ith(ctx, -1);
    int argmax = 0;
    for (int v = 1; v < vocab; ++v) {
      if (logits[v] > logits[argmax]) argmax = v;
    }
    double sum = 0;
    for (int v = 0; v < vocab; ++v)
      sum += std::exp(static_cast<double>(logits[v]) - logits[argmax]);
    const double log_z = logits[argmax] + std::log(sum);
    if (forced[i] >= vocab) {
      std::fprintf(stderr, "error: forced id %d >= vocabulary %d\n", forced[i], vocab);
      return 1;
    }
    std::printf(
        "{\"step\": %zu, \"argmax\": %d, \"argmax_logprob\": %.9g, \"forced\": %d, "
        "\"forced_logprob\": %.9g}\n",
        i, argmax, logits[argmax] - log_z, forced[i], logits[forced[i]] - log_z);
    llama_token next = forced[i];
    if (i + 1 < forced.size() && llama_decode(ctx, llama_batch_get_one(&next, 1))) {
      std::fprintf(stderr, "error: llama_decode failed at step %zu\n", i);
      return 1;
    }
  }
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
