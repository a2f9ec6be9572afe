#include "engine/backend/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"

// The exported name of a cublas_v2.h function (its macro expanded, e.g.
// cublasCreate -> "cublasCreate_v2").
#define MEMSERVE_CUBLAS_NAME_(name) #name
#define MEMSERVE_CUBLAS_NAME(name) MEMSERVE_CUBLAS_NAME_(name)

namespace memserve::cuda {
namespace {

std::atomic<const CublasApi*> loaded{nullptr};

absl::StatusOr<const CublasApi*> Load() {
  const std::string library = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  std::vector<std::string> candidates = {library};
  if (const char* cuda_path = std::getenv("CUDA_PATH"); cuda_path != nullptr && *cuda_path) {
    candidates.push_back(absl::StrCat(cuda_path, "/lib64/", library));
  }
  candidates.push_back(absl::StrCat("/usr/local/cuda/lib64/", library));
  void* handle = nullptr;
  std::string why;
  for (const std::string& path : candidates) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    if (why.empty()) why = dlerror();
  }
  if (handle == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("--device cuda: cannot load cuBLAS (", library, "): ", why));
  }
  // Never unloaded: the backends may live until exit.
  auto* api = new CublasApi();
  std::string missing;
  auto resolve = [&](auto* fn, const char* name) {
    using Fn = std::remove_pointer_t<decltype(fn)>;
    *fn = reinterpret_cast<Fn>(dlsym(handle, name));
    if (*fn == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  };
  resolve(&api->create, MEMSERVE_CUBLAS_NAME(cublasCreate));
  resolve(&api->destroy, MEMSERVE_CUBLAS_NAME(cublasDestroy));
  resolve(&api->set_stream, MEMSERVE_CUBLAS_NAME(cublasSetStream));
  resolve(&api->set_workspace, MEMSERVE_CUBLAS_NAME(cublasSetWorkspace));
  resolve(&api->set_pointer_mode, MEMSERVE_CUBLAS_NAME(cublasSetPointerMode));
  resolve(&api->set_math_mode, MEMSERVE_CUBLAS_NAME(cublasSetMathMode));
  resolve(&api->gemm_ex, MEMSERVE_CUBLAS_NAME(cublasGemmEx));
  resolve(&api->sgemm_strided_batched, MEMSERVE_CUBLAS_NAME(cublasSgemmStridedBatched));
  resolve(&api->get_status_string, MEMSERVE_CUBLAS_NAME(cublasGetStatusString));
  if (!missing.empty()) {
    delete api;
    return absl::UnavailableError(absl::StrCat("--device cuda: ", library, " lacks ", missing));
  }
  return api;
}

}  // namespace

absl::StatusOr<const CublasApi*> LoadCublas() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (const CublasApi* api = loaded.load(); api != nullptr) return api;
  absl::StatusOr<const CublasApi*> api = Load();
  if (api.ok()) loaded.store(*api);
  return api;
}

const CublasApi* LoadedCublas() { return loaded.load(); }

}  // namespace memserve::cuda
