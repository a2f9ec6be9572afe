// The product-key lookup lab (in the manner of llm.c's dev/cuda): numbered
// versions of the whole memory lookup (sub-key scores, both top-k stages,
// softmax, weighted gather), a CPU reference, a validation and a timing
// sweep. kernels/README.md "The product-key lab" says how to read it.
//
//   v1  today's two-kernel path (the CUDA backend with
//       MEMSERVE_CUDA_MEMORY_KERNELS=legacy): bf16 keys widened to fp32,
//       cuBLAS strided-batched sgemm for the sub-key scores,
//       kernels/memory_select (knn rounds of block arg-best per stage, one
//       block per (token, head)), kernels/value_gather (one bf16 scalar per
//       thread per row, one block per token).
//   v2  kernels/product_key: the split scores kernel (keys read as bf16,
//       16-byte loads; a (token, head, half)'s keys over several blocks),
//       the radix-select selection (both halves at once), the 16-byte gather
//       with fp32 accumulators (below 64 tokens a token's rows spread over
//       64-column blocks of 16 warps x 4 row slots; 256-column blocks of 4
//       warps from 64).
//   v3  v1's GEMM scores + v2's selection and gather (what the backend runs
//       above 16 tokens).
//
// Validation: every version against the CPU reference (fp64 sub-key scores
// from the same bf16 keys, SelectRowsSequential of topk.h, an fp64 gather):
// the rows must be equal at every rank whose score gap to both neighbours
// exceeds 1e-4 (ties: score desc, then smaller row first), and the output
// within NMSE 1e-8 where all rows agree.
//
// Timing (CUDA events, after warm-up; medians of --reps): every version at
// n_keys 1024 and 4096, heads 4, knn 32, k_dim 512, v_dim 1024 and 2048,
// tokens 1, 8, 64, 512, 4096; at batch 1 also by CUDA-graph replay (16
// lookups on 16 different queries per graph, so the rows differ). The table
// is one [n_keys^2, 2048] bf16 array (v_dim 1024 reads columns [0, 1024)),
// 4 GiB or 64 GiB, filled by a hash (ValueAt) that the CPU reference also
// computes. Beside it: the gather alone (v1's and v2's, GB/s of rows read +
// output written) and a device-to-device copy (GB/s read + written), the
// ceiling of the ">= 90% of copy bandwidth" goal.
//
// Output: one JSON line per measurement ("what": validate | lookup | graph |
// gather | copy), then a summary table. Exit 0; 77 without a CUDA device;
// 1 when a validation fails or a CUDA call fails.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/bf16_bits.h"
#include "kernels/convert.h"
#include "kernels/memory_select.h"
#include "kernels/product_key.h"
#include "kernels/topk.h"
#include "kernels/value_gather.h"

