// value_gather on the GPU vs a CPU reference on random inputs. Skips (and says
// so) when no CUDA device is visible; the launch-parameter validation runs
// everywhere.
#include "kernels/value_gather.h"

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_device.h"

namespace memserve::kernels {
namespace {

uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float FromBf16(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(ValueGatherParamsTest, ValidateNamesTheField) {
  ValueGatherParams p;
  EXPECT_NE(p.Validate().message().find("values"), std::string::npos);
  std::vector<uint16_t> v(4);
  std::vector<int64_t> idx(1);
  std::vector<float> w(1), out(4);
  p.values = v.data();
  p.indices = idx.data();
  p.weights = w.data();
  p.out = out.data();
  p.rows = 1;
  p.v_dim = 4;
  p.n = 1;
  p.k = 0;
  EXPECT_NE(p.Validate().message().find("k must be"), std::string::npos);
  p.k = 1;
  EXPECT_TRUE(p.Validate().ok());
}

TEST(ValueGatherTest, MatchesCpuReference) {
  std::string why;
  if (ListCudaDevices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
  const int64_t rows = 4096;
  const int v_dim = 200, n = 37, k = 64;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int64_t> row(0, rows - 1);
  std::vector<uint16_t> values(rows * v_dim);
  for (auto& x : values) x = ToBf16(normal(rng));
  std::vector<int64_t> idx(n * k);
  for (auto& x : idx) x = row(rng);
  std::vector<float> w(n * k);
  for (auto& x : w) x = normal(rng);

  std::vector<float> want(n * v_dim, 0.f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j)
      for (int c = 0; c < v_dim; ++c)
        want[i * v_dim + c] += w[i * k + j] * FromBf16(values[idx[i * k + j] * v_dim + c]);

  uint16_t* d_values;
  int64_t* d_idx;
  float *d_w, *d_out;
  ASSERT_EQ(cudaMalloc(&d_values, values.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_idx, idx.size() * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_w, w.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, want.size() * 4), cudaSuccess);
  cudaMemcpy(d_values, values.data(), values.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(d_idx, idx.data(), idx.size() * 8, cudaMemcpyHostToDevice);
  cudaMemcpy(d_w, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  ValueGatherParams p{d_values, d_idx, d_w, d_out, rows, v_dim, n, k};
  ASSERT_TRUE(LaunchValueGather(p, nullptr).ok());
  std::vector<float> got(want.size());
  ASSERT_EQ(cudaMemcpy(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  double err = 0, ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    ref += want[i] * want[i];
  }
  EXPECT_LT(err / ref, 1e-10);  // NMSE
  cudaFree(d_values);
  cudaFree(d_idx);
  cudaFree(d_w);
  cudaFree(d_out);
}

}  // namespace
}  // namespace memserve::kernels
