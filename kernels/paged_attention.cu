#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/launch_util.cuh"
#include "kernels/paged_attention.h"
#include "kernels/paged_attention_index.h"

namespace memserve::kernels {
namespace {

constexpr int kWarps = 4;        // warps per block; each takes every kWarps-th group of keys
constexpr int kKeysPerIter = 4;  // keys a warp loads at once (independent loads in flight)
constexpr int kMaxHeadDim = 256;

struct AttentionArgs {
  const float* q;
  const void* k_cache;
  const void* v_cache;
  float* out;
  const int32_t* seq_starts;
  const int32_t* positions;
  const int32_t* block_tables;
  int n_seqs;
  int max_blocks;
  int block_size;
  int64_t cache_blocks;  // cache_rows / block_size
  int n_heads;
  int group;  // n_heads / n_kv_heads
  int head_dim;
  int64_t kv_dim;  // n_kv_heads * head_dim: elements per cache row
  int sliding_window;
  int64_t q_stride;
  float scale;
  int splits;       // blocks per (row, head) along the keys (blockIdx.z)
  int64_t chunk;    // positions per split (SplitKeys)
  float* partials;  // splits > 1: [n_tokens, n_heads, splits, 2 + head_dim]
};

__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ float Load(const uint16_t* p) { return Bf16BitsToF32(*p); }

// One block per (query row, query head): blockIdx.x = row, blockIdx.y =
// head. Lane l of each warp holds dims l, l + 32, ... (kDpl of them) of q,
// of the running output and of each key/value row it reads. Warp w scores
// the keys lo + w * kKeysPerIter + i * kWarps * kKeysPerIter ... (groups of
// kKeysPerIter), one warp-wide shuffle reduction per key, and keeps its own
// online softmax (running max m, sum l, unnormalized output); the warps are
// merged through shared memory at the end. With splits > 1, blockIdx.z is
// the split: the block covers its chunk of the keys (SplitKeys) and leaves
// (max, sum, unnormalized output) in `partials` for MergeSplitsKernel.
template <typename T, int kDpl>
__global__ void __launch_bounds__(kWarps * 32) PagedAttentionKernel(AttentionArgs a) {
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kDpl * 32];

  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int hd = a.head_dim;
  float* out = a.out + row * static_cast<int64_t>(a.n_heads) * hd + static_cast<int64_t>(h) * hd;
  float* partial = a.splits > 1 ? a.partials + ((row * a.n_heads + h) * a.splits + blockIdx.z) *
                                                   (2 + static_cast<int64_t>(hd))
                                : nullptr;

  const int s = SequenceOfRow(a.seq_starts, a.n_seqs, row);
  int64_t pos = -1;
  if (s >= 0) {
    const int64_t first = a.seq_starts[s];
    pos = static_cast<int64_t>(a.positions[first]) + (row - first);
  }
  if (s < 0 || pos < 0) {  // uniform across the block
    if (partial == nullptr) {
      for (int d = threadIdx.x; d < hd; d += blockDim.x) out[d] = 0.0f;
    } else {
      for (int d = threadIdx.x; d < hd; d += blockDim.x) partial[2 + d] = 0.0f;
      if (threadIdx.x == 0) {
        partial[0] = -INFINITY;
        partial[1] = 0.0f;
      }
    }
    return;
  }
  const KeyRange keys = SplitKeys(AttendedKeys(pos, a.sliding_window, a.max_blocks, a.block_size),
                                  static_cast<int>(blockIdx.z), a.splits, a.chunk);
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks;
  const int64_t head_offset = static_cast<int64_t>(h / a.group) * hd;
  const T* k_base = static_cast<const T*>(a.k_cache) + head_offset;
  const T* v_base = static_cast<const T*>(a.v_cache) + head_offset;

  float q[kDpl];
  const float* q_row = a.q + row * a.q_stride + static_cast<int64_t>(h) * hd;
#pragma unroll
  for (int i = 0; i < kDpl; ++i) {
    const int d = lane + 32 * i;
    q[i] = d < hd ? q_row[d] : 0.0f;
  }

  float m = -INFINITY;  // running max of this warp's scores
  float l = 0.0f;       // running sum of exp(score - m)
  float acc[kDpl];      // running sum of exp(score - m) * v
#pragma unroll
  for (int i = 0; i < kDpl; ++i) acc[i] = 0.0f;

