#include "engine/runtime/tensor.h"

#include "gtest/gtest.h"

namespace memserve {
namespace {

class FakeBuffer : public Buffer {
 public:
  explicit FakeBuffer(size_t size) : Buffer(nullptr, Device::kCpu, "fake", size) {}
};

TEST(TensorTest, ViewsAndSlices) {
  FakeBuffer buffer(4 * 6 * 8);
  Tensor t = Tensor::Of(&buffer, DType::kF32, {6, 8});
  EXPECT_EQ(t.numel(), 48);
  EXPECT_EQ(t.nbytes(), 192u);
  EXPECT_EQ(t.row_numel(), 8);
  EXPECT_TRUE(t.InBounds());
  Tensor rows = t.Rows(2, 3);
  EXPECT_EQ(rows.offset, 2u * 8 * 4);
  EXPECT_EQ(rows.dim(0), 3);
  EXPECT_TRUE(rows.InBounds());
  EXPECT_FALSE(t.Rows(5, 2).InBounds());
  Tensor flat = t.Reshaped({48});
  EXPECT_EQ(flat.rank, 1);
  EXPECT_EQ(flat.numel(), 48);
  EXPECT_EQ(t.DebugString(), "F32[6, 8] fake");
  EXPECT_FALSE(Tensor().present());
  Tensor ids = Tensor::Of(&buffer, DType::kI64, {3}, 8);
  EXPECT_EQ(ids.nbytes(), 24u);
}

}  // namespace
}  // namespace memserve
