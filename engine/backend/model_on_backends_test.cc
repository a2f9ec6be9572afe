// The whole model on every backend of AllBackendFactories(), compared with
// the CPU backend (testing/model_parity.h) on the bundled demo model, and the
// way the model uses a backend, checked through TracingBackend: operands are
// always the backend's own buffers, fresh memory is NaN (a read of anything
// not written first would poison the logits), and a decode step moves bytes
// only through one upload (the batch descriptor) and one download (logits).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/backend/testing/backend_factories.h"
#include "engine/backend/testing/model_parity.h"
#include "engine/backend/testing/random_model.h"
#include "engine/backend/testing/step_graph_emulator.h"
#include "engine/backend/testing/tracing_backend.h"
#include "engine/dtype.h"
#include "engine/model.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

constexpr char kDemoDir[] = "models/demo";

class ModelOnBackendsTest : public ::testing::TestWithParam<BackendFactory> {};

// The random checkpoint of `spec` on the CPU reference and on `candidate`: a
// prefill of 5 sequences x 14 tokens (70 tokens in one step), then 6 decode
// steps of 5 tokens.
absl::StatusOr<ModelParityReport> CompareArchitecture(const RandomModelSpec& spec,
                                                      Backend& candidate, float clear_margin) {
  absl::StatusOr<std::string> dir = WriteRandomModel(spec);
  if (!dir.ok()) return dir.status();
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  ModelParityOptions options;
  options.prompt = {1, 17, 250, 3, 99, 42, 7, 7, 128, 64, 33, 255, 0, 5};
  options.batch = 5;
  options.decode_steps = 6;
  options.clear_margin = clear_margin;
  return CompareModelOnBackends(*dir, *reference, candidate, options);
}

// How close a backend must come to the CPU. The CPU backends: 1e-7 and no
// argmax difference at all. A device (CUDA): its GEMMs sum in another order
// and bf16 weights round the activation to bf16, so the logits drift; greedy
// tokens must agree wherever the CPU's best logit leads its second by a clear
// margin. A bf16 K/V cache rounds K and V: measured on the CPU (nothing else
// rounded), the demo's worst logits row moves by NMSE 0.011 and up to 0.92
// logits (a memory layer's top-k flips once the query moves), so that
// tolerance is wide on every backend; the cache's own arithmetic is checked
// exactly in backend_ops_test (Bf16KvCache).
struct Tolerance {
  double max_nmse;
  float clear_margin;
};
Tolerance ToleranceFor(const Backend& backend, bool bf16_math) {
  if (bf16_math) return {0.03, 2.0f};
  return backend.device() == Device::kCpu ? Tolerance{1e-7, 0.0f} : Tolerance{1e-6, 1e-3f};
}

void ExpectParity(const ModelParityReport& r, const Tolerance& t, const std::string& what) {
  EXPECT_LE(r.max_nmse, t.max_nmse) << what;
  if (t.clear_margin == 0.0f) {
    EXPECT_EQ(r.argmax_mismatches, 0) << what;
  } else {
    EXPECT_EQ(r.clear_argmax_mismatches, 0)
        << what << ": " << r.argmax_mismatches << " argmax differences, max |error| "
        << r.max_abs_error;
  }
}

ModelParityOptions DemoParityOptions() {
  ModelParityOptions options;
  options.prompt = {72,  101, 108, 108, 111, 44,  32,  119, 111, 114,
                    108, 100, 33,  10,  84,  104, 101, 32,  99,  97};
  options.batch = 3;
  options.decode_steps = 12;
  return options;
}

TEST_P(ModelOnBackendsTest, MatchesTheCpuBackend) {
  absl::StatusOr<std::unique_ptr<Backend>> candidate = GetParam().make();
  if (!candidate.ok()) GTEST_SKIP() << GetParam().name << ": " << candidate.status();
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  const ModelParityOptions options = DemoParityOptions();
  absl::StatusOr<ModelParityReport> report =
      CompareModelOnBackends(kDemoDir, *reference, **candidate, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows, 3 * 20 + 12 * 3);
  ExpectParity(*report, ToleranceFor(**candidate, /*bf16_math=*/false), "demo");
  // Same kernels as the reference: bit for bit.
  if (GetParam().name == "cpu" || GetParam().name == "tracing_cpu" ||
      GetParam().name == "graph_cpu") {
    EXPECT_TRUE(report->bit_identical);
  }
}

