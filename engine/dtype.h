// Element types of checkpoint tensors and the one place where they are
// converted to fp32 for compute.
#ifndef MEMSERVE_ENGINE_DTYPE_H_
#define MEMSERVE_ENGINE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace memserve {

// Checkpoint tensors are F32 or BF16, or I8 for matmul weights quantized in
// blocks of 32 with an F32 scale per block (converter --dtype int8;
// docs/checkpoint-format.md); the wider integer types describe the backend's
// index tensors (token ids, positions, block tables, cache rows).
enum class DType { kF32, kBF16, kI32, kI64, kI8 };

// Int8 matmul weights (DType::kI8, converter --dtype int8): each block of
// kInt8BlockSize consecutive columns of a row shares one F32 scale; the
// scales of weight "<name>" are the tensor "<name>" kInt8ScaleSuffix,
// [rows, in / kInt8BlockSize].
constexpr int64_t kInt8BlockSize = 32;
constexpr char kInt8ScaleSuffix[] = "_scale";

// Bytes per element.
inline size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kI8:
      return 1;
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      break;
  }
  return 4;
}
// Safetensors spelling: "F32", "BF16", "I32", "I64", "I8".
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
// REQUIRES: t is kF32 or kBF16.
void ConvertToF32(DType t, const void* src, size_t n, float* dst);

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_DTYPE_H_
