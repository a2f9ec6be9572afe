// CudaBackend: the Backend (engine/backend/backend.h) on one NVIDIA GPU.
//
// Memory. Every buffer is device memory (cudaMalloc, zeroed at allocation):
// "cuda" (AllocateBuffer; Upload writes it) and "cuda-weight" (a read-only
// device copy made by PlaceWeight or WrapHostMemory); "cuda-host" (a value
// table in host memory read through a mapped device pointer: PlaceHostTable,
// memory_placement_cuda.h). Weights, memory keys
// and the memory value tables are copied from the checkpoint mapping once,
// at load, in chunks through two pinned staging buffers (the host copy of
// one chunk overlaps the DMA of the one before); a copy of at least
// Options::log_placement_bytes logs one line with its rate:
//   memserve: cuda_place tensor=memory.values.weight bytes=... seconds=... gb_per_s=...
// A placed weight keeps its checkpoint dtype (bf16 stays bf16, fp32 stays
// fp32).
//
// Ops run in order on one CUDA stream, asynchronously; Download and
// Synchronize wait. MatMul is cuBLAS: a BF16 weight with the F32 activation
// rounded to bf16 (round to nearest even, in a scratch buffer) and fp32
// accumulation and output; an F32 weight as an fp32 GEMM (no TF32). A bias
// is the rank-1 product bias x ones written first, then the GEMM adds to it.
// cuBLAS is loaded with dlopen at Create (cublas_loader.h), so binaries
// that never use a GPU do not pay its load time.
// MemorySelect and ValueGather run kernels/product_key (memory_kernels.h):
// sub-key scores by its split kernel up to 16 tokens, else by a
// strided-batched fp32 GEMM (BF16 keys converted to fp32 first), its radix
// selection, its 16-byte gather; MEMSERVE_CUDA_MEMORY_KERNELS=legacy runs
// the GEMM + kernels/memory_select + kernels/value_gather instead.
// The other ops are the kernels of kernels/ (params + Validate + Launch).
// Unlike the CPU backend, a MatMul row's bits may depend on the number of
// rows (cuBLAS picks its algorithm by shape): results agree with the CPU
// within the NMSE of backend_ops_test, not bit for bit.
//
// Operands: every op checks what needs no device data (its own buffers,
// dtypes, bounds, shapes: op_checks.h) and returns InvalidArgument; ids,
// positions, cache rows and block tables live on the device and are the
// model's to validate (kernels skip out-of-range rows instead of reading
// outside memory). A CUDA or cuBLAS failure is Internal (ResourceExhausted
// for out of memory), naming the call; nothing aborts.
//
// Step graphs: CaptureStep records the ops on the stream as a CUDA graph
// (stream capture), ReplayStep launches it. Scratch buffers only grow, and a
// grown-out-of scratch buffer is kept until the backend is destroyed, so a
// graph never refers to freed memory; a capture that would need more scratch
// fails (FailedPrecondition): run the same step eagerly once before capturing.
//
// Thread-safety: as Backend. Any thread may call (each call makes the
// backend's device current on the calling thread).
#ifndef MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_
#define MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace memserve {

class CudaBackend : public Backend {
 public:
  struct Options {
    int device = 0;                                 // CUDA device index
    size_t staging_chunk_bytes = size_t{32} << 20;  // each of the two pinned staging buffers
    // PlaceWeight logs a line for copies at least this large; 0 = never.
    size_t log_placement_bytes = size_t{16} << 20;
  };

  // OK when device `device` can be used, else Unavailable with one line
  // naming --device cuda and why (no driver, no device, index out of range).
  static absl::Status CheckAvailable(int device);
  // Creates the stream, the cuBLAS handle and its workspace on the device.
  // Errors: those of CheckAvailable; Internal for a CUDA/cuBLAS failure.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const Options& options);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }

  // Bytes copied by PlaceWeight / WrapHostMemory so far, and the seconds
  // those copies took (wall clock, including the host-side staging copy).
  int64_t placed_bytes() const;
  double placed_seconds() const;

  absl::StatusOr<std::unique_ptr<Buffer>> AllocateBuffer(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> WrapHostMemory(const void* data, size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> PlaceWeight(const TensorView& w, WeightUse use,
                                                      Tensor* tensor) override;
  // Host placement (memory_placement_cuda.h): the mapping registered
  // read-only with the driver, or a pinned copy; ValueGather reads its rows
  // over PCIe. Sharded placement: each shard's columns on its GPU.
  absl::StatusOr<std::unique_ptr<Buffer>> PlaceHostTable(const TensorView& w,
                                                         Tensor* tensor) override;
  absl::StatusOr<std::unique_ptr<ShardedMemory>> PlaceShardedTables(
      const std::vector<TensorView>& tables, const std::vector<MemoryShard>& shards) override;
  // The CUDA device index and the cudaStream_t the ops run on (for the
  // sharded placement's copies between devices).
  int device_index() const;
  void* stream() const;

  absl::Status Upload(const void* src, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* dst) override;
  absl::Status Synchronize() override;

  absl::Status MatMul(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& y) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& y) override;
  absl::Status Rope(const Tensor& x, const Tensor& positions, const Tensor& rope) override;
  absl::Status WriteKv(const Tensor& k, const Tensor& v, const Tensor& kv_rows,
                       const Tensor& k_cache, const Tensor& v_cache) override;
  absl::Status Attention(const AttentionShape& shape, const BatchDescriptor& batch, const Tensor& q,
                         const Tensor& k_cache, const Tensor& v_cache, const Tensor& out) override;
  absl::Status SwiGlu(const Tensor& a, const Tensor& b, const Tensor& y) override;
  absl::Status Add(const Tensor& x, const Tensor& y) override;
  absl::Status SigmoidGateRows(const Tensor& gate, const Tensor& x) override;
  absl::Status MemorySelect(const MemorySelectArgs& args) override;
  absl::Status ValueGather(const Tensor& values, const Tensor& rows, const Tensor& weights,
                           int64_t col_begin, int64_t col_end, const Tensor& out) override;

  bool SupportsStepGraphs() const override { return true; }
  absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStep(
      const std::function<absl::Status()>& ops) override;
  absl::Status ReplayStep(StepGraph& graph) override;

 private:
  struct Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  // A device copy of [data, data + bytes) named `name` (for the log line).
  absl::StatusOr<std::unique_ptr<Buffer>> CopyToDevice(const void* data, size_t bytes,
                                                       const char* name);

  std::unique_ptr<Impl> impl_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_CUDA_CUDA_BACKEND_H_
