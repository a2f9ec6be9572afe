// Checks for CUDA runtime and cuBLAS calls: a failing call becomes an
// absl::Status (Internal, or ResourceExhausted for out-of-memory) naming the
// call, the error and the source line; nothing aborts. Used by the CUDA
// backend (engine/backend/cuda/) in functions returning absl::Status or
// absl::StatusOr.
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_CHECK_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_CHECK_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace memserve::cuda {

// The status for `err` returned by the call spelled `call` at file:line.
// REQUIRES: err != cudaSuccess. Clears CUDA's last error (a sticky error of
// a broken context stays and fails the next call too).
absl::Status CudaError(cudaError_t err, const char* call, const char* file, int line);
// The same for a cuBLAS status. REQUIRES: status != CUBLAS_STATUS_SUCCESS.
absl::Status CublasError(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace memserve::cuda

// Returns the error status from the enclosing function when the CUDA runtime
// call `expr` does not return cudaSuccess.
#define CUDA_RETURN_IF_ERROR(expr)                                                       \
  do {                                                                                   \
    const cudaError_t memserve_cuda_err_ = (expr);                                       \
    if (memserve_cuda_err_ != cudaSuccess) {                                             \
      return ::memserve::cuda::CudaError(memserve_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

// The same for a cuBLAS call.
#define CUBLAS_RETURN_IF_ERROR(expr)                                                            \
  do {                                                                                          \
    const cublasStatus_t memserve_cublas_status_ = (expr);                                      \
    if (memserve_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                     \
      return ::memserve::cuda::CublasError(memserve_cublas_status_, #expr, __FILE__, __LINE__); \
    }                                                                                           \
  } while (0)

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_CHECK_H_
