// Embedding lookup on the GPU (the CPU backend's Embedding is the reference):
//
//   y[t, :] = float(table[ids[t], :])     for t < n_tokens
//
// bf16 rows are widened exactly (bf16 is the top half of an fp32), so the
// result is bit-identical to the CPU's.
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_EMBEDDING_H_
#define MEMSERVE_KERNELS_EMBEDDING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/element_type.h"

namespace memserve::kernels {

struct EmbeddingParams {
  const void* table = nullptr;  // [vocab, dim] of table_type, device (or mapped host) memory
  ElementType table_type = ElementType::kBF16;
  const int32_t* ids = nullptr;  // [n_tokens], device
  float* y = nullptr;            // [n_tokens, dim] fp32, device
  int64_t n_tokens = 0;          // 0 = nothing to do
  int64_t vocab = 0;
  int dim = 0;

  // InvalidArgument naming the field: a null pointer, n_tokens outside
  // [0, 2^31 - 1], vocab < 1, dim outside [1, 2^24]. Ids live on the device
  // and are NOT checked here: the row of an id outside [0, vocab) is
  // written as zeros (the backend validates ids on the host first).
  absl::Status Validate() const;
};

// Enqueues the lookup on `stream` (a cudaStream_t, nullptr = default stream).
// Validate()'s error, or Internal with the CUDA error string.
absl::Status LaunchEmbedding(const EmbeddingParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_EMBEDDING_H_
