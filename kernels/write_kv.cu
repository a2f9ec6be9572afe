#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/launch_util.cuh"
#include "kernels/write_kv.h"

namespace memserve::kernels {
namespace {

__device__ __forceinline__ void Store(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void Store(uint16_t* dst, float v) { *dst = F32ToBf16Bits(v); }

// One block per token (strided past the grid); threads over the columns of
// its k and v rows.
template <typename T>
__global__ void WriteKvKernel(const float* k, const float* v, const int64_t* kv_rows, T* k_cache,
                              T* v_cache, int64_t n_tokens, int kv_dim, int64_t cache_rows,
                              int64_t src_stride) {
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const int64_t row = kv_rows[t];
    if (row < 0 || row >= cache_rows) continue;  // the backend validates rows
    const float* kt = k + t * src_stride;
    const float* vt = v + t * src_stride;
    T* kc = k_cache + row * kv_dim;
    T* vc = v_cache + row * kv_dim;
    for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
      Store(kc + c, kt[c]);
      Store(vc + c, vt[c]);
    }
  }
}

}  // namespace

absl::Status WriteKvParams::Validate() const {
  if (k == nullptr) return absl::InvalidArgumentError("WriteKvParams.k is null");
  if (v == nullptr) return absl::InvalidArgumentError("WriteKvParams.v is null");
  if (kv_rows == nullptr) return absl::InvalidArgumentError("WriteKvParams.kv_rows is null");
  if (k_cache == nullptr) return absl::InvalidArgumentError("WriteKvParams.k_cache is null");
  if (v_cache == nullptr) return absl::InvalidArgumentError("WriteKvParams.v_cache is null");
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvParams.n_tokens must be in [0, 2^31 - 1], got ", n_tokens));
  }
  if (kv_dim < 1 || kv_dim > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvParams.kv_dim must be in [1, 2^20], got ", kv_dim));
  }
  if (cache_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvParams.cache_rows must be >= 1, got ", cache_rows));
  }
  if (src_stride != 0 && src_stride < kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WriteKvParams.src_stride must be 0 or >= kv_dim = ", kv_dim, ", got ", src_stride));
  }
  return absl::OkStatus();
}

absl::Status LaunchWriteKv(const WriteKvParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  const int threads = p.kv_dim >= 256 ? 256 : (p.kv_dim + 31) / 32 * 32;
  const unsigned blocks = static_cast<unsigned>(p.n_tokens < 65536 ? p.n_tokens : 65536);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.cache_type == ElementType::kF32) {
    WriteKvKernel<<<blocks, threads, 0, s>>>(p.k, p.v, p.kv_rows, static_cast<float*>(p.k_cache),
                                             static_cast<float*>(p.v_cache), p.n_tokens, p.kv_dim,
                                             p.cache_rows, p.effective_src_stride());
  } else {
    WriteKvKernel<<<blocks, threads, 0, s>>>(p.k, p.v, p.kv_rows, static_cast<uint16_t*>(p.k_cache),
                                             static_cast<uint16_t*>(p.v_cache), p.n_tokens,
                                             p.kv_dim, p.cache_rows, p.effective_src_stride());
  }
  return LaunchStatus("write_kv");
}

}  // namespace memserve::kernels
