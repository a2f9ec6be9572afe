// The bf16-activation kernels' contracts (bf16_matmul.h) against an
// independent reference: x rounded with F32ToBf16, products and sums in
// double. Skipped (and reported so) on CPUs without AVX512-BF16.
#include "engine/backend/cpu/bf16_matmul.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/packed_weight.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "engine/weights.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

class Bf16MatMulTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Bf16Kernels() == nullptr) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
  std::vector<float> Random(int64_t n, float scale = 1.0f) {
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
  // A random [rows, in] BF16 weight (`w`) packed in the kBf16Pairs layout.
  std::unique_ptr<PackedWeight> RandomPacked(int64_t rows, int64_t in, std::vector<uint16_t>* w) {
    const std::vector<float> wf = Random(rows * in);
    w->resize(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) (*w)[i] = F32ToBf16(wf[i]);
    TensorView view;
    view.name = "w";
    view.dtype = DType::kBF16;
    view.shape = {rows, in};
    view.data = w->data();
    return PackWeight(view, &pool_, PackedWeight::Layout::kBf16Pairs);
  }
  std::mt19937 rng_{11};
  ThreadPool pool_{1};
};

TEST_F(Bf16MatMulTest, RoundToBf16IsF32ToBf16) {
  std::vector<float> x = Random(1000, 100.0f);
  const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00001u,
                               0xffa00000u, 0x00000001u, 0x807fffffu, 0x3f808000u, 0x3f818000u,
                               0x3f80ffffu, 0x7f7fffffu, 0x7f7f8000u, 0x3f807fffu};
  for (uint32_t bits : specials) {
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    x.push_back(f);
  }
  for (int64_t n :
       {int64_t{0}, int64_t{5}, int64_t{16}, int64_t{17}, static_cast<int64_t>(x.size())}) {
    std::vector<uint16_t> got(n + 1, 0xABCD);
    Bf16Kernels()->round_to_bf16(x.data() + x.size() - n, n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], F32ToBf16(x[x.size() - n + i])) << "n=" << n << " i=" << i;
    }
    EXPECT_EQ(got[n], 0xABCD) << "wrote past n";
  }
}

// The matmul of every shape around the blocks (16 and 32 rows, 32 columns of
// a tile, 1/4/12/16/32 tokens) against double sums of the rounded x times w.
TEST_F(Bf16MatMulTest, MatMulIsTheProductWithBf16RoundedActivations) {
  for (bool allow_amx : {false, true}) {
    const CpuBf16Kernels* kern = Bf16Kernels(allow_amx);
    for (int64_t rows : {16, 33, 96, 100}) {
      for (int64_t in : {1, 30, 32, 33, 100, 256}) {
        for (int64_t tokens : {1, 2, 5, 12, 13, 16, 17, 31, 32, 33, 70}) {
          SCOPED_TRACE(absl::StrCat("amx=", allow_amx && kern->amx, " rows=", rows, " in=", in,
                                    " tokens=", tokens));
          std::vector<uint16_t> w;
          std::unique_ptr<PackedWeight> packed = RandomPacked(rows, in, &w);
          ASSERT_NE(packed, nullptr);
          ASSERT_EQ(packed->in_padded % PackedWeight::kPairBlockK, 0);
          const std::vector<float> x = Random(tokens * in);
          const int64_t ldxb = packed->in_padded;
          std::vector<uint16_t> xb((tokens + 15) / 16 * 16 * ldxb, 0);
          for (int64_t t = 0; t < tokens; ++t) {
            kern->round_to_bf16(x.data() + t * in, in, xb.data() + t * ldxb);
          }
          const int64_t ldy = rows + 3;
          std::vector<float> y(tokens * ldy, -7.0f);
          kern->matmul(static_cast<const uint32_t*>(packed->data.get()), packed->in_padded, rows, 0,
                       packed->panels, xb.data(), ldxb, tokens, y.data(), ldy);
          for (int64_t t = 0; t < tokens; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double want = 0, mag = 0;
              for (int64_t k = 0; k < in; ++k) {
                const double p =
                    double{Bf16ToF32(F32ToBf16(x[t * in + k]))} * Bf16ToF32(w[r * in + k]);
                want += p;
                mag += std::fabs(p);
              }
              ASSERT_NEAR(y[t * ldy + r], want, 1e-6 * mag + 1e-30)
                  << "token " << t << " row " << r;
            }
            for (int64_t r = rows; r < ldy; ++r) {
              ASSERT_EQ(y[t * ldy + r], -7.0f) << "token " << t << " wrote row " << r;
            }
          }
        }
      }
    }
  }
}

// A token's result does not depend on the tokens beside it or on the panel
// range, within one kernel: blocks of 16+ tokens (AMX where the CPU has it)
// and blocks of fewer (vdpbf16ps). The two kernels sum in different orders
// (AMX's order inside a tile is the hardware's), so the same token can differ
// in the last bits between a block of 16+ tokens and a smaller one.
TEST_F(Bf16MatMulTest, ATokensResultDoesNotDependOnItsNeighbours) {
  const CpuBf16Kernels* kern = Bf16Kernels();
  const int64_t rows = 100, in = 300, tokens = 70;
  std::vector<uint16_t> w;
  std::unique_ptr<PackedWeight> packed = RandomPacked(rows, in, &w);
  ASSERT_NE(packed, nullptr);
  const int64_t ldxb = packed->in_padded;
  const std::vector<float> x = Random(tokens * in);
  std::vector<uint16_t> xb((tokens + 15) / 16 * 16 * ldxb, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    kern->round_to_bf16(x.data() + t * in, in, xb.data() + t * ldxb);
  }
  const uint32_t* panels = static_cast<const uint32_t*>(packed->data.get());
  // The result of tokens [first, first + n) in one call, panels split in two
  // calls when `split`.
  auto run = [&](int64_t first, int64_t n, bool split) {
    std::vector<uint16_t> part((n + 15) / 16 * 16 * ldxb, 0);
    std::memcpy(part.data(), xb.data() + first * ldxb, n * ldxb * sizeof(uint16_t));
    std::vector<float> y(n * rows);
    const int64_t mid = split ? 2 : packed->panels;
    kern->matmul(panels, ldxb, rows, 0, mid, part.data(), ldxb, n, y.data(), rows);
    kern->matmul(panels, ldxb, rows, mid, packed->panels, part.data(), ldxb, n, y.data(), rows);
    return y;
  };
  const std::vector<float> all = run(0, tokens, false);
  const std::vector<float> all_split = run(0, tokens, true);
  const std::vector<float> many = run(40, 17, false);  // tokens 40 .. 56: 16+ as `all`
  const std::vector<float> few = run(40, 12, false);   // tokens 40 .. 51
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_EQ(all_split[t * rows + r], all[t * rows + r]) << "token " << t << " row " << r;
      if (t >= 40 && t < 57) {
        ASSERT_EQ(many[(t - 40) * rows + r], all[t * rows + r]) << "token " << t << " row " << r;
      }
    }
  }
  for (int64_t t = 40; t < 52; ++t) {
    const std::vector<float> alone = run(t, 1, false);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_EQ(few[(t - 40) * rows + r], alone[r]) << "token " << t << " row " << r;
    }
  }
}

}  // namespace
}  // namespace memserve
