// The product-key lookup's host side on the CPU (kernels/product_key.h):
// Validate() names the field and the limit, the score kernel's split, the
// 16-byte path's conditions and the lookup's workspace size.
#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "kernels/product_key.h"
#include "kernels/product_key_select.h"

namespace memserve::kernels {
namespace {

void ExpectError(const absl::Status& s, const std::string& text) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(text), std::string::npos)
      << "'" << s.message() << "' lacks '" << text << "'";
}

TEST(ProductKeyParamsTest, MaxCandidatesIsThoseOfKnn64) {
  EXPECT_EQ(CandidateCount(kProductKeyMaxKnn), kProductKeyMaxCandidates);
}

TEST(ProductKeyParamsTest, ScoresValidateNamesTheField) {
  float f[4] = {};
  uint16_t keys[4] = {};
  ProductKeyScoresParams p;
  ExpectError(p.Validate(), "ProductKeyScoresParams.queries is null");
  p.queries = f;
  p.keys = keys;
  p.subkey_scores = f;
  p.n_tokens = 3;
  p.heads = 4;
  p.n_keys = 1024;
  p.k_dim = 512;
  EXPECT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.effective_query_stride(), 2048);
  p.k_dim = 511;
  ExpectError(p.Validate(), "ProductKeyScoresParams.k_dim must be even and in [2, 16384], got 511");
  p.k_dim = 512;
  p.n_keys = 8193;
  ExpectError(p.Validate(), "ProductKeyScoresParams.n_keys must be in [1, 8192], got 8193");
  p.n_keys = 1024;
  p.query_stride = 100;
  ExpectError(p.Validate(), "query_stride must be 0 or >= heads * k_dim = 2048, got 100");
  p.query_stride = 4096;
  EXPECT_TRUE(p.Validate().ok());
  p.n_tokens = -1;
  ExpectError(p.Validate(), "ProductKeyScoresParams.n_tokens must be in [0, 2^31 - 1], got -1");
  p.n_tokens = int64_t{1} << 28;  // x 4 heads x 2 halves = 2^31 blocks
  ExpectError(p.Validate(), "ProductKeyScoresParams.n_tokens * heads * 2 must be <= 2^31 - 1");
}

TEST(ProductKeyParamsTest, SelectValidateNamesTheField) {
  float f[4] = {};
  int64_t r[4] = {};
  ProductKeySelectParams p;
  ExpectError(p.Validate(), "ProductKeySelectParams.subkey_scores is null");
  p.subkey_scores = f;
  p.rows = r;
  p.weights = f;
  p.n_tokens = 1;
  p.heads = 2;
  p.n_keys = 16;
  p.knn = 17;
  ExpectError(p.Validate(),
              "ProductKeySelectParams.knn must be in [1, min(n_keys, 64)] = [1, 16], got 17");
  p.knn = 16;
  EXPECT_TRUE(p.Validate().ok());
  p.n_keys = 8192;
  p.knn = 65;
  ExpectError(p.Validate(), "= [1, 64], got 65");
  p.knn = 64;
  EXPECT_TRUE(p.Validate().ok());
  p.heads = 0;
  ExpectError(p.Validate(), "ProductKeySelectParams.heads must be >= 1, got 0");
  p.heads = 4;
  p.n_tokens = int64_t{1} << 30;
  ExpectError(p.Validate(), "n_tokens * heads must be <= 2^31 - 1");
}

