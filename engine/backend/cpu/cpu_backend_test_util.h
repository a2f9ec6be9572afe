// Helpers of the CPU backend's op tests: test-owned tensors, random inputs,
// and a fixture over every (instruction-set level, thread count) combination
// this CPU supports.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_TEST_UTIL_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "engine/weights.h"
#include "gtest/gtest.h"

namespace memserve {

// A tensor owned by the test, viewed as a TensorView.
struct OwnedTensor {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  TensorView view;
  // fp32 values the backend sees (bf16-rounded for BF16 tensors).
  std::vector<float> values;
};

inline OwnedTensor MakeTensor(std::vector<int64_t> shape, DType dtype, std::mt19937* rng,
                              float scale = 1.0f) {
  OwnedTensor t;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::normal_distribution<float> dist(0.0f, scale);
  t.values.resize(n);
  for (auto& v : t.values) v = dist(*rng);
  t.view.name = "test";
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.f32 = t.values;
    t.view.data = t.f32.data();
  } else {
    t.bf16.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      t.bf16[i] = F32ToBf16(t.values[i]);
      t.values[i] = Bf16ToF32(t.bf16[i]);
    }
    t.view.data = t.bf16.data();
  }
  return t;
}

inline OwnedTensor FromValues(std::vector<float> values, std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.values = std::move(values);
  t.view.name = "test";
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.f32 = t.values;
    t.view.data = t.f32.data();
  } else {
    t.bf16.resize(t.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      t.bf16[i] = F32ToBf16(t.values[i]);
      t.values[i] = Bf16ToF32(t.bf16[i]);
    }
    t.view.data = t.bf16.data();
  }
  return t;
}

inline std::vector<float> RandomVector(int64_t n, std::mt19937* rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(*rng);
  return v;
}

// Backends for every (ISA, thread count) combination.
class CpuBackendTest : public ::testing::TestWithParam<std::tuple<CpuIsa, int>> {
 protected:
  CpuBackendTest()
      : backend_(CpuBackend::Options{std::get<1>(GetParam()), std::get<0>(GetParam())}) {}
  CpuBackend backend_;
  std::mt19937 rng_{1234};
};

inline std::vector<std::tuple<CpuIsa, int>> AllCpuConfigs() {
  std::vector<std::tuple<CpuIsa, int>> out;
  for (CpuIsa isa : SupportedCpuIsas()) {
    for (int threads : {1, 3}) out.emplace_back(isa, threads);
  }
  return out;
}

// Instantiates the tests of `fixture` (CpuBackendTest or a subclass) for
// AllCpuConfigs(), named like "avx512_3threads".
#define INSTANTIATE_CPU_BACKEND_TEST_SUITE(fixture)                                            \
  INSTANTIATE_TEST_SUITE_P(AllIsas, fixture, ::testing::ValuesIn(::memserve::AllCpuConfigs()), \
                           [](const ::testing::TestParamInfo<std::tuple<CpuIsa, int>>& info) { \
                             return absl::StrCat(CpuIsaName(std::get<0>(info.param)), "_",     \
                                                 std::get<1>(info.param), "threads");          \
                           })

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_TEST_UTIL_H_
