#include "engine/runtime/tensor.h"

#include "absl/strings/str_cat.h"

namespace memserve {

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}

Tensor Tensor::Of(Buffer* buffer, DType dtype, std::initializer_list<int64_t> shape,
                  size_t offset) {
  Tensor t;
  t.buffer = buffer;
  t.offset = offset;
  t.dtype = dtype;
  for (int64_t d : shape) {
    if (t.rank == kMaxRank) break;
    t.shape[t.rank++] = d;
  }
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

int64_t Tensor::row_numel() const {
  int64_t n = 1;
  for (int i = 1; i < rank; ++i) n *= shape[i];
  return n;
}

Tensor Tensor::Rows(int64_t first, int64_t count) const {
  Tensor t = *this;
  t.offset += static_cast<size_t>(first * row_numel()) * DTypeSize(dtype);
  t.shape[0] = count;
  return t;
}

Tensor Tensor::Reshaped(std::initializer_list<int64_t> new_shape) const {
  Tensor t = Of(buffer, dtype, new_shape, offset);
  return t;
}

std::string Tensor::DebugString() const {
  std::string s = absl::StrCat(DTypeName(dtype), "[");
  for (int i = 0; i < rank; ++i) absl::StrAppend(&s, i > 0 ? ", " : "", shape[i]);
  absl::StrAppend(&s, "]");
  if (buffer != nullptr) absl::StrAppend(&s, " ", buffer->type_name());
  return s;
}

}  // namespace memserve
