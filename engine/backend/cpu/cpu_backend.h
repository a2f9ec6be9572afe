// CpuBackend: the reference implementation of the Backend (backend.h),
// multithreaded and vectorized (AVX-512 / AVX2+FMA kernels chosen at run
// time, with a portable fallback for other CPUs). The ops live by concern in
// this folder: kernels_*.cc (per-ISA inner loops), packed_weight (weight
// packing), matmul, attention, memory_lookup; this class owns the thread
// pool, the buffers' memory rules and the elementwise ops.
//
// Buffers: "cpu" (64-byte aligned host memory it allocates), "cpu-mapped"
// (a wrapped host range, used in place), "cpu-packed" (a MatMul weight of at
// least PackedWeight::kMinRows rows in the panel layout of the packed
// AVX2 / AVX-512 kernels, when the ISA has them: PlaceWeight(kMatMul); BF16
// weights in the kBf16Pairs layout with Options::bf16_matmul).
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cpu/attention.h"
#include "engine/backend/cpu/bf16_matmul.h"
#include "engine/backend/cpu/cpu_isa.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/memory_lookup.h"
#include "engine/backend/cpu/packed_weight.h"
#include "engine/backend/cpu/thread_pool.h"

namespace memserve {

class CpuBackend : public Backend {
 public:
  struct Options {
    int num_threads = 0;         // <= 0: one per hardware thread
    CpuIsa isa = CpuIsa::kAuto;  // an unsupported level falls back to kAuto
    // Pack kMatMul weights where the ISA has packed kernels (false: leave
    // them in the mapping; for side-by-side benchmarks).
    bool pack_weights = true;
    // --cpu_matmul_precision bf16: BF16 matmul weights multiply activations
    // rounded to bf16 (bf16_matmul.h: AVX512-BF16, AMX for many tokens),
    // products and sums in fp32. Where the CPU lacks AVX512-BF16 (or weights
    // are not packed) the exact kernels run as without it.
    bool bf16_matmul = false;
  };

  explicit CpuBackend(const Options& options);
  ~CpuBackend() override;

  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  // The level actually used (never kAuto).
  CpuIsa isa() const { return isa_; }
  ThreadPool* pool() { return pool_.get(); }
  // How many weights PlaceWeight packed (for tests).
  int64_t packed_weights() const { return packed_weights_; }
  // The kernels of Options::bf16_matmul in use: null when it is off or the
  // CPU lacks AVX512-BF16.
  const CpuBf16Kernels* bf16_kernels() const { return bf16_kernels_; }
  // The first byte of a buffer this backend allocated or wrapped (all host
  // memory), for tests.
  static const void* HostAddress(const Buffer& buffer);

  absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> WrapHostMemory(const void* data, size_t bytes) override;
  // kMatMul weights are packed (a copy as large as the weight) when the ISA
  // has packed kernels; everything else stays in the mapping. I8 weights
  // (matmul only, with scales) are packed, or dequantized to an F32 copy
  // where the ISA has no int8 kernel.
  absl::StatusOr<std::unique_ptr<Buffer>> PlaceWeight(const TensorView& w, WeightUse use,
                                                      Tensor* tensor) override;
  absl::Status Upload(const void* src, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* dst) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& y) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override;
  absl::Status Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) override;
  absl::Status WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                       const Tensor& k_cache, const Tensor& v_cache) override;
  absl::Status Attention(const AttentionShape& shape, const BatchDescriptor& batch, const Tensor& q,
                         const Tensor& k_cache, const Tensor& v_cache, const Tensor& out) override;
  absl::Status SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) override;
  absl::Status Add(const Tensor& x, const Tensor& y) override;
  absl::Status SigmoidGateRows(const Tensor& gate, const Tensor& x) override;
  absl::Status MemorySelect(const MemorySelectArgs& args) override;
  absl::Status ValueGather(const Tensor& values, const Tensor& rows, const Tensor& weights,
                           int64_t col_begin, int64_t col_end, const Tensor& out) override;

 private:
  // The host address of t's first byte, or null unless t lies inside a host
  // buffer of this backend and has dtype `dtype`. Every op reaches memory
  // through here (or WeightData); OperandError says why it refused.
  void* HostData(const Tensor& t, DType dtype) const;
  absl::Status OperandError(const Tensor& t, DType dtype, const char* what) const;
  // As HostData for a weight operand: F32 or BF16, not packed; WeightError
  // says why it refused.
  const void* WeightData(const Tensor& t) const;
  absl::Status WeightError(const Tensor& t, const char* what) const;
  // An I8 matmul weight as an F32 copy (float(int8) x scale, the packed
  // kernels' weights), for ISAs without packed int8 kernels.
  absl::StatusOr<std::unique_ptr<Buffer>> DequantizeInt8(const TensorView& w, Tensor* tensor);

  CpuIsa isa_;
  const CpuKernels* kernels_;
  const CpuBf16Kernels* bf16_kernels_ = nullptr;
  std::unique_ptr<ThreadPool> pool_;
  CpuMemorySelect memory_select_;
  bool pack_weights_;
  int64_t packed_weights_ = 0;
  std::atomic<size_t> next_colour_{0};           // AllocateBuffer's cache colouring
  std::vector<CpuAttentionSeq> attention_seqs_;  // reused by Attention
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
