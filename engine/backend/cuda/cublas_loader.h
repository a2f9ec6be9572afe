// cuBLAS, loaded at run time (dlopen) the first time a CUDA backend is
// created, not linked: libcublas + libcublasLt are ~600 MB whose load costs
// every process ~0.4 s and ~200 MB at start, and memserve on the CPU (every
// test, every `memserve --help`) never calls them. Only the functions the
// CUDA backend uses are resolved.
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_CUBLAS_LOADER_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_CUBLAS_LOADER_H_

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace memserve::cuda {

// The cuBLAS entry points the backend calls (cublas_v2.h names, resolved
// from libcublas.so.<CUBLAS_VER_MAJOR>).
struct CublasApi {
  decltype(&cublasCreate) create = nullptr;
  decltype(&cublasDestroy) destroy = nullptr;
  decltype(&cublasSetStream) set_stream = nullptr;
  decltype(&cublasSetWorkspace) set_workspace = nullptr;
  decltype(&cublasSetPointerMode) set_pointer_mode = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  // cublasGemmEx has a C++ overload (cudaDataType computeType); this is the
  // exported one.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
  decltype(&cublasGetStatusString) get_status_string = nullptr;
};

// Loads cuBLAS once (thread-safe) and returns its entry points: from the
// default library search path (LD_LIBRARY_PATH, the binary's rpath, the
// system's), then $CUDA_PATH/lib64 and /usr/local/cuda/lib64. Unavailable,
// naming the library and dlerror(), when it cannot be loaded.
absl::StatusOr<const CublasApi*> LoadCublas();

// The loaded entry points, or null before a successful LoadCublas.
const CublasApi* LoadedCublas();

}  // namespace memserve::cuda

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_CUBLAS_LOADER_H_
