#include "engine/backend/cuda/memory_placement_cuda.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/cuda_check.h"
#include "engine/backend/cuda/device_buffer.h"
#include "engine/backend/cuda/staging.h"
#include "engine/dtype.h"
#include "engine/status_macros.h"

namespace memserve::cuda {
namespace {

constexpr const char* kHostType = "cuda-host";
constexpr size_t kStagingBytes = size_t{32} << 20;  // each of the two staging buffers
constexpr size_t kCopyChunkBytes = size_t{64} << 20;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Restores the calling thread's current device when it goes out of scope.
class DeviceScope {
 public:
  DeviceScope() { cudaGetDevice(&device_); }
  ~DeviceScope() { UseDevice(device_).IgnoreError(); }
  int device() const { return device_; }

 private:
  int device_ = 0;
};

// Two pinned staging buffers (portable: usable with any device's stream).
class PinnedStaging {
 public:
  ~PinnedStaging() {
    for (void* p : buffers_) {
      if (p != nullptr) cudaFreeHost(p);
    }
  }
  absl::Status Init() {
    for (void*& p : buffers_) {
      CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, kStagingBytes, cudaHostAllocPortable));
    }
    return absl::OkStatus();
  }
  char* buffer(int i) const { return static_cast<char*>(buffers_[i]); }

 private:
  void* buffers_[2] = {nullptr, nullptr};
};

// Columns [col_begin, col_begin + width) of every row of `w` into `dst` (a
// device buffer of rows x width elements) on `stream`, a chunk of whole rows
// per staging buffer; waits for the copy. The device of `stream` is current.
absl::Status UploadColumns(const TensorView& w, int64_t col_begin, int64_t width, void* dst,
                           cudaStream_t stream, const PinnedStaging& staging) {
  const size_t elem = DTypeSize(w.dtype);
  const int64_t rows = w.shape[0];
  const size_t src_stride = static_cast<size_t>(w.shape[1]) * elem;
  const size_t row_bytes = static_cast<size_t>(width) * elem;
  const int64_t chunk_rows = RowsPerChunk(rows, row_bytes, kStagingBytes);
  const char* src = static_cast<const char*>(w.data) + static_cast<size_t>(col_begin) * elem;
  cudaEvent_t done[2] = {nullptr, nullptr};
  for (cudaEvent_t& e : done) {
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  absl::Status status;
  bool recorded[2] = {false, false};
  int buffer = 0;
  for (int64_t r0 = 0; r0 < rows && status.ok(); r0 += chunk_rows, buffer ^= 1) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    if (recorded[buffer]) {
      const cudaError_t err = cudaEventSynchronize(done[buffer]);
      if (err != cudaSuccess) {
        status = CudaError(err, "cudaEventSynchronize", __FILE__, __LINE__);
        break;
      }
    }
    char* stage = staging.buffer(buffer);
    if (row_bytes == src_stride) {
      std::memcpy(stage, src + static_cast<size_t>(r0) * src_stride,
                  static_cast<size_t>(n) * row_bytes);
    } else {
      for (int64_t r = 0; r < n; ++r) {
        std::memcpy(stage + static_cast<size_t>(r) * row_bytes,
                    src + static_cast<size_t>(r0 + r) * src_stride, row_bytes);
      }
    }
    cudaError_t err =
        cudaMemcpyAsync(static_cast<char*>(dst) + static_cast<size_t>(r0) * row_bytes, stage,
                        static_cast<size_t>(n) * row_bytes, cudaMemcpyHostToDevice, stream);
    if (err == cudaSuccess) err = cudaEventRecord(done[buffer], stream);
    if (err != cudaSuccess) status = CudaError(err, "cudaMemcpyAsync (upload)", __FILE__, __LINE__);
    recorded[buffer] = true;
  }
  const cudaError_t synced = cudaStreamSynchronize(stream);
  if (status.ok() && synced != cudaSuccess) {
    status = CudaError(synced, "cudaStreamSynchronize", __FILE__, __LINE__);
  }
  for (cudaEvent_t e : done) cudaEventDestroy(e);
  return status;
}

