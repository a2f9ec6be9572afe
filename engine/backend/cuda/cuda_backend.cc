#include "engine/backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cublas_loader.h"
#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/memory_kernels.h"
#include "engine/backend/cuda/memory_placement_cuda.h"
#include "engine/backend/cuda/staging.h"
#include "engine/backend/op_checks.h"
#include "engine/dtype.h"
#include "engine/status_macros.h"
#include "kernels/convert.h"
#include "kernels/cuda_device.h"
#include "kernels/element_type.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/memory_select.h"
#include "kernels/paged_attention.h"
#include "kernels/product_key.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/value_gather.h"
#include "kernels/write_kv.h"

namespace memserve {
namespace {

constexpr const char* kOwnedType = "cuda";
constexpr const char* kWeightType = "cuda-weight";
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr int kStagingBuffers = 2;
// Rows of the "ones" vectors of the bias product to start with (grown on demand).
constexpr int64_t kInitialOnes = 4096;
// cuBLAS takes int sizes.
constexpr int64_t kMaxGemmDim = (int64_t{1} << 31) - 1;

using cuda::DeviceBuffer;

// The device address of t's first byte. REQUIRES: CheckOperand / CheckWeight
// passed (t is on a DeviceBuffer of this backend).
template <typename T>
T* Ptr(const Tensor& t) {
  return cuda::DevicePtr<T>(t);
}

kernels::ElementType ElementTypeOf(DType t) {
  return t == DType::kBF16 ? kernels::ElementType::kBF16 : kernels::ElementType::kF32;
}

using cuda::UseDevice;

class CudaStepGraph : public Backend::StepGraph {
 public:
  CudaStepGraph(const Backend* owner, cudaGraphExec_t exec) : owner_(owner), exec_(exec) {}
  ~CudaStepGraph() override { cudaGraphExecDestroy(exec_); }
  const Backend* owner() const { return owner_; }
  cudaGraphExec_t exec() const { return exec_; }

 private:
  const Backend* owner_;
  cudaGraphExec_t exec_;
};

}  // namespace

struct CudaBackend::Impl {
  // A grow-only device scratch buffer: a buffer it outgrows is kept in
  // `retired` until the backend dies, so a captured graph never refers to
  // freed memory.
  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  Options options;
  const cuda::CublasApi* blas = nullptr;  // loaded at Create
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;
  bool capturing = false;
  cuda::MemoryKernels memory_kernels = cuda::MemoryKernels::kProductKey;

  Scratch bf16_x;         // MatMul: the activation rounded to bf16
  Scratch keys_f32;       // MemorySelect: bf16 keys as fp32
  Scratch subkey_scores;  // MemorySelect: [T, heads, 2, n_keys]
  Scratch gather_slice;   // ValueGather of a column slice: [T, width]
  Scratch attention_ws;   // PagedAttention workspace
  Scratch ones_f32;       // the bias product's ones, fp32
  Scratch ones_bf16;      // ... and bf16
  int64_t ones = 0;       // elements of each ones vector
  std::vector<void*> retired;

  // Weight placement (any thread): the pinned staging buffers and stats.
  std::mutex placement_mu;
  void* staging[kStagingBuffers] = {nullptr, nullptr};
  cudaEvent_t staged[kStagingBuffers] = {nullptr, nullptr};
  int64_t placed_bytes = 0;
  double placed_seconds = 0.0;

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    for (Scratch* s : {&bf16_x, &keys_f32, &subkey_scores, &gather_slice, &attention_ws, &ones_f32,
                       &ones_bf16}) {
      if (s->ptr != nullptr) cudaFree(s->ptr);
    }
    for (void* p : retired) cudaFree(p);
    for (int i = 0; i < kStagingBuffers; ++i) {
      if (staging[i] != nullptr) cudaFreeHost(staging[i]);
      if (staged[i] != nullptr) cudaEventDestroy(staged[i]);
    }
    if (cublas != nullptr) blas->destroy(cublas);
    if (cublas_workspace != nullptr) cudaFree(cublas_workspace);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  absl::Status Activate() const { return UseDevice(options.device); }