namespace memserve::kernels {
namespace {

#define LAB_CUDA(call)                                                   \
  do {                                                                   \
    const cudaError_t err_ = (call);                                     \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "product_key_lookup: %s failed: %s\n", #call, \
                   cudaGetErrorString(err_));                            \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)
#define LAB_OK(call)                                                     \
  do {                                                                   \
    const absl::Status st_ = (call);                                     \
    if (!st_.ok()) {                                                     \
      std::fprintf(stderr, "product_key_lookup: %s failed: %s\n", #call, \
                   std::string(st_.message()).c_str());                  \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

constexpr int kHeads = 4, kKnn = 32, kKDim = 512, kTableCols = 2048;
constexpr int kGraphLookups = 16;

// The table's value at (row, col) as bf16 bits: a hash, in about [-1, 1].
__host__ __device__ inline uint16_t ValueAt(int64_t row, int64_t col) {
  uint64_t x = static_cast<uint64_t>(row) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(col);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  const float f = static_cast<float>(static_cast<int64_t>(x >> 40) - (1 << 23)) / (1 << 23);
  return F32ToBf16Bits(f);
}

__global__ void FillTable(uint16_t* t, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    t[i] = ValueAt(i / cols, i % cols);
  }
}

std::vector<float> Random(size_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = scale * (static_cast<float>(x >> 40) / (1 << 24) * 2.0f - 1.0f);
  }
  return v;
}

struct Shape {
  int n_keys, v_dim;
  int64_t tokens;
};

// Device state of one n_keys: the table, keys, queries for the largest
// batch, outputs and scratch for every version.
struct Lab {
  int n_keys = 0;
  int64_t max_tokens = 0;
  uint16_t* table = nullptr;  // [n_keys^2, kTableCols]
  uint16_t* keys = nullptr;   // [heads, 2, n_keys, k_dim / 2] bf16
  float* keys_f32 = nullptr;  // v1/v3: widened per call
  float* queries = nullptr;   // [max_tokens + kGraphLookups, heads * k_dim]
  float* subkey_scores = nullptr;
  int64_t* rows = nullptr;
  float* weights = nullptr;
  float* out = nullptr;  // [max_tokens, kTableCols]
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cublasHandle_t blas = nullptr;
  void* blas_workspace = nullptr;  // cuBLAS must not allocate inside a graph capture
  cudaStream_t stream = nullptr;
  std::vector<uint16_t> host_keys;
  std::vector<float> host_queries;
};

void Setup(Lab* lab, int n_keys, int64_t max_tokens) {
  lab->n_keys = n_keys;
  lab->max_tokens = max_tokens;
  const int64_t table_rows = static_cast<int64_t>(n_keys) * n_keys;
  LAB_CUDA(cudaMalloc(&lab->table, table_rows * kTableCols * 2));
  FillTable<<<4096, 256, 0, lab->stream>>>(lab->table, table_rows * kTableCols, kTableCols);
  LAB_CUDA(cudaGetLastError());
  const size_t n_key_elems = static_cast<size_t>(kHeads) * 2 * n_keys * (kKDim / 2);
  const std::vector<float> keys = Random(n_key_elems, 11 + n_keys, 1.0f);
  lab->host_keys.resize(n_key_elems);
  for (size_t i = 0; i < keys.size(); ++i) lab->host_keys[i] = F32ToBf16Bits(keys[i]);
  LAB_CUDA(cudaMalloc(&lab->keys, n_key_elems * 2));
  LAB_CUDA(cudaMemcpy(lab->keys, lab->host_keys.data(), n_key_elems * 2, cudaMemcpyHostToDevice));
  LAB_CUDA(cudaMalloc(&lab->keys_f32, n_key_elems * 4));
  const int64_t q_rows = max_tokens + kGraphLookups;
  lab->host_queries = Random(q_rows * kHeads * kKDim, 5, 1.0f);
  LAB_CUDA(cudaMalloc(&lab->queries, lab->host_queries.size() * 4));
  LAB_CUDA(cudaMemcpy(lab->queries, lab->host_queries.data(), lab->host_queries.size() * 4,
                      cudaMemcpyHostToDevice));
  LAB_CUDA(cudaMalloc(&lab->subkey_scores, max_tokens * kHeads * 2 * n_keys * 4));
  LAB_CUDA(cudaMalloc(&lab->rows, max_tokens * kHeads * kKnn * 8));
  LAB_CUDA(cudaMalloc(&lab->weights, max_tokens * kHeads * kKnn * 4));
  LAB_CUDA(cudaMalloc(&lab->out, max_tokens * kTableCols * 4));
  ProductKeyLookupParams p;
  p.n_tokens = max_tokens;
  p.heads = kHeads;
  p.n_keys = n_keys;
  p.knn = kKnn;
  lab->workspace_bytes = ProductKeyLookupWorkspaceBytes(p);
  LAB_CUDA(cudaMalloc(&lab->workspace, lab->workspace_bytes));
  LAB_CUDA(cudaMalloc(&lab->blas_workspace, size_t{32} << 20));
  if (cublasSetWorkspace(lab->blas, lab->blas_workspace, size_t{32} << 20) !=
      CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "product_key_lookup: cublasSetWorkspace failed\n");
    std::exit(1);
  }
  LAB_CUDA(cudaStreamSynchronize(lab->stream));
}

