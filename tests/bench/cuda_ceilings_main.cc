// cuda_ceilings: the GPU's measured limits, the ceilings the GPU benchmarks are
// read against (docs/gpu.md, "Benchmarks"):
//   copy_d2d   device-to-device cudaMemcpy of --copy_mib MiB; GB/s counts the
//              bytes read plus the bytes written (2 x size / time)
//   copy_h2d   host (pinned) to device, and copy_d2h back; GB/s = size / time
//   gemm_bf16  cuBLAS bf16 GEMM with fp32 accumulation, Y[M,N] = X[M,K] W[N,K]^T:
//              decode-like shapes (M = 1, 8, 64, 256 tokens against the 373M
//              model's FFN and logits matrices; the weights rotate through
//              enough copies to exceed the L2 cache, so they come from HBM) and
//              prefill-like ones (M = 2048, and 8192^3, the compute ceiling).
// Every input is random (never zeros: they run faster than real data). Each
// number is the median of --reps timings with CUDA events after warm-up.
// Prints one JSON line per measurement.
//
// Exit codes: 0 measured; 77 no CUDA device (one line says why: the GPU
// benchmarks skip); 1 a CUDA or cuBLAS call failed (the line names it).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "kernels/cuda_device.h"

ABSL_FLAG(int, copy_mib, 1024, "MiB per copy (device-to-device and host-to-device)");
ABSL_FLAG(int, reps, 20, "timed repetitions per measurement (median reported)");
ABSL_FLAG(bool, big_gemm, true, "also time the 8192^3 GEMM (the bf16 compute ceiling)");

namespace {

constexpr int kSkipExit = 77;

// Fails the program with the call's name and the CUDA / cuBLAS error.
#define CHECK_CUDA(call)                                                                       \
  do {                                                                                         \
    cudaError_t err_ = (call);                                                                 \
    if (err_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "cuda_ceilings: %s failed: %s\n", #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

#define CHECK_CUBLAS(call)                                                        \
  do {                                                                            \
    cublasStatus_t st_ = (call);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                           \
      std::fprintf(stderr, "cuda_ceilings: %s failed: cuBLAS status %d\n", #call, \
                   static_cast<int>(st_));                                        \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

// Random bf16 values in about [-1, 1] (xorshift; not zeros, not denormals).
void FillRandomBf16(uint16_t* out, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    // sign, exponent 120..127 (2^-7 .. 1), 7 random mantissa bits
    const uint16_t sign = static_cast<uint16_t>((x >> 63) << 15);
    const uint16_t exp = static_cast<uint16_t>(120 + ((x >> 40) & 7));
    const uint16_t man = static_cast<uint16_t>((x >> 20) & 0x7f);
    out[i] = sign | static_cast<uint16_t>(exp << 7) | man;
  }
}

// Times `fn` (enqueued on `stream`) `reps` times after `warmup` calls; returns
// the median in milliseconds. `fn` gets the repetition index.
template <typename Fn>
double MedianMs(cudaStream_t stream, int warmup, int reps, Fn fn) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn(i);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    fn(warmup + i);
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&ms[i], start, stop));
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

void Copies(cudaStream_t stream, int reps) {
  const size_t bytes = static_cast<size_t>(absl::GetFlag(FLAGS_copy_mib)) << 20;
  void* host = nullptr;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMallocHost(&host, bytes));
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  FillRandomBf16(static_cast<uint16_t*>(host), bytes / 2, 1);

  const double h2d = MedianMs(stream, 2, reps, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(src, host, bytes, cudaMemcpyHostToDevice, stream));
  });
  const double d2h = MedianMs(stream, 2, reps, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream));
  });
  const double d2d = MedianMs(stream, 3, reps, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double mib = static_cast<double>(bytes) / (1 << 20);
  std::printf(
      "{\"what\": \"copy_d2d\", \"mib\": %.0f, \"ms\": %.4f, \"gb_per_s\": %.1f, "
      "\"counts\": \"read+write\"}\n",
      mib, d2d, 2.0 * bytes / (d2d * 1e-3) / 1e9);
  std::printf(
      "{\"what\": \"copy_h2d\", \"mib\": %.0f, \"ms\": %.4f, \"gb_per_s\": %.1f, "
      "\"host\": \"pinned\"}\n",
      mib, h2d, bytes / (h2d * 1e-3) / 1e9);
  std::printf(
      "{\"what\": \"copy_d2h\", \"mib\": %.0f, \"ms\": %.4f, \"gb_per_s\": %.1f, "
      "\"host\": \"pinned\"}\n",
      mib, d2h, bytes / (d2h * 1e-3) / 1e9);
  std::fflush(stdout);
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  CHECK_CUDA(cudaFreeHost(host));
}

struct GemmShape {
  const char* name;
  int64_t m, n, k;  // Y[m, n] = X[m, k] W[n, k]^T
};