TEST(ProductKeyParamsTest, GatherValidateAndTheVectorPath) {
  alignas(16) uint16_t values[64] = {};
  int64_t r[4] = {};
  float w[4] = {};
  float out[4] = {};
  ProductKeyGatherParams p;
  ExpectError(p.Validate(), "ProductKeyGatherParams.values is null");
  p.values = values;
  p.rows = r;
  p.weights = w;
  p.out = out;
  p.table_rows = 4;
  p.col_begin = 16;
  p.col_end = 16;
  p.picks = 4;
  p.n_tokens = 1;
  ExpectError(p.Validate(), "ProductKeyGatherParams.col_end must be > col_begin = 16, got 16");
  p.col_end = 48;
  p.row_stride = 40;
  ExpectError(p.Validate(),
              "ProductKeyGatherParams.row_stride must be 0 or >= col_end = 48, got 40");
  p.row_stride = 64;
  EXPECT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.effective_out_stride(), 32);
  p.out_stride = 31;
  ExpectError(p.Validate(), "out_stride must be 0 or >= col_end - col_begin = 32, got 31");
  p.out_stride = 0;
  p.picks = 0;
  ExpectError(p.Validate(), "ProductKeyGatherParams.picks must be in [1, 2^20], got 0");
  p.picks = 4;
  // 16-byte loads: bf16 needs the start and the stride in multiples of 8.
  EXPECT_TRUE(p.vectorized());
  p.col_begin = 4;
  EXPECT_FALSE(p.vectorized());
  p.col_begin = 8;
  p.row_stride = 60;
  EXPECT_FALSE(p.vectorized());
  p.row_stride = 64;
  p.values = values + 1;
  EXPECT_FALSE(p.vectorized());
  p.values = values;
  p.values_type = ElementType::kF32;
  p.col_begin = 4;  // 4 fp32 = 16 bytes
  EXPECT_TRUE(p.vectorized());
}

TEST(ProductKeyParamsTest, ScoreSplitsFillTheGpuAtSmallBatches) {
  EXPECT_EQ(ProductKeyScoreSplits(1, 4, 1024), 16);  // 8 groups x 16 = 128 blocks, 64 keys each
  EXPECT_EQ(ProductKeyScoreSplits(1, 4, 8192), 66);  // 528 blocks
  EXPECT_EQ(ProductKeyScoreSplits(8, 4, 1024), 9);   // 64 groups
  EXPECT_EQ(ProductKeyScoreSplits(64, 4, 1024), 2);
  EXPECT_EQ(ProductKeyScoreSplits(512, 4, 1024), 1);
  EXPECT_EQ(ProductKeyScoreSplits(1, 1, 10), 1);
  EXPECT_EQ(ProductKeyScoreSplits(0, 4, 1024), 1);
}

TEST(ProductKeyParamsTest, GatherShapeDependsOnTheBatchOnly) {
  for (int64_t t : {1, 8, 63}) {
    EXPECT_EQ(ProductKeyGatherShapeOf(t).warps, 16);
    EXPECT_EQ(ProductKeyGatherShapeOf(t).lanes, 8);
  }
  for (int64_t t : {64, 512, 4096}) {
    EXPECT_EQ(ProductKeyGatherShapeOf(t).warps, 4);
    EXPECT_EQ(ProductKeyGatherShapeOf(t).lanes, 32);
  }
}

TEST(ProductKeyParamsTest, LookupWorkspaceAndValidate) {
  alignas(16) uint16_t values[64] = {};
  float f[4] = {};
  ProductKeyLookupParams p;
  p.queries = f;
  p.keys = values;
  p.keys_type = ElementType::kBF16;
  p.values = values;
  p.table_rows = 16;
  p.col_begin = 0;
  p.col_end = 16;
  p.out = f;
  p.n_tokens = 2;
  p.heads = 4;
  p.n_keys = 4;
  p.knn = 4;
  p.k_dim = 8;
  // scores 2*4*2*4 floats = 256 B; rows 32 x 8 = 256 B; weights 128 -> 256 B.
  EXPECT_EQ(ProductKeyLookupWorkspaceBytes(p), 768u);
  ExpectError(p.Validate(),
              "ProductKeyLookupParams.workspace must hold ProductKeyLookupWorkspaceBytes = 768 "
              "bytes, got 0");
  p.workspace = f;
  p.workspace_bytes = 768;
  EXPECT_TRUE(p.Validate().ok());
  int64_t r[32];
  p.rows = r;
  ExpectError(p.Validate(), "rows and weights are given together or not at all");
  p.weights = f;
  EXPECT_EQ(ProductKeyLookupWorkspaceBytes(p), 256u);
  EXPECT_TRUE(p.Validate().ok());
  p.knn = 5;
  ExpectError(p.Validate(),
              "ProductKeyLookupParams.knn must be in [1, min(n_keys, 64)] = [1, 4], got 5");
  p.knn = 4;
  p.col_end = 0;
  ExpectError(p.Validate(),
              "ProductKeyLookupParams: ProductKeyGatherParams.col_end must be > col_begin");
}

}  // namespace
}  // namespace memserve::kernels
