// Instruction-set levels of the CPU kernels and their run-time detection.
#ifndef MEMSERVE_ENGINE_BACKEND_CPU_CPU_ISA_H_
#define MEMSERVE_ENGINE_BACKEND_CPU_CPU_ISA_H_

#include <vector>

namespace memserve {

enum class CpuIsa {
  kAuto,     // the best level this CPU supports
  kGeneric,  // portable C++ (compiler auto-vectorization only)
  kAvx2,     // AVX2 + FMA
  kAvx512,   // AVX-512 F/BW/VL + FMA
};

const char* CpuIsaName(CpuIsa isa);
// Whether this CPU can run `isa` (kAuto and kGeneric: always).
bool CpuIsaSupported(CpuIsa isa);
// The levels this CPU supports, from kGeneric upward (for tests).
std::vector<CpuIsa> SupportedCpuIsas();

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CPU_CPU_ISA_H_
