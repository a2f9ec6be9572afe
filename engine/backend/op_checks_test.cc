// The CUDA backend's operand rules (op_checks.h), on host buffers of the CPU
// backend standing in for device buffers: the rules read only descriptions.
#include "engine/backend/op_checks.h"

#include <memory>
#include <string>

#include "engine/backend/cpu/cpu_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;

class OpChecksTest : public ::testing::Test {
 protected:
  Tensor Make(DType dtype, std::initializer_list<int64_t> shape) {
    const Tensor probe = Tensor::Of(nullptr, dtype, shape);
    buffers_.push_back(*backend_.AllocateBuffer(probe.nbytes()));
    return Tensor::Of(buffers_.back().get(), dtype, shape);
  }
  CpuBackend backend_{CpuBackend::Options{1}};
  CpuBackend other_{CpuBackend::Options{1}};
  std::vector<std::unique_ptr<Buffer>> buffers_;
};

TEST_F(OpChecksTest, OperandMustBeOwnInBoundsAndOfItsDtype) {
  const Tensor x = Make(DType::kF32, {2, 4});
  EXPECT_TRUE(CheckOperand(&backend_, x, DType::kF32, "x").ok());
  EXPECT_THAT(std::string(CheckOperand(&other_, x, DType::kF32, "Add x").message()),
              HasSubstr("Add x is not a tensor of this backend"));
  EXPECT_THAT(std::string(CheckOperand(&backend_, Tensor(), DType::kF32, "y").message()),
              HasSubstr("y is not a tensor"));
  EXPECT_THAT(std::string(CheckOperand(&backend_, x, DType::kI32, "ids").message()),
              HasSubstr("expected I32"));
  Tensor past = x;
  past.offset = 4;
  EXPECT_EQ(CheckOperand(&backend_, past, DType::kF32, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckWeight(&backend_, x, "w").ok());
  EXPECT_THAT(std::string(CheckWeight(&backend_, Make(DType::kI64, {3}), "w").message()),
              HasSubstr("expected F32 or BF16"));
}

TEST_F(OpChecksTest, MatMulShapes) {
  const Tensor x = Make(DType::kF32, {3, 8});
  const Tensor w = Make(DType::kBF16, {5, 8});
  const Tensor y = Make(DType::kF32, {3, 5});
  EXPECT_TRUE(CheckMatMulShapes(x, w, Tensor(), y).ok());
  EXPECT_TRUE(CheckMatMulShapes(x, w, Make(DType::kF32, {5}), y).ok());
  EXPECT_THAT(std::string(CheckMatMulShapes(x, w, Make(DType::kF32, {4}), y).message()),
              HasSubstr("MatMul: bias is F32[4]"));
  EXPECT_THAT(std::string(CheckMatMulShapes(Make(DType::kF32, {3, 7}), w, Tensor(), y).message()),
              HasSubstr("expected [T, 8]"));
  EXPECT_THAT(std::string(CheckMatMulShapes(x, w, Tensor(), Make(DType::kF32, {3, 4})).message()),
              HasSubstr("expected [3, 5]"));
}

TEST_F(OpChecksTest, KvCacheDtypesMustMatch) {
  const Tensor k = Make(DType::kF32, {2, 8});
  const Tensor rows = Make(DType::kI64, {2});
  const Tensor f32 = Make(DType::kF32, {16, 8});
  const Tensor bf16 = Make(DType::kBF16, {16, 8});
  const Tensor bf16b = Make(DType::kBF16, {16, 8});
  EXPECT_TRUE(CheckWriteKvShapes(k, k, rows, f32, f32).ok());
  EXPECT_TRUE(CheckWriteKvShapes(k, k, rows, bf16, bf16b).ok());
  EXPECT_THAT(std::string(CheckWriteKvShapes(k, k, rows, bf16, f32).message()),
              HasSubstr("v_cache"));
  EXPECT_THAT(
      std::string(CheckWriteKvShapes(k, k, rows, Make(DType::kI32, {16, 8}), f32).message()),
      HasSubstr("F32 or BF16"));
  EXPECT_THAT(std::string(CheckWriteKvShapes(k, k, Make(DType::kI64, {3}), f32, f32).message()),
              HasSubstr("kv_rows"));
}

TEST_F(OpChecksTest, AttentionDescriptorIsConsistent) {
  AttentionShape shape;
  shape.n_heads = 4;
  shape.n_kv_heads = 2;
  shape.head_dim = 8;
  BatchDescriptor batch;
  batch.n_tokens = 3;
  batch.n_seqs = 2;
  batch.block_size = 4;
  batch.max_blocks = 2;
  batch.seq_starts = Make(DType::kI32, {3});
  batch.positions = Make(DType::kI32, {3});
  batch.block_tables = Make(DType::kI32, {2, 2});
  const Tensor q = Make(DType::kF32, {3, 32});
  const Tensor cache = Make(DType::kBF16, {16, 16});
  EXPECT_TRUE(CheckAttentionShapes(shape, batch, q, cache, cache, q).ok());
  BatchDescriptor bad = batch;
  bad.max_blocks = 3;
  EXPECT_THAT(std::string(CheckAttentionShapes(shape, bad, q, cache, cache, q).message()),
              HasSubstr("inconsistent batch descriptor"));
  bad = batch;
  bad.n_seqs = 4;  // more sequences than tokens
  EXPECT_FALSE(CheckAttentionShapes(shape, bad, q, cache, cache, q).ok());
  AttentionShape gqa = shape;
  gqa.n_kv_heads = 3;
  EXPECT_THAT(std::string(CheckAttentionShapes(gqa, batch, q, cache, cache, q).message()),
              HasSubstr("n_kv_heads=3"));
  const Tensor ragged = Make(DType::kBF16, {18, 16});  // not whole blocks
  EXPECT_THAT(std::string(CheckAttentionShapes(shape, batch, q, ragged, ragged, q).message()),
              HasSubstr("4-row blocks"));
}

TEST_F(OpChecksTest, MemoryShapes) {
  MemorySelectArgs a;
  a.heads = 2;
  a.n_keys = 16;
  a.knn = 4;
  a.k_dim = 8;
  a.queries = Make(DType::kF32, {3, 16});
  a.keys = Make(DType::kBF16, {64, 4});
  a.rows = Make(DType::kI64, {3, 2, 4});
  a.weights = Make(DType::kF32, {3, 2, 4});
  EXPECT_TRUE(CheckMemorySelectShapes(a).ok());
  a.scores = Make(DType::kF32, {3, 2, 3});
  EXPECT_THAT(std::string(CheckMemorySelectShapes(a).message()), HasSubstr("scores"));
  a.scores = Tensor();
  a.knn = 17;
  EXPECT_THAT(std::string(CheckMemorySelectShapes(a).message()), HasSubstr("knn=17"));

  const Tensor values = Make(DType::kBF16, {40, 64});
  const Tensor rows = Make(DType::kI64, {3, 5});
  const Tensor weights = Make(DType::kF32, {3, 5});
  const Tensor out = Make(DType::kF32, {3, 64});
  EXPECT_TRUE(CheckValueGatherShapes(values, rows, weights, 16, 48, out).ok());
  EXPECT_TRUE(CheckValueGatherShapes(values, rows, weights, 0, 64, out).ok());
  EXPECT_THAT(std::string(CheckValueGatherShapes(values, rows, weights, 32, 80, out).message()),
              HasSubstr("columns [32, 80) are outside [0, 64)"));
  EXPECT_THAT(
      std::string(
          CheckValueGatherShapes(values, rows, Make(DType::kF32, {3, 4}), 0, 64, out).message()),
      HasSubstr("like weights"));
}

TEST_F(OpChecksTest, ElementwiseShapes) {
  const Tensor a = Make(DType::kF32, {6});
  EXPECT_TRUE(CheckSameSize("Add", a, Make(DType::kF32, {2, 3}), "y").ok());
  EXPECT_THAT(std::string(CheckSameSize("Add", a, Make(DType::kF32, {5}), "y").message()),
              HasSubstr("Add: y is F32[5]"));
  EXPECT_TRUE(
      CheckSigmoidGateRowsShapes(Make(DType::kF32, {4, 1}), Make(DType::kF32, {4, 9})).ok());
  EXPECT_FALSE(CheckSigmoidGateRowsShapes(Make(DType::kF32, {3}), Make(DType::kF32, {4, 9})).ok());
  EXPECT_TRUE(CheckRopeShapes(Make(DType::kF32, {2, 3, 8}), Make(DType::kI32, {2}),
                              Make(DType::kF32, {2, 10, 4}))
                  .ok());
  EXPECT_THAT(std::string(CheckRopeShapes(Make(DType::kF32, {2, 3, 8}), Make(DType::kI32, {2}),
                                          Make(DType::kF32, {2, 10, 3}))
                              .message()),
              HasSubstr("[2, max_positions, 4]"));
  EXPECT_TRUE(CheckEmbeddingShapes(Make(DType::kBF16, {50, 8}), Make(DType::kI32, {3}),
                                   Make(DType::kF32, {3, 8}))
                  .ok());
  EXPECT_TRUE(CheckRmsNormShapes(Make(DType::kF32, {2, 8}), Make(DType::kBF16, {8}),
                                 Make(DType::kF32, {2, 8}))
                  .ok());
}

}  // namespace
}  // namespace memserve
