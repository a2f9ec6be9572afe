// CpuBackend: the reference implementation of the Backend ops, multithreaded
// and vectorized (AVX-512 / AVX2+FMA kernels chosen at run time, with a
// portable fallback for other CPUs).
#ifndef MEMSERVE_ENGINE_CPU_BACKEND_H_
#define MEMSERVE_ENGINE_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/backend.h"
#include "engine/thread_pool.h"

namespace memserve {

// Instruction-set levels of the CPU kernels.
enum class CpuIsa {
  kAuto,     // the best level this CPU supports
  kGeneric,  // portable C++ (compiler auto-vectorization only)
  kAvx2,     // AVX2 + FMA
  kAvx512,   // AVX-512 F/BW/VL + FMA
};

const char* CpuIsaName(CpuIsa isa);
// Whether this CPU can run `isa` (kAuto and kGeneric: always).
bool CpuIsaSupported(CpuIsa isa);
// The levels this CPU supports, from kGeneric upward (for tests).
std::vector<CpuIsa> SupportedCpuIsas();

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

  // Packs BF16/F32 weights of at least kMinPackedRows rows when the ISA has
  // packed kernels (AVX-512): a copy of each, as large as the weight.
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

  struct Kernels;       // per-ISA function table (cpu_backend.cc)
  struct PackedWeight;  // a weight in the packed kernels' layout (cpu_backend.cc)
  // Weights with fewer rows stay unpacked (the memory layers' gate: 1 row).
  static constexpr int64_t kMinPackedRows = 16;

 private:
  // y[t, r] = dot(w[r, :], x[t, g(r) * x_group_stride : + in]) (+ bias[r])
  // for r < rows, t < n_tokens, where g(r) = r / rows_per_group: rows of one
  // group read their own column slice of x (used for per-head sub-keys).
  void GroupedMatMul(const void* w, DType w_dtype, int64_t rows, int64_t in, int64_t rows_per_group,
                     int64_t x_group_stride, const void* bias, DType bias_dtype, const float* x,
                     int64_t ldx, int64_t n_tokens, float* y, int64_t ldy);

  // MatMul over a prepared weight.
  void PackedMatMul(const PackedWeight& w, const TensorView* bias, const float* x,
                    int64_t n_tokens, float* y);

  CpuIsa isa_;
  const Kernels* kernels_;
  // Prepared weights by the data pointer of their view.
  std::unordered_map<const void*, std::unique_ptr<PackedWeight>> packed_;
  std::unique_ptr<ThreadPool> pool_;

  // Scratch of MemoryLookup, reused across calls.
  std::vector<float> subkey_scores_;   // [token block, 2 * heads * n_keys]
  std::vector<int64_t> lookup_rows_;   // [token block, heads, knn]
  std::vector<float> lookup_weights_;  // [token block, heads, knn]
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_CPU_BACKEND_H_
