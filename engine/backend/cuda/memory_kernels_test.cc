#include "engine/backend/cuda/memory_kernels.h"

#include <string>

#include "gtest/gtest.h"

namespace memserve::cuda {
namespace {

TEST(MemoryKernelsTest, ParsesTheChoices) {
  EXPECT_EQ(*ParseMemoryKernels(nullptr), MemoryKernels::kProductKey);
  EXPECT_EQ(*ParseMemoryKernels(""), MemoryKernels::kProductKey);
  EXPECT_EQ(*ParseMemoryKernels("product_key"), MemoryKernels::kProductKey);
  EXPECT_EQ(*ParseMemoryKernels("legacy"), MemoryKernels::kLegacy);
  EXPECT_STREQ(MemoryKernelsName(MemoryKernels::kLegacy), "legacy");
  EXPECT_STREQ(MemoryKernelsName(MemoryKernels::kProductKey), "product_key");
}

TEST(MemoryKernelsTest, RejectsOthersNamingTheVariable) {
  const absl::StatusOr<MemoryKernels> k = ParseMemoryKernels("fused");
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(k.status().message()),
            "MEMSERVE_CUDA_MEMORY_KERNELS must be 'product_key' (the default) or 'legacy', got "
            "'fused'");
}

}  // namespace
}  // namespace memserve::cuda
