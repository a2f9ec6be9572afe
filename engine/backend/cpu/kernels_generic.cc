// Portable kernels. Eight partial sums let the compiler vectorize without
// -ffast-math and keep the rounding independent of the target.
#include <algorithm>
#include <cmath>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/simd.h"

namespace memserve {
namespace generic {
namespace {

template <typename W>
float DotW(const W* w, const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += Load(w + k + j) * x[k + j];
  }
  float tail = 0.0f;
  for (; k < n; ++k) tail += Load(w + k) * x[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <typename W>
void MatMul(const W* w, int64_t ldw, int64_t in, int64_t rows, const float* x, int64_t ldx,
            int64_t tokens, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) y[t * ldy + r] = DotW(w + r * ldw, x + t * ldx, in);
  }
}

template <typename W>
void Axpy(float a, const W* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * Load(x + i);
}

template <typename W>
void DotRows(const float* q, const W* rows, int64_t stride, int64_t count, int64_t n, float scale,
             float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = DotW(rows + i * stride, q, n) * scale;
}

template <typename W>
void AxpyRows(const float* coef, const W* rows, int64_t stride, int64_t count, float* y,
              int64_t n) {
  for (int64_t i = 0; i < count; ++i) Axpy(coef[i], rows + i * stride, y, n);
}

}  // namespace
}  // namespace generic

namespace generic {
namespace {

void Softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

void SiluMul(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
}

}  // namespace
}  // namespace generic

const CpuKernels& GenericKernels() {
  static const CpuKernels kernels = {
      CpuIsa::kGeneric,
      generic::MatMul<float>,
      generic::MatMul<uint16_t>,
      generic::DotRows<float>,
      generic::AxpyRows<float>,
      generic::Axpy<float>,
      generic::Axpy<uint16_t>,
      nullptr,
      nullptr,
      generic::DotRows<uint16_t>,
      generic::AxpyRows<uint16_t>,
      nullptr,
      generic::Softmax,
      generic::SiluMul,
  };
  return kernels;
}

const CpuKernels& KernelsFor(CpuIsa isa) {
  const CpuKernels* k = nullptr;
  if (isa == CpuIsa::kAvx512) k = Avx512Kernels();
  if (isa == CpuIsa::kAvx2) k = Avx2Kernels();
  return k != nullptr ? *k : GenericKernels();
}

}  // namespace memserve
