// embedding on the GPU vs the CPU backend's Embedding, bit for bit (skips
// without a GPU); the parameter validation runs everywhere.
#include "kernels/embedding.h"

#include <random>
#include <vector>

#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(EmbeddingParamsTest, ValidateNamesTheField) {
  float buf[4] = {};
  int32_t ids[1] = {0};
  EmbeddingParams p;
  EXPECT_TRUE(StatusMentions(p.Validate(), "EmbeddingParams.table is null"));
  p.table = buf;
  p.ids = ids;
  p.y = buf;
  p.n_tokens = 1;
  p.dim = 4;
  EXPECT_TRUE(StatusMentions(p.Validate(), "EmbeddingParams.vocab must be >= 1, got 0"));
  p.vocab = 1;
  EXPECT_TRUE(p.Validate().ok());
  p.dim = 0;
  EXPECT_TRUE(StatusMentions(LaunchEmbedding(p, nullptr), "EmbeddingParams.dim"));
}

TEST(EmbeddingTest, MatchesTheCpuBackendBitForBit) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  CpuBackend cpu(CpuBackend::Options{1, CpuIsa::kAuto});
  TestTensors host(&cpu);
  std::mt19937 rng(4);
  for (DType table_type : {DType::kF32, DType::kBF16}) {
    for (int dim : {5, 1024}) {
      SCOPED_TRACE(testing::Message() << DTypeName(table_type) << " dim " << dim);
      const int64_t vocab = 1000, n = 300;
      const OwnedTensor table = MakeTensor({vocab, dim}, table_type, &rng);
      std::vector<int32_t> ids(n);
      std::uniform_int_distribution<int32_t> any_id(0, vocab - 1);
      for (auto& id : ids) id = any_id(rng);
      const Tensor y_cpu = host.Filled(DType::kF32, {n, dim});
      ASSERT_TRUE(cpu.Embedding(host.Weight(table), host.I32(ids, {n}), y_cpu).ok());
      const std::vector<float> want = host.ReadF32(y_cpu);

      DeviceArray<float> dtable_f32(table.f32), dy(n * dim);
      DeviceArray<uint16_t> dtable_bf16(table.bf16);
      DeviceArray<int32_t> dids(ids);
      EmbeddingParams p;
      p.table_type = table_type == DType::kF32 ? ElementType::kF32 : ElementType::kBF16;
      p.table = table_type == DType::kF32 ? static_cast<const void*>(dtable_f32.get())
                                          : static_cast<const void*>(dtable_bf16.get());
      p.ids = dids.get();
      p.y = dy.get();
      p.n_tokens = n;
      p.vocab = vocab;
      p.dim = dim;
      ASSERT_TRUE(LaunchEmbedding(p, nullptr).ok());
      EXPECT_EQ(BitMismatches(dy.Read(), want), 0);
    }
  }
}

TEST(EmbeddingTest, IdOutsideTheVocabularyGivesZeros) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  DeviceArray<float> dtable(std::vector<float>(3 * 4, 2.0f)), dy(std::vector<float>(3 * 4, 7.0f));
  DeviceArray<int32_t> dids(std::vector<int32_t>{-1, 1, 3});
  EmbeddingParams p;
  p.table_type = ElementType::kF32;
  p.table = dtable.get();
  p.ids = dids.get();
  p.y = dy.get();
  p.n_tokens = 3;
  p.vocab = 3;
  p.dim = 4;
  ASSERT_TRUE(LaunchEmbedding(p, nullptr).ok());
  EXPECT_EQ(dy.Read(), (std::vector<float>{0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0}));
}

}  // namespace
}  // namespace memserve::kernels