void Teardown(Lab* lab) {
  for (void* p : {static_cast<void*>(lab->table), static_cast<void*>(lab->keys),
                  static_cast<void*>(lab->keys_f32), static_cast<void*>(lab->queries),
                  static_cast<void*>(lab->subkey_scores), static_cast<void*>(lab->rows),
                  static_cast<void*>(lab->weights), static_cast<void*>(lab->out), lab->workspace,
                  lab->blas_workspace}) {
    cudaFree(p);
  }
}

// v1 and v3's sub-key scores: widen the keys, one strided-batched sgemm.
void GemmScores(Lab& lab, const float* queries, int64_t tokens) {
  Bf16ToF32Params c;
  c.x = lab.keys;
  c.y = lab.keys_f32;
  c.n = static_cast<int64_t>(kHeads) * 2 * lab.n_keys * (kKDim / 2);
  LAB_OK(LaunchBf16ToF32(c, lab.stream));
  const int half = kKDim / 2, batches = 2 * kHeads;
  const float one = 1.0f, zero = 0.0f;
  if (cublasSgemmStridedBatched(lab.blas, CUBLAS_OP_T, CUBLAS_OP_N, lab.n_keys,
                                static_cast<int>(tokens), half, &one, lab.keys_f32, half,
                                static_cast<long long>(lab.n_keys) * half, queries, kHeads * kKDim,
                                half, &zero, lab.subkey_scores, batches * lab.n_keys, lab.n_keys,
                                batches) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "product_key_lookup: cublasSgemmStridedBatched failed\n");
    std::exit(1);
  }
}

void Gather(Lab& lab, int version, int64_t tokens, int v_dim) {
  if (version == 1) {
    ValueGatherParams g;
    g.values = lab.table;
    g.indices = lab.rows;
    g.weights = lab.weights;
    g.out = lab.out;
    g.rows = static_cast<int64_t>(lab.n_keys) * lab.n_keys;
    g.v_dim = v_dim;
    g.n = static_cast<int>(tokens);
    g.k = kHeads * kKnn;
    g.row_stride = kTableCols;
    LAB_OK(LaunchValueGather(g, lab.stream));
    return;
  }
  ProductKeyGatherParams g;
  g.values = lab.table;
  g.values_type = ElementType::kBF16;
  g.table_rows = static_cast<int64_t>(lab.n_keys) * lab.n_keys;
  g.row_stride = kTableCols;
  g.col_end = v_dim;
  g.rows = lab.rows;
  g.weights = lab.weights;
  g.picks = kHeads * kKnn;
  g.n_tokens = tokens;
  g.out = lab.out;
  LAB_OK(LaunchProductKeyGather(g, lab.stream));
}

