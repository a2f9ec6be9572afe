// cpu_roofline: the machine limits that bound batched CPU decode, measured
// side by side with the engine's own matmul (tools/bench_server.sh prints it
// into docs/perf/server.md).
//   fma   peak fp32 multiply-add rate: independent register-only FMA chains
//         (AVX-512, or AVX2 where the CPU lacks it), 1 thread and all threads.
//   read  streaming read bandwidth of a --read_mib buffer (far beyond the
//         caches), all threads: the ceiling of batch-1 decode's weight traffic.
//   matmul CpuBackend::MatMul (weights placed with PlaceWeight(kMatMul), as
//         the model's loader does) with --dtype weights of --rows x --in,
//         cycling through enough matrices (--pool_mib) that weights come from
//         memory as in a real model, at --tokens (1, 4, 16, 64): GFLOP/s and
//         weight GB/s; with --compare_unpacked also with the weights left in
//         place (the unpacked kernels), the two alternating per token count.
// One JSON line per measurement; each is the best of --repeats.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/backend/cpu/bf16_matmul.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/dtype.h"
#include "engine/weights.h"

ABSL_FLAG(int, threads, 0, "threads for the all-threads measurements; 0 = all cores");
ABSL_FLAG(std::string, isa, "auto",
          "kernels of the matmul measurement: auto (the best this CPU has), avx512, avx2 or "
          "generic (a level the CPU lacks falls back to auto)");
ABSL_FLAG(int, read_mib, 1024, "buffer size of the read-bandwidth measurement");
ABSL_FLAG(int, pool_mib, 512, "bytes of bf16 weights the matmul cycles through");
ABSL_FLAG(int, rows, 2816, "matmul output rows (d1024's FFN: 2816 x 1024)");
ABSL_FLAG(int, in, 1024, "matmul input columns");
ABSL_FLAG(int, repeats, 3, "measurements per line; the best is printed");
ABSL_FLAG(std::vector<std::string>, tokens, std::vector<std::string>({"1", "4", "16", "64"}),
          "token counts of the matmul measurement");
ABSL_FLAG(std::string, dtype, "bf16", "matmul weight dtype: bf16 or f32");
ABSL_FLAG(bool, compare_unpacked, false,
          "also measure the matmul with weights left unpacked (alternating with the packed "
          "backend, each token count side by side)");
ABSL_FLAG(bool, compare_bf16_matmul, false,
          "bf16 weights: also measure the matmul with --cpu_matmul_precision bf16 (activations "
          "rounded to bf16, AVX512-BF16 / AMX; where the CPU has them), alternating with exact");
ABSL_FLAG(std::vector<std::string>, measure, std::vector<std::string>({"fma", "read", "matmul"}),
          "which measurements to run");

namespace {

using Clock = std::chrono::steady_clock;

// The value, or abort with the error (a benchmark has no caller to report to).
template <typename T>
T Check(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "cpu_roofline: %s\n", std::string(v.status().message()).c_str());
    std::abort();
  }
  return *std::move(v);
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Runs fn(thread index) on `threads` threads at once; returns the wall time.
template <typename Fn>
double TimeThreads(int threads, Fn fn) {
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  Clock::time_point start;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      fn(t);
    });
  }
  while (ready.load() < threads) {
  }
  start = Clock::now();
  for (std::thread& th : pool) th.join();
  return Seconds(start, Clock::now());
}

constexpr int kChains = 12;  // independent accumulators: > latency x ports

