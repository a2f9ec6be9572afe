// rms_norm on the GPU vs the CPU backend's RmsNorm on random inputs (skips
// without a GPU); the parameter validation runs everywhere.
#include "kernels/rms_norm.h"

#include <random>
#include <string>
#include <vector>

#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(RmsNormParamsTest, ValidateNamesTheField) {
  float buf[4] = {0, 0, 0, 0};
  RmsNormParams p;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RmsNormParams.x is null"));
  p.x = buf;
  p.weight = buf;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RmsNormParams.y is null"));
  p.y = buf;
  p.n_tokens = 1;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RmsNormParams.dim must be in [1, 2^20], got 0"));
  p.dim = 4;
  EXPECT_TRUE(p.Validate().ok());
  p.n_tokens = -1;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RmsNormParams.n_tokens"));
  p.n_tokens = 0;  // nothing to do is valid
  EXPECT_TRUE(p.Validate().ok());
  p.eps = -1.0f;
  EXPECT_TRUE(StatusMentions(p.Validate(), "RmsNormParams.eps"));
  // The launch validates first: no CUDA call is made for bad params.
  EXPECT_TRUE(StatusMentions(LaunchRmsNorm(p, nullptr), "RmsNormParams.eps"));
}

TEST(RmsNormTest, MatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  CpuBackend cpu(CpuBackend::Options{1, CpuIsa::kAuto});
  TestTensors host(&cpu);
  std::mt19937 rng(1);
  for (DType weight_type : {DType::kF32, DType::kBF16}) {
    for (int dim : {7, 1000, 4096}) {
      for (bool in_place : {false, true}) {
        const int64_t n = 37;
        SCOPED_TRACE(testing::Message()
                     << DTypeName(weight_type) << " dim " << dim << (in_place ? " in place" : ""));
        const std::vector<float> x = RandomVector(n * dim, &rng, 3.0f);
        const OwnedTensor w = MakeTensor({dim}, weight_type, &rng);
        const Tensor y_cpu = host.Filled(DType::kF32, {n, dim});
        ASSERT_TRUE(cpu.RmsNorm(host.F32(x, {n, dim}), host.Weight(w), 1e-5f, y_cpu).ok());
        const std::vector<float> want = host.ReadF32(y_cpu);

        DeviceArray<float> dx(x), dy(x.size());
        DeviceArray<float> dw_f32(w.f32);
        DeviceArray<uint16_t> dw_bf16(w.bf16);
        RmsNormParams p;
        p.x = dx.get();
        p.y = in_place ? dx.get() : dy.get();
        p.weight_type = weight_type == DType::kF32 ? ElementType::kF32 : ElementType::kBF16;
        p.weight = weight_type == DType::kF32 ? static_cast<const void*>(dw_f32.get())
                                              : static_cast<const void*>(dw_bf16.get());
        p.n_tokens = n;
        p.dim = dim;
        p.eps = 1e-5f;
        ASSERT_TRUE(LaunchRmsNorm(p, nullptr).ok());
        const std::vector<float> got = in_place ? dx.Read() : dy.Read();
        // fp64 sums on both sides: identical almost always; allow rare 1-ulp
        // differences of the mean.
        EXPECT_LT(Nmse(got, want), 1e-12);
        EXPECT_LE(BitMismatches(got, want), static_cast<int64_t>(got.size() / 100));
      }
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
