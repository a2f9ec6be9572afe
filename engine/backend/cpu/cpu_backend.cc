#include "engine/backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>

#include "engine/backend/cpu/attention.h"
#include "engine/backend/cpu/matmul.h"
#include "engine/dtype.h"

namespace memserve {
namespace {

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

CpuBackend::CpuBackend(const Options& options) {
  CpuIsa isa = options.isa;
  if (isa == CpuIsa::kAuto || !CpuIsaSupported(isa)) isa = SupportedCpuIsas().back();
  isa_ = isa;
  kernels_ = &KernelsFor(isa);
  pool_ = std::make_unique<ThreadPool>(options.num_threads);
}

CpuBackend::~CpuBackend() = default;

void CpuBackend::PrepareMatMulWeights(absl::Span<const TensorView* const> weights) {
  if (kernels_->packed_matmul_bf16 == nullptr || kernels_->packed_matmul_f32 == nullptr) return;
  for (const TensorView* w : weights) {
    if (w == nullptr || !IsPackable(*w) || packed_.count(w->data) != 0) continue;
    std::unique_ptr<PackedWeight> pw = PackWeight(*w, pool_.get());
    if (pw == nullptr) continue;  // out of memory: this weight stays unpacked
    packed_.emplace(w->data, std::move(pw));
  }
}

void CpuBackend::MatMul(const float* x, int64_t n_tokens, const TensorView& w,
                        const TensorView* bias, float* y) {
  const void* bias_data = bias != nullptr ? bias->data : nullptr;
  const DType bias_dtype = bias != nullptr ? bias->dtype : DType::kF32;
  const auto packed = packed_.find(w.data);
  if (packed != packed_.end()) {
    PackedMatMul(pool_.get(), *kernels_, *packed->second, bias_data, bias_dtype, x, n_tokens, y);
    return;
  }
  const int64_t out = w.shape[0];
  const int64_t in = w.shape[1];
  GroupedMatMul(pool_.get(), *kernels_, w.data, w.dtype, out, in, /*rows_per_group=*/out,
                /*x_group_stride=*/0, bias_data, bias_dtype, x, in, n_tokens, y, out);
}

void CpuBackend::RmsNorm(const float* x, int64_t n_tokens, const TensorView& weight, float eps,
                         float* y) {
  const int64_t dim = weight.shape[0];
  const bool bf16 = weight.dtype == DType::kBF16;
  const float* wf = static_cast<const float*>(weight.data);
  const uint16_t* wb = static_cast<const uint16_t*>(weight.data);
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* xt = x + t * dim;
          float* yt = y + t * dim;
          double sum_sq = 0.0;
          for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xt[i]) * xt[i];
          const float mean = static_cast<float>(sum_sq / static_cast<double>(dim));
          const float inv = 1.0f / std::sqrt(mean + eps);
          for (int64_t i = 0; i < dim; ++i) {
            yt[i] = (xt[i] * inv) * (bf16 ? Bf16ToF32(wb[i]) : wf[i]);
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim)));
}

void CpuBackend::Embedding(const TensorView& table, absl::Span<const int> ids, float* y) {
  const int64_t dim = table.shape[1];
  const char* base = static_cast<const char*>(table.data);
  const size_t row_bytes = static_cast<size_t>(dim) * DTypeSize(table.dtype);
  for (size_t t = 0; t < ids.size(); ++t) {
    ConvertToF32(table.dtype, base + static_cast<size_t>(ids[t]) * row_bytes,
                 static_cast<size_t>(dim), y + t * dim);
  }
}

void CpuBackend::Rope(float* x, int64_t n_tokens, int n_heads, int head_dim,
                      const int32_t* positions, const RopeTable& table) {
  const int half = head_dim / 2;
  pool_->ParallelFor(
      n_tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* c = table.cos.data() + static_cast<size_t>(positions[t]) * half;
          const float* s = table.sin.data() + static_cast<size_t>(positions[t]) * half;
          for (int h = 0; h < n_heads; ++h) {
            float* v = x + (t * n_heads + h) * head_dim;
            for (int i = 0; i < half; ++i) {
              const float x0 = v[2 * i];
              const float x1 = v[2 * i + 1];
              v[2 * i] = c[i] * x0 - s[i] * x1;
              v[2 * i + 1] = s[i] * x0 + c[i] * x1;
            }
          }
        }
      },
      /*min_chunk=*/std::max<int64_t>(1, 8192 / std::max(1, n_heads * head_dim)));
}

void CpuBackend::Attention(absl::Span<const AttentionArgs> seqs) {
  CpuAttention(pool_.get(), *kernels_, seqs);
}

void CpuBackend::SwiGlu(const float* a, const float* b, int64_t n, float* y) {
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] = Silu(a[i]) * b[i];
      },
      /*min_chunk=*/16384);
}

void CpuBackend::Add(const float* x, int64_t n, float* y) {
  pool_->ParallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] += x[i];
      },
      /*min_chunk=*/65536);
}

void CpuBackend::SigmoidGateRows(const float* gate, int64_t rows, int64_t cols, float* x) {
  for (int64_t r = 0; r < rows; ++r) {
    const float g = Sigmoid(gate[r]);
    float* xr = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) xr[c] *= g;
  }
}

void CpuBackend::MemoryLookup(const MemoryLookupArgs& args) {
  memory_lookup_.Run(pool_.get(), *kernels_, args);
}

}  // namespace memserve
