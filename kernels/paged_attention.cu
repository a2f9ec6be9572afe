#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/bf16_bits.h"
#include "kernels/launch_util.cuh"
#include "kernels/paged_attention.h"

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
};

__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ float Load(const uint16_t* p) { return Bf16BitsToF32(*p); }

// One block per (query row, query head): blockIdx.x = row, blockIdx.y =
// head. Lane l of each warp holds dims l, l + 32, ... (kDpl of them) of q,
// of the running output and of each key/value row it reads. Warp w scores
// the keys lo + w * kKeysPerIter + i * kWarps * kKeysPerIter ... (groups of
// kKeysPerIter), one warp-wide shuffle reduction per key, and keeps its own
// online softmax (running max m, sum l, unnormalized output); the warps are
// merged through shared memory at the end.
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

  // The row's sequence: the last s with seq_starts[s] <= row.
  int s = -1;
  int64_t pos = -1;
  if (row >= a.seq_starts[0] && row < a.seq_starts[a.n_seqs]) {
    int lo = 0, hi = a.n_seqs - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (a.seq_starts[mid] <= row) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    s = lo;
    const int64_t first = a.seq_starts[s];
    pos = static_cast<int64_t>(a.positions[first]) + (row - first);
  }
  if (s < 0 || pos < 0) {  // uniform across the block
    for (int d = threadIdx.x; d < hd; d += blockDim.x) out[d] = 0.0f;
    return;
  }
  // Keys [first_key, last_key]: the causal window, clipped to the positions
  // the block table can map (a bound on the loop whatever the positions say).
  int64_t first_key = 0;
  if (a.sliding_window > 0 && pos - a.sliding_window + 1 > 0) {
    first_key = pos - a.sliding_window + 1;
  }
  const int64_t mapped = static_cast<int64_t>(a.max_blocks) * a.block_size;
  const int64_t last_key = pos < mapped ? pos : mapped - 1;
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

  for (int64_t j0 = first_key + warp * kKeysPerIter; j0 <= last_key; j0 += kWarps * kKeysPerIter) {
    int64_t offset[kKeysPerIter];
    bool valid[kKeysPerIter];
#pragma unroll
    for (int u = 0; u < kKeysPerIter; ++u) {
      const int64_t j = j0 + u;
      const int64_t b = j / a.block_size;
      valid[u] = j <= last_key;
      const int64_t block = valid[u] ? table[b] : -1;
      valid[u] = valid[u] && block >= 0 && block < a.cache_blocks;
      offset[u] = valid[u] ? (block * a.block_size + j % a.block_size) * a.kv_dim : 0;
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
    out[d] = sum > 0.0f ? o / sum : 0.0f;
  }
}

template <typename T>
void Launch(const AttentionArgs& args, int64_t n_tokens, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(args.n_heads));
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

size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams&) { return 0; }

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
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.cache_type == ElementType::kF32) {
    Launch<float>(args, p.n_tokens, s);
  } else {
    Launch<uint16_t>(args, p.n_tokens, s);
  }
  return LaunchStatus("paged_attention");
}

}  // namespace memserve::kernels