// One whole lookup of `tokens` tokens from query row `q_row` on lab.stream.
void Lookup(Lab& lab, int version, int64_t tokens, int v_dim, int64_t q_row) {
  const float* queries = lab.queries + q_row * kHeads * kKDim;
  if (version == 2) {
    ProductKeyLookupParams p;
    p.queries = queries;
    p.keys = lab.keys;
    p.keys_type = ElementType::kBF16;
    p.values = lab.table;
    p.values_type = ElementType::kBF16;
    p.table_rows = static_cast<int64_t>(lab.n_keys) * lab.n_keys;
    p.row_stride = kTableCols;
    p.col_end = v_dim;
    p.out = lab.out;
    p.rows = lab.rows;
    p.weights = lab.weights;
    p.n_tokens = tokens;
    p.heads = kHeads;
    p.n_keys = lab.n_keys;
    p.knn = kKnn;
    p.k_dim = kKDim;
    p.workspace = lab.workspace;
    p.workspace_bytes = lab.workspace_bytes;
    LAB_OK(LaunchProductKeyLookup(p, lab.stream));
    return;
  }
  GemmScores(lab, queries, tokens);
  if (version == 1) {
    MemorySelectParams s;
    s.subkey_scores = lab.subkey_scores;
    s.rows = lab.rows;
    s.weights = lab.weights;
    s.n_tokens = tokens;
    s.heads = kHeads;
    s.n_keys = lab.n_keys;
    s.knn = kKnn;
    LAB_OK(LaunchMemorySelect(s, lab.stream));
  } else {
    ProductKeySelectParams s;
    s.subkey_scores = lab.subkey_scores;
    s.rows = lab.rows;
    s.weights = lab.weights;
    s.n_tokens = tokens;
    s.heads = kHeads;
    s.n_keys = lab.n_keys;
    s.knn = kKnn;
    LAB_OK(LaunchProductKeySelect(s, lab.stream));
  }
  Gather(lab, version, tokens, v_dim);
}

// The CPU reference of token t (query row t): rows, scores [heads * knn]
// and out [v_dim].
void Reference(const Lab& lab, int64_t t, int v_dim, std::vector<int64_t>* rows,
               std::vector<float>* scores, std::vector<double>* out) {
  const int n_keys = lab.n_keys, half = kKDim / 2;
  rows->assign(kHeads * kKnn, 0);
  scores->assign(kHeads * kKnn, 0.0f);
  out->assign(v_dim, 0.0);
  std::vector<float> head_scores(2 * n_keys), s1(kKnn), s2(kKnn), w(kKnn);
  std::vector<int32_t> i1(kKnn), i2(kKnn);
  for (int h = 0; h < kHeads; ++h) {
    for (int hf = 0; hf < 2; ++hf) {
      const float* q = lab.host_queries.data() + t * kHeads * kKDim + (2 * h + hf) * half;
      for (int j = 0; j < n_keys; ++j) {
        const uint16_t* k =
            lab.host_keys.data() + ((2 * h + hf) * static_cast<int64_t>(n_keys) + j) * half;
        double dot = 0.0;
        for (int e = 0; e < half; ++e) dot += static_cast<double>(q[e]) * Bf16BitsToF32(k[e]);
        head_scores[hf * n_keys + j] = static_cast<float>(dot);
      }
    }
    SelectRowsSequential(head_scores.data(), n_keys, kKnn, s1.data(), i1.data(), s2.data(),
                         i2.data(), rows->data() + h * kKnn, scores->data() + h * kKnn, w.data());
    for (int k = 0; k < kKnn; ++k) {
      const int64_t r = (*rows)[h * kKnn + k];
      for (int c = 0; c < v_dim; ++c)
        (*out)[c] += static_cast<double>(w[k]) * Bf16BitsToF32(ValueAt(r, c));
    }
  }
}

