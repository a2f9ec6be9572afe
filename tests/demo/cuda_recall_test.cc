// The trained demo model (models/demo) on the CUDA backend: it recalls the
// facts it was trained on (>= 95 %, teacher-forced, as recall_test does on
// the CPU) with the default bf16 K/V cache and with an f32 one, and greedy
// generation (decode steps as step graphs) completes known facts. Skips,
// saying why, where no CUDA device is visible or the build has no CUDA.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend_factory.h"
#include "engine/generate.h"
#include "engine/load_model.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

struct Fact {
  std::string prompt;
  std::string answer;
};

std::string DemoDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir ? srcdir : ".", "/memserve/models/demo");
}

std::vector<Fact> LoadFacts() {
  std::vector<Fact> facts;
  std::ifstream in(DemoDir() + "/facts.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    facts.push_back({j.at("prompt").get<std::string>(), j.at("answer").get<std::string>()});
  }
  return facts;
}

int Argmax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// As recall_test: the fraction of facts whose every answer token is the
// argmax after the prompt and each answer prefix (one forward per fact).
double Recall(Model& model, const Tokenizer& tok, const std::vector<Fact>& facts) {
  const int vocab = model.config().vocab_size;
  auto cache = model.NewCache(model.config().max_seqlen);
  EXPECT_NE(cache, nullptr);
  if (cache == nullptr) return 0;
  std::vector<float> logits;
  int hits = 0;
  for (const Fact& f : facts) {
    auto prompt_ids = tok.Encode(f.prompt, /*add_bos=*/true);
    auto ids = tok.Encode(f.prompt + f.answer, /*add_bos=*/true);
    EXPECT_TRUE(prompt_ids.ok() && ids.ok());
    if (!prompt_ids.ok() || !ids.ok()) return 0;
    const int p = static_cast<int>(prompt_ids->size());
    const int n = static_cast<int>(ids->size());
    cache->Clear();
    const absl::Status s = model.Forward(cache.get(), absl::MakeConstSpan(ids->data(), n - 1),
                                         /*all_logits=*/true, &logits);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return 0;
    bool ok = true;
    for (int t = p - 1; t < n - 1 && ok; ++t) {
      ok = Argmax(logits.data() + static_cast<size_t>(t) * vocab, vocab) == (*ids)[t + 1];
    }
    hits += ok;
  }
  return static_cast<double>(hits) / facts.size();
}

class CudaRecallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status available = CheckDeviceAvailable(Device::kCuda);
    if (!available.ok()) GTEST_SKIP() << available.message();
  }
  LoadedModel Load(KvCacheDtype kv) {
    LoadOptions options;
    options.model_dir = DemoDir();
    options.device = Device::kCuda;
    options.kv_cache_dtype = kv;
    absl::StatusOr<LoadedModel> loaded = LoadModel(options);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *std::move(loaded) : LoadedModel();
  }
};

TEST_F(CudaRecallTest, RecallsTrainedFacts) {
  const std::vector<Fact> facts = LoadFacts();
  ASSERT_GE(facts.size(), 1000u) << "facts.jsonl missing or short in " << DemoDir();
  for (KvCacheDtype kv : {KvCacheDtype::kAuto, KvCacheDtype::kF32}) {
    LoadedModel demo = Load(kv);
    ASSERT_TRUE(demo.model && demo.tokenizer);
    ASSERT_EQ(demo.model->backend().device(), Device::kCuda);
    const double recall = Recall(*demo.model, *demo.tokenizer, facts);
    std::cout << "cuda recall=" << recall << " facts=" << facts.size()
              << " kv_cache_dtype=" << DTypeName(demo.model->kv_cache_dtype()) << std::endl;
    EXPECT_GE(recall, 0.95) << DTypeName(demo.model->kv_cache_dtype());
  }
}

TEST_F(CudaRecallTest, GenerateCompletesKnownFacts) {
  const std::vector<Fact> facts = LoadFacts();
  ASSERT_GE(facts.size(), 16u);
  LoadedModel demo = Load(KvCacheDtype::kAuto);
  ASSERT_TRUE(demo.model && demo.tokenizer);
  int hits = 0;
  const int n = 16;
  for (int i = 0; i < n; ++i) {
    const Fact& f = facts[i * (facts.size() / n)];
    GenerateOptions opt;
    opt.prompt = f.prompt;
    opt.sampling.temperature = 0.f;
    opt.max_tokens = 32;
    auto r = Generate(*demo.model, *demo.tokenizer, opt, [](const TokenEvent&) {});
    ASSERT_TRUE(r.ok()) << r.status();
    std::cout << f.prompt << " -> \"" << r->text << "\"" << std::endl;
    hits += r->text == f.answer;
  }
  EXPECT_GE(hits, n - 1);
}

}  // namespace
}  // namespace memserve
