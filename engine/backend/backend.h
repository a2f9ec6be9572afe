// Backend: the compute surface the model calls (docs/model.md math, op by op),
// in the manner of ggml's backend interface.
//
// Memory. Every tensor an op touches is a Tensor (engine/runtime/tensor.h)
// on a Buffer this backend allocated (AllocateBuffer), wrapped
// (WrapHostMemory: the checkpoint mapping, zero-copy) or placed
// (PlaceWeight: the backend's own layout of a weight, e.g. the CPU's packed
// panels or a device copy). The model moves bytes in and out only through
// Upload and Download; it never dereferences a buffer.
//
// Ops. Activations are F32; weights are F32 or BF16 as the checkpoint stores
// them (a placed weight keeps its logical dtype and shape). Ops may run
// asynchronously (a device backend enqueues them on its stream); Download
// and Synchronize wait. Every op returns absl::Status: InvalidArgument for
// a tensor that breaks the op's contract (wrong shape, dtype, or a buffer of
// another backend), Internal for a device failure. A failed op leaves its
// outputs unspecified.
//
// How a CUDA backend fills this in: AllocateBuffer = cudaMalloc'd Buffer;
// WrapHostMemory = a host-registered range the kernels read over PCIe (or a
// device copy); PlaceWeight = a device copy of the weight (kMatMul weights
// in cuBLAS's layout); Upload/Download = cudaMemcpyAsync on the stream
// (Download then synchronizes); ops = kernel launches whose index tensors
// (ids, positions, cache rows, block tables: the BatchDescriptor) are
// already on the device, uploaded once per step. engine/backend/cuda/
// (CudaBackend) is that backend: bf16 weights in cuBLAS GEMMs with fp32
// accumulation (the F32 activation rounded to bf16 first), fp32 weights in
// fp32 GEMMs, the kernels of kernels/ for the other ops, and step graphs
// (below) for decode steps.
//
// Step graphs (optional). A device backend may record the ops of a step
// once (CaptureStep) and replay them (ReplayStep): the same ops on the same
// operands, reading whatever bytes those operands hold at replay time. The
// model uses this for decode steps (Model::RunDecodeGraph; buckets and
// padding in engine/batch_descriptor.h): it uploads the
// step's batch descriptor into the graph's own descriptor buffer, then
// replays. A backend without graphs (the CPU) keeps the defaults and the
// model runs every op eagerly.
//
// Thread-safety: a Backend instance runs ops from one thread at a time (ops
// keep reusable scratch); AllocateBuffer, WrapHostMemory and PlaceWeight may
// be called from any thread. Ops may use worker threads internally.
#ifndef MEMSERVE_ENGINE_BACKEND_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_BACKEND_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/runtime/memory_pool.h"
#include "engine/runtime/tensor.h"
#include "engine/weights.h"

namespace memserve {

// Rotary-embedding angles in Meta's interleaved layout, computed in fp32
// exactly like the training code (lingua's precompute_freqs_cis):
//   freq[i] = 1 / theta^(2i / head_dim)   (fp32 pow and divide)
//   angle   = float(pos) * freq[i]        (fp32 multiply)
// then cos/sin of that fp32 angle, rounded to fp32. The model uploads it into
// a backend buffer as F32 [2, max_positions, head_dim / 2] (cos, then sin).
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

// One step's batch: the tokens of n_seqs sequences, sequence s owning rows
// [seq_starts[s], seq_starts[s + 1]) of every [n_tokens, ...] activation,
// at consecutive positions. Its index tensors live in backend buffers,
// uploaded once per step; the scalars are host values (shapes, launch sizes).
//
// The paged K/V cache (engine/kv_cache.h, PagedKvLayout): a layer's keys
// are a [num_blocks * block_size, n_kv_heads * head_dim] F32 or BF16 tensor
// (--kv_cache_dtype; the CPU backend takes F32 only); position
// j of sequence s is row block_tables[s, j / block_size] * block_size +
// j % block_size.
struct BatchDescriptor {
  int64_t n_tokens = 0;
  int n_seqs = 0;
  int block_size = 0;   // tokens per K/V block
  int max_blocks = 0;   // width of block_tables
  Tensor token_ids;     // I32 [n_tokens]
  Tensor positions;     // I32 [n_tokens]
  Tensor kv_rows;       // I64 [n_tokens]: the cache row each token's K/V goes to
  Tensor seq_starts;    // I32 [n_seqs + 1]: first row of each sequence; last = n_tokens
  Tensor block_tables;  // I32 [n_seqs, max_blocks]: covers every position up
                        // to the sequence's last token in this step
};

// Causal attention of every sequence of a BatchDescriptor against the
// cache, which already holds the keys/values of all its positions up to its
// last token of the step (WriteKv ran first). Query token at position p
// attends to positions j with j <= p and, when sliding_window > 0,
// p - j < sliding_window (the window includes p). Query head h uses kv head
// h / (n_heads / n_kv_heads). Scale 1/sqrt(head_dim), softmax in fp32.
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  // divides n_heads
  int head_dim = 0;
  int sliding_window = 0;  // 0 = unlimited
};

