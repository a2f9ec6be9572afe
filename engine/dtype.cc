#include "engine/dtype.h"

namespace memserve {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kI8:
      return "I8";
  }
  return "?";
}

void ConvertToF32(DType t, const void* src, size_t n, float* dst) {
  if (t == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(s[i]);
}

}  // namespace memserve