  // `s` holds at least `bytes` bytes. Grows only outside a capture.
  absl::Status Reserve(Scratch* s, size_t bytes, const char* what) {
    if (s->bytes >= bytes) return absl::OkStatus();
    if (capturing) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cuda backend: ", what, " scratch must grow to ", bytes,
          " bytes during a step capture; run the same step eagerly before capturing it"));
    }
    const size_t grown = std::max(bytes, 2 * s->bytes);
    void* p = nullptr;
    CUDA_RETURN_IF_ERROR(cudaMalloc(&p, grown));
    if (s->ptr != nullptr) retired.push_back(s->ptr);
    s->ptr = p;
    s->bytes = grown;
    return absl::OkStatus();
  }

  // The ones vectors hold at least n elements.
  absl::Status ReserveOnes(int64_t n) {
    if (ones >= n) return absl::OkStatus();
    if (capturing) {
      return absl::FailedPreconditionError(
          "cuda backend: the bias ones must grow during a step capture; run the same step "
          "eagerly before capturing it");
    }
    const int64_t grown = std::max(n, 2 * ones);
    RETURN_IF_ERROR(Reserve(&ones_f32, static_cast<size_t>(grown) * 4, "bias ones"));
    RETURN_IF_ERROR(Reserve(&ones_bf16, static_cast<size_t>(grown) * 2, "bias ones"));
    const std::vector<float> f(static_cast<size_t>(grown), 1.0f);
    const std::vector<uint16_t> b(static_cast<size_t>(grown), F32ToBf16(1.0f));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ones_f32.ptr, f.data(), f.size() * 4, cudaMemcpyHostToDevice, stream));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ones_bf16.ptr, b.data(), b.size() * 2, cudaMemcpyHostToDevice, stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // the host vectors die here
    ones = grown;
    return absl::OkStatus();
  }
};

// --- creation ---

absl::Status CudaBackend::CheckAvailable(int device) {
  std::string why;
  const std::vector<kernels::CudaDeviceInfo> devices = kernels::ListCudaDevices(&why);
  if (devices.empty()) {
    return absl::UnavailableError(
        absl::StrCat("--device cuda: no CUDA device is visible (", why, "); use --device cpu"));
  }
  if (device < 0 || device >= static_cast<int>(devices.size())) {
    return absl::UnavailableError(absl::StrCat("--device cuda: device ", device,
                                               " does not exist (", devices.size(), " visible)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const Options& options) {
  RETURN_IF_ERROR(CheckAvailable(options.device));
  if (options.staging_chunk_bytes == 0) {
    return absl::InvalidArgumentError("cuda backend: staging_chunk_bytes must be > 0");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ASSIGN_OR_RETURN(impl->memory_kernels, cuda::MemoryKernelsFromEnv());
  ASSIGN_OR_RETURN(impl->blas, cuda::LoadCublas());
  RETURN_IF_ERROR(impl->Activate());
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(impl->blas->create(&impl->cublas));
  // cublasSetStream resets the workspace, so the workspace comes second. A
  // workspace of our own keeps cuBLAS from allocating during a capture.
  CUBLAS_RETURN_IF_ERROR(impl->blas->set_stream(impl->cublas, impl->stream));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&impl->cublas_workspace, kCublasWorkspaceBytes));
  CUBLAS_RETURN_IF_ERROR(
      impl->blas->set_workspace(impl->cublas, impl->cublas_workspace, kCublasWorkspaceBytes));
  CUBLAS_RETURN_IF_ERROR(impl->blas->set_pointer_mode(impl->cublas, CUBLAS_POINTER_MODE_HOST));
  // Fp32 GEMMs stay fp32 (no TF32); bf16 GEMMs use the tensor cores.
  CUBLAS_RETURN_IF_ERROR(impl->blas->set_math_mode(impl->cublas, CUBLAS_DEFAULT_MATH));
  RETURN_IF_ERROR(impl->ReserveOnes(kInitialOnes));
  cudaDeviceProp prop;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device));
  std::fprintf(stderr,
               "memserve: cuda_device index=%d name=\"%s\" sm=%d%d memory_gib=%.1f "
               "multiprocessors=%d\n",
               options.device, prop.name, prop.major, prop.minor,
               static_cast<double>(prop.totalGlobalMem) / (1 << 30), prop.multiProcessorCount);
  std::fprintf(stderr, "memserve: cuda_memory_kernels=%s\n",
               cuda::MemoryKernelsName(impl->memory_kernels));
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() {
  if (impl_ != nullptr) impl_->Activate().IgnoreError();
}

int64_t CudaBackend::placed_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->placement_mu);
  return impl_->placed_bytes;
}

double CudaBackend::placed_seconds() const {
  std::lock_guard<std::mutex> lock(impl_->placement_mu);
  return impl_->placed_seconds;
}

