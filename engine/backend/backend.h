// Backend: the compute surface the model calls (docs/model.md math, op by op).
//
// The CPU backend (engine/backend/cpu/cpu_backend.h) is the readable reference; a CUDA backend
// implements the same ops later and is compared against it op by op. All
// activations are fp32; weights are TensorViews (F32 or BF16) used in place.
// Activation pointers are host memory for the CPU backend and device memory
// for a device backend; weight views always describe the checkpoint mapping
// (a device backend keeps its own copies keyed by the view's data pointer).
//
// Thread-safety: a Backend instance is used by one thread at a time (ops keep
// reusable scratch buffers); ops may use worker threads internally.
#ifndef MEMSERVE_ENGINE_BACKEND_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_BACKEND_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/weights.h"

namespace memserve {

// Rotary-embedding angles in Meta's interleaved layout, computed in fp32
// exactly like the training code (lingua's precompute_freqs_cis):
//   freq[i] = 1 / theta^(2i / head_dim)   (fp32 pow and divide)
//   angle   = float(pos) * freq[i]        (fp32 multiply)
// then cos/sin of that fp32 angle, rounded to fp32.
struct RopeTable {
  int head_dim = 0;
  int max_positions = 0;
  std::vector<float> cos;  // [max_positions, head_dim / 2]
  std::vector<float> sin;  // [max_positions, head_dim / 2]

  // REQUIRES: head_dim even and > 0, max_positions > 0, theta > 0.
  static RopeTable Make(int head_dim, int max_positions, float theta) {
    RopeTable t;
    t.head_dim = head_dim;
    t.max_positions = max_positions;
    const int half = head_dim / 2;
    t.cos.resize(static_cast<size_t>(max_positions) * half);
    t.sin.resize(t.cos.size());
    std::vector<float> freq(half);
    for (int i = 0; i < half; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
      freq[i] = 1.0f / std::pow(theta, exponent);
    }
    for (int p = 0; p < max_positions; ++p) {
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(p) * freq[i];
        t.cos[static_cast<size_t>(p) * half + i] =
            static_cast<float>(std::cos(static_cast<double>(angle)));
        t.sin[static_cast<size_t>(p) * half + i] =
            static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    }
    return t;
  }
};

// Causal attention of `n_tokens` new query tokens of one sequence at
// positions start_pos .. start_pos + n_tokens - 1 against a KV cache that
// already holds the keys/values of positions 0 .. start_pos + n_tokens - 1.
// Query token at position p attends to cache positions j with j <= p and,
// when sliding_window > 0, p - j < sliding_window (the window includes p).
// Query head h uses kv head h / (n_heads / n_kv_heads). Scale 1/sqrt(head_dim),
// softmax in fp32.
//
// Cache rows hold n_kv_heads * head_dim floats. Contiguous cache
// (block_table == nullptr): position j is row j. Paged cache: position j is
// row block_table[j / block_size] * block_size + j % block_size (the
// PagedKvLayout of engine/kv_cache.h). Both give bit-identical results for the
// same keys and values.
struct AttentionArgs {
  int64_t n_tokens = 0;
  int64_t start_pos = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // divides n_heads
  int head_dim = 0;
  int sliding_window = 0;                // 0 = unlimited
  const float* q = nullptr;              // [n_tokens, n_heads, head_dim], rotated
  const float* k_cache = nullptr;        // rows of [n_kv_heads, head_dim], see above
  const float* v_cache = nullptr;        // same layout as k_cache
  const int32_t* block_table = nullptr;  // optional: [ceil((start_pos + n_tokens) / block_size)]
  int block_size = 0;                    // tokens per block when block_table is set
  float* out = nullptr;                  // [n_tokens, n_heads * head_dim]
};

// One product-key memory lookup (docs/model.md, "The memory layer", steps
// 1-6) for `n_tokens` tokens:
//   sub-key scores of both halves of every head, top-knn per half, the
//   candidate pairs (a, b) with (a+1)*(b+1) <= knn, their top-knn sorted by
//   score descending, softmax (fp32), and
//   out[t] = sum_h sum_k w[t,h,k] * values[row[t,h,k]]   (fp32 accumulation).
// Ties: among equal scores the smaller index wins, both for sub-keys (smaller
// sub-key index) and for rows (smaller row index idx1 * n_keys + idx2). The
// candidate restriction is exact: the result equals the top-knn over all
// n_keys^2 rows under the same (score desc, row asc) order, except where fp32
// rounding of s1 + s2 creates a tie that the sub-key order did not have.
struct MemoryLookupArgs {
  int64_t n_tokens = 0;
  int heads = 0;
  int n_keys = 0;
  int knn = 0;    // 1 <= knn <= n_keys
  int k_dim = 0;  // even
  int v_dim = 0;
  const float* queries =
      nullptr;  // [n_tokens, heads * k_dim]; head h = cols [h*k_dim, (h+1)*k_dim)
  const TensorView* keys =
      nullptr;  // [2 * heads * n_keys, k_dim / 2], F32 or BF16 ([heads, 2, n_keys, k_dim/2])
  const TensorView* values = nullptr;  // [n_keys^2, v_dim], BF16 or F32
  float* out = nullptr;                // [n_tokens, v_dim]
  int64_t* out_indices = nullptr;      // optional [n_tokens, heads, knn] rows, score-descending
  float* out_scores = nullptr;         // optional [n_tokens, heads, knn] pre-softmax scores
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;

