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
#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "engine/weights.h"
#include "gtest/gtest.h"

namespace memserve {

// Backends for every (ISA, thread count) combination.
class CpuBackendTest : public ::testing::TestWithParam<std::tuple<CpuIsa, int>> {
 protected:
  CpuBackendTest()
      : backend_(CpuBackend::Options{std::get<1>(GetParam()), std::get<0>(GetParam())}) {}
  CpuBackend backend_;
  TestTensors dev_{&backend_};
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
