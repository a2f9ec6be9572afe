#include "engine/backend/cuda/cuda_check.h"

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cublas_loader.h"

namespace memserve::cuda {

absl::Status CudaError(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  const std::string message = absl::StrCat("cuda: ", call, " failed: ", cudaGetErrorName(err), " (",
                                           cudaGetErrorString(err), ") at ", file, ":", line);
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status CublasError(cublasStatus_t status, const char* call, const char* file, int line) {
  const CublasApi* api = LoadedCublas();
  const std::string message = absl::StrCat(
      "cublas: ", call, " failed: ", api != nullptr ? api->get_status_string(status) : "status",
      " (", static_cast<int>(status), ") at ", file, ":", line);
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace memserve::cuda
