// Test helpers: build .safetensors files (and raw bytes for corruption
// tests) without Python. Test-only; not part of the runtime.
#ifndef MEMSERVE_ENGINE_TESTING_SAFETENSORS_WRITER_H_
#define MEMSERVE_ENGINE_TESTING_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/dtype.h"

namespace memserve {
namespace testutil {

struct TestTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian element bytes, numel * DTypeSize(dtype)
};

// A tensor of `shape` holding `values` (fp32, or rounded to bf16).
// REQUIRES: values.size() == product of shape.
TestTensor MakeTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                      const std::vector<float>& values);
// A tensor whose element i is start + i * step (before any bf16 rounding).
TestTensor MakeIotaTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                          float start = 0.0f, float step = 1.0f);

// The JSON header text (without the length prefix and padding) for tensors
// laid out back to back in the given order.
std::string SafetensorsHeaderJson(const std::vector<TestTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// A complete, valid file image: 8-byte little-endian header length, the JSON
// header padded with spaces so that the data section starts at a multiple of
// 8, then the tensors' bytes in order.
std::string SerializeSafetensors(const std::vector<TestTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});

// A file image from an arbitrary header text and data bytes (no padding, no
// checks): for building deliberately broken files.
std::string RawSafetensors(absl::string_view header_json, absl::string_view data);

// Writes `contents` to `path` (truncating).
absl::Status WriteFile(const std::string& path, absl::string_view contents);

// A fresh, empty directory under $TEST_TMPDIR (or /tmp), unique per call.
std::string MakeTempDir(const std::string& prefix);

}  // namespace testutil
}  // namespace memserve

#endif  // MEMSERVE_ENGINE_TESTING_SAFETENSORS_WRITER_H_