// A backend's own options: a bf16 K/V cache, and decode steps run eagerly
// instead of as step graphs (the graphs must change nothing).
TEST_P(ModelOnBackendsTest, DeviceOptionsMatchTheCpuBackend) {
  absl::StatusOr<std::unique_ptr<Backend>> candidate = GetParam().make();
  if (!candidate.ok()) GTEST_SKIP() << GetParam().name << ": " << candidate.status();
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  ModelParityOptions options = DemoParityOptions();
  options.candidate_kv_cache_dtype = DType::kBF16;
  options.clear_margin = ToleranceFor(**candidate, true).clear_margin;
  absl::StatusOr<ModelParityReport> bf16 =
      CompareModelOnBackends(kDemoDir, *reference, **candidate, options);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  ExpectParity(*bf16, ToleranceFor(**candidate, /*bf16_math=*/true), "bf16 K/V cache");
  EXPECT_FALSE(bf16->bit_identical) << "the candidate's cache was not bf16";

  options.candidate_kv_cache_dtype = DType::kF32;
  options.candidate_step_graphs = false;
  options.clear_margin = ToleranceFor(**candidate, false).clear_margin;
  absl::StatusOr<ModelParityReport> eager =
      CompareModelOnBackends(kDemoDir, *reference, **candidate, options);
  ASSERT_TRUE(eager.ok()) << eager.status();
  ExpectParity(*eager, ToleranceFor(**candidate, /*bf16_math=*/false), "without step graphs");
}

// Every architecture option (random checkpoints, testing/random_model.h),
// with batched prefill and decode (padded decode buckets on a device).
TEST_P(ModelOnBackendsTest, EveryArchitectureMatchesTheCpuBackend) {
  if (GetParam().name == "cpu" || GetParam().name == "tracing_cpu" ||
      GetParam().name == "graph_cpu") {
    // The reference's own kernels (graph_cpu: DecodeGraphTest covers every
    // architecture); cpu_generic stands for the CPU here.
    GTEST_SKIP() << GetParam().name << ": the reference's kernels";
  }
  absl::StatusOr<std::unique_ptr<Backend>> candidate = GetParam().make();
  if (!candidate.ok()) GTEST_SKIP() << GetParam().name << ": " << candidate.status();
  for (const RandomModelSpec& spec : ArchitectureVariants()) {
    SCOPED_TRACE(spec.name);
    const Tolerance tolerance = ToleranceFor(**candidate, spec.dense == DType::kBF16);
    absl::StatusOr<ModelParityReport> report =
        CompareArchitecture(spec, **candidate, tolerance.clear_margin);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->rows, 5 * 14 + 6 * 5);
    ExpectParity(*report, tolerance, spec.name);
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ModelOnBackendsTest,
                         ::testing::ValuesIn(AllBackendFactories()),
                         [](const ::testing::TestParamInfo<BackendFactory>& info) {
                           return info.param.name;
                         });

// --cpu_matmul_precision bf16 (CpuBackend::Options::bf16_matmul) against the
// exact CPU backend on every architecture with BF16 dense weights: a 70-token
// prefill step (AMX where the CPU has it) and decode steps of 5 tokens
// (vdpbf16ps). Rounding the activations to bf16 moves the logits the way a
// device's bf16 GEMMs do, so the bf16 tolerance applies (measured on this
// set: worst row NMSE 3e-5 dense, 1e-4 - 5e-4 with memory layers, 5e-3 - 7e-3
// where a memory layer's top-k flips; up to 2 argmax differences, none where
// the exact logits lead clearly).
TEST(CpuBf16MatMulTest, StaysCloseToTheExactKernels) {
  CpuBackend::Options bf16_options;
  bf16_options.bf16_matmul = true;
  std::unique_ptr<CpuBackend> candidate = std::make_unique<CpuBackend>(bf16_options);
  if (candidate->bf16_kernels() == nullptr) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  for (RandomModelSpec spec : ArchitectureVariants()) {
    spec.dense = DType::kBF16;
    SCOPED_TRACE(spec.name);
    const Tolerance tolerance = ToleranceFor(*candidate, /*bf16_math=*/true);
    absl::StatusOr<ModelParityReport> report =
        CompareArchitecture(spec, *candidate, tolerance.clear_margin);
    ASSERT_TRUE(report.ok()) << report.status();
    std::cout << spec.name << ": max nmse " << report->max_nmse << ", max |error| "
              << report->max_abs_error << ", argmax differences " << report->argmax_mismatches
              << std::endl;
    EXPECT_FALSE(report->bit_identical) << "the bf16 kernels did not run";
    ExpectParity(*report, tolerance, spec.name);
  }
}

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

