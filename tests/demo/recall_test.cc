// The trained demo model (models/demo, see its README.md) through the C++
// engine: it recalls the facts it was trained on, and stops recalling them
// when its memory value table is zeroed, so the knowledge lives in the memory
// layer. Also: prompts about unknown entities still generate and terminate.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/model_cpu.h"
#include "engine/tokenizer.h"
#include "engine/weights.h"
#include "gtest/gtest.h"
#include "tests/demo/demo_facts.h"

namespace memserve {
namespace {

constexpr char kValuesTensor[] = "memory.values.weight";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Loaded LoadOrDie(const std::string& dir) {
  Loaded l;
  auto model = LoadCpuModel(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return l;
  l.model = std::move(*model);
  auto tok = Tokenizer::Create(l.model->config().tokenizer, dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (tok.ok()) l.tokenizer = std::move(*tok);
  return l;
}

// A copy of the demo model in TEST_TMPDIR whose value table is all zeros.
std::string ZeroedValuesCopy() {
  const std::string src = DemoDir();
  const std::string dst = absl::StrCat(
      std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp", "/demo_zeroed_values");
  EXPECT_EQ(system(absl::StrCat("mkdir -p '", dst, "'").c_str()), 0);
  std::string bytes = ReadFile(src + "/model.safetensors");
  {
    auto file = SafetensorsFile::Open(src + "/model.safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return dst;
    auto it = (*file)->tensors().find(kValuesTensor);
    EXPECT_NE(it, (*file)->tensors().end()) << "no tensor " << kValuesTensor;
    if (it == (*file)->tensors().end()) return dst;
    const size_t offset = static_cast<const uint8_t*>(it->second.data) - (*file)->mapping().data();
    EXPECT_LE(offset + it->second.nbytes(), bytes.size());
    std::fill(bytes.begin() + offset, bytes.begin() + offset + it->second.nbytes(), '\0');
  }
  std::ofstream(dst + "/model.safetensors", std::ios::binary) << bytes;
  std::ofstream(dst + "/config.json", std::ios::binary) << ReadFile(src + "/config.json");
  return dst;
}

TEST(DemoRecallTest, RecallsTrainedFactsAndNotWithoutMemory) {
  const std::vector<Fact> facts = LoadFacts();
  ASSERT_GE(facts.size(), 1000u) << "facts.jsonl missing or short in " << DemoDir();

  Loaded demo = LoadOrDie(DemoDir());
  ASSERT_TRUE(demo.model && demo.tokenizer);
  ASSERT_FALSE(demo.model->config().memory.layers.empty());
  const double recall = Recall(*demo.model, *demo.tokenizer, facts);
  std::cout << "recall=" << recall << " facts=" << facts.size() << std::endl;
  EXPECT_GE(recall, 0.90);

  Loaded zeroed = LoadOrDie(ZeroedValuesCopy());
  ASSERT_TRUE(zeroed.model && zeroed.tokenizer);
  const double zeroed_recall = Recall(*zeroed.model, *zeroed.tokenizer, facts);
  std::cout << "recall_zeroed_values=" << zeroed_recall << std::endl;
  EXPECT_LT(zeroed_recall, 0.20);
}

// The same check the real way, through Generate (greedy, stops at EOS).
TEST(DemoRecallTest, GenerateCompletesKnownFacts) {
  const std::vector<Fact> facts = LoadFacts();
  ASSERT_GE(facts.size(), 8u);
  Loaded demo = LoadOrDie(DemoDir());
  ASSERT_TRUE(demo.model && demo.tokenizer);
  const int n = 8;
  const int hits = GenerateHits(*demo.model, *demo.tokenizer, facts, n);
  EXPECT_GE(hits, n - 1);
}

// Entities the model never saw: still text, and generation ends (EOS or max_tokens).
TEST(DemoRecallTest, UnknownEntityStillTerminates) {
  Loaded demo = LoadOrDie(DemoDir());
  ASSERT_TRUE(demo.model && demo.tokenizer);
  for (const char* prompt : {"The capital of Shosbandania is", "The ruler of Geior is",
                             "The longest river in Grourvuor is the", "Zq!"}) {
    GenerateOptions opt;
    opt.prompt = prompt;
    opt.sampling.temperature = 0.f;
    opt.max_tokens = 40;
    int events = 0;
    auto r = Generate(*demo.model, *demo.tokenizer, opt, [&](const TokenEvent&) { ++events; });
    ASSERT_TRUE(r.ok()) << prompt << ": " << r.status();
    std::cout << "'" << prompt << "' -> \"" << r->text << "\" ("
              << FinishReasonName(r->finish_reason) << ")" << std::endl;
    EXPECT_EQ(events, r->completion_tokens);
    EXPECT_GE(r->completion_tokens, 1);
    EXPECT_LE(r->completion_tokens, opt.max_tokens);
    if (r->finish_reason == FinishReason::kLength) {
      EXPECT_EQ(r->completion_tokens, opt.max_tokens);
    } else {
      EXPECT_EQ(r->finish_reason, FinishReason::kEos);
    }
  }
}

}  // namespace
}  // namespace memserve
