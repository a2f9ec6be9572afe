// The whole model on every backend of AllBackendFactories(), compared with
// the CPU backend (testing/model_parity.h) on the bundled demo model, and the
// way the model uses a backend, checked through TracingBackend: operands are
// always the backend's own buffers, fresh memory is NaN (a read of anything
// not written first would poison the logits), and a decode step moves bytes
// only through one upload (the batch descriptor) and one download (logits).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/testing/backend_factories.h"
#include "engine/backend/testing/model_parity.h"
#include "engine/backend/testing/tracing_backend.h"
#include "engine/model.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

constexpr char kDemoDir[] = "models/demo";

class ModelOnBackendsTest : public ::testing::TestWithParam<BackendFactory> {};

TEST_P(ModelOnBackendsTest, MatchesTheCpuBackend) {
  absl::StatusOr<std::unique_ptr<Backend>> candidate = GetParam().make();
  if (!candidate.ok()) GTEST_SKIP() << GetParam().name << ": " << candidate.status();
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  ModelParityOptions options;
  options.prompt = {72,  101, 108, 108, 111, 44,  32,  119, 111, 114,
                    108, 100, 33,  10,  84,  104, 101, 32,  99,  97};
  options.batch = 3;
  options.decode_steps = 12;
  absl::StatusOr<ModelParityReport> report =
      CompareModelOnBackends(kDemoDir, *reference, **candidate, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows, 3 * 20 + 12 * 3);
  EXPECT_LE(report->max_nmse, 1e-7);
  EXPECT_EQ(report->argmax_mismatches, 0);
  // Same kernels as the reference: bit for bit.
  if (GetParam().name == "cpu" || GetParam().name == "tracing_cpu") {
    EXPECT_TRUE(report->bit_identical);
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ModelOnBackendsTest,
                         ::testing::ValuesIn(AllBackendFactories()),
                         [](const ::testing::TestParamInfo<BackendFactory>& info) {
                           return info.param.name;
                         });

// R virtual memory shards (MemoryPool: one ValueGather per column range)
// give the results of one, bit for bit (demo: v_dim 128, so R = 4 is four
// 32-column shards).
TEST(MemoryShardsTest, ShardedGatherIsBitIdentical) {
  for (int shards : {2, 4}) {
    std::unique_ptr<Backend> reference = MakeReferenceBackend();
    std::unique_ptr<Backend> candidate = MakeReferenceBackend();
    ModelParityOptions options;
    options.prompt = {84, 104, 101, 32, 99, 97, 112, 105, 116, 97, 108};
    options.batch = 4;
    options.decode_steps = 6;
    options.candidate_memory_shards = shards;
    absl::StatusOr<ModelParityReport> report =
        CompareModelOnBackends(kDemoDir, *reference, *candidate, options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->bit_identical) << shards << " shards, nmse " << report->max_nmse;
  }
  // The pool says how it split the table.
  std::unique_ptr<Backend> backend = MakeReferenceBackend();
  ModelOptions options;
  options.memory_shards = 4;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(kDemoDir, *backend, options);
  ASSERT_TRUE(model.ok()) << model.status();
  const MemoryPool& pool = (*model)->memory_pool();
  ASSERT_EQ(pool.shards().size(), 4u);
  EXPECT_EQ(pool.shards()[1].col_begin, 32);
  EXPECT_EQ(pool.shards()[3].col_end, 128);
  EXPECT_EQ(pool.shard_bytes(0) * 4, pool.bytes());
  options.memory_shards = 0;
  EXPECT_EQ(Model::Load(kDemoDir, *backend, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelBackendUseTest, OneUploadAndOneDownloadPerDecodeStep) {
  TracingBackend backend(MakeReferenceBackend());
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(kDemoDir, backend);
  ASSERT_TRUE(model.ok()) << model.status();
  Model& m = **model;
  PagedKvLayout layout;
  layout.block_size = 8;
  layout.num_blocks = 8;
  layout.kv_dim = static_cast<int64_t>(m.config().n_kv_heads) * m.config().head_dim;
  auto cache = m.NewPagedCache(layout);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const std::vector<int> a = {1, 2, 3, 4, 5}, b = {9, 8, 7};
  const std::vector<KvBlockId> ta = {0, 1}, tb = {5, 6};
  std::vector<float> logits;
  std::vector<StepChunk> prefill = {StepChunk::ForTokens(a, 0, ta, true),
                                    StepChunk::ForTokens(b, 0, tb, true)};
  ASSERT_TRUE(m.ForwardBatch(cache->get(), prefill, &logits).ok());
  const std::vector<int> next_a = {6}, next_b = {6};
  std::vector<StepChunk> step = {StepChunk::ForTokens(next_a, 5, ta, true),
                                 StepChunk::ForTokens(next_b, 3, tb, true)};
  backend.ResetCounters();
  ASSERT_TRUE(m.ForwardBatch(cache->get(), step, &logits).ok());
  EXPECT_EQ(backend.counters().uploads, 1);
  EXPECT_EQ(backend.counters().downloads, 1);
  EXPECT_EQ(backend.counters().download_bytes,
            static_cast<int64_t>(2 * m.config().vocab_size * sizeof(float)));
  EXPECT_EQ(backend.counters().buffers, 0) << "a decode step allocated buffers";
  EXPECT_GT(backend.counters().ops, 0);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace memserve
