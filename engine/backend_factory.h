// The compute device a model runs on, and the one place where the backend
// for a device is built (Engine::Create and `memserve generate` reach it
// through LoadModel, engine/load_model.h).
#ifndef MEMSERVE_ENGINE_BACKEND_FACTORY_H_
#define MEMSERVE_ENGINE_BACKEND_FACTORY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/backend.h"
#include "engine/dtype.h"
#include "engine/runtime/memory_pool.h"
#include "engine/runtime/tensor.h"

namespace memserve {

// Device and DeviceName ("cpu", "cuda": the --device value and
// ModelInfo.backend) are in engine/runtime/tensor.h.

// The --device flag's value. InvalidArgument naming --device and the
// choices for anything but "cpu" and "cuda".
absl::StatusOr<Device> ParseDevice(absl::string_view name);

// OK when this build can run a model on `device`. For cuda: Unimplemented
// (one line naming --device) when the build has no CUDA backend (built
// without the CUDA toolkit), Unavailable (one line naming --device and the
// CUDA runtime's reason) when no CUDA device is visible. Needs no model, so
// callers check it before loading.
absl::Status CheckDeviceAvailable(Device device);

// The memory placement flags on `device`: on the CPU only auto and host
// (the mapping, used in place) with --memory_gpus all; on cuda anything
// (PlanPlacement checks the GPU count). InvalidArgument, one line naming the
// flag and what the CPU takes, otherwise. Needs no model.
absl::Status CheckMemoryPlacement(Device device, MemoryPlacement placement, int memory_gpus);

// Free memory of every visible GPU in device order (cudaMemGetInfo), for
// PlanPlacement; empty in a build without CUDA. Internal for a CUDA failure.
absl::StatusOr<std::vector<int64_t>> GpuFreeBytes();

// ModelInfo.memory.placement of a pool placed as `placement` on `device`:
// "cpu-mmap" on the CPU; on cuda "host-pinned" (host placement: the mapping
// registered, or a pinned copy, read over PCIe) or "gpu-sharded" (device
// and sharded: in GPU memory, split along v_dim; one shard on one GPU for
// device).
const char* ValueTablePlacement(Device device, MemoryPlacement placement);

// The --cpu_matmul_precision flag: exact (fp32 products and sums, the
// default: parity with the reference, a token's result independent of the
// batch) or bf16 (BF16 matmul weights times activations rounded to bf16,
// products and sums in fp32, on AVX512-BF16 and, for 16+ tokens, AMX:
// engine/backend/cpu/bf16_matmul.h; F32 weights stay exact).
enum class CpuMatMulPrecision { kExact, kBf16 };

// "exact" or "bf16"; InvalidArgument naming --cpu_matmul_precision and the
// choices otherwise.
absl::StatusOr<CpuMatMulPrecision> ParseCpuMatMulPrecision(absl::string_view name);
// OK for exact; bf16 only on the CPU device of a CPU with AVX512-BF16, else
// InvalidArgument (one line naming the flag and why). Needs no model.
absl::Status CheckCpuMatMulPrecision(Device device, CpuMatMulPrecision precision);
// The kernels behind `precision` on this machine, for the ready line:
// "exact", "bf16-amx" (AMX tiles for 16+ tokens, AVX512-BF16 below) or
// "bf16-avx512"; "n/a" off the CPU.
const char* CpuMatMulKernels(Device device, CpuMatMulPrecision precision);

// The backend for `device` with `threads` CPU threads (0 = one per hardware
// thread; the CUDA backend runs its ops on the GPU and ignores it and
// `precision`), for Model::Load: the one place a backend is built. Errors:
// those of CheckDeviceAvailable and CheckCpuMatMulPrecision, and a CUDA
// failure while creating the backend.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(
    Device device, int threads, CpuMatMulPrecision precision = CpuMatMulPrecision::kExact);

// The --kv_cache_dtype flag (as vLLM's --kv-cache-dtype): the element type
// of the paged K/V cache.
enum class KvCacheDtype { kAuto, kF32, kBF16 };

// "auto", "f32" or "bf16"; InvalidArgument naming --kv_cache_dtype and the
// choices otherwise.
absl::StatusOr<KvCacheDtype> ParseKvCacheDtype(absl::string_view name);
// The cache's element type on `device`: auto is BF16 on cuda and F32 on the
// CPU (exact parity with the reference there); f32 and bf16 on both.
absl::StatusOr<DType> ResolveKvCacheDtype(Device device, KvCacheDtype dtype);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_FACTORY_H_