  for (int64_t j0 = keys.first + warp * kKeysPerIter; j0 <= keys.last;
       j0 += kWarps * kKeysPerIter) {
    int64_t offset[kKeysPerIter];
    bool valid[kKeysPerIter];
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
      const int64_t j = j0 + u;
      const int64_t cache_row =
          j <= keys.last ? CacheRowOfPosition(table, j, a.block_size, a.cache_blocks) : -1;
      valid[u] = cache_row >= 0;
      offset[u] = valid[u] ? cache_row * a.kv_dim : 0;
    }
    float kx[kKeysPerIter][kDpl];
    float vx[kKeysPerIter][kDpl];
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
#pragma unroll
      for (int i = 0; i < kDpl; ++i) {
        const int d = lane + 32 * i;
        const bool load = valid[u] && d < hd;
        kx[u][i] = load ? Load(k_base + offset[u] + d) : 0.0f;
        vx[u][i] = load ? Load(v_base + offset[u] + d) : 0.0f;
      }
    }
    float score[kKeysPerIter];
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kDpl; ++i) dot += q[i] * kx[u][i];
      score[u] = dot;
    }
#pragma unroll
    for (int offset_lanes = 16; offset_lanes > 0; offset_lanes /= 2) {
#pragma unroll
      for (int u = 0; u < kKeysPerIter; ++u) {
        score[u] += __shfl_xor_sync(0xffffffffu, score[u], offset_lanes);
      }
    }
    float m_new = m;
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
      score[u] = valid[u] ? score[u] * a.scale : -INFINITY;
      m_new = fmaxf(m_new, score[u]);
    }
    if (m_new == -INFINITY) continue;          // nothing valid yet (uniform across the warp)
    const float correction = expf(m - m_new);  // 0 while m is -inf
    l *= correction;
#pragma unroll
    for (int i = 0; i < kDpl; ++i) acc[i] *= correction;
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
      const float p = valid[u] ? expf(score[u] - m_new) : 0.0f;
      l += p;
#pragma unroll
      for (int i = 0; i < kDpl; ++i) acc[i] += p * vx[u][i];
    }
    m = m_new;
  }

  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kDpl; ++i) warp_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, warp_max[w]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f, o = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_max[w] == -INFINITY) continue;  // the warp saw no valid key
      const float f = expf(warp_max[w] - m_all);
      sum += warp_sum[w] * f;
      o += warp_acc[w][d] * f;
    }
    if (partial == nullptr) {
      out[d] = sum > 0.0f ? o / sum : 0.0f;
    } else {
      partial[2 + d] = o;
      if (d == 0) {
        partial[0] = m_all;
        partial[1] = sum;
      }
    }
  }
}

// Merges the splits of each (row, head) = (blockIdx.x, blockIdx.y): the
// same rule as the merge of the warps (a split that saw no key is skipped;
// nothing at all gives zeros).
__global__ void MergeSplitsKernel(const float* partials, float* out, int n_heads, int head_dim,
                                  int splits) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  const int64_t width = 2 + static_cast<int64_t>(head_dim);
  const float* p = partials + (row * n_heads + h) * splits * width;
  float m_all = -INFINITY;
  for (int i = 0; i < splits; ++i) m_all = fmaxf(m_all, p[i * width]);
  float* o_row = out + (row * n_heads + h) * static_cast<int64_t>(head_dim);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f, o = 0.0f;
    for (int i = 0; i < splits; ++i) {
      const float m = p[i * width];
      if (m == -INFINITY) continue;
      const float f = expf(m - m_all);
      sum += p[i * width + 1] * f;
      o += p[i * width + 2 + d] * f;
    }
    o_row[d] = sum > 0.0f ? o / sum : 0.0f;
  }
}

template <typename T>
void Launch(const AttentionArgs& args, int64_t n_tokens, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(args.n_heads),
                  static_cast<unsigned>(args.splits));
  const int hd = args.head_dim;
  if (hd <= 32) {
    PagedAttentionKernel<T, 1><<<grid, kWarps * 32, 0, stream>>>(args);
  } else if (hd <= 64) {
    PagedAttentionKernel<T, 2><<<grid, kWarps * 32, 0, stream>>>(args);
  } else if (hd <= 128) {
    PagedAttentionKernel<T, 4><<<grid, kWarps * 32, 0, stream>>>(args);
  } else {
    PagedAttentionKernel<T, 8><<<grid, kWarps * 32, 0, stream>>>(args);
  }
}

absl::Status Invalid(const char* field, const char* want, int64_t got) {
  return absl::InvalidArgumentError(
      absl::StrCat("PagedAttentionParams.", field, " must be ", want, ", got ", got));
}

}  // namespace

float PagedAttentionParams::scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

