// Element types of checkpoint tensors and the one place where they are
// converted to fp32 for compute.
#ifndef MEMSERVE_ENGINE_DTYPE_H_
#define MEMSERVE_ENGINE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace memserve {

enum class DType { kF32, kBF16 };

// Bytes per element.
inline size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }
// Safetensors spelling: "F32", "BF16".
const char* DTypeName(DType t);

// bf16 is the upper half of an IEEE fp32.
inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
// Round-to-nearest-even fp32 -> bf16 (NaN stays NaN).
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Converts `n` elements at `src` (of type `t`) to fp32 into `dst`.
void ConvertToF32(DType t, const void* src, size_t n, float* dst);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_DTYPE_H_