__attribute__((target("avx512f,fma"))) float FmaLoop512(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  alignas(64) float lanes[16];
  for (int i = 1; i < kChains; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  _mm512_store_ps(lanes, acc[0]);
  return lanes[0];
}

__attribute__((target("avx2,fma"))) float FmaLoop256(int64_t iters) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  alignas(32) float lanes[8];
  for (int i = 1; i < kChains; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
  _mm256_store_ps(lanes, acc[0]);
  return lanes[0];
}

void MeasureFma(int threads, int repeats) {
  const bool avx512 = memserve::CpuIsaSupported(memserve::CpuIsa::kAvx512);
  const bool avx2 = memserve::CpuIsaSupported(memserve::CpuIsa::kAvx2);
  if (!avx512 && !avx2) {
    std::printf("{\"what\": \"fma\", \"skipped\": \"no AVX2/AVX-512 on this CPU\"}\n");
    return;
  }
  const int lanes = avx512 ? 16 : 8;
  const int64_t iters = 50'000'000;
  for (int n : {1, threads}) {
    double best = 0;
    std::vector<float> sink(n);
    for (int r = 0; r < repeats; ++r) {
      const double s =
          TimeThreads(n, [&](int t) { sink[t] = avx512 ? FmaLoop512(iters) : FmaLoop256(iters); });
      best = std::max(best, 2.0 * lanes * kChains * iters * n / s / 1e9);
    }
    std::printf(
        "{\"what\": \"fma\", \"isa\": \"%s\", \"threads\": %d, \"gflops\": %.1f, "
        "\"sink\": %.3g}\n",
        avx512 ? "avx512" : "avx2", n, best, sink[0]);
    if (threads == 1) break;
  }
}

// Sum of buf[begin, end) (float lanes in 4 AVX2 accumulators: load-bound).
__attribute__((target("avx2"))) double SumAvx2(const float* buf, int64_t begin, int64_t end) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = begin;
  for (; i + 32 <= end; i += 32) {
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(buf + i + 8 * j));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes,
                  _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  double total = 0;
  for (float v : lanes) total += v;
  for (; i < end; ++i) total += buf[i];
  return total;
}

double SumScalar(const float* buf, int64_t begin, int64_t end) {
  double total = 0;
  for (int64_t i = begin; i < end; ++i) total += buf[i];
  return total;
}

void MeasureRead(int threads, int mib, int repeats) {
  const int64_t n = static_cast<int64_t>(mib) << 18;  // floats
  std::vector<float> buf(n, 1.0f);
  const bool avx2 = memserve::CpuIsaSupported(memserve::CpuIsa::kAvx2);
  std::vector<double> sums(threads);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const double s = TimeThreads(threads, [&](int t) {
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      sums[t] = avx2 ? SumAvx2(buf.data(), begin, end) : SumScalar(buf.data(), begin, end);
    });
    best = std::max(best, n * 4.0 / s / 1e9);
  }
  std::printf(
      "{\"what\": \"read\", \"threads\": %d, \"mib\": %d, \"gb_per_s\": %.1f, "
      "\"sink\": %.3g}\n",
      threads, mib, best, sums[0]);
}

// A backend with --rows x --in weights placed for MatMul: enough matrices to
// fill --pool_mib, so that weights come from memory.
struct MatMulSetup {
  std::unique_ptr<memserve::CpuBackend> backend;
  std::vector<std::unique_ptr<memserve::Buffer>> buffers;
  std::vector<memserve::Tensor> weights;
};

MatMulSetup PlaceMatrices(int threads, bool pack, bool bf16_matmul, memserve::DType dtype, int rows,
                          int in, int n_matrices, const std::vector<char>& host) {
  MatMulSetup setup;
  memserve::CpuBackend::Options options;
  options.num_threads = threads;
  const std::string isa = absl::GetFlag(FLAGS_isa);
  for (memserve::CpuIsa level :
       {memserve::CpuIsa::kGeneric, memserve::CpuIsa::kAvx2, memserve::CpuIsa::kAvx512}) {
    if (isa == memserve::CpuIsaName(level)) options.isa = level;
  }
  options.pack_weights = pack;
  options.bf16_matmul = bf16_matmul;
  setup.backend = std::make_unique<memserve::CpuBackend>(options);
  const int64_t matrix_bytes = static_cast<int64_t>(rows) * in * memserve::DTypeSize(dtype);
  setup.weights.resize(n_matrices);
  for (int m = 0; m < n_matrices; ++m) {
    memserve::TensorView view;
    view.name = "w" + std::to_string(m);
    view.dtype = dtype;
    view.shape = {rows, in};
    view.data = host.data() + m * matrix_bytes;
    setup.buffers.push_back(
        Check(setup.backend->PlaceWeight(view, memserve::WeightUse::kMatMul, &setup.weights[m])));
  }
  return setup;
}

// Seconds of the best of `repeats` runs of `calls` matmuls of `tokens` tokens.
double TimeMatMul(MatMulSetup& setup, int in, int rows, int tokens, int calls, int repeats) {
  memserve::CpuBackend& backend = *setup.backend;
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x_host(static_cast<size_t>(tokens) * in);
  for (float& v : x_host) v = dist(rng);
  auto x_buffer = Check(backend.AllocateBuffer(x_host.size() * sizeof(float)));
  auto y_buffer = Check(backend.AllocateBuffer(static_cast<size_t>(tokens) * rows * 4));
  const memserve::Tensor x =
      memserve::Tensor::Of(x_buffer.get(), memserve::DType::kF32, {tokens, in});
  const memserve::Tensor y =
      memserve::Tensor::Of(y_buffer.get(), memserve::DType::kF32, {tokens, rows});
  if (!backend.Upload(x_host.data(), x).ok()) std::abort();
  const memserve::Tensor no_bias;
  double s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    for (int c = 0; c < calls; ++c) {
      if (!backend.MatMul(x, setup.weights[c % setup.weights.size()], no_bias, y).ok()) {
        std::abort();
      }
    }
    s = std::min(s, Seconds(t0, Clock::now()));
  }
  return s;
}

