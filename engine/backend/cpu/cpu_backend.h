// CpuBackend: the reference implementation of the Backend ops, multithreaded
// and vectorized (AVX-512 / AVX2+FMA kernels chosen at run time, with a
// portable fallback for other CPUs). The ops themselves live by concern in
// this folder: kernels_*.cc (per-ISA inner loops), packed_weight (weight
// packing), matmul, attention, memory_lookup; this class owns the thread
// pool, the packed weights and the elementwise ops.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/backend/backend.h"
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
  };

  explicit CpuBackend(const Options& options);
  ~CpuBackend() override;

  const char* name() const override { return "cpu"; }
  // The level actually used (never kAuto).
  CpuIsa isa() const { return isa_; }
  ThreadPool* pool() { return pool_.get(); }

  // Packs BF16/F32 weights of at least PackedWeight::kMinRows rows when the
  // ISA has packed kernels (AVX-512): a copy of each, as large as the weight.
  void PrepareMatMulWeights(absl::Span<const TensorView* const> weights) override;
  // How many weights PrepareMatMulWeights packed (for tests).
  size_t packed_weights() const { return packed_.size(); }
  void MatMul(const float* x, int64_t n_tokens, const TensorView& w, const TensorView* bias,
              float* y) override;
  void RmsNorm(const float* x, int64_t n_tokens, const TensorView& weight, float eps,
               float* y) override;
  void Embedding(const TensorView& table, absl::Span<const int> ids, float* y) override;
  void Rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
            const RopeTable& table) override;
  using Backend::Attention;
  void Attention(absl::Span<const AttentionArgs> seqs) override;
  void SwiGlu(const float* a, const float* b, int64_t n, float* y) override;
  void Add(const float* x, int64_t n, float* y) override;
  void SigmoidGateRows(const float* gate, int64_t rows, int64_t cols, float* x) override;
  void MemoryLookup(const MemoryLookupArgs& args) override;

  // Weights with fewer rows stay unpacked (the memory layers' gate: 1 row).
  static constexpr int64_t kMinPackedRows = PackedWeight::kMinRows;

 private:
  CpuIsa isa_;
  const CpuKernels* kernels_;
  // Prepared weights by the data pointer of their view.
  std::unordered_map<const void*, std::unique_ptr<PackedWeight>> packed_;
  std::unique_ptr<ThreadPool> pool_;
  CpuMemoryLookup memory_lookup_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_CPU_BACKEND_H_