// One product-key memory lookup (docs/model.md, "The memory layer", steps
// 1-6) for every token of `queries`:
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
  int heads = 0;
  int n_keys = 0;
  int knn = 0;    // 1 <= knn <= n_keys
  int k_dim = 0;  // even
  int v_dim = 0;
  Tensor queries;      // F32 [n_tokens, heads * k_dim]; head h = cols [h*k_dim, (h+1)*k_dim)
  Tensor keys;         // F32|BF16 [2 * heads * n_keys, k_dim / 2] ([heads, 2, n_keys, k_dim/2])
  Tensor values;       // F32|BF16 [n_keys^2, v_dim]
  Tensor out;          // F32 [n_tokens, v_dim]
  Tensor out_indices;  // optional I64 [n_tokens, heads, knn] rows, score-descending
  Tensor out_scores;   // optional F32 [n_tokens, heads, knn] pre-softmax scores
};

// Step 1 of the memory lookup (MemoryLookupArgs, steps 1-5), replicated
// on every device: for every token and head the knn selected value rows
// (score-descending, ties: smaller row first) and their softmax weights.
struct MemorySelectArgs {
  int heads = 0;
  int n_keys = 0;
  int knn = 0;     // 1 <= knn <= n_keys
  int k_dim = 0;   // even
  Tensor queries;  // F32 [n_tokens, heads * k_dim]
  Tensor keys;     // F32|BF16 [2 * heads * n_keys, k_dim / 2]
  Tensor rows;     // out: I64 [n_tokens, heads, knn]
  Tensor weights;  // out: F32 [n_tokens, heads, knn]
  Tensor scores;   // optional out: F32 [n_tokens, heads, knn], pre-softmax
};

// How the model will use a weight; the backend picks its placement from it.
enum class WeightUse {
  kMatMul,  // only as MatMul's `w`
  kOther,   // anything else (norms, embeddings, biases, memory keys and values)
};