// A plan that puts the value tables where `placement` says, whatever the
// sizes (ModelOptions::plan_memory): device and sharded on GPU 0 (so R
// shards of a sharded plan share one GPU), host in host memory.
std::function<absl::StatusOr<PlacementPlan>(const PlacementRequest&)> FixedPlan(
    MemoryPlacement placement) {
  return [placement](const PlacementRequest& r) -> absl::StatusOr<PlacementPlan> {
    PlacementPlan plan;
    plan.placement = placement;
    if (placement == MemoryPlacement::kHost) {
      plan.host_table_bytes = r.table_bytes;
    } else {
      plan.shards = {PlacedShard{0, 0, r.table_columns, r.table_bytes}};
    }
    return plan;
  };
}

// The CUDA backend on device 0, or null (with the reason in *why) where
// this build or machine has none.
std::unique_ptr<Backend> MakeCudaBackend(std::string* why) {
  for (const BackendFactory& f : AllBackendFactories()) {
    if (f.name != "cuda") continue;
    absl::StatusOr<std::unique_ptr<Backend>> b = f.make();
    if (b.ok()) return *std::move(b);
    *why = std::string(b.status().message());
    return nullptr;
  }
  *why = "this build has no CUDA backend";
  return nullptr;
}

// Host placement on the CPU is what the CPU always does (the mapping, in
// place): the same logits bit for bit, the pool reporting host on "cpu".
// Sharded placement needs device backends: the CPU refuses it, naming it.
TEST(MemoryPlacementTest, CpuHostPlanIsTheMappingAndShardedIsRefused) {
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  std::unique_ptr<Backend> candidate = MakeReferenceBackend();
  ModelParityOptions options = DemoParityOptions();
  options.candidate_memory_shards = 3;
  options.candidate_plan_memory = FixedPlan(MemoryPlacement::kHost);
  absl::StatusOr<ModelParityReport> report =
      CompareModelOnBackends(kDemoDir, *reference, *candidate, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->bit_identical);

  ModelOptions model_options;
  model_options.plan_memory = FixedPlan(MemoryPlacement::kHost);
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(kDemoDir, *candidate, model_options);
  ASSERT_TRUE(model.ok()) << model.status();
  const MemoryPool& pool = (*model)->memory_pool();
  EXPECT_EQ(pool.placement(), MemoryPlacement::kHost);
  ASSERT_EQ(pool.device_bytes().size(), 1u);
  EXPECT_EQ(pool.device_bytes()[0].device, "cpu");
  EXPECT_EQ(pool.summary(), "host: the 16.0 MiB table stays in host memory");

  model_options.plan_memory = FixedPlan(MemoryPlacement::kSharded);
  model = Model::Load(kDemoDir, *candidate, model_options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(model.status().message().find("--memory_placement sharded"), std::string::npos)
      << model.status();
}

// A CPU backend with a sharded placement, for the model's side of it on any
// machine: each shard "on GPU i" gathers its columns of the mapped table
// straight into the output (no copies: the CPU has one memory), so the
// model's sharded path (MemoryPool::CreateSharded, ShardedMemory::Gather per
// memory layer, step graphs off for a gather that cannot be captured, the
// bytes per device) is exercised against the plain CPU bit for bit.
class ShardedCpuMemory : public ShardedMemory {
 public:
  ShardedCpuMemory(Backend* backend, std::vector<MemoryShard> shards)
      : backend_(backend), shards_(std::move(shards)) {}
  absl::Status Gather(int table, const Tensor& rows, const Tensor& weights,
                      const Tensor& out) override {
    ++gathers;
    for (const MemoryShard& s : shards_) {
      absl::Status st =
          backend_->ValueGather(tables[table], rows, weights, s.col_begin, s.col_end, out);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  bool capturable() const override { return false; }
  std::vector<DeviceBytes> device_bytes() const override {
    std::map<int, int64_t> per_gpu;
    for (const MemoryShard& s : shards_) {
      for (const Tensor& t : tables) {
        per_gpu[s.gpu] += t.shape[0] * (s.col_end - s.col_begin) * 2;
      }
    }
    std::vector<DeviceBytes> out;
    for (const auto& [gpu, bytes] : per_gpu) out.push_back({absl::StrCat("cuda:", gpu), bytes});
    return out;
  }

  std::vector<Tensor> tables;
  std::vector<std::unique_ptr<Buffer>> buffers;
  int gathers = 0;

 private:
  Backend* backend_;
  std::vector<MemoryShard> shards_;
};

class ShardingCpuBackend : public CpuBackend {
 public:
  ShardingCpuBackend() : CpuBackend(CpuBackend::Options{}) {}
  absl::StatusOr<std::unique_ptr<ShardedMemory>> PlaceShardedTables(
      const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards) override {
    auto placed = std::make_unique<ShardedCpuMemory>(this, shards);
    for (const TensorView& t : tables) {
      Tensor tensor;
      absl::StatusOr<std::unique_ptr<Buffer>> b = PlaceHostTable(t, &tensor);
      if (!b.ok()) return b.status();
      placed->tables.push_back(tensor);
      placed->buffers.push_back(*std::move(b));
    }
    last = placed.get();
    return std::unique_ptr<ShardedMemory>(std::move(placed));
  }
  ShardedCpuMemory* last = nullptr;
};

TEST(MemoryPlacementTest, ModelShardedPathGathersThroughThePlacedShards) {
  std::unique_ptr<Backend> reference = MakeReferenceBackend();
  for (int shards : {1, 2, 4}) {
    ShardingCpuBackend candidate;
    ModelParityOptions options = DemoParityOptions();
    options.candidate_memory_shards = shards;
    // A plan over two GPUs: shards 0..n/2-1 on GPU 0, the rest on GPU 1.
    options.candidate_plan_memory = [](const PlacementRequest& r) -> absl::StatusOr<PlacementPlan> {
      PlacementPlan plan;
      plan.placement = MemoryPlacement::kSharded;
      plan.shards = {PlacedShard{0, 0, r.table_columns / 2, r.table_bytes / 2},
                     PlacedShard{1, r.table_columns / 2, r.table_columns, r.table_bytes / 2}};
      return plan;
    };
    absl::StatusOr<ModelParityReport> report =
        CompareModelOnBackends(kDemoDir, *reference, candidate, options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->bit_identical) << shards << " shards";
    ASSERT_NE(candidate.last, nullptr);
    EXPECT_GT(candidate.last->gathers, 0);

    ModelOptions model_options;
    model_options.memory_shards = shards;
    model_options.plan_memory = options.candidate_plan_memory;
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(kDemoDir, candidate, model_options);
    ASSERT_TRUE(model.ok()) << model.status();
    const MemoryPool& pool = (*model)->memory_pool();
    EXPECT_EQ(pool.placement(), MemoryPlacement::kSharded);
    ASSERT_NE(pool.sharded(), nullptr);
    // max(R, 2 GPUs) shards, the first half of them on GPU 0.
    const int n = std::max(shards, 2);
    ASSERT_EQ(static_cast<int>(pool.shards().size()), n);
    EXPECT_EQ(pool.shards().front().gpu, 0);
    EXPECT_EQ(pool.shards().back().gpu, 1);
    ASSERT_EQ(pool.device_bytes().size(), 2u);
    EXPECT_EQ(pool.device_bytes()[0].device, "cuda:0");
    EXPECT_EQ(pool.device_bytes()[0].bytes + pool.device_bytes()[1].bytes, pool.bytes());
  }
}

// Issue 13 on a GPU: R = 2 and 4 shards simulated on one GPU (each shard's
// columns in its own device table, gathered into a slice and copied into
// its columns: the sharded code path) give the logits of the device
// placement (one table, one gather) bit for bit; so does host placement (the
// table in registered or pinned host memory, gathered over PCIe). Eager
// candidates (no step graphs: a padded graph's GEMMs may round differently).
TEST(MemoryPlacementTest, CudaShardedAndHostPlacementsMatchDevicePlacement) {
  std::string why;
  std::unique_ptr<Backend> reference = MakeCudaBackend(&why);
  if (reference == nullptr) GTEST_SKIP() << "no CUDA device: " << why;
  struct Case {
    MemoryPlacement placement;
    int shards;
  };
  for (const Case& c : {Case{MemoryPlacement::kSharded, 2}, Case{MemoryPlacement::kSharded, 4},
                        Case{MemoryPlacement::kHost, 1}}) {
    std::unique_ptr<Backend> candidate = MakeCudaBackend(&why);
    ASSERT_NE(candidate, nullptr) << why;
    ModelParityOptions options = DemoParityOptions();
    options.candidate_memory_shards = c.shards;
    options.candidate_plan_memory = FixedPlan(c.placement);
    options.candidate_step_graphs = false;
    const std::string what =
        absl::StrCat(MemoryPlacementName(c.placement), " R=", c.shards, " on one GPU");
    absl::StatusOr<ModelParityReport> report =
        CompareModelOnBackends(kDemoDir, *reference, *candidate, options);
    ASSERT_TRUE(report.ok()) << what << ": " << report.status();
    EXPECT_TRUE(report->bit_identical) << what << ": max nmse " << report->max_nmse;
  }
  // With step graphs on (decode steps captured with the sharded gather in
  // them): within the CUDA tolerance of the eager device placement.
  std::unique_ptr<Backend> candidate = MakeCudaBackend(&why);
  ModelParityOptions options = DemoParityOptions();
  options.candidate_memory_shards = 4;
  options.candidate_plan_memory = FixedPlan(MemoryPlacement::kSharded);
  absl::StatusOr<ModelParityReport> report =
      CompareModelOnBackends(kDemoDir, *reference, *candidate, options);
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectParity(*report, ToleranceFor(*candidate, false), "sharded R=4 with step graphs");
}

// The decode-graph path (engine/batch_descriptor.h: padding to a bucket,
// a descriptor buffer and a graph per bucket, capture after an eager run,
// replay) over the CPU with emulated step graphs: bit for bit the eager
// results, for batches that fill a bucket and batches that are padded.
TEST(DecodeGraphTest, ReplayedDecodeStepsMatchEagerOnesBitForBit) {
  for (int batch : {1, 3, 5}) {
    SCOPED_TRACE(batch);
    std::unique_ptr<Backend> reference = MakeReferenceBackend();
    StepGraphEmulator candidate(MakeReferenceBackend());
    ModelParityOptions options;
    options.prompt = {84, 104, 101, 32, 99, 97, 112, 105, 116, 97, 108};
    options.batch = batch;
    options.decode_steps = 7;
    absl::StatusOr<ModelParityReport> report =
        CompareModelOnBackends(kDemoDir, *reference, candidate, options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->bit_identical) << "nmse " << report->max_nmse;
    // One capture (the bucket's first decode step), then replays.
    EXPECT_EQ(candidate.captures(), 1);
    EXPECT_EQ(candidate.replays(), options.decode_steps - 1);
  }
  // Every architecture option, through a padded bucket (5 -> 8).
  for (const RandomModelSpec& spec : ArchitectureVariants()) {
    SCOPED_TRACE(spec.name);
    absl::StatusOr<std::string> dir = WriteRandomModel(spec);
    ASSERT_TRUE(dir.ok()) << dir.status();
    std::unique_ptr<Backend> reference = MakeReferenceBackend();
    StepGraphEmulator candidate(MakeReferenceBackend());
    ModelParityOptions options;
    options.prompt = {1, 17, 250, 3, 99, 42, 7};
    options.batch = 5;
    options.decode_steps = 4;
    absl::StatusOr<ModelParityReport> report =
        CompareModelOnBackends(*dir, *reference, candidate, options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->bit_identical) << "nmse " << report->max_nmse;
    EXPECT_EQ(candidate.replays(), options.decode_steps - 1);
  }
}

// Generation through Model::Forward (one sequence, bucket 1) replays too, and
// a new cache captures its own graph.
TEST(DecodeGraphTest, ForwardDecodesThroughGraphs) {
  auto* emulator = new StepGraphEmulator(MakeReferenceBackend());
  absl::StatusOr<std::unique_ptr<Model>> with_graphs =
      Model::Load(kDemoDir, std::unique_ptr<Backend>(emulator));
  ASSERT_TRUE(with_graphs.ok()) << with_graphs.status();
  std::unique_ptr<Backend> cpu = MakeReferenceBackend();
  absl::StatusOr<std::unique_ptr<Model>> eager = Model::Load(kDemoDir, *cpu);
  ASSERT_TRUE(eager.ok()) << eager.status();
  for (int request = 0; request < 2; ++request) {
    std::unique_ptr<KvCache> a = (*with_graphs)->NewCache(40);
    std::unique_ptr<KvCache> b = (*eager)->NewCache(40);
    std::vector<int> tokens = {72, 101, 108, 108, 111};
    std::vector<float> la, lb;
    for (int step = 0; step < 6; ++step) {
      ASSERT_TRUE((*with_graphs)->Forward(a.get(), tokens, false, &la).ok());
      ASSERT_TRUE((*eager)->Forward(b.get(), tokens, false, &lb).ok());
      ASSERT_EQ(la, lb) << "request " << request << " step " << step;
      tokens = {static_cast<int>(std::max_element(lb.begin(), lb.end()) - lb.begin())};
    }
  }
  EXPECT_EQ(emulator->captures(), 2);  // one per cache
  EXPECT_EQ(emulator->replays(), 2 * 4);
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
