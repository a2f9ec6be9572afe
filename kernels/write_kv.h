// Scatter of a step's new keys and values into the paged K/V caches (the CPU
// backend's WriteKv is the reference; engine/backend/backend.h,
// BatchDescriptor.kv_rows):
//
//   k_cache[kv_rows[t], :] = k[t, :],  v_cache[kv_rows[t], :] = v[t, :]
//
// converted to the cache's element type (bf16: round to nearest even,
// kernels/bf16_bits.h; fp32: copied).
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_WRITE_KV_H_
#define MEMSERVE_KERNELS_WRITE_KV_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

struct WriteKvParams {
  const float* k = nullptr;          // [n_tokens, k/v row stride] fp32, device
  const float* v = nullptr;          // [n_tokens, k/v row stride] fp32, device
  const int64_t* kv_rows = nullptr;  // [n_tokens] cache rows, device; REQUIRES distinct
  void* k_cache = nullptr;           // [cache_rows, kv_dim] of cache_type, device
  void* v_cache = nullptr;           // [cache_rows, kv_dim] of cache_type, device
  ElementType cache_type = ElementType::kBF16;
  int64_t n_tokens = 0;  // 0 = nothing to do
  int kv_dim = 0;        // n_kv_heads * head_dim
  int64_t cache_rows = 0;
  // Elements between consecutive tokens' rows of k and of v; 0 = kv_dim
  // (dense). Lets k and v be read from inside a fused [n_tokens, q_dim +
  // 2 * kv_dim] projection output. REQUIRES >= kv_dim when set.
  int64_t src_stride = 0;

  int64_t effective_src_stride() const { return src_stride == 0 ? kv_dim : src_stride; }

  // InvalidArgument naming the field: a null pointer, n_tokens outside
  // [0, 2^31 - 1], kv_dim outside [1, 2^20], cache_rows < 1, src_stride
  // narrower than kv_dim. Rows live on the device and are NOT checked here:
  // a token whose row is outside [0, cache_rows) is not written.
  absl::Status Validate() const;
};

// Enqueues the scatter on `stream` (a cudaStream_t, nullptr = default
// stream). Validate()'s error, or Internal with the CUDA error string.
absl::Status LaunchWriteKv(const WriteKvParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_WRITE_KV_H_