// A device buffer that only grows; outgrown buffers are kept until the
// placement dies (a captured step graph may still refer to them).
struct Growable {
  std::unique_ptr<Buffer> buffer;
  std::vector<std::unique_ptr<Buffer>> retired;

  absl::Status Reserve(Backend& backend, size_t bytes) {
    if (buffer != nullptr && buffer->size() >= bytes) return absl::OkStatus();
    const size_t grown = std::max(bytes, buffer != nullptr ? 2 * buffer->size() : bytes);
    ASSIGN_OR_RETURN(std::unique_ptr<Buffer> b, backend.AllocateBuffer(grown));
    if (buffer != nullptr) retired.push_back(std::move(buffer));
    buffer = std::move(b);
    return absl::OkStatus();
  }
};

// A tensor like `t` (dtype, shape) at the start of `buffer`.
Tensor Like(const Tensor& t, Buffer* buffer) {
  Tensor out = t;
  out.buffer = buffer;
  out.offset = 0;
  return out;
}

class CudaShardedMemory : public ShardedMemory {
 public:
  struct Shard {
    int gpu = 0;
    int64_t col_begin = 0;
    int64_t col_end = 0;
    CudaBackend* backend = nullptr;                      // the model's, or one in gpu_backends_
    std::vector<std::unique_ptr<Buffer>> table_buffers;  // [rows, width] per table
    std::vector<Tensor> tables;
    int64_t bytes = 0;
    Growable slice;  // [T, width] F32 on the shard's GPU
    // Another GPU's shard: the rows and weights copied there, the slice
    // copied back to the model's GPU, and the event that says it arrived.
    Growable rows, weights, landing;
    cudaEvent_t done = nullptr;
  };

  explicit CudaShardedMemory(CudaBackend& model) : model_(model) {}
  ~CudaShardedMemory() override {
    DeviceScope scope;
    UseDevice(model_.device_index()).IgnoreError();
    cudaStreamSynchronize(static_cast<cudaStream_t>(model_.stream()));
    for (Shard& s : shards_) {
      if (s.done != nullptr) cudaEventDestroy(s.done);
    }
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    shards_.clear();  // buffers die before their backends
  }

  absl::Status Place(const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards);

  absl::Status Gather(int table, const Tensor& rows, const Tensor& weights,
                      const Tensor& out) override;
  bool capturable() const override { return !remote_; }
  std::vector<DeviceBytes> device_bytes() const override {
    std::map<int, int64_t> per_gpu;
    for (const Shard& s : shards_) per_gpu[s.gpu] += s.bytes;
    std::vector<DeviceBytes> out;
    for (const auto& [gpu, bytes] : per_gpu) out.push_back({absl::StrCat("cuda:", gpu), bytes});
    return out;
  }

 private:
  absl::StatusOr<CudaBackend*> BackendFor(int gpu);

  CudaBackend& model_;
  std::map<int, std::unique_ptr<CudaBackend>> gpu_backends_;  // other GPUs
  std::vector<Shard> shards_;
  bool remote_ = false;          // some shard lives on another GPU
  cudaEvent_t ready_ = nullptr;  // rows/weights written (model's stream)
};

absl::StatusOr<CudaBackend*> CudaShardedMemory::BackendFor(int gpu) {
  if (gpu == model_.device_index()) return &model_;
  auto it = gpu_backends_.find(gpu);
  if (it != gpu_backends_.end()) return it->second.get();
  CudaBackend::Options options;
  options.device = gpu;
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(options));
  // Peer access both ways where the GPUs allow it (else the driver stages
  // peer copies through host memory).
  int can = 0;
  if (cudaDeviceCanAccessPeer(&can, gpu, model_.device_index()) == cudaSuccess && can) {
    RETURN_IF_ERROR(UseDevice(gpu));
    if (cudaDeviceEnablePeerAccess(model_.device_index(), 0) != cudaSuccess) cudaGetLastError();
    RETURN_IF_ERROR(UseDevice(model_.device_index()));
    if (cudaDeviceEnablePeerAccess(gpu, 0) != cudaSuccess) cudaGetLastError();
  }
  CudaBackend* raw = backend.get();
  gpu_backends_.emplace(gpu, std::move(backend));
  return raw;
}

