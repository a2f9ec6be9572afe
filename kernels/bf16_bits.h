// fp32 <-> bf16 on raw bits, identical on the host and the device (the
// kernels use these, not cuda_bf16.h's conversions, so a CUDA result is
// bit-identical to the CPU backend's engine/dtype.h F32ToBf16/Bf16ToF32).
// Plain C++ when not compiled by nvcc; bf16_bits_test.cc checks it on the CPU.
#ifndef MEMSERVE_KERNELS_BF16_BITS_H_
#define MEMSERVE_KERNELS_BF16_BITS_H_

#include <cstdint>

#ifdef __CUDACC__
#define MEMSERVE_HOST_DEVICE __host__ __device__
#else
#define MEMSERVE_HOST_DEVICE
#endif

namespace memserve::kernels {

MEMSERVE_HOST_DEVICE inline uint32_t FloatBits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t bits;
  __builtin_memcpy(&bits, &f, sizeof(bits));
  return bits;
#endif
}

MEMSERVE_HOST_DEVICE inline float BitsFloat(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// bf16 is the upper half of an IEEE fp32.
MEMSERVE_HOST_DEVICE inline float Bf16BitsToF32(uint16_t v) {
  return BitsFloat(static_cast<uint32_t>(v) << 16);
}

// Round-to-nearest-even fp32 -> bf16; a NaN stays a (quiet) NaN with its
// sign, infinities stay infinite, overflow rounds to infinity.
MEMSERVE_HOST_DEVICE inline uint16_t F32ToBf16Bits(float f) {
  uint32_t bits = FloatBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_BF16_BITS_H_
