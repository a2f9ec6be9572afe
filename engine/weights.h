// Checkpoint tensors on mmap: SafetensorsFile validates one .safetensors file
// strictly; WeightStore is the name -> TensorView map over a checkpoint dir.
#ifndef MEMSERVE_ENGINE_WEIGHTS_H_
#define MEMSERVE_ENGINE_WEIGHTS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/dtype.h"

namespace memserve {

// A read-only view of a tensor living inside a file mapping. Valid as long
// as the SafetensorsFile / WeightStore that returned it is alive.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // aligned to DTypeSize(dtype)
  // I8 matmul weights [rows, in]: the F32 scale of each block of 32 columns,
  // [rows, in / 32] (weight = int8 value x its block's scale); null otherwise.
  const float* scales = nullptr;

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
};

// One memory-mapped .safetensors file. Open() validates everything before
// returning: 8-byte header length within the file, header is a JSON object,
// known dtypes, shape x dtype size == byte range, ranges inside the data
// section, aligned, non-overlapping, and covering the data section. Errors are
// DataLoss (corrupt/truncated) or NotFound and name the file and the tensor.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // The whole read-only file mapping; every TensorView's bytes lie inside it
  // (e.g. for registering the host memory with a GPU runtime).
  absl::Span<const uint8_t> mapping() const {
    return absl::Span<const uint8_t>(static_cast<const uint8_t*>(map_), map_size_);
  }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// All tensors of a serving checkpoint directory: `model.safetensors`, or the
// shards listed in `model.safetensors.index.json`.
class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::string& dir);

  // The tensor `name`, checked against `shape`. NotFound / DataLoss errors
  // name the file, the tensor, and the expected vs. actual shape.
  absl::StatusOr<TensorView> Get(const std::string& name, absl::Span<const int64_t> shape) const;
  bool Has(const std::string& name) const;
  // Names of all tensors, for "unexpected tensor" checks.
  std::vector<std::string> Names() const;

 private:
  WeightStore() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, TensorView>> index_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_WEIGHTS_H_
