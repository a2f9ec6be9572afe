// Rotary position embedding, in place, in Meta's interleaved-pairs layout
// (docs/model.md, "Backbone"; the CPU backend's Rope is the reference): for
// every token t, head h and pair i < head_dim / 2, with p = positions[t],
// c = cos_sin[0, p, i], s = cos_sin[1, p, i], x0 = x[t, h, 2i],
// x1 = x[t, h, 2i + 1]:
//
//   x[t, h, 2i]     = c * x0 - s * x1
//   x[t, h, 2i + 1] = s * x0 + c * x1
//
// each product and sum rounded separately (no fused multiply-add), so the
// result is bit-identical to the CPU backend's. The table is the
// engine's RopeTable (engine/backend/backend.h) uploaded as fp32
// [2, max_positions, head_dim / 2] (all cosines, then all sines).
//
// Plain C++ launch API (no CUDA types); Launch only enqueues work on the
// stream (graph-capturable).
#ifndef MEMSERVE_KERNELS_ROPE_H_
#define MEMSERVE_KERNELS_ROPE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace memserve::kernels {

struct RopeParams {
  float* x = nullptr;  // [n_tokens, n_heads, head_dim] fp32, device, rotated in place
  const int32_t* positions = nullptr;  // [n_tokens], device
  const float* cos_sin = nullptr;      // [2, max_positions, head_dim / 2] fp32, device
  int64_t n_tokens = 0;                // 0 = nothing to do
  int n_heads = 0;
  int head_dim = 0;  // even
  int max_positions = 0;
  // Elements between the starts of consecutive tokens' rows of x; 0 =
  // n_heads * head_dim (dense). Lets q and k be rotated inside a fused
  // [n_tokens, q_dim + 2 * kv_dim] projection output. REQUIRES >=
  // n_heads * head_dim when set.
  int64_t token_stride = 0;

  int64_t effective_token_stride() const {
    return token_stride == 0 ? static_cast<int64_t>(n_heads) * head_dim : token_stride;
  }

  // InvalidArgument naming the field: a null pointer, a negative or too
  // large n_tokens, n_heads < 1, head_dim odd or outside [2, 1024],
  // max_positions < 1, token_stride narrower than a row. Positions live on
  // the device and are NOT checked here: a token whose position is outside
  // [0, max_positions) is left unrotated (the backend validates positions
  // on the host before uploading them).
  absl::Status Validate() const;
};

// Enqueues the rotation on `stream` (a cudaStream_t, nullptr = default
// stream). Validate()'s error, or Internal with the CUDA error string.
absl::Status LaunchRope(const RopeParams& params, void* stream);

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_ROPE_H_
