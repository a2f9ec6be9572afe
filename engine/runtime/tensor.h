// Device-neutral memory: a Buffer is a block of bytes allocated (or wrapped)
// by one Backend; a Tensor is a typed, shaped view into a Buffer. The model
// holds Tensors and passes them to Backend ops; it never sees the bytes
// (a Buffer exposes no pointer), so the same model code runs whether the
// buffer is host memory, a packed copy, or device memory.
#ifndef MEMSERVE_ENGINE_RUNTIME_TENSOR_H_
#define MEMSERVE_ENGINE_RUNTIME_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "engine/dtype.h"

namespace memserve {

class Backend;

// Where a buffer's bytes live.
enum class Device { kCpu, kCuda };
const char* DeviceName(Device device);

// A block of memory owned by whoever holds the unique_ptr the Backend
// returned (the Backend that made it must outlive it). Its contents are
// reached only through that Backend: Upload, Download and ops.
// Thread-safety: immutable after creation; the bytes follow the Backend's
// threading rules.
class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // The backend that allocated or wrapped it.
  const Backend* backend() const { return backend_; }
  Device device() const { return device_; }
  // The buffer type, for logs and tests: e.g. "cpu" (host memory the
  // backend allocated), "cpu-mapped" (a wrapped host range, e.g. the
  // checkpoint mapping, zero-copy), "cpu-packed" (a weight in the CPU
  // kernels' panel layout).
  const char* type_name() const { return type_name_; }
  size_t size() const { return size_; }

 protected:
  Buffer(const Backend* backend, Device device, const char* type_name, size_t size)
      : backend_(backend), device_(device), type_name_(type_name), size_(size) {}

 private:
  const Backend* backend_;
  Device device_;
  const char* type_name_;  // a string literal
  size_t size_;
};

// A contiguous row-major view [shape[0], ..., shape[rank-1]] of `dtype`
// elements starting `offset` bytes into `buffer`. A Tensor does not own its
// buffer; a default Tensor (buffer null) means "absent" where an op takes an
// optional tensor. Copyable and cheap (no allocation).
struct Tensor {
  static constexpr int kMaxRank = 4;

  Buffer* buffer = nullptr;
  size_t offset = 0;
  DType dtype = DType::kF32;
  int rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0};

  // A view of `buffer` at `offset`. REQUIRES: 1 <= shape.size() <= kMaxRank.
  static Tensor Of(Buffer* buffer, DType dtype, std::initializer_list<int64_t> shape,
                   size_t offset = 0);

  bool present() const { return buffer != nullptr; }
  int64_t dim(int i) const { return shape[i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // Elements of one index of dimension 0 (the product of the other dims).
  int64_t row_numel() const;
  // Whether the view lies inside its buffer.
  bool InBounds() const { return buffer != nullptr && offset + nbytes() <= buffer->size(); }

  // Rows [first, first + count) of dimension 0. REQUIRES: rank >= 1.
  Tensor Rows(int64_t first, int64_t count) const;
  // The same bytes with another shape. REQUIRES: same numel.
  Tensor Reshaped(std::initializer_list<int64_t> new_shape) const;

  // "F32[4, 128] cpu" for error messages.
  std::string DebugString() const;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_RUNTIME_TENSOR_H_
