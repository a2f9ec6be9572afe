// write_kv on the GPU vs the CPU backend's WriteKv (fp32 cache; a bf16 cache
// holds the CPU result rounded by F32ToBf16), bit for bit (skips without a
// GPU); the parameter validation runs everywhere.
#include "kernels/write_kv.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(WriteKvParamsTest, ValidateNamesTheField) {
  float buf[8] = {};
  int64_t rows[1] = {0};
  WriteKvParams p;
  EXPECT_TRUE(StatusMentions(p.Validate(), "WriteKvParams.k is null"));
  p.k = buf;
  p.v = buf;
  p.kv_rows = rows;
  p.k_cache = buf;
  p.v_cache = buf;
  p.n_tokens = 1;
  p.kv_dim = 4;
  EXPECT_TRUE(StatusMentions(p.Validate(), "WriteKvParams.cache_rows must be >= 1, got 0"));
  p.cache_rows = 2;
  EXPECT_TRUE(p.Validate().ok());
  p.src_stride = 3;
  EXPECT_TRUE(StatusMentions(LaunchWriteKv(p, nullptr), "WriteKvParams.src_stride"));
}

void ExpectMatchesCpu(ElementType cache_type, int64_t src_stride, std::mt19937* rng) {
  SCOPED_TRACE(testing::Message() << ElementTypeName(cache_type) << " src_stride " << src_stride);
  const int64_t n = 50, kv_dim = 256, cache_rows = 128;
  const int64_t stride = src_stride == 0 ? kv_dim : src_stride;
  const std::vector<float> k = RandomVector(n * stride, rng);
  const std::vector<float> v = RandomVector(n * stride, rng);
  std::vector<int64_t> rows(cache_rows);
  std::iota(rows.begin(), rows.end(), 0);
  std::shuffle(rows.begin(), rows.end(), *rng);
  rows.resize(n);  // distinct, scattered
  std::vector<float> k_cache = RandomVector(cache_rows * kv_dim, rng);
  std::vector<float> v_cache = RandomVector(cache_rows * kv_dim, rng);
  if (cache_type == ElementType::kBF16) {  // a bf16 cache holds bf16 values
    for (float& x : k_cache) x = Bf16ToF32(F32ToBf16(x));
    for (float& x : v_cache) x = Bf16ToF32(F32ToBf16(x));
  }

  // The CPU backend on dense k, v rows.
  std::vector<float> k_dense(n * kv_dim), v_dense(n * kv_dim);
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(k.begin() + t * stride, kv_dim, k_dense.begin() + t * kv_dim);
    std::copy_n(v.begin() + t * stride, kv_dim, v_dense.begin() + t * kv_dim);
  }
  CpuBackend cpu(CpuBackend::Options{1, CpuIsa::kAuto});
  TestTensors host(&cpu);
  const Tensor kc = host.F32(k_cache, {cache_rows, kv_dim});
  const Tensor vc = host.F32(v_cache, {cache_rows, kv_dim});
  ASSERT_TRUE(cpu.WriteKv(host.F32(k_dense, {n, kv_dim}), host.F32(v_dense, {n, kv_dim}),
                          host.I64(rows, {n}), kc, vc)
                  .ok());
  const std::vector<float> want_k = host.ReadF32(kc), want_v = host.ReadF32(vc);

  DeviceArray<float> dk(k), dv(v);
  DeviceArray<int64_t> drows(rows);
  WriteKvParams p;
  p.k = dk.get();
  p.v = dv.get();
  p.kv_rows = drows.get();
  p.cache_type = cache_type;
  p.n_tokens = n;
  p.kv_dim = kv_dim;
  p.cache_rows = cache_rows;
  p.src_stride = src_stride;
  if (cache_type == ElementType::kF32) {
    DeviceArray<float> dkc(k_cache), dvc(v_cache);
    p.k_cache = dkc.get();
    p.v_cache = dvc.get();
    ASSERT_TRUE(LaunchWriteKv(p, nullptr).ok());
    EXPECT_EQ(BitMismatches(dkc.Read(), want_k), 0);
    EXPECT_EQ(BitMismatches(dvc.Read(), want_v), 0);
  } else {
    std::vector<uint16_t> kb(k_cache.size()), vb(v_cache.size());
    for (size_t i = 0; i < kb.size(); ++i) {
      kb[i] = F32ToBf16(k_cache[i]);
      vb[i] = F32ToBf16(v_cache[i]);
    }
    DeviceArray<uint16_t> dkc(kb), dvc(vb);
    p.k_cache = dkc.get();
    p.v_cache = dvc.get();
    ASSERT_TRUE(LaunchWriteKv(p, nullptr).ok());
    const std::vector<uint16_t> got_k = dkc.Read(), got_v = dvc.Read();
    ASSERT_EQ(got_k.size(), want_k.size());
    int64_t mismatches = 0;
    for (size_t i = 0; i < got_k.size(); ++i) {
      mismatches += got_k[i] != F32ToBf16(want_k[i]);
      mismatches += got_v[i] != F32ToBf16(want_v[i]);
    }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(WriteKvTest, MatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (ElementType type : {ElementType::kF32, ElementType::kBF16}) {
    ExpectMatchesCpu(type, /*src_stride=*/0, &rng);
    ExpectMatchesCpu(type, /*src_stride=*/256 * 3, &rng);  // k inside a fused qkv row
  }
}

TEST(WriteKvTest, RowOutsideTheCacheIsNotWritten) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  DeviceArray<float> dk(std::vector<float>(2 * 4, 1.0f)), dv(std::vector<float>(2 * 4, 2.0f));
  DeviceArray<int64_t> drows(std::vector<int64_t>{5, 1});
  DeviceArray<float> dkc(std::vector<float>(2 * 4, 0.0f)), dvc(std::vector<float>(2 * 4, 0.0f));
  WriteKvParams p;
  p.k = dk.get();
  p.v = dv.get();
  p.kv_rows = drows.get();
  p.k_cache = dkc.get();
  p.v_cache = dvc.get();
  p.cache_type = ElementType::kF32;
  p.n_tokens = 2;
  p.kv_dim = 4;
  p.cache_rows = 2;
  ASSERT_TRUE(LaunchWriteKv(p, nullptr).ok());
  EXPECT_EQ(dkc.Read(), (std::vector<float>{0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(dvc.Read(), (std::vector<float>{0, 0, 0, 0, 2, 2, 2, 2}));
}

}  // namespace
}  // namespace memserve::kernels
