// value_gather on the GPU vs a CPU reference on random inputs. Skips (and says
// so) when no CUDA device is visible; the launch-parameter validation runs
// everywhere.
#include "kernels/value_gather.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
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
  // A column slice must lie within the row.
  p.row_stride = 8;
  p.col0 = 4;
  EXPECT_TRUE(p.Validate().ok());
  p.col0 = 5;
  EXPECT_NE(p.Validate().message().find("past the row (row_stride 8)"), std::string::npos);
  p.col0 = -1;
  EXPECT_NE(p.Validate().message().find("col0 must be >= 0"), std::string::npos);
  p.col0 = 0;
  p.row_stride = -2;
  EXPECT_NE(p.Validate().message().find("row_stride must be >= 0"), std::string::npos);
  p.row_stride = 2;  // narrower than v_dim = 4
  EXPECT_NE(p.Validate().message().find("past the row"), std::string::npos);
  // Exactly one table: bf16 `values` or fp32 `values_f32`.
  p.row_stride = 0;
  std::vector<float> vf(4);
  p.values_f32 = vf.data();
  EXPECT_NE(p.Validate().message().find("values and values_f32 are both set"), std::string::npos);
  p.values = nullptr;
  EXPECT_TRUE(p.Validate().ok());
}

// Runs the kernel on random inputs and compares it with a CPU reference by
// NMSE. The table is [rows, row_stride] (row_stride 0 = v_dim) and the
// kernel reads its columns [col0, col0 + v_dim).
void ExpectMatchesCpuReference(int64_t rows, int64_t row_stride, int64_t col0, int v_dim, int n,
                               int k, bool f32_table = false) {
  const int64_t stride = row_stride == 0 ? v_dim : row_stride;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int64_t> row(0, rows - 1);
  std::vector<uint16_t> values(rows * stride);
  for (auto& x : values) x = ToBf16(normal(rng));
  std::vector<int64_t> idx(n * k);
  for (auto& x : idx) x = row(rng);
  std::vector<float> w(n * k);
  for (auto& x : w) x = normal(rng);

  std::vector<float> want(n * v_dim, 0.f);  // [n, v_dim]
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j)
      for (int c = 0; c < v_dim; ++c)
        want[i * v_dim + c] += w[i * k + j] * FromBf16(values[idx[i * k + j] * stride + col0 + c]);

  // The fp32 table holds the same (bf16-exact) values.
  std::vector<float> values_f32(values.size());
  for (size_t i = 0; i < values.size(); ++i) values_f32[i] = FromBf16(values[i]);
  uint16_t* d_values;
  float* d_values_f32;
  int64_t* d_idx;
  float *d_w, *d_out;
  ASSERT_EQ(cudaMalloc(&d_values, values.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_values_f32, values_f32.size() * 4), cudaSuccess);
  cudaMemcpy(d_values_f32, values_f32.data(), values_f32.size() * 4, cudaMemcpyHostToDevice);
  ASSERT_EQ(cudaMalloc(&d_idx, idx.size() * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_w, w.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, want.size() * 4), cudaSuccess);
  cudaMemcpy(d_values, values.data(), values.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(d_idx, idx.data(), idx.size() * 8, cudaMemcpyHostToDevice);
  cudaMemcpy(d_w, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  ValueGatherParams p;
  if (f32_table) {
    p.values_f32 = d_values_f32;
  } else {
    p.values = d_values;
  }
  p.indices = d_idx;
  p.weights = d_w;
  p.out = d_out;
  p.rows = rows;
  p.v_dim = v_dim;
  p.n = n;
  p.k = k;
  p.row_stride = row_stride;
  p.col0 = col0;
  ASSERT_TRUE(LaunchValueGather(p, nullptr).ok());
  std::vector<float> got(want.size());
  ASSERT_EQ(cudaMemcpy(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  double err = 0, ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    ref += want[i] * want[i];
  }
  EXPECT_LT(err / ref, 1e-10) << "row_stride " << row_stride << " col0 " << col0;  // NMSE
  cudaFree(d_values);
  cudaFree(d_values_f32);
  cudaFree(d_idx);
  cudaFree(d_w);
  cudaFree(d_out);
}

TEST(ValueGatherTest, MatchesCpuReference) {
  std::string why;
  if (ListCudaDevices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
  ExpectMatchesCpuReference(/*rows=*/4096, /*row_stride=*/0, /*col0=*/0, /*v_dim=*/200, 37, 64);
}

// One shard's column slice of a wider table: the middle, and the last slice.
TEST(ValueGatherTest, ColumnSliceMatchesCpuReference) {
  std::string why;
  if (ListCudaDevices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
  ExpectMatchesCpuReference(/*rows=*/4096, /*row_stride=*/256, /*col0=*/64, /*v_dim=*/64, 37, 64);
  ExpectMatchesCpuReference(/*rows=*/1000, /*row_stride=*/200, /*col0=*/150, /*v_dim=*/50, 5, 32);
}

TEST(ValueGatherTest, Fp32TableMatchesCpuReference) {
  std::string why;
  if (ListCudaDevices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
  ExpectMatchesCpuReference(/*rows=*/4096, /*row_stride=*/0, /*col0=*/0, /*v_dim=*/200, 37, 64,
                            /*f32_table=*/true);
  ExpectMatchesCpuReference(/*rows=*/1000, /*row_stride=*/200, /*col0=*/150, /*v_dim=*/50, 5, 32,
                            /*f32_table=*/true);
}

}  // namespace
}  // namespace memserve::kernels
