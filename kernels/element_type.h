// The element types a kernel reads from weights and caches: fp32 or bf16
// (bf16 passed as its raw 16 bits, uint16_t, so that the launch headers need
// no CUDA types). Activations are always fp32.
#ifndef MEMSERVE_KERNELS_ELEMENT_TYPE_H_
#define MEMSERVE_KERNELS_ELEMENT_TYPE_H_

#include <cstddef>

namespace memserve::kernels {

enum class ElementType { kF32, kBF16 };

inline const char* ElementTypeName(ElementType t) {
  return t == ElementType::kF32 ? "F32" : "BF16";
}
inline size_t ElementSize(ElementType t) { return t == ElementType::kF32 ? 4 : 2; }

}  // namespace memserve::kernels

#endif  // MEMSERVE_KERNELS_ELEMENT_TYPE_H_