absl::Status PagedAttentionParams::Validate() const {
  const char* null = q == nullptr              ? "q"
                     : k_cache == nullptr      ? "k_cache"
                     : v_cache == nullptr      ? "v_cache"
                     : out == nullptr          ? "out"
                     : seq_starts == nullptr   ? "seq_starts"
                     : positions == nullptr    ? "positions"
                     : block_tables == nullptr ? "block_tables"
                                               : nullptr;
  if (null != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttentionParams.", null, " is null"));
  }
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return Invalid("n_tokens", "in [0, 2^31 - 1]", n_tokens);
  }
  if (n_seqs < 0 || n_seqs > n_tokens || (n_tokens > 0 && n_seqs < 1)) {
    return Invalid("n_seqs", "in [1, n_tokens] (0 only when n_tokens is 0)", n_seqs);
  }
  if (max_blocks < 1) return Invalid("max_blocks", ">= 1", max_blocks);
  if (block_size < 1) return Invalid("block_size", ">= 1", block_size);
  if (cache_rows < block_size) return Invalid("cache_rows", ">= block_size", cache_rows);
  if (head_dim < 1 || head_dim > kMaxHeadDim) return Invalid("head_dim", "in [1, 256]", head_dim);
  if (n_kv_heads < 1) return Invalid("n_kv_heads", ">= 1", n_kv_heads);
  if (n_heads < 1 || n_heads > 65535 || n_heads % n_kv_heads != 0) {
    return Invalid("n_heads", "a multiple of n_kv_heads in [1, 65535]", n_heads);
  }
  if (sliding_window < 0) return Invalid("sliding_window", ">= 0 (0 = unlimited)", sliding_window);
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  if (q_stride != 0 && q_stride < row) {
    return Invalid("q_stride", "0 or >= n_heads * head_dim", q_stride);
  }
  if (max_context < 0) return Invalid("max_context", ">= 0 (0 = unknown)", max_context);
  const size_t need = PagedAttentionWorkspaceBytes(*this);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need)) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttentionParams.workspace must hold ",
                                                   need, " bytes, got ",
                                                   workspace == nullptr ? 0 : workspace_bytes));
  }
  return absl::OkStatus();
}

size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  if (p.n_tokens <= 0 || p.n_heads <= 0 || p.head_dim <= 0) return 0;
  const int splits = AttentionSplits(p.n_tokens, p.n_heads, p.max_context);
  if (splits <= 1) return 0;
  return static_cast<size_t>(p.n_tokens) * p.n_heads * splits * (2 + p.head_dim) * sizeof(float);
}

absl::Status LaunchPagedAttention(const PagedAttentionParams& p, void* stream) {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return valid;
  if (p.n_tokens == 0) return absl::OkStatus();
  AttentionArgs args;
  args.q = p.q;
  args.k_cache = p.k_cache;
  args.v_cache = p.v_cache;
  args.out = p.out;
  args.seq_starts = p.seq_starts;
  args.positions = p.positions;
  args.block_tables = p.block_tables;
  args.n_seqs = p.n_seqs;
  args.max_blocks = p.max_blocks;
  args.block_size = p.block_size;
  args.cache_blocks = p.cache_rows / p.block_size;
  args.n_heads = p.n_heads;
  args.group = p.n_heads / p.n_kv_heads;
  args.head_dim = p.head_dim;
  args.kv_dim = static_cast<int64_t>(p.n_kv_heads) * p.head_dim;
  args.sliding_window = p.sliding_window;
  args.q_stride = p.effective_q_stride();
  args.scale = p.scale();
  args.splits = AttentionSplits(p.n_tokens, p.n_heads, p.max_context);
  args.chunk = AttentionSplitChunk(p.max_context, args.splits);
  args.partials = args.splits > 1 ? static_cast<float*>(p.workspace) : nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.cache_type == ElementType::kF32) {
    Launch<float>(args, p.n_tokens, s);
  } else {
    Launch<uint16_t>(args, p.n_tokens, s);
  }
  absl::Status launched = LaunchStatus("paged_attention");
  if (!launched.ok()) return launched;
  if (args.splits > 1) {
    const dim3 grid(static_cast<unsigned>(p.n_tokens), static_cast<unsigned>(p.n_heads));
    const int threads = p.head_dim >= 128 ? 128 : (p.head_dim + 31) / 32 * 32;
    MergeSplitsKernel<<<grid, threads, 0, s>>>(args.partials, p.out, p.n_heads, p.head_dim,
                                               args.splits);
    return LaunchStatus("paged_attention merge");
  }
  return absl::OkStatus();
}

}  // namespace memserve::kernels
