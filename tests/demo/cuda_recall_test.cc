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
#include "tests/demo/demo_facts.h"

namespace memserve {
namespace {

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
  const int n = 16;
  const int hits = GenerateHits(*demo.model, *demo.tokenizer, facts, n);
  EXPECT_GE(hits, n - 1);
}

}  // namespace
}  // namespace memserve
