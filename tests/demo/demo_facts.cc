#include "tests/demo/demo_facts.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "engine/generate.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

int Argmax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

}  // namespace

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

double Recall(Model& model, const Tokenizer& tok, const std::vector<Fact>& facts) {
  const int vocab = model.config().vocab_size;
  auto cache = model.NewCache(model.config().max_seqlen);
  EXPECT_NE(cache, nullptr);
  if (cache == nullptr || facts.empty()) return 0;
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
    for (int t = p - 1; t < n - 1 && ok; ++t) {  // logits row t predicts token t + 1
      ok = Argmax(logits.data() + static_cast<size_t>(t) * vocab, vocab) == (*ids)[t + 1];
    }
    hits += ok;
  }
  return static_cast<double>(hits) / facts.size();
}

int GenerateHits(Model& model, const Tokenizer& tokenizer, const std::vector<Fact>& facts, int n) {
  int hits = 0;
  for (int i = 0; i < n; ++i) {
    const Fact& f = facts[i * (facts.size() / n)];
    GenerateOptions opt;
    opt.prompt = f.prompt;
    opt.sampling.temperature = 0.f;
    opt.max_tokens = 32;
    auto r = Generate(model, tokenizer, opt, [](const TokenEvent&) {});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) continue;
    std::cout << f.prompt << " -> \"" << r->text << "\" (" << FinishReasonName(r->finish_reason)
              << ")" << std::endl;
    hits += r->text == f.answer;
  }
  return hits;
}

}  // namespace memserve
