// swiglu, add and sigmoid_gate_rows on the GPU vs the CPU backend's ops on
// random inputs (skip without a GPU); the parameter validation runs
// everywhere.
#include "kernels/elementwise.h"

#include <random>
#include <vector>

#include "engine/backend/backend_test_util.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/kernel_test_util.h"

namespace memserve::kernels {
namespace {

TEST(ElementwiseParamsTest, ValidateNamesTheField) {
  float buf[4] = {};
  SwiGluParams s;
  s.a = buf;
  s.b = buf;
  EXPECT_TRUE(StatusMentions(s.Validate(), "SwiGluParams.y is null"));
  s.y = buf;
  s.n = -3;
  EXPECT_TRUE(StatusMentions(LaunchSwiGlu(s, nullptr), "SwiGluParams.n must be in [0, 2^40]"));
  s.n = 0;
  EXPECT_TRUE(LaunchSwiGlu(s, nullptr).ok());  // nothing to do: no CUDA call

  AddParams a;
  EXPECT_TRUE(StatusMentions(a.Validate(), "AddParams.x is null"));

  SigmoidGateRowsParams g;
  g.gate = buf;
  g.x = buf;
  g.rows = 1;
  EXPECT_TRUE(StatusMentions(g.Validate(), "SigmoidGateRowsParams.cols must be in [1, 2^24]"));
  g.cols = 4;
  EXPECT_TRUE(g.Validate().ok());
}

class ElementwiseTest : public ::testing::Test {
 protected:
  CpuBackend cpu_{CpuBackend::Options{1, CpuIsa::kAuto}};
  TestTensors host_{&cpu_};
  std::mt19937 rng_{3};
};

// Sizes: below one vector, odd (scalar tail), large; offset 1 misaligns the
// arrays so the scalar path runs.
TEST_F(ElementwiseTest, SwiGluMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  for (int64_t n : {3, 1001, 1 << 20}) {
    for (int offset : {0, 1}) {
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << "n " << n << " offset " << offset << " in place " << in_place);
        const std::vector<float> a = RandomVector(n, &rng_, 4.0f);
        const std::vector<float> b = RandomVector(n, &rng_);
        const Tensor y_cpu = host_.Filled(DType::kF32, {n});
        ASSERT_TRUE(cpu_.SwiGlu(host_.F32(a, {n}), host_.F32(b, {n}), y_cpu).ok());
        const std::vector<float> want = host_.ReadF32(y_cpu);

        std::vector<float> a_pad(offset, 0.0f), b_pad(offset, 0.0f);
        a_pad.insert(a_pad.end(), a.begin(), a.end());
        b_pad.insert(b_pad.end(), b.begin(), b.end());
        DeviceArray<float> da(a_pad), db(b_pad), dy(n + offset);
        SwiGluParams p;
        p.a = da.get() + offset;
        p.b = db.get() + offset;
        p.y = in_place ? da.get() + offset : dy.get() + offset;
        p.n = n;
        ASSERT_TRUE(LaunchSwiGlu(p, nullptr).ok());
        std::vector<float> got = in_place ? da.Read() : dy.Read();
        got.erase(got.begin(), got.begin() + offset);
        EXPECT_LT(Nmse(got, want), 1e-12);  // expf vs std::exp: a few ulp
      }
    }
  }
}

TEST_F(ElementwiseTest, AddMatchesTheCpuBackendExactly) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  for (int64_t n : {3, 1001, 1 << 20}) {
    for (int offset : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "n " << n << " offset " << offset);
      const std::vector<float> x = RandomVector(n, &rng_);
      const std::vector<float> y = RandomVector(n, &rng_);
      const Tensor y_cpu = host_.F32(y, {n});
      ASSERT_TRUE(cpu_.Add(host_.F32(x, {n}), y_cpu).ok());
      const std::vector<float> want = host_.ReadF32(y_cpu);

      std::vector<float> x_pad(offset, 0.0f), y_pad(offset, 0.0f);
      x_pad.insert(x_pad.end(), x.begin(), x.end());
      y_pad.insert(y_pad.end(), y.begin(), y.end());
      DeviceArray<float> dx(x_pad), dy(y_pad);
      AddParams p;
      p.x = dx.get() + offset;
      p.y = dy.get() + offset;
      p.n = n;
      ASSERT_TRUE(LaunchAdd(p, nullptr).ok());
      std::vector<float> got = dy.Read();
      got.erase(got.begin(), got.begin() + offset);
      EXPECT_EQ(BitMismatches(got, want), 0);
    }
  }
}

TEST_F(ElementwiseTest, SigmoidGateRowsMatchesTheCpuBackend) {
  MEMSERVE_SKIP_WITHOUT_GPU();
  for (int64_t rows : {1, 37, 70000}) {
    for (int64_t cols : {1, 300, 1024}) {
      if (rows * cols > (int64_t{1} << 26)) continue;
      SCOPED_TRACE(testing::Message() << rows << " x " << cols);
      const std::vector<float> gate = RandomVector(rows, &rng_, 3.0f);
      const std::vector<float> x = RandomVector(rows * cols, &rng_);
      const Tensor x_cpu = host_.F32(x, {rows, cols});
      ASSERT_TRUE(cpu_.SigmoidGateRows(host_.F32(gate, {rows}), x_cpu).ok());
      const std::vector<float> want = host_.ReadF32(x_cpu);

      DeviceArray<float> dgate(gate), dx(x);
      SigmoidGateRowsParams p;
      p.gate = dgate.get();
      p.x = dx.get();
      p.rows = rows;
      p.cols = cols;
      ASSERT_TRUE(LaunchSigmoidGateRows(p, nullptr).ok());
      EXPECT_LT(Nmse(dx.Read(), want), 1e-12);
    }
  }
}

}  // namespace
}  // namespace memserve::kernels