// A view with w's dtype and shape at the start of `buffer`.
// REQUIRES: w.shape.size() <= Tensor::kMaxRank.
Tensor TensorFromView(Buffer* buffer, const TensorView& w);

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  virtual Device device() const = 0;

  // --- memory ---

  // A buffer of `bytes` bytes (contents unspecified). ResourceExhausted
  // naming the size when it cannot be allocated.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(size_t bytes) = 0;
  // A read-only buffer over host memory [data, data + bytes) the caller keeps
  // valid and unchanged while the buffer lives (the checkpoint mapping): the
  // CPU uses it in place; a device backend may register or copy it.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> WrapHostMemory(const void* data,
                                                                 size_t bytes) = 0;
  // Where the weight `w` (a view of the checkpoint mapping, which outlives
  // the result) lives for `use`; `*tensor` becomes its view, with w's dtype
  // and shape. Default: the mapping itself (WrapHostMemory).
  virtual absl::StatusOr<std::unique_ptr<Buffer>> PlaceWeight(const TensorView& w, WeightUse use,
                                                              Tensor* tensor);
  // The memory value table `w` (a view of the checkpoint mapping, which
  // outlives the result) kept in host memory for host placement
  // (--memory_placement host): the ops read its rows where they are (a GPU
  // over PCIe, zero-copy). `*tensor` becomes its view. Default: the mapping
  // itself (WrapHostMemory), as the CPU uses it.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> PlaceHostTable(const TensorView& w,
                                                                 Tensor* tensor);
  // The value tables `tables` (views of the checkpoint mapping, [rows,
  // v_dim] each, one v_dim) split by `shards` (column ranges tiling
  // [0, v_dim), each on GPU shard.gpu) for sharded placement: the result
  // gathers each shard's columns on its GPU and combines them into the
  // model's output (MemoryPool). Default: Unimplemented (the CPU's shards
  // are virtual: MemoryPool::Create over one table).
  virtual absl::StatusOr<std::unique_ptr<ShardedMemory>> PlaceShardedTables(
      const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards);
  // dst's bytes = src's dst.nbytes() bytes (host memory).
  virtual absl::Status Upload(const void* src, const Tensor& dst) = 0;
  // dst (host memory) = src's src.nbytes() bytes, after every op enqueued
  // before it finished.
  virtual absl::Status Download(const Tensor& src, void* dst) = 0;
  // Waits for every enqueued op.
  virtual absl::Status Synchronize() = 0;

  // --- ops (shapes: docs/model.md; T = the first dimension of x) ---

  // y[t, o] = sum_i x[t, i] * w[o, i] (+ bias[o]).
  // x F32 [T, in], w F32|BF16 [out, in], bias F32|BF16 [out] or absent,
  // y F32 [T, out]. y must not alias x. Each token's result does not depend
  // on T or on the other tokens (batch invariance).
  virtual absl::Status MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& y) = 0;

  // y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight; x, y F32 [T, dim],
  // weight F32|BF16 [dim]. y may alias x.
  virtual absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                               const Tensor& y) = 0;

  // y[t] = table[ids[t]] as fp32; table [vocab, dim], ids I32 [T] (REQUIRES:
  // in range), y F32 [T, dim].
  virtual absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) = 0;

  // Rotates x F32 [T, n_heads, head_dim] in place; token t is at position
  // positions[t] (I32 [T]; REQUIRES: 0 <= positions[t] < max_positions of
  // `rope`, the F32 [2, max_positions, head_dim / 2] table of RopeTable).
  virtual absl::Status Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) = 0;

  // k_cache[kv_rows[t]] = k[t] and v_cache[kv_rows[t]] = v[t]: k, v F32
  // [T, kv_dim], kv_rows I64 [T] (REQUIRES: distinct, in range), caches F32
  // or BF16 (both the same; BF16 rounds to nearest even) [rows, kv_dim]. A
  // backend that cannot read kv_rows on the host (a device) skips rows
  // outside the cache instead of failing.
  virtual absl::Status WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                               const Tensor& k_cache, const Tensor& v_cache) = 0;

  // out = attention (AttentionShape) of q F32 [n_tokens, n_heads * head_dim]
  // (rotated) over the layer's caches (F32 or BF16, as WriteKv) for every
  // sequence of `batch`; out F32 [n_tokens, n_heads * head_dim].
  virtual absl::Status Attention(const AttentionShape& shape, const BatchDescriptor& batch,
                                 const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const Tensor& out) = 0;

  // y[i] = silu(a[i]) * b[i], all F32 of one size; y may alias a or b.
  virtual absl::Status SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) = 0;

  // y[i] += x[i], both F32 of one size.
  virtual absl::Status Add(const Tensor& x, const Tensor& y) = 0;

  // x[r, :] *= sigmoid(gate[r]); gate F32 [rows] (or [rows, 1]), x F32 [rows, cols].
  virtual absl::Status SigmoidGateRows(const Tensor& gate, const Tensor& x) = 0;

  // The memory lookup in two steps (MemoryLookupArgs). MemorySelect picks
  // the rows and weights; ValueGather computes columns [col_begin, col_end)
  // of out F32 [n_tokens, v_dim]:
  //   out[t, c] = sum_{h,k} weights[t,h,k] * values[rows[t,h,k], c]
  // (fp32, in (h, k) order), leaving the other columns untouched. values
  // F32|BF16 [n_keys^2, v_dim]; rows, weights as MemorySelect wrote them.
  // A sharded memory runs one ValueGather per shard (its column range, on
  // its device) and concatenates the slices; the result does not depend on
  // the sharding when every col_begin is a multiple of 16.
  virtual absl::Status MemorySelect(const MemorySelectArgs& args) = 0;
  virtual absl::Status ValueGather(const Tensor& values, const Tensor& rows, const Tensor& weights,
                                   int64_t col_begin, int64_t col_end, const Tensor& out) = 0;
  // MemorySelect then ValueGather over all columns, with scratch buffers
  // allocated per call (for tests and tools; the model keeps its own).
  absl::Status MemoryLookup(const MemoryLookupArgs& args);

  // --- step graphs (optional; see the file comment) ---

  // A recorded sequence of ops, replayable on the backend that captured it.
  // It refers to the buffers its ops used: the caller keeps them alive (and
  // at the same size) while the graph lives, and may change their bytes
  // (Upload) between replays.
  class StepGraph {
   public:
    virtual ~StepGraph() = default;
  };
  // Whether CaptureStep works on this backend. Default: false.
  virtual bool SupportsStepGraphs() const { return false; }
  // Records the ops `ops` issues (it must issue ops only: no Upload,
  // Download, Synchronize or buffer allocation) without running them, and
  // returns the graph. Operand checks that need no device data still run at
  // capture; a failed op or `ops` returning an error ends the capture with
  // that status. Default: Unimplemented.
  virtual absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStep(
      const std::function<absl::Status()>& ops);
  // Runs `graph` (captured by this backend) once, like its ops issued in
  // order; asynchronous like any op. Default: Unimplemented.
  virtual absl::Status ReplayStep(StepGraph& graph);
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_BACKEND_H_
