#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/embedding.h"
#include "kernels/launch_util.cuh"

namespace memserve::kernels {
namespace {

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ float Widen(uint16_t v) { return Bf16BitsToF32(v); }

// One block per token (strided past the grid); threads over the columns.
template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids, float* y, int64_t n_tokens,
                                int64_t vocab, int dim) {
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const int64_t id = ids[t];
    float* yt = y + t * dim;
    if (id < 0 || id >= vocab) {
      for (int c = threadIdx.x; c < dim; c += blockDim.x) yt[c] = 0.0f;
      continue;
    }
    const T* row = table + id * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) yt[c] = Widen(row[c]);
  }
}

}  // namespace

absl::Status EmbeddingParams::Validate() const {
  if (table == nullptr) return absl::InvalidArgumentError("EmbeddingParams.table is null");
  if (ids == nullptr) return absl::InvalidArgumentError("EmbeddingParams.ids is null");
  if (y == nullptr) return absl::InvalidArgumentError("EmbeddingParams.y is null");
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("EmbeddingParams.n_tokens must be in [0, 2^31 - 1], got ", n_tokens));
  }
  if (vocab < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("EmbeddingParams.vocab must be >= 1, got ", vocab));
  }
  if (dim < 1 || dim > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("EmbeddingParams.dim must be in [1, 2^24], got ", dim));
  }
  return absl::OkStatus();
}

absl::Status LaunchEmbedding(const EmbeddingParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const int threads = p.dim >= 256 ? 256 : (p.dim + 31) / 32 * 32;
  const unsigned blocks = static_cast<unsigned>(p.n_tokens < 65536 ? p.n_tokens : 65536);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.table_type == ElementType::kF32) {
    EmbeddingKernel<<<blocks, threads, 0, s>>>(static_cast<const float*>(p.table), p.ids, p.y,
                                               p.n_tokens, p.vocab, p.dim);
  } else {
    EmbeddingKernel<<<blocks, threads, 0, s>>>(static_cast<const uint16_t*>(p.table), p.ids, p.y,
                                               p.n_tokens, p.vocab, p.dim);
  }
  return LaunchStatus("embedding");
}

}  // namespace memserve::kernels
