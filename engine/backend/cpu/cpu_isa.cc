#include "engine/backend/cpu/cpu_isa.h"

#include "engine/backend/cpu/simd.h"

namespace memserve {
namespace {

CpuIsa DetectIsa() {
#ifdef MEMSERVE_X86_KERNELS
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return CpuIsa::kAvx512;
  }
  if (fma && __builtin_cpu_supports("avx2")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kGeneric;
}

int IsaRank(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return 2;
    case CpuIsa::kAvx2:
      return 1;
    default:
      return 0;
  }
}
}  // namespace

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool CpuIsaSupported(CpuIsa isa) {
  static const CpuIsa detected = DetectIsa();
  if (isa == CpuIsa::kAuto || isa == CpuIsa::kGeneric) return true;
  return IsaRank(isa) <= IsaRank(detected);
}

std::vector<CpuIsa> SupportedCpuIsas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (CpuIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

}  // namespace memserve
