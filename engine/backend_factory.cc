#include "engine/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/bf16_matmul.h"
#include "engine/backend/cpu/cpu_backend.h"
#ifdef MEMSERVE_HAS_CUDA
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/memory_placement_cuda.h"
#endif

namespace memserve {

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("--device must be cpu or cuda, got '", name, "'"));
}

absl::Status CheckDeviceAvailable(Device device) {
  switch (device) {
    case Device::kCpu:
      return absl::OkStatus();
    case Device::kCuda:
#ifdef MEMSERVE_HAS_CUDA
      return CudaBackend::CheckAvailable(/*device=*/0);
#else
      return absl::UnimplementedError(
          "--device cuda: this build has no CUDA backend (built without the CUDA toolkit); use "
          "--device cpu");
#endif
  }
  return absl::InvalidArgumentError("--device: unknown device");
}

absl::Status CheckMemoryPlacement(Device device, MemoryPlacement placement, int memory_gpus) {
  if (device != Device::kCpu) return absl::OkStatus();
  if (placement == MemoryPlacement::kDevice || placement == MemoryPlacement::kSharded) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory_placement ", placement == MemoryPlacement::kDevice ? "device" : "sharded",
        " needs --device cuda; on the CPU it must be auto or host (the table is used in place "
        "from the checkpoint mapping; --memory_shards gives virtual shards)"));
  }
  if (memory_gpus != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory_gpus ", memory_gpus,
                     " needs --device cuda; on the CPU it must be all (the default)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> GpuFreeBytes() {
#ifdef MEMSERVE_HAS_CUDA
  return cuda::GpuFreeBytes();
#else
  return std::vector<int64_t>{};
#endif
}

const char* ValueTablePlacement(Device device, MemoryPlacement placement) {
  if (device == Device::kCpu) return "cpu-mmap";
  return placement == MemoryPlacement::kHost ? "host-pinned" : "gpu-sharded";
}

absl::StatusOr<CpuMatMulPrecision> ParseCpuMatMulPrecision(absl::string_view name) {
  if (name == "exact") return CpuMatMulPrecision::kExact;
  if (name == "bf16") return CpuMatMulPrecision::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("--cpu_matmul_precision must be exact or bf16, got '", name, "'"));
}

absl::Status CheckCpuMatMulPrecision(Device device, CpuMatMulPrecision precision) {
  if (precision == CpuMatMulPrecision::kExact) return absl::OkStatus();
  if (device != Device::kCpu) {
    return absl::InvalidArgumentError(
        "--cpu_matmul_precision bf16 applies to --device cpu only (cuda multiplies bf16 "
        "weights with cuBLAS)");
  }
  if (Bf16Kernels() == nullptr) {
    return absl::InvalidArgumentError(
        "--cpu_matmul_precision bf16 needs a CPU with AVX-512 and AVX512-BF16 (this one lacks "
        "them); use exact");
  }
  return absl::OkStatus();
}

const char* CpuMatMulKernels(Device device, CpuMatMulPrecision precision) {
  if (device != Device::kCpu) return "n/a";
  if (precision == CpuMatMulPrecision::kExact) return "exact";
  const CpuBf16Kernels* kernels = Bf16Kernels();
  if (kernels == nullptr) return "exact";
  return kernels->amx ? "bf16-amx" : "bf16-avx512";
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(Device device, int threads,
                                                     CpuMatMulPrecision precision) {
  if (absl::Status s = CheckDeviceAvailable(device); !s.ok()) return s;
  if (absl::Status s = CheckCpuMatMulPrecision(device, precision); !s.ok()) return s;
#ifdef MEMSERVE_HAS_CUDA
  if (device == Device::kCuda) {
    absl::StatusOr<std::unique_ptr<CudaBackend>> cuda = CudaBackend::Create({});
    if (!cuda.ok()) return cuda.status();
    return std::unique_ptr<Backend>(std::move(*cuda));
  }
#endif
  CpuBackend::Options options;
  options.num_threads = threads;
  options.bf16_matmul = precision == CpuMatMulPrecision::kBf16;
  return std::make_unique<CpuBackend>(options);
}

absl::StatusOr<KvCacheDtype> ParseKvCacheDtype(absl::string_view name) {
  if (name == "auto") return KvCacheDtype::kAuto;
  if (name == "f32") return KvCacheDtype::kF32;
  if (name == "bf16") return KvCacheDtype::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_cache_dtype must be auto, f32 or bf16, got '", name, "'"));
}

absl::StatusOr<DType> ResolveKvCacheDtype(Device device, KvCacheDtype dtype) {
  switch (dtype) {
    case KvCacheDtype::kAuto:
      return device == Device::kCuda ? DType::kBF16 : DType::kF32;
    case KvCacheDtype::kF32:
      return DType::kF32;
    case KvCacheDtype::kBF16:
      return DType::kBF16;
  }
  return absl::InvalidArgumentError("--kv_cache_dtype: unknown value");
}

}  // namespace memserve