bool Validate(Lab& lab, int version, int64_t tokens, int v_dim) {
  Lookup(lab, version, tokens, v_dim, 0);
  LAB_CUDA(cudaStreamSynchronize(lab.stream));
  std::vector<int64_t> rows(tokens * kHeads * kKnn);
  std::vector<float> out(tokens * v_dim);
  LAB_CUDA(cudaMemcpy(rows.data(), lab.rows, rows.size() * 8, cudaMemcpyDeviceToHost));
  LAB_CUDA(cudaMemcpy2D(out.data(), v_dim * 4, lab.out, v_dim * 4, v_dim * 4, tokens,
                        cudaMemcpyDeviceToHost));
  int64_t clear = 0, clear_bad = 0, differ = 0;
  double err = 0.0, ref = 0.0;
  std::vector<int64_t> want_rows;
  std::vector<float> want_scores;
  std::vector<double> want_out;
  for (int64_t t = 0; t < tokens; ++t) {
    Reference(lab, t, v_dim, &want_rows, &want_scores, &want_out);
    bool same = true;
    for (int i = 0; i < kHeads * kKnn; ++i) {
      const int k = i % kKnn;
      const float s = want_scores[i];
      const float tol = 1e-4f * std::max(1.0f, std::fabs(s));
      const bool gap_before = k == 0 || want_scores[i - 1] - s > tol;
      const bool gap_after = k + 1 < kKnn && s - want_scores[i + 1] > tol;
      const bool bad = rows[t * kHeads * kKnn + i] != want_rows[i];
      same &= !bad;
      differ += bad;
      if (gap_before && gap_after) {
        ++clear;
        clear_bad += bad;
      }
    }
    if (!same) continue;
    for (int c = 0; c < v_dim; ++c) {
      const double d = out[t * v_dim + c] - want_out[c];
      err += d * d;
      ref += want_out[c] * want_out[c];
    }
  }
  const double nmse = ref > 0 ? err / ref : 0.0;
  const bool ok = clear_bad == 0 && nmse < 1e-8 && clear > 0;
  std::printf(
      "{\"what\": \"validate\", \"version\": %d, \"n_keys\": %d, \"v_dim\": %d, \"tokens\": %lld, "
      "\"clear_ranks\": %lld, \"clear_mismatches\": %lld, \"near_tie_mismatches\": %lld, "
      "\"nmse\": %.3g, \"ok\": %s}\n",
      version, lab.n_keys, v_dim, static_cast<long long>(tokens), static_cast<long long>(clear),
      static_cast<long long>(clear_bad), static_cast<long long>(differ - clear_bad), nmse,
      ok ? "true" : "false");
  return ok;
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median microseconds of `fn` (enqueued on lab.stream) over `reps` runs.
template <typename Fn>
float TimeUs(Lab& lab, int reps, const Fn& fn) {
  cudaEvent_t a, b;
  LAB_CUDA(cudaEventCreate(&a));
  LAB_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < std::min(3, reps); ++i) fn(i);
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    LAB_CUDA(cudaEventRecord(a, lab.stream));
    fn(i);
    LAB_CUDA(cudaEventRecord(b, lab.stream));
    LAB_CUDA(cudaEventSynchronize(b));
    float t = 0;
    LAB_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return Median(ms) * 1000.0f;
}