void MeasureMatMul(int threads, int rows, int in, int pool_mib, int repeats) {
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dtype_name != "bf16" && dtype_name != "f32") {
    std::fprintf(stderr, "cpu_roofline: --dtype is '%s'; it must be bf16 or f32\n",
                 dtype_name.c_str());
    std::exit(2);
  }
  const memserve::DType dtype =
      dtype_name == "bf16" ? memserve::DType::kBF16 : memserve::DType::kF32;
  const int64_t per_matrix = static_cast<int64_t>(rows) * in;
  const int64_t matrix_bytes = per_matrix * memserve::DTypeSize(dtype);
  const int n_matrices =
      std::max<int64_t>(1, (static_cast<int64_t>(pool_mib) << 20) / matrix_bytes);
  std::vector<char> host(matrix_bytes * n_matrices);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < per_matrix * n_matrices; ++i) {
    const float v = dist(rng);
    if (dtype == memserve::DType::kBF16) {
      reinterpret_cast<uint16_t*>(host.data())[i] = memserve::F32ToBf16(v);
    } else {
      reinterpret_cast<float*>(host.data())[i] = v;
    }
  }
  std::vector<MatMulSetup> setups;
  setups.push_back(PlaceMatrices(threads, /*pack=*/true, false, dtype, rows, in, n_matrices, host));
  if (absl::GetFlag(FLAGS_compare_unpacked)) {
    setups.push_back(
        PlaceMatrices(threads, /*pack=*/false, false, dtype, rows, in, n_matrices, host));
  }
  if (absl::GetFlag(FLAGS_compare_bf16_matmul) && dtype == memserve::DType::kBF16 &&
      memserve::Bf16Kernels() != nullptr) {
    setups.push_back(
        PlaceMatrices(threads, /*pack=*/true, true, dtype, rows, in, n_matrices, host));
  }
  for (const std::string& tokens_text : absl::GetFlag(FLAGS_tokens)) {
    const int tokens = std::max(1, std::atoi(tokens_text.c_str()));
    // At least one pass over the pool and ~0.5 s of work at 60 GFLOP/s.
    const int calls = std::max<int64_t>(n_matrices, 15'000'000'000LL / (per_matrix * tokens));
    for (MatMulSetup& setup : setups) {
      const double s = TimeMatMul(setup, in, rows, tokens, calls, repeats);
      std::printf(
          "{\"what\": \"matmul_%s\", \"isa\": \"%s\", \"kernels\": \"%s\", \"packed\": %s, "
          "\"threads\": %d, "
          "\"rows\": %d, \"in\": %d, \"tokens\": %d, \"gflops\": %.1f, "
          "\"weight_gb_per_s\": %.1f}\n",
          dtype_name.c_str(), memserve::CpuIsaName(setup.backend->isa()),
          setup.backend->bf16_kernels() == nullptr
              ? "exact"
              : (setup.backend->bf16_kernels()->amx ? "bf16-amx" : "bf16-avx512"),
          setup.backend->packed_weights() > 0 ? "true" : "false",
          setup.backend->pool()->num_threads(), rows, in, tokens,
          2.0 * per_matrix * tokens * calls / s / 1e9,
          static_cast<double>(matrix_bytes) * calls / s / 1e9);
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const std::vector<std::string> measure = absl::GetFlag(FLAGS_measure);
  auto wanted = [&](const char* what) {
    return std::find(measure.begin(), measure.end(), what) != measure.end();
  };
  if (wanted("fma")) MeasureFma(threads, repeats);
  if (wanted("read")) MeasureRead(threads, absl::GetFlag(FLAGS_read_mib), repeats);
  if (wanted("matmul")) {
    MeasureMatMul(threads, absl::GetFlag(FLAGS_rows), absl::GetFlag(FLAGS_in),
                  absl::GetFlag(FLAGS_pool_mib), repeats);
  }
  return 0;
}