// One GEMM shape: `copies` weight matrices (rotated so that more bytes than
// the L2 holds are read), one activation and one output.
void Gemm(cublasHandle_t handle, cudaStream_t stream, const GemmShape& s, int reps,
          int64_t l2_bytes) {
  const int64_t w_bytes = s.n * s.k * 2;
  const int copies =
      static_cast<int>(std::min<int64_t>(64, std::max<int64_t>(1, 4 * l2_bytes / w_bytes + 1)));
  std::vector<uint16_t> host(static_cast<size_t>(std::max(s.n * s.k, s.m * s.k)));
  std::vector<void*> w(copies);
  for (int c = 0; c < copies; ++c) {
    CHECK_CUDA(cudaMalloc(&w[c], w_bytes));
    FillRandomBf16(host.data(), static_cast<size_t>(s.n * s.k), 100 + c);
    CHECK_CUDA(cudaMemcpy(w[c], host.data(), w_bytes, cudaMemcpyHostToDevice));
  }
  void *x = nullptr, *y = nullptr;
  CHECK_CUDA(cudaMalloc(&x, s.m * s.k * 2));
  CHECK_CUDA(cudaMalloc(&y, s.m * s.n * 2));
  FillRandomBf16(host.data(), static_cast<size_t>(s.m * s.k), 7);
  CHECK_CUDA(cudaMemcpy(x, host.data(), s.m * s.k * 2, cudaMemcpyHostToDevice));
  const float alpha = 1.0f, beta = 0.0f;
  // One timing covers every copy once (short GEMMs are timed in a row, not
  // one by one, so the event resolution does not matter); ms is per GEMM.
  // Column-major view: Y^T [n, m] = W [n, k] (row-major, so op T) * X^T [k, m].
  const double ms =
      MedianMs(
          stream, 2, reps,
          [&](int) {
            for (int c = 0; c < copies; ++c) {
              CHECK_CUBLAS(cublasGemmEx(
                  handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.n), static_cast<int>(s.m),
                  static_cast<int>(s.k), &alpha, w[c], CUDA_R_16BF, static_cast<int>(s.k), x,
                  CUDA_R_16BF, static_cast<int>(s.k), &beta, y, CUDA_R_16BF, static_cast<int>(s.n),
                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            }
          }) /
      copies;
  const double flops = 2.0 * s.m * s.n * s.k;
  const double bytes = static_cast<double>(w_bytes + s.m * s.k * 2 + s.m * s.n * 2);
  std::printf(
      "{\"what\": \"gemm_bf16\", \"shape\": \"%s\", \"m\": %lld, \"n\": %lld, \"k\": %lld, "
      "\"weight_copies\": %d, \"ms\": %.4f, \"tflops\": %.2f, \"gb_per_s\": %.1f}\n",
      s.name, static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k),
      copies, ms, flops / (ms * 1e-3) / 1e12, bytes / (ms * 1e-3) / 1e9);
  std::fflush(stdout);
  for (void* p : w) CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(y));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string why;
  const auto devices = memserve::kernels::ListCudaDevices(&why);
  if (devices.empty()) {
    std::printf("{\"what\": \"skip\", \"reason\": \"no CUDA device (%s)\"}\n", why.c_str());
    return kSkipExit;
  }
  const int reps = absl::GetFlag(FLAGS_reps);
  if (reps < 1 || absl::GetFlag(FLAGS_copy_mib) < 1) {
    std::fprintf(stderr, "cuda_ceilings: --reps and --copy_mib must be >= 1\n");
    return 1;
  }
  CHECK_CUDA(cudaSetDevice(0));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CHECK_CUDA(cudaDriverGetVersion(&driver));
  CHECK_CUDA(cudaRuntimeGetVersion(&runtime));
  std::printf(
      "{\"what\": \"device\", \"name\": \"%s\", \"sm\": \"%d%d\", \"sms\": %d, "
      "\"l2_mib\": %.1f, \"memory_gib\": %.1f, \"driver\": %d, \"runtime\": %d}\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
      prop.totalGlobalMem / 1073741824.0, driver, runtime);
  std::fflush(stdout);

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  Copies(stream, reps);

  cublasHandle_t handle;
  CHECK_CUBLAS(cublasCreate(&handle));
  CHECK_CUBLAS(cublasSetStream(handle, stream));
  std::vector<GemmShape> shapes;
  for (int64_t m : {1, 8, 64, 256}) {
    shapes.push_back({"decode_ffn", m, 2816, 1024});
    shapes.push_back({"decode_logits", m, 32000, 1024});
  }
  shapes.push_back({"prefill_ffn", 2048, 2816, 1024});
  if (absl::GetFlag(FLAGS_big_gemm)) shapes.push_back({"square_8192", 8192, 8192, 8192});
  for (const GemmShape& s : shapes) {
    Gemm(handle, stream, s, reps, prop.l2CacheSize);
  }
  CHECK_CUBLAS(cublasDestroy(handle));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
