#include "engine/backend/cuda/memory_kernels.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace memserve::cuda {

const char* MemoryKernelsName(MemoryKernels k) {
  return k == MemoryKernels::kLegacy ? "legacy" : "product_key";
}

absl::StatusOr<MemoryKernels> ParseMemoryKernels(const char* value) {
  const std::string v = value == nullptr ? "" : value;
  if (v.empty() || v == "product_key") return MemoryKernels::kProductKey;
  if (v == "legacy") return MemoryKernels::kLegacy;
  return absl::InvalidArgumentError(absl::StrCat(
      kMemoryKernelsEnv, " must be 'product_key' (the default) or 'legacy', got '", v, "'"));
}

absl::StatusOr<MemoryKernels> MemoryKernelsFromEnv() {
  return ParseMemoryKernels(std::getenv(kMemoryKernelsEnv));
}

}  // namespace memserve::cuda
