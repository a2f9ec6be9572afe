// rope on the GPU vs the CPU backend's Rope on random inputs, bit for bit
// (skips without a GPU); the parameter validation runs everywhere.
#include "kernels/rope.h"

#include <random>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(RopeParamsTest, ValidateNamesTheField) {
  float buf[8] = {};
  int32_t pos[1] = {0};
  RopeParams p;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RopeParams.x is null"));
  p.x = buf;
  p.positions = pos;
  p.cos_sin = buf;
  p.n_tokens = 1;
  p.n_heads = 2;
  p.head_dim = 3;
  p.max_positions = 1;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RopeParams.head_dim must be even"));
  p.head_dim = 4;
  EXPECT_TRUE(p.Validate().ok());
  p.token_stride = 7;
  EXPECT_TRUE(StatusMentions(p.Validate(),
                             "RopeParams.token_stride must be 0 or >= "
                             "n_heads * head_dim = 8, got 7"));
  p.token_stride = 0;
  p.max_positions = 0;
  EXPECT_TRUE(StatusMentions(LaunchRope(p, nullptr), "RopeParams.max_positions"));
}

// Rotates x [n, n_heads, head_dim] (rows token_stride apart, extra columns
// untouched) on the GPU and on the CPU backend.
void ExpectMatchesCpu(int64_t n, int n_heads, int head_dim, int64_t token_stride,
                      std::mt19937* rng) {
  SCOPED_TRACE(testing::Message() << "n " << n << " heads " << n_heads << " head_dim " << head_dim
                                  << " token_stride " << token_stride);
  const int max_positions = 300;
  const RopeTable table = RopeTable::Make(head_dim, max_positions, 500000.0f);
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  const int64_t stride = token_stride == 0 ? row : token_stride;
  std::vector<float> x = RandomVector(n * stride, rng, 2.0f);
  std::vector<int32_t> positions(n);
  std::uniform_int_distribution<int32_t> any_pos(0, max_positions - 1);
  for (auto& p : positions) p = any_pos(*rng);

  CpuBackend cpu(CpuBackend::Options{1, CpuIsa::kAuto});
  TestTensors host(&cpu);
  std::vector<float> want = x;
  for (int64_t t = 0; t < n; ++t) {  // the CPU op takes dense rows: one token at a time
    std::vector<float> xt(x.begin() + t * stride, x.begin() + t * stride + row);
    const Tensor xt_cpu = host.F32(xt, {1, n_heads, head_dim});
    ASSERT_TRUE(cpu.Rope(xt_cpu, host.I32({positions[t]}, {1}), host.Rope(table)).ok());
    const std::vector<float> rotated = host.ReadF32(xt_cpu);
    std::copy(rotated.begin(), rotated.end(), want.begin() + t * stride);
  }

  std::vector<float> cos_sin = table.cos;
  cos_sin.insert(cos_sin.end(), table.sin.begin(), table.sin.end());
  DeviceArray<float> dx(x), dtable(cos_sin);
  DeviceArray<int32_t> dpos(positions);
  RopeParams p;
  p.x = dx.get();
  p.positions = dpos.get();
  p.cos_sin = dtable.get();
  p.n_tokens = n;
  p.n_heads = n_heads;
  p.head_dim = head_dim;
  p.max_positions = max_positions;
  p.token_stride = token_stride;
  ASSERT_TRUE(LaunchRope(p, nullptr).ok());
  const std::vector<float> got = dx.Read();
  // Every product and sum rounded separately on both sides: bit-identical.
  EXPECT_EQ(BitMismatches(got, want), 0);
}

TEST(RopeTest, MatchesTheCpuBackendBitForBit) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  ExpectMatchesCpu(/*n=*/1, /*n_heads=*/4, /*head_dim=*/64, /*token_stride=*/0, &rng);
  ExpectMatchesCpu(/*n=*/77, /*n_heads=*/16, /*head_dim=*/128, /*token_stride=*/0, &rng);
  ExpectMatchesCpu(/*n=*/5, /*n_heads=*/3, /*head_dim=*/6, /*token_stride=*/0, &rng);
  // k inside a fused [n, q_dim + 2 * kv_dim] row: stride wider than the row.
  ExpectMatchesCpu(/*n=*/9, /*n_heads=*/2, /*head_dim=*/64, /*token_stride=*/512, &rng);
}

TEST(RopeTest, PositionOutsideTheTableLeavesTheRowUnrotated) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  const RopeTable table = RopeTable::Make(8, 4, 10000.0f);
  std::vector<float> cos_sin = table.cos;
  cos_sin.insert(cos_sin.end(), table.sin.begin(), table.sin.end());
  std::vector<float> x(2 * 8, 1.5f);
  DeviceArray<float> dx(x), dtable(cos_sin);
  DeviceArray<int32_t> dpos(std::vector<int32_t>{4, -1});
  RopeParams p;
  p.x = dx.get();
  p.positions = dpos.get();
  p.cos_sin = dtable.get();
  p.n_tokens = 2;
  p.n_heads = 1;
  p.head_dim = 8;
  p.max_positions = 4;
  ASSERT_TRUE(LaunchRope(p, nullptr).ok());
  EXPECT_EQ(dx.Read(), x);
}

}  // namespace
}  // namespace memserve::kernels