absl::Status CudaShardedMemory::Place(const std::vector<TensorView>& tables,
                                      const std::vector<MemoryShard>& shards) {
  if (tables.empty() || shards.empty()) {
    return absl::InvalidArgumentError("sharded placement: no tables or no shards");
  }
  const int64_t v_dim = tables[0].shape.size() == 2 ? tables[0].shape[1] : 0;
  for (const TensorView& t : tables) {
    if (t.shape.size() != 2 || t.shape[1] != v_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("sharded placement: table ", t.name, " is not [rows, ", v_dim, "]"));
    }
  }
  int visible = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&visible));
  int64_t next = 0;
  for (const MemoryShard& m : shards) {
    if (m.col_begin != next || m.col_end <= m.col_begin) {
      return absl::InvalidArgumentError(absl::StrCat("sharded placement: shard columns [",
                                                     m.col_begin, ", ", m.col_end,
                                                     ") do not continue from column ", next));
    }
    if (m.gpu < 0 || m.gpu >= visible) {
      return absl::InvalidArgumentError(absl::StrCat("sharded placement: GPU ", m.gpu,
                                                     " does not exist (", visible, " visible)"));
    }
    next = m.col_end;
  }
  if (next != v_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("sharded placement: the shards cover ", next, " of ", v_dim, " columns"));
  }
  DeviceScope scope;
  PinnedStaging staging;
  RETURN_IF_ERROR(staging.Init());
  struct GpuUpload {
    int shards = 0;
    int64_t bytes = 0;
    double seconds = 0;
  };
  std::map<int, GpuUpload> uploads;
  shards_.resize(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    Shard& s = shards_[i];
    s.gpu = shards[i].gpu;
    s.col_begin = shards[i].col_begin;
    s.col_end = shards[i].col_end;
    ASSIGN_OR_RETURN(s.backend, BackendFor(s.gpu));
    remote_ = remote_ || s.backend != &model_;
    const int64_t width = s.col_end - s.col_begin;
    const auto start = std::chrono::steady_clock::now();
    for (const TensorView& t : tables) {
      const size_t bytes = static_cast<size_t>(t.shape[0] * width) * DTypeSize(t.dtype);
      ASSIGN_OR_RETURN(std::unique_ptr<Buffer> buffer, s.backend->AllocateBuffer(bytes));
      RETURN_IF_ERROR(UseDevice(s.gpu));
      RETURN_IF_ERROR(UploadColumns(t, s.col_begin, width,
                                    static_cast<DeviceBuffer*>(buffer.get())->ptr(),
                                    static_cast<cudaStream_t>(s.backend->stream()), staging));
      s.tables.push_back(Tensor::Of(buffer.get(), t.dtype, {t.shape[0], width}));
      s.table_buffers.push_back(std::move(buffer));
      s.bytes += static_cast<int64_t>(bytes);
    }
    GpuUpload& u = uploads[s.gpu];
    u.shards += 1;
    u.bytes += s.bytes;
    u.seconds += SecondsSince(start);
    if (s.backend != &model_) {
      RETURN_IF_ERROR(UseDevice(s.gpu));
      CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    }
  }
  if (remote_) {
    RETURN_IF_ERROR(UseDevice(model_.device_index()));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }
  for (const auto& [gpu, u] : uploads) {
    std::fprintf(stderr,
                 "memserve: memory_shard_upload gpu=%d shards=%d bytes=%lld seconds=%.3f "
                 "gb_per_s=%.2f\n",
                 gpu, u.shards, static_cast<long long>(u.bytes), u.seconds,
                 GigabytesPerSecond(static_cast<size_t>(u.bytes), u.seconds));
  }
  return absl::OkStatus();
}