// --- memory ---

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::AllocateBuffer(size_t bytes) {
  RETURN_IF_ERROR(impl_->Activate());
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: AllocateBuffer during a step capture");
  }
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cuda backend: cannot allocate ", bytes,
                                                     " bytes of device memory (",
                                                     cudaGetErrorString(err), ")"));
  }
  std::unique_ptr<Buffer> buffer(new DeviceBuffer(this, kOwnedType, p, bytes));
  // Zeroed, so that memory no op wrote (e.g. the K/V rows a padded step
  // reads) holds finite values.
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, bytes, impl_->stream));
  return buffer;
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::CopyToDevice(const void* data, size_t bytes,
                                                                  const char* name) {
  if (data == nullptr && bytes > 0) {
    return absl::InvalidArgumentError("cuda backend: a device copy of a null host range");
  }
  RETURN_IF_ERROR(impl_->Activate());
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: a weight copy during a step capture");
  }
  std::lock_guard<std::mutex> lock(impl_->placement_mu);
  Impl& m = *impl_;
  const auto start = std::chrono::steady_clock::now();
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cuda backend: cannot allocate ", bytes,
                                                     " bytes of device memory for ", name, " (",
                                                     cudaGetErrorString(err), ")"));
  }
  std::unique_ptr<Buffer> buffer(new DeviceBuffer(this, kWeightType, p, bytes));
  if (m.staging[0] == nullptr) {
    for (int i = 0; i < kStagingBuffers; ++i) {
      CUDA_RETURN_IF_ERROR(
          cudaHostAlloc(&m.staging[i], m.options.staging_chunk_bytes, cudaHostAllocDefault));
      CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&m.staged[i], cudaEventDisableTiming));
    }
  }
  // Chunk i goes through staging buffer i % 2: while the DMA of chunk i
  // runs, the host copies chunk i + 1 into the other buffer; before reusing
  // a buffer the host waits for the DMA that last read it.
  const char* src = static_cast<const char*>(data);
  char* dst = static_cast<char*>(p);
  bool recorded[kStagingBuffers] = {false, false};
  for (const cuda::StagingChunk& c :
       cuda::PlanStagingChunks(bytes, m.options.staging_chunk_bytes, kStagingBuffers)) {
    if (recorded[c.buffer]) CUDA_RETURN_IF_ERROR(cudaEventSynchronize(m.staged[c.buffer]));
    std::memcpy(m.staging[c.buffer], src + c.offset, c.bytes);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst + c.offset, m.staging[c.buffer], c.bytes,
                                         cudaMemcpyHostToDevice, m.stream));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(m.staged[c.buffer], m.stream));
    recorded[c.buffer] = true;
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.placed_bytes += static_cast<int64_t>(bytes);
  m.placed_seconds += seconds;
  if (m.options.log_placement_bytes > 0 && bytes >= m.options.log_placement_bytes) {
    std::fprintf(stderr, "memserve: cuda_place tensor=%s bytes=%zu seconds=%.3f gb_per_s=%.2f\n",
                 name, bytes, seconds, cuda::GigabytesPerSecond(bytes, seconds));
  }
  return buffer;
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::WrapHostMemory(const void* data,
                                                                    size_t bytes) {
  return CopyToDevice(data, bytes, "host-range");
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::PlaceWeight(const TensorView& w, WeightUse use,
                                                                 Tensor* tensor) {
  (void)use;  // every weight becomes a device copy in the checkpoint's layout
  if (w.dtype != DType::kF32 && w.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("cuda backend: weight ", w.name, " is ",
                                                   DTypeName(w.dtype), "; expected F32 or BF16"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer,
                   CopyToDevice(w.data, w.nbytes(), w.name.c_str()));
  *tensor = TensorFromView(buffer.get(), w);
  return buffer;
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::PlaceHostTable(const TensorView& w,
                                                                    Tensor* tensor) {
  RETURN_IF_ERROR(impl_->Activate());
  return cuda::PlaceHostTable(this, w, tensor);
}

absl::StatusOr<std::unique_ptr<ShardedMemory>> CudaBackend::PlaceShardedTables(
    const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards) {
  RETURN_IF_ERROR(impl_->Activate());
  return cuda::PlaceShardedTables(*this, tables, shards);
}

int CudaBackend::device_index() const { return impl_->options.device; }
void* CudaBackend::stream() const { return impl_->stream; }

absl::Status CudaBackend::Upload(const void* src, const Tensor& dst) {
  RETURN_IF_ERROR(CheckOperand(this, dst, dst.dtype, "Upload destination"));
  if (dst.buffer->type_name() != kOwnedType) {
    return absl::InvalidArgumentError("cuda backend: Upload into a read-only buffer");
  }
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: Upload during a step capture");
  }
  RETURN_IF_ERROR(impl_->Activate());
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(Ptr<void>(dst), src, dst.nbytes(), cudaMemcpyHostToDevice, impl_->stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Download(const Tensor& src, void* dst) {
  RETURN_IF_ERROR(CheckOperand(this, src, src.dtype, "Download source"));
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: Download during a step capture");
  }
  RETURN_IF_ERROR(impl_->Activate());
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, Ptr<void>(src), src.nbytes(), cudaMemcpyDeviceToHost, impl_->stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Synchronize() {
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: Synchronize during a step capture");
  }
  RETURN_IF_ERROR(impl_->Activate());
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

// --- ops ---

absl::Status CudaBackend::MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const Tensor& y) {
  RETURN_IF_ERROR(CheckMatMulShapes(x, w, bias, y));
  RETURN_IF_ERROR(CheckOperand(this, x, DType::kF32, "MatMul x"));
  RETURN_IF_ERROR(CheckWeight(this, w, "MatMul w"));
  RETURN_IF_ERROR(CheckOperand(this, y, DType::kF32, "MatMul y"));
  if (bias.present()) RETURN_IF_ERROR(CheckWeight(this, bias, "MatMul bias"));
  const int64_t n_tokens = x.shape[0];
  const int64_t out = w.shape[0];
  const int64_t in = w.shape[1];
  if (n_tokens == 0) return absl::OkStatus();
  if (n_tokens > kMaxGemmDim || out > kMaxGemmDim || in > kMaxGemmDim) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul: ", n_tokens, "x", in, " by ", out, "x",
                                                   in, " is too large for one GEMM"));
  }
  RETURN_IF_ERROR(impl_->Activate());
  Impl& m = *impl_;
  const int T = static_cast<int>(n_tokens), M = static_cast<int>(out), K = static_cast<int>(in);
  const float one = 1.0f, zero = 0.0f;
  // Row-major y[T, out] = x[T, in] w[out, in]^T is, column-major,
  // y^T (out x T) = w^T (out x in, w read transposed) * x^T (in x T).
  if (bias.present()) {
    // y = bias (out x 1) * ones (1 x T): every row of y starts as the bias.
    RETURN_IF_ERROR(m.ReserveOnes(n_tokens));
    const bool bf16 = bias.dtype == DType::kBF16;
    const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_RETURN_IF_ERROR(
        m.blas->gemm_ex(m.cublas, CUBLAS_OP_N, CUBLAS_OP_N, M, T, 1, &one, Ptr<void>(bias), type, M,
                        bf16 ? m.ones_bf16.ptr : m.ones_f32.ptr, type, 1, &zero, Ptr<void>(y),
                        CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  const float* beta = bias.present() ? &one : &zero;
  if (w.dtype == DType::kF32) {
    CUBLAS_RETURN_IF_ERROR(m.blas->gemm_ex(m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, T, K, &one,
                                           Ptr<void>(w), CUDA_R_32F, K, Ptr<void>(x), CUDA_R_32F, K,
                                           beta, Ptr<void>(y), CUDA_R_32F, M, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  }
  // BF16 weight: x rounded to bf16 in scratch, bf16 x bf16 -> fp32.
  const int64_t elements = n_tokens * in;
  RETURN_IF_ERROR(m.Reserve(&m.bf16_x, static_cast<size_t>(elements) * 2, "MatMul bf16 x"));
  kernels::F32ToBf16Params convert;
  convert.x = Ptr<const float>(x);
  convert.y = static_cast<uint16_t*>(m.bf16_x.ptr);
  convert.n = elements;
  RETURN_IF_ERROR(kernels::LaunchF32ToBf16(convert, m.stream));
  CUBLAS_RETURN_IF_ERROR(m.blas->gemm_ex(
      m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, T, K, &one, Ptr<void>(w), CUDA_R_16BF, K, m.bf16_x.ptr,
      CUDA_R_16BF, K, beta, Ptr<void>(y), CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status CudaBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                                  const Tensor& y) {
  RETURN_IF_ERROR(CheckRmsNormShapes(x, weight, y));
  RETURN_IF_ERROR(CheckOperand(this, x, DType::kF32, "RmsNorm x"));
  RETURN_IF_ERROR(CheckWeight(this, weight, "RmsNorm weight"));
  RETURN_IF_ERROR(CheckOperand(this, y, DType::kF32, "RmsNorm y"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::RmsNormParams p;
  p.x = Ptr<const float>(x);
  p.weight = Ptr<const void>(weight);
  p.weight_type = ElementTypeOf(weight.dtype);
  p.y = Ptr<float>(y);
  p.n_tokens = x.shape[0];
  p.dim = static_cast<int>(x.shape[1]);
  p.eps = eps;
  return kernels::LaunchRmsNorm(p, impl_->stream);
}

absl::Status CudaBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) {
  RETURN_IF_ERROR(CheckEmbeddingShapes(table, ids, y));
  RETURN_IF_ERROR(CheckWeight(this, table, "Embedding table"));
  RETURN_IF_ERROR(CheckOperand(this, ids, DType::kI32, "Embedding ids"));
  RETURN_IF_ERROR(CheckOperand(this, y, DType::kF32, "Embedding y"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::EmbeddingParams p;
  p.table = Ptr<const void>(table);
  p.table_type = ElementTypeOf(table.dtype);
  p.ids = Ptr<const int32_t>(ids);
  p.y = Ptr<float>(y);
  p.n_tokens = ids.numel();
  p.vocab = table.shape[0];
  p.dim = static_cast<int>(table.shape[1]);
  return kernels::LaunchEmbedding(p, impl_->stream);
}

absl::Status CudaBackend::Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) {
  RETURN_IF_ERROR(CheckRopeShapes(x, positions, rope));
  RETURN_IF_ERROR(CheckOperand(this, x, DType::kF32, "Rope x"));
  RETURN_IF_ERROR(CheckOperand(this, positions, DType::kI32, "Rope positions"));
  RETURN_IF_ERROR(CheckOperand(this, rope, DType::kF32, "Rope table"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::RopeParams p;
  p.x = Ptr<float>(x);
  p.positions = Ptr<const int32_t>(positions);
  p.cos_sin = Ptr<const float>(rope);
  p.n_tokens = x.shape[0];
  p.n_heads = static_cast<int>(x.shape[1]);
  p.head_dim = static_cast<int>(x.shape[2]);
  p.max_positions = static_cast<int>(rope.shape[1]);
  return kernels::LaunchRope(p, impl_->stream);
}

absl::Status CudaBackend::WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                                  const Tensor& k_cache, const Tensor& v_cache) {
  RETURN_IF_ERROR(CheckWriteKvShapes(k, v, kv_rows, k_cache, v_cache));
  RETURN_IF_ERROR(CheckOperand(this, k, DType::kF32, "WriteKv k"));
  RETURN_IF_ERROR(CheckOperand(this, v, DType::kF32, "WriteKv v"));
  RETURN_IF_ERROR(CheckOperand(this, kv_rows, DType::kI64, "WriteKv kv_rows"));
  RETURN_IF_ERROR(CheckOperand(this, k_cache, k_cache.dtype, "WriteKv k_cache"));
  RETURN_IF_ERROR(CheckOperand(this, v_cache, k_cache.dtype, "WriteKv v_cache"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::WriteKvParams p;
  p.k = Ptr<const float>(k);
  p.v = Ptr<const float>(v);
  p.kv_rows = Ptr<const int64_t>(kv_rows);
  p.k_cache = Ptr<void>(k_cache);
  p.v_cache = Ptr<void>(v_cache);
  p.cache_type = ElementTypeOf(k_cache.dtype);
  p.n_tokens = k.shape[0];
  p.kv_dim = static_cast<int>(k.shape[1]);
  p.cache_rows = k_cache.shape[0];
  return kernels::LaunchWriteKv(p, impl_->stream);
}

absl::Status CudaBackend::Attention(const AttentionShape& shape, const BatchDescriptor& batch,
                                    const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                    const Tensor& out) {
  RETURN_IF_ERROR(CheckAttentionShapes(shape, batch, q, k_cache, v_cache, out));
  RETURN_IF_ERROR(CheckOperand(this, q, DType::kF32, "Attention q"));
  RETURN_IF_ERROR(CheckOperand(this, out, DType::kF32, "Attention out"));
  RETURN_IF_ERROR(CheckOperand(this, k_cache, k_cache.dtype, "Attention k_cache"));
  RETURN_IF_ERROR(CheckOperand(this, v_cache, k_cache.dtype, "Attention v_cache"));
  RETURN_IF_ERROR(CheckOperand(this, batch.seq_starts, DType::kI32, "batch seq_starts"));
  RETURN_IF_ERROR(CheckOperand(this, batch.positions, DType::kI32, "batch positions"));
  RETURN_IF_ERROR(CheckOperand(this, batch.block_tables, DType::kI32, "batch block_tables"));
  RETURN_IF_ERROR(impl_->Activate());
  Impl& m = *impl_;
  kernels::PagedAttentionParams p;
  p.q = Ptr<const float>(q);
  p.k_cache = Ptr<const void>(k_cache);
  p.v_cache = Ptr<const void>(v_cache);
  p.cache_type = ElementTypeOf(k_cache.dtype);
  p.out = Ptr<float>(out);
  p.seq_starts = Ptr<const int32_t>(batch.seq_starts);
  p.positions = Ptr<const int32_t>(batch.positions);
  p.block_tables = Ptr<const int32_t>(batch.block_tables);
  p.n_tokens = batch.n_tokens;
  p.n_seqs = batch.n_seqs;
  p.max_blocks = batch.max_blocks;
  p.block_size = batch.block_size;
  p.cache_rows = k_cache.shape[0];
  p.n_heads = shape.n_heads;
  p.n_kv_heads = shape.n_kv_heads;
  p.head_dim = shape.head_dim;
  p.sliding_window = shape.sliding_window;
  // The table's width bounds every sequence's context (a hint only).
  p.max_context = static_cast<int64_t>(batch.max_blocks) * batch.block_size;
  const size_t workspace = kernels::PagedAttentionWorkspaceBytes(p);
  if (workspace > 0) {
    RETURN_IF_ERROR(m.Reserve(&m.attention_ws, workspace, "attention workspace"));
    p.workspace = m.attention_ws.ptr;
    p.workspace_bytes = m.attention_ws.bytes;
  }
  return kernels::LaunchPagedAttention(p, m.stream);
}

absl::Status CudaBackend::SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) {
  RETURN_IF_ERROR(CheckSameSize("SwiGlu", a, b, "b"));
  RETURN_IF_ERROR(CheckSameSize("SwiGlu", a, y, "y"));
  RETURN_IF_ERROR(CheckOperand(this, a, DType::kF32, "SwiGlu a"));
  RETURN_IF_ERROR(CheckOperand(this, b, DType::kF32, "SwiGlu b"));
  RETURN_IF_ERROR(CheckOperand(this, y, DType::kF32, "SwiGlu y"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::SwiGluParams p;
  p.a = Ptr<const float>(a);
  p.b = Ptr<const float>(b);
  p.y = Ptr<float>(y);
  p.n = a.numel();
  return kernels::LaunchSwiGlu(p, impl_->stream);
}

absl::Status CudaBackend::Add(const Tensor& x, const Tensor& y) {
  RETURN_IF_ERROR(CheckSameSize("Add", x, y, "y"));
  RETURN_IF_ERROR(CheckOperand(this, x, DType::kF32, "Add x"));
  RETURN_IF_ERROR(CheckOperand(this, y, DType::kF32, "Add y"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::AddParams p;
  p.x = Ptr<const float>(x);
  p.y = Ptr<float>(y);
  p.n = x.numel();
  return kernels::LaunchAdd(p, impl_->stream);
}

absl::Status CudaBackend::SigmoidGateRows(const Tensor& gate, const Tensor& x) {
  RETURN_IF_ERROR(CheckSigmoidGateRowsShapes(gate, x));
  RETURN_IF_ERROR(CheckOperand(this, gate, DType::kF32, "SigmoidGateRows gate"));
  RETURN_IF_ERROR(CheckOperand(this, x, DType::kF32, "SigmoidGateRows x"));
  RETURN_IF_ERROR(impl_->Activate());
  kernels::SigmoidGateRowsParams p;
  p.gate = Ptr<const float>(gate);
  p.x = Ptr<float>(x);
  p.rows = x.shape[0];
  p.cols = x.shape[1];
  return kernels::LaunchSigmoidGateRows(p, impl_->stream);
}

absl::Status CudaBackend::MemorySelect(const MemorySelectArgs& a) {
  RETURN_IF_ERROR(CheckMemorySelectShapes(a));
  RETURN_IF_ERROR(CheckOperand(this, a.queries, DType::kF32, "MemorySelect queries"));
  RETURN_IF_ERROR(CheckWeight(this, a.keys, "MemorySelect keys"));
  RETURN_IF_ERROR(CheckOperand(this, a.rows, DType::kI64, "MemorySelect rows"));
  RETURN_IF_ERROR(CheckOperand(this, a.weights, DType::kF32, "MemorySelect weights"));
  if (a.scores.present()) {
    RETURN_IF_ERROR(CheckOperand(this, a.scores, DType::kF32, "MemorySelect scores"));
  }
  const int64_t n_tokens = a.queries.shape[0];
  if (n_tokens == 0) return absl::OkStatus();
  const int64_t half = a.k_dim / 2;
  const int64_t batches = 2LL * a.heads;  // (head, half) pairs
  if (n_tokens > kMaxGemmDim || a.k_dim > kMaxGemmDim ||
      n_tokens * batches * a.n_keys > kMaxGemmDim) {
    return absl::InvalidArgumentError(absl::StrCat("MemorySelect: ", n_tokens, " tokens x ",
                                                   batches, " x ", a.n_keys,
                                                   " sub-key scores are too many for one launch"));
  }
  RETURN_IF_ERROR(impl_->Activate());
  Impl& m = *impl_;
  const bool product_key = m.memory_kernels == cuda::MemoryKernels::kProductKey;
  kernels::ProductKeySelectParams select;
  select.rows = Ptr<int64_t>(a.rows);
  select.weights = Ptr<float>(a.weights);
  select.scores = a.scores.present() ? Ptr<float>(a.scores) : nullptr;
  select.n_tokens = n_tokens;
  select.heads = a.heads;
  select.n_keys = a.n_keys;
  select.knn = a.knn;
  if (product_key && kernels::ProductKeyUseScoreKernel(n_tokens)) {
    // Small batches: the split scores kernel reads the keys as stored.
    const int64_t n_scores = n_tokens * batches * a.n_keys;
    RETURN_IF_ERROR(
        m.Reserve(&m.subkey_scores, static_cast<size_t>(n_scores) * 4, "MemorySelect scores"));
    kernels::ProductKeyScoresParams scores;
    scores.queries = Ptr<const float>(a.queries);
    scores.keys = Ptr<const void>(a.keys);
    scores.keys_type = ElementTypeOf(a.keys.dtype);
    scores.subkey_scores = static_cast<float*>(m.subkey_scores.ptr);
    scores.n_tokens = n_tokens;
    scores.heads = a.heads;
    scores.n_keys = a.n_keys;
    scores.k_dim = a.k_dim;
    RETURN_IF_ERROR(kernels::LaunchProductKeyScores(scores, m.stream));
    select.subkey_scores = scores.subkey_scores;
    return kernels::LaunchProductKeySelect(select, m.stream);
  }
  const float* keys = nullptr;
  if (a.keys.dtype == DType::kF32) {
    keys = Ptr<const float>(a.keys);
  } else {
    const int64_t n = a.keys.numel();
    RETURN_IF_ERROR(m.Reserve(&m.keys_f32, static_cast<size_t>(n) * 4, "MemorySelect keys"));
    kernels::Bf16ToF32Params convert;
    convert.x = Ptr<const uint16_t>(a.keys);
    convert.y = static_cast<float*>(m.keys_f32.ptr);
    convert.n = n;
    RETURN_IF_ERROR(kernels::LaunchBf16ToF32(convert, m.stream));
    keys = static_cast<const float*>(m.keys_f32.ptr);
  }
  const int64_t n_scores = n_tokens * batches * a.n_keys;
  RETURN_IF_ERROR(
      m.Reserve(&m.subkey_scores, static_cast<size_t>(n_scores) * 4, "MemorySelect scores"));
  // For pair b = 2h + half: S_b[T, n_keys] = Q_b[T, k_dim/2] K_b[n_keys, k_dim/2]^T,
  // Q_b = columns [b * k_dim/2, (b+1) * k_dim/2) of queries (row stride
  // heads * k_dim), K_b = rows [b * n_keys, (b+1) * n_keys) of keys, S_b
  // written at columns [b * n_keys, (b+1) * n_keys) of the [T, 2 * heads *
  // n_keys] scores ([T, heads, 2, n_keys]). Column-major: S_b^T = K_b Q_b^T.
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_RETURN_IF_ERROR(m.blas->sgemm_strided_batched(
      m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, a.n_keys, static_cast<int>(n_tokens),
      static_cast<int>(half), &one, keys, static_cast<int>(half),
      static_cast<long long>(a.n_keys) * half, Ptr<const float>(a.queries),
      static_cast<int>(a.heads * a.k_dim), static_cast<long long>(half), &zero,
      static_cast<float*>(m.subkey_scores.ptr), static_cast<int>(batches * a.n_keys),
      static_cast<long long>(a.n_keys), static_cast<int>(batches)));
  if (product_key) {
    select.subkey_scores = static_cast<const float*>(m.subkey_scores.ptr);
    return kernels::LaunchProductKeySelect(select, m.stream);
  }
  kernels::MemorySelectParams p;
  p.subkey_scores = static_cast<const float*>(m.subkey_scores.ptr);
  p.rows = Ptr<int64_t>(a.rows);
  p.weights = Ptr<float>(a.weights);
  p.scores = a.scores.present() ? Ptr<float>(a.scores) : nullptr;
  p.n_tokens = n_tokens;
  p.heads = a.heads;
  p.n_keys = a.n_keys;
  p.knn = a.knn;
  return kernels::LaunchMemorySelect(p, m.stream);
}

absl::Status CudaBackend::ValueGather(const Tensor& values, const Tensor& rows,
                                      const Tensor& weights, int64_t col_begin, int64_t col_end,
                                      const Tensor& out) {
  RETURN_IF_ERROR(CheckValueGatherShapes(values, rows, weights, col_begin, col_end, out));
  RETURN_IF_ERROR(CheckWeight(this, values, "ValueGather values"));
  RETURN_IF_ERROR(CheckOperand(this, rows, DType::kI64, "ValueGather rows"));
  RETURN_IF_ERROR(CheckOperand(this, weights, DType::kF32, "ValueGather weights"));
  RETURN_IF_ERROR(CheckOperand(this, out, DType::kF32, "ValueGather out"));
  const int64_t n_tokens = out.shape[0];
  const int64_t v_dim = values.shape[1];
  const int64_t width = col_end - col_begin;
  if (width == 0) return absl::OkStatus();
  RETURN_IF_ERROR(impl_->Activate());
  Impl& m = *impl_;
  if (m.memory_kernels == cuda::MemoryKernels::kProductKey) {
    if (n_tokens == 0) return absl::OkStatus();
    // The slice goes straight into its columns of out (row stride v_dim).
    kernels::ProductKeyGatherParams g;
    g.values = Ptr<const void>(values);
    g.values_type = ElementTypeOf(values.dtype);
    g.table_rows = values.shape[0];
    g.row_stride = v_dim;
    g.col_begin = col_begin;
    g.col_end = col_end;
    g.rows = Ptr<const int64_t>(rows);
    g.weights = Ptr<const float>(weights);
    g.picks = static_cast<int>(rows.numel() / n_tokens);
    g.n_tokens = n_tokens;
    g.out = Ptr<float>(out) + col_begin;
    g.out_type = kernels::ElementType::kF32;
    g.out_stride = v_dim;
    return kernels::LaunchProductKeyGather(g, m.stream);
  }
  const bool whole = width == v_dim;
  // A column slice is gathered densely into scratch, then copied into its
  // columns of out (the kernel writes dense rows).
  if (!whole) {
    RETURN_IF_ERROR(
        m.Reserve(&m.gather_slice, static_cast<size_t>(n_tokens * width) * 4, "ValueGather slice"));
  }
  kernels::ValueGatherParams p;
  if (values.dtype == DType::kBF16) {
    p.values = Ptr<const uint16_t>(values);
  } else {
    p.values_f32 = Ptr<const float>(values);
  }
  p.indices = Ptr<const int64_t>(rows);
  p.weights = Ptr<const float>(weights);
  p.out = whole ? Ptr<float>(out) : static_cast<float*>(m.gather_slice.ptr);
  p.rows = values.shape[0];
  p.v_dim = static_cast<int>(width);
  p.n = static_cast<int>(n_tokens);
  p.k = static_cast<int>(rows.numel() / n_tokens);
  p.row_stride = v_dim;
  p.col0 = col_begin;
  RETURN_IF_ERROR(kernels::LaunchValueGather(p, m.stream));
  if (!whole) {
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(
        Ptr<float>(out) + col_begin, static_cast<size_t>(v_dim) * 4, m.gather_slice.ptr,
        static_cast<size_t>(width) * 4, static_cast<size_t>(width) * 4,
        static_cast<size_t>(n_tokens), cudaMemcpyDeviceToDevice, m.stream));
  }
  return absl::OkStatus();
}

// --- step graphs ---

absl::StatusOr<std::unique_ptr<Backend::StepGraph>> CudaBackend::CaptureStep(
    const std::function<absl::Status()>& ops) {
  Impl& m = *impl_;
  if (m.capturing) return absl::FailedPreconditionError("cuda backend: nested step capture");
  RETURN_IF_ERROR(m.Activate());
  CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
  m.capturing = true;
  const absl::Status recorded = ops();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(m.stream, &graph);
  m.capturing = false;
  if (!recorded.ok() || ended != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    if (!recorded.ok()) return recorded;
    return cuda::CudaError(ended, "cudaStreamEndCapture", __FILE__, __LINE__);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) {
    return cuda::CudaError(instantiated, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  return std::unique_ptr<StepGraph>(new CudaStepGraph(this, exec));
}

absl::Status CudaBackend::ReplayStep(StepGraph& graph) {
  auto* g = dynamic_cast<CudaStepGraph*>(&graph);
  if (g == nullptr || g->owner() != this) {
    return absl::InvalidArgumentError("cuda backend: ReplayStep of a graph another backend made");
  }
  if (impl_->capturing) {
    return absl::FailedPreconditionError("cuda backend: ReplayStep during a step capture");
  }
  RETURN_IF_ERROR(impl_->Activate());
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g->exec(), impl_->stream));
  return absl::OkStatus();
}

}  // namespace memserve