  // Called once after loading, before any MatMul, with every weight the
  // model will pass to MatMul as `w`: the backend may keep a copy in a layout
  // of its own (the CPU backend packs them into panels for its AVX-512
  // kernels) and use it whenever MatMul gets a view with the same data
  // pointer. REQUIRES: the views' data stays valid and unchanged while the
  // backend lives. Default: nothing.
  virtual void PrepareMatMulWeights(absl::Span<const TensorView* const> weights) { (void)weights; }

  // y[t, o] = sum_i x[t, i] * w[o, i] (+ bias[o]).
  // x [n_tokens, in], w [out, in] F32|BF16, bias [out] F32|BF16 or null,
  // y [n_tokens, out]. y must not alias x. Each token's result does not
  // depend on n_tokens or on the other tokens (batch invariance).
  virtual void MatMul(const float* x, int64_t n_tokens, const TensorView& w, const TensorView* bias,
                      float* y) = 0;

  // y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight; weight [dim] F32|BF16.
  // y may alias x.
  virtual void RmsNorm(const float* x, int64_t n_tokens, const TensorView& weight, float eps,
                       float* y) = 0;

  // y[t] = table[ids[t]] as fp32; table [vocab, dim]. REQUIRES: ids in range.
  virtual void Embedding(const TensorView& table, absl::Span<const int> ids, float* y) = 0;

  // Rotates x [n_tokens, n_heads, head_dim] in place; token t is at position
  // positions[t] (REQUIRES: 0 <= positions[t] < table.max_positions and
  // head_dim == table.head_dim).
  virtual void Rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
                    const RopeTable& table) = 0;

  // Runs every sequence of `seqs` (each as described at AttentionArgs; their
  // outputs must not overlap) in one parallel pass, so that a decode step of
  // many one-token sequences is one op rather than many small ones.
  virtual void Attention(absl::Span<const AttentionArgs> seqs) = 0;
  void Attention(const AttentionArgs& args) { Attention(absl::MakeConstSpan(&args, 1)); }

  // y[i] = silu(a[i]) * b[i]; y may alias a or b.
  virtual void SwiGlu(const float* a, const float* b, int64_t n, float* y) = 0;

  // y[i] += x[i].
  virtual void Add(const float* x, int64_t n, float* y) = 0;

  // x[r, :] *= sigmoid(gate[r]) for r < rows; x [rows, cols].
  virtual void SigmoidGateRows(const float* gate, int64_t rows, int64_t cols, float* x) = 0;

  virtual void MemoryLookup(const MemoryLookupArgs& args) = 0;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_BACKEND_H_