absl::Status CudaShardedMemory::Gather(int table, const Tensor& rows, const Tensor& weights,
                                       const Tensor& out) {
  if (table < 0 || table >= static_cast<int>(shards_[0].tables.size())) {
    return absl::InvalidArgumentError(absl::StrCat("sharded gather: no table ", table));
  }
  if (out.rank != 2 || out.dtype != DType::kF32 || out.buffer == nullptr ||
      out.buffer->backend() != &model_) {
    return absl::InvalidArgumentError(
        "sharded gather: out must be F32 [T, v_dim] of the model's backend");
  }
  const int64_t n_tokens = out.shape[0];
  const int64_t v_dim = out.shape[1];
  if (n_tokens == 0) return absl::OkStatus();
  const int model_gpu = model_.device_index();
  cudaStream_t model_stream = static_cast<cudaStream_t>(model_.stream());
  DeviceScope scope;
  if (remote_) {
    RETURN_IF_ERROR(UseDevice(model_gpu));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(ready_, model_stream));
  }
  for (Shard& s : shards_) {
    const int64_t width = s.col_end - s.col_begin;
    const size_t slice_bytes = static_cast<size_t>(n_tokens * width) * sizeof(float);
    RETURN_IF_ERROR(s.slice.Reserve(*s.backend, slice_bytes));
    const Tensor slice = Tensor::Of(s.slice.buffer.get(), DType::kF32, {n_tokens, width});
    const void* landed = nullptr;
    if (s.backend == &model_) {
      RETURN_IF_ERROR(model_.ValueGather(s.tables[table], rows, weights, 0, width, slice));
      landed = DevicePtr<void>(slice);
    } else {
      cudaStream_t stream = static_cast<cudaStream_t>(s.backend->stream());
      RETURN_IF_ERROR(s.rows.Reserve(*s.backend, rows.nbytes()));
      RETURN_IF_ERROR(s.weights.Reserve(*s.backend, weights.nbytes()));
      RETURN_IF_ERROR(s.landing.Reserve(model_, slice_bytes));
      const Tensor shard_rows = Like(rows, s.rows.buffer.get());
      const Tensor shard_weights = Like(weights, s.weights.buffer.get());
      RETURN_IF_ERROR(UseDevice(s.gpu));
      CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream, ready_, 0));
      CUDA_RETURN_IF_ERROR(cudaMemcpyPeerAsync(DevicePtr<void>(shard_rows), s.gpu,
                                               DevicePtr<void>(rows), model_gpu, rows.nbytes(),
                                               stream));
      CUDA_RETURN_IF_ERROR(cudaMemcpyPeerAsync(DevicePtr<void>(shard_weights), s.gpu,
                                               DevicePtr<void>(weights), model_gpu,
                                               weights.nbytes(), stream));
      RETURN_IF_ERROR(
          s.backend->ValueGather(s.tables[table], shard_rows, shard_weights, 0, width, slice));
      RETURN_IF_ERROR(UseDevice(s.gpu));
      const Tensor landing = Tensor::Of(s.landing.buffer.get(), DType::kF32, {n_tokens, width});
      CUDA_RETURN_IF_ERROR(cudaMemcpyPeerAsync(DevicePtr<void>(landing), model_gpu,
                                               DevicePtr<void>(slice), s.gpu, slice_bytes, stream));
      CUDA_RETURN_IF_ERROR(cudaEventRecord(s.done, stream));
      RETURN_IF_ERROR(UseDevice(model_gpu));
      CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(model_stream, s.done, 0));
      landed = DevicePtr<void>(landing);
    }
    // The slice into its columns of out (the model's stream, its GPU).
    RETURN_IF_ERROR(UseDevice(model_gpu));
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(
        DevicePtr<float>(out) + s.col_begin, static_cast<size_t>(v_dim) * sizeof(float), landed,
        static_cast<size_t>(width) * sizeof(float), static_cast<size_t>(width) * sizeof(float),
        static_cast<size_t>(n_tokens), cudaMemcpyDeviceToDevice, model_stream));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> GpuFreeBytes() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: no GPU to plan for
    return std::vector<int64_t>{};
  }
  DeviceScope scope;
  std::vector<int64_t> out;
  for (int d = 0; d < count; ++d) {
    RETURN_IF_ERROR(UseDevice(d));
    size_t free = 0, total = 0;
    CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
    out.push_back(static_cast<int64_t>(free));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Buffer>> PlaceHostTable(const Backend* owner, const TensorView& w,
                                                       Tensor* tensor) {
  if (w.dtype != DType::kF32 && w.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("cuda backend: table ", w.name, " is ",
                                                   DTypeName(w.dtype), "; expected F32 or BF16"));
  }
  const size_t bytes = w.nbytes();
  const auto start = std::chrono::steady_clock::now();
  // The pages holding the table (the mapping is page-aligned and whole
  // pages are mapped, so the rounded range stays inside it).
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t data = reinterpret_cast<uintptr_t>(w.data);
  const uintptr_t begin = data / page * page;
  const uintptr_t end = (data + bytes + page - 1) / page * page;
  void* pages = reinterpret_cast<void*>(begin);
  std::unique_ptr<Buffer> buffer;
  const char* mode = "registered";
  std::string register_error;
  const cudaError_t registered = cudaHostRegister(
      pages, end - begin,
      cudaHostRegisterMapped | cudaHostRegisterPortable | cudaHostRegisterReadOnly);
  if (registered == cudaSuccess) {
    void* device = nullptr;
    const cudaError_t mapped = cudaHostGetDevicePointer(&device, pages, 0);
    if (mapped != cudaSuccess) {
      cudaHostUnregister(pages);
      return CudaError(mapped, "cudaHostGetDevicePointer", __FILE__, __LINE__);
    }
    buffer = std::make_unique<DeviceBuffer>(owner, kHostType,
                                            static_cast<char*>(device) + (data - begin), bytes,
                                            [pages] { cudaHostUnregister(pages); });
  } else {
    // E.g. a driver that does not register file mappings, or pages another
    // table already registered: a pinned, mapped copy instead.
    register_error = cudaGetErrorString(registered);
    cudaGetLastError();
    mode = "pinned-copy";
    void* pinned = nullptr;
    const cudaError_t allocated = cudaHostAlloc(&pinned, std::max<size_t>(bytes, 1),
                                                cudaHostAllocMapped | cudaHostAllocPortable);
    if (allocated != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          "cuda backend: cannot register ", w.name, " (", register_error, ") nor allocate ", bytes,
          " bytes of pinned host memory for it (", cudaGetErrorString(allocated), ")"));
    }
    for (size_t offset = 0; offset < bytes; offset += kCopyChunkBytes) {
      std::memcpy(static_cast<char*>(pinned) + offset, static_cast<const char*>(w.data) + offset,
                  std::min(kCopyChunkBytes, bytes - offset));
    }
    void* device = nullptr;
    const cudaError_t mapped = cudaHostGetDevicePointer(&device, pinned, 0);
    if (mapped != cudaSuccess) {
      cudaFreeHost(pinned);
      return CudaError(mapped, "cudaHostGetDevicePointer", __FILE__, __LINE__);
    }
    buffer = std::make_unique<DeviceBuffer>(owner, kHostType, device, bytes,
                                            [pinned] { cudaFreeHost(pinned); });
  }
  const double seconds = SecondsSince(start);
  std::fprintf(stderr,
               "memserve: cuda_host_table tensor=%s bytes=%zu mode=%s seconds=%.3f "
               "gb_per_s=%.2f%s%s\n",
               w.name.c_str(), bytes, mode, seconds, GigabytesPerSecond(bytes, seconds),
               register_error.empty() ? "" : " register_error=",
               register_error.empty() ? "" : absl::StrCat("\"", register_error, "\"").c_str());
  *tensor = TensorFromView(buffer.get(), w);
  return buffer;
}

absl::StatusOr<std::unique_ptr<ShardedMemory>> PlaceShardedTables(
    CudaBackend& backend, const std::vector<TensorView>& tables,
    const std::vector<MemoryShard>& shards) {
  auto placed = std::make_unique<CudaShardedMemory>(backend);
  RETURN_IF_ERROR(placed->Place(tables, shards));
  return std::unique_ptr<ShardedMemory>(std::move(placed));
}

}  // namespace memserve::cuda