// Batch 1 by graph replay: kGraphLookups lookups on different queries in one
// graph; microseconds per lookup (median over reps replays).
float GraphUs(Lab& lab, int version, int v_dim, int reps) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  LAB_CUDA(cudaStreamBeginCapture(lab.stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kGraphLookups; ++i) Lookup(lab, version, 1, v_dim, lab.max_tokens + i);
  LAB_CUDA(cudaStreamEndCapture(lab.stream, &graph));
  LAB_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const float us = TimeUs(lab, reps, [&](int) { LAB_CUDA(cudaGraphLaunch(exec, lab.stream)); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return us / kGraphLookups;
}

float CopyGbPerS(cudaStream_t stream, size_t bytes, int reps) {
  void *a = nullptr, *b = nullptr;
  LAB_CUDA(cudaMalloc(&a, bytes));
  LAB_CUDA(cudaMalloc(&b, bytes));
  LAB_CUDA(cudaMemset(a, 1, bytes));
  Lab tmp;
  tmp.stream = stream;
  const float us = TimeUs(tmp, reps, [&](int) {
    LAB_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  cudaFree(a);
  cudaFree(b);
  return static_cast<float>(2.0 * bytes / (us * 1e-6) / 1e9);
}

int Main(int argc, char** argv) {
  bool quick = false;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::max(1, std::atoi(argv[i] + 7));
    } else {
      std::fprintf(stderr,
                   "usage: product_key_lookup [--quick] [--reps=N]\n"
                   "  --quick: validate and time n_keys 1024 only, tokens up to 512\n");
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("{\"what\": \"skip\", \"reason\": \"no CUDA device (%s)\"}\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "none visible");
    return 77;
  }
  cudaDeviceProp prop;
  LAB_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf(
      "{\"what\": \"device\", \"name\": \"%s\", \"sm\": %d%d, \"sms\": %d, \"l2_mib\": %d}\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  cudaStream_t stream;
  LAB_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const float copy = CopyGbPerS(stream, size_t{1} << 30, reps);
  std::printf("{\"what\": \"copy\", \"bytes\": %zu, \"gb_per_s\": %.1f}\n", size_t{1} << 30, copy);
  std::vector<int64_t> batches = {1, 8, 64, 512, 4096};
  std::vector<int> key_counts = {1024, 4096};
  if (quick) {
    batches = {1, 8, 64, 512};
    key_counts = {1024};
  }
  bool all_ok = true;
  for (const int n_keys : key_counts) {
    Lab lab;
    lab.stream = stream;
    if (cublasCreate(&lab.blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(lab.blas, stream) != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "product_key_lookup: cublasCreate failed\n");
      return 1;
    }
    Setup(&lab, n_keys, batches.back());
    for (const int v_dim : {1024, 2048}) {
      for (int version = 1; version <= 3; ++version) {
        all_ok &= Validate(lab, version, 1, v_dim);
        all_ok &= Validate(lab, version, 8, v_dim);
      }
      for (const int64_t tokens : batches) {
        float us[4] = {}, gather_us[4] = {};
        // Large batches of v1 take ~1 s a call: fewer repetitions there.
        const int n = tokens >= 512 ? std::min(reps, 5) : reps;
        for (int version = 1; version <= 3; ++version) {
          us[version] = TimeUs(lab, n, [&](int i) {
            Lookup(lab, version, tokens, v_dim,
                   tokens == 1 ? lab.max_tokens + i % kGraphLookups : 0);
          });
          std::printf(
              "{\"what\": \"lookup\", \"version\": %d, \"n_keys\": %d, \"v_dim\": %d, "
              "\"tokens\": %lld, \"us\": %.2f}\n",
              version, n_keys, v_dim, static_cast<long long>(tokens), us[version]);
          if (tokens == 1) {
            const float g = GraphUs(lab, version, v_dim, reps);
            std::printf(
                "{\"what\": \"graph\", \"version\": %d, \"n_keys\": %d, \"v_dim\": %d, "
                "\"tokens\": 1, \"us_per_lookup\": %.2f}\n",
                version, n_keys, v_dim, g);
          }
        }
        // The gathers alone on v2's rows (bytes: rows read + output written).
        Lookup(lab, 2, tokens, v_dim, 0);
        const double bytes =
            static_cast<double>(tokens) * (kHeads * kKnn * v_dim * 2.0 + v_dim * 4.0);
        for (const int version : {1, 2}) {
          gather_us[version] = TimeUs(lab, n, [&](int) { Gather(lab, version, tokens, v_dim); });
          std::printf(
              "{\"what\": \"gather\", \"version\": %d, \"n_keys\": %d, \"v_dim\": %d, "
              "\"tokens\": %lld, \"us\": %.2f, \"gb_per_s\": %.1f, \"of_copy\": %.3f}\n",
              version, n_keys, v_dim, static_cast<long long>(tokens), gather_us[version],
              bytes / (gather_us[version] * 1e-6) / 1e9,
              bytes / (gather_us[version] * 1e-6) / 1e9 / copy);
        }
      }
    }
    Teardown(&lab);
    cublasDestroy(lab.blas);
  }
  std::printf("{\"what\": \"done\", \"validation\": \"%s\"}\n", all_ok ? "ok" : "FAILED");
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace memserve::kernels

int main(int argc, char** argv) { return memserve::kernels::Main(argc, argv); }
