// Helpers of the backend op tests: host tensors with random values, and
// backend tensors made from them (uploaded, placed, downloaded), so that a
// test reads like "upload, run the op, download, compare with a loop".
#ifndef MEMSERVE_ENGINE_BACKEND_BACKEND_TEST_UTIL_H_
#define MEMSERVE_ENGINE_BACKEND_BACKEND_TEST_UTIL_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/dtype.h"
#include "engine/runtime/tensor.h"
#include "engine/weights.h"
#include "gtest/gtest.h"

namespace memserve {

// A host tensor owned by the test, viewed as a TensorView (a weight as the
// checkpoint mapping would hold it).
struct OwnedTensor {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  TensorView view;
  // fp32 values the backend sees (bf16-rounded for BF16 tensors).
  std::vector<float> values;
};

inline OwnedTensor FromValues(std::vector<float> values, std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.values = std::move(values);
  t.view.name = "test";
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.f32 = t.values;
    t.view.data = t.f32.data();
  } else {
    t.bf16.resize(t.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      t.bf16[i] = F32ToBf16(t.values[i]);
      t.values[i] = Bf16ToF32(t.bf16[i]);
    }
    t.view.data = t.bf16.data();
  }
  return t;
}

inline std::vector<float> RandomVector(int64_t n, std::mt19937* rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(*rng);
  return v;
}

inline OwnedTensor MakeTensor(std::vector<int64_t> shape, DType dtype, std::mt19937* rng,
                              float scale = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return FromValues(RandomVector(n, rng, scale), std::move(shape), dtype);
}

// Backend tensors for a test; their buffers live as long as this object.
// A failing backend call is a test failure (ADD_FAILURE) and yields an
// absent tensor / empty vector.
class TestTensors {
 public:
  explicit TestTensors(Backend* backend) : backend_(backend) {}

  // A new F32/I32/I64 tensor holding `values`.
  Tensor F32(const std::vector<float>& values, std::initializer_list<int64_t> shape) {
    return Make(DType::kF32, shape, values.data());
  }
  Tensor I32(const std::vector<int32_t>& values, std::initializer_list<int64_t> shape) {
    return Make(DType::kI32, shape, values.data());
  }
  Tensor I64(const std::vector<int64_t>& values, std::initializer_list<int64_t> shape) {
    return Make(DType::kI64, shape, values.data());
  }
  // A new tensor filled with `fill` (F32) or zero bytes (other dtypes).
  Tensor Filled(DType dtype, std::initializer_list<int64_t> shape, float fill = 0.0f) {
    const Tensor probe = Tensor::Of(nullptr, dtype, shape);
    std::vector<char> bytes(probe.nbytes(), 0);
    if (dtype == DType::kF32) {
      std::vector<float> v(probe.numel(), fill);
      return Make(dtype, shape, v.data());
    }
    return Make(dtype, shape, bytes.data());
  }
  // `table` as the F32 [2, max_positions, head_dim / 2] tensor Rope takes.
  Tensor Rope(const RopeTable& table) {
    std::vector<float> both = table.cos;
    both.insert(both.end(), table.sin.begin(), table.sin.end());
    return F32(both, {2, table.max_positions, table.head_dim / 2});
  }
  // `w` placed on the backend for `use` (the backend may pack or copy it).
  // REQUIRES: w outlives this object.
  Tensor Weight(const OwnedTensor& w, WeightUse use = WeightUse::kOther) {
    Tensor t;
    absl::StatusOr<std::unique_ptr<Buffer>> b = backend_->PlaceWeight(w.view, use, &t);
    if (!b.ok()) {
      ADD_FAILURE() << "PlaceWeight: " << b.status();
      return Tensor();
    }
    buffers_.push_back(*std::move(b));
    return t;
  }

  std::vector<float> ReadF32(const Tensor& t) { return Read<float>(t); }
  std::vector<int64_t> ReadI64(const Tensor& t) { return Read<int64_t>(t); }

 private:
  Tensor Make(DType dtype, std::initializer_list<int64_t> shape, const void* data) {
    const Tensor probe = Tensor::Of(nullptr, dtype, shape);
    absl::StatusOr<std::unique_ptr<Buffer>> b = backend_->AllocateBuffer(probe.nbytes());
    if (!b.ok()) {
      ADD_FAILURE() << "AllocateBuffer: " << b.status();
      return Tensor();
    }
    Tensor t = Tensor::Of(b->get(), dtype, shape);
    buffers_.push_back(*std::move(b));
    const absl::Status s = backend_->Upload(data, t);
    if (!s.ok()) ADD_FAILURE() << "Upload: " << s;
    return t;
  }
  template <typename T>
  std::vector<T> Read(const Tensor& t) {
    std::vector<T> v(t.numel());
    const absl::Status s = backend_->Download(t, v.data());
    if (!s.ok()) {
      ADD_FAILURE() << "Download: " << s;
      return {};
    }
    return v;
  }

  Backend* backend_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_BACKEND_BACKEND_TEST_UTIL_H_
