#include "engine/backend_factory.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#ifdef MEMSERVE_HAS_CUDA
#include "kernels/cuda_device.h"
#endif

namespace memserve {
namespace {

using ::testing::HasSubstr;

TEST(KvCacheDtypeTest, ParsesTheFlag) {
  EXPECT_EQ(*ParseKvCacheDtype("auto"), KvCacheDtype::kAuto);
  EXPECT_EQ(*ParseKvCacheDtype("f32"), KvCacheDtype::kF32);
  EXPECT_EQ(*ParseKvCacheDtype("bf16"), KvCacheDtype::kBF16);
  const absl::Status bad = ParseKvCacheDtype("fp8").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "--kv_cache_dtype must be auto, f32 or bf16, got 'fp8'");
}

TEST(KvCacheDtypeTest, AutoIsBf16OnCudaAndF32OnTheCpu) {
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCuda, KvCacheDtype::kAuto), DType::kBF16);
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCpu, KvCacheDtype::kAuto), DType::kF32);
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCuda, KvCacheDtype::kF32), DType::kF32);
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCpu, KvCacheDtype::kF32), DType::kF32);
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCuda, KvCacheDtype::kBF16), DType::kBF16);
  EXPECT_EQ(*ResolveKvCacheDtype(Device::kCpu, KvCacheDtype::kBF16), DType::kBF16);
}

TEST(CpuMatMulPrecisionTest, ParsesAndChecksTheFlag) {
  EXPECT_EQ(*ParseCpuMatMulPrecision("exact"), CpuMatMulPrecision::kExact);
  EXPECT_EQ(*ParseCpuMatMulPrecision("bf16"), CpuMatMulPrecision::kBf16);
  const absl::Status bad = ParseCpuMatMulPrecision("fp16").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "--cpu_matmul_precision must be exact or bf16, got 'fp16'");
  EXPECT_TRUE(CheckCpuMatMulPrecision(Device::kCpu, CpuMatMulPrecision::kExact).ok());
  EXPECT_TRUE(CheckCpuMatMulPrecision(Device::kCuda, CpuMatMulPrecision::kExact).ok());
  const absl::Status cuda = CheckCpuMatMulPrecision(Device::kCuda, CpuMatMulPrecision::kBf16);
  EXPECT_THAT(std::string(cuda.message()), HasSubstr("applies to --device cpu only"));
  EXPECT_STREQ(CpuMatMulKernels(Device::kCpu, CpuMatMulPrecision::kExact), "exact");
  // bf16 on this CPU: taken, naming its kernels, or refused in one line.
  const absl::Status cpu = CheckCpuMatMulPrecision(Device::kCpu, CpuMatMulPrecision::kBf16);
  const std::string kernels = CpuMatMulKernels(Device::kCpu, CpuMatMulPrecision::kBf16);
  if (cpu.ok()) {
    EXPECT_TRUE(kernels == "bf16-amx" || kernels == "bf16-avx512") << kernels;
  } else {
    EXPECT_THAT(std::string(cpu.message()), HasSubstr("needs a CPU with AVX-512 and AVX512-BF16"));
  }
}

TEST(BackendFactoryTest, PlacementNamesTheDeviceAndPlacement) {
  EXPECT_STREQ(ValueTablePlacement(Device::kCpu, MemoryPlacement::kHost), "cpu-mmap");
  EXPECT_STREQ(ValueTablePlacement(Device::kCuda, MemoryPlacement::kDevice), "gpu-sharded");
  EXPECT_STREQ(ValueTablePlacement(Device::kCuda, MemoryPlacement::kSharded), "gpu-sharded");
  EXPECT_STREQ(ValueTablePlacement(Device::kCuda, MemoryPlacement::kHost), "host-pinned");
}

// The memory placement flags on the CPU: auto and host only, --memory_gpus
// all only; one line naming the flag otherwise. Anything goes on cuda (the
// planner checks it against the GPUs).
TEST(BackendFactoryTest, CpuTakesOnlyHostPlacement) {
  EXPECT_TRUE(CheckMemoryPlacement(Device::kCpu, MemoryPlacement::kAuto, 0).ok());
  EXPECT_TRUE(CheckMemoryPlacement(Device::kCpu, MemoryPlacement::kHost, 0).ok());
  for (MemoryPlacement p : {MemoryPlacement::kDevice, MemoryPlacement::kSharded}) {
    const absl::Status s = CheckMemoryPlacement(Device::kCpu, p, 0);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("needs --device cuda"));
  }
  const absl::Status gpus = CheckMemoryPlacement(Device::kCpu, MemoryPlacement::kAuto, 2);
  EXPECT_THAT(std::string(gpus.message()), HasSubstr("--memory_gpus 2 needs --device cuda"));
  for (MemoryPlacement p : {MemoryPlacement::kAuto, MemoryPlacement::kDevice,
                            MemoryPlacement::kSharded, MemoryPlacement::kHost}) {
    EXPECT_TRUE(CheckMemoryPlacement(Device::kCuda, p, 8).ok());
  }
}

// Without a visible GPU (or without CUDA in the build), --device cuda is one
// line naming the flag and why; with one, the backend is built.
TEST(BackendFactoryTest, CudaIsBuiltOrRefusedInOneLine) {
  const absl::Status s = CheckDeviceAvailable(Device::kCuda);
#ifdef MEMSERVE_HAS_CUDA
  if (!kernels::ListCudaDevices().empty()) {
    EXPECT_TRUE(s.ok()) << s;
    absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(Device::kCuda, 0);
    ASSERT_TRUE(backend.ok()) << backend.status();
    EXPECT_STREQ((*backend)->name(), "cuda");
    EXPECT_EQ((*backend)->device(), Device::kCuda);
    return;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--device cuda: no CUDA device is visible"));
#else
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--device cuda: this build has no CUDA"));
#endif
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos);
  EXPECT_EQ(MakeBackend(Device::kCuda, 0).status().code(), s.code());
  EXPECT_TRUE(CheckDeviceAvailable(Device::kCpu).ok());
}

}  // namespace
}  // namespace memserve
