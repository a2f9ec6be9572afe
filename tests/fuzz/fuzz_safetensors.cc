// Fuzz target: the safetensors header parser (SafetensorsFile::Open,
// engine/weights.h) on arbitrary file contents. The input is written to a
// file (Open maps a path) under $TMPDIR. Invariants: errors are DataLoss or
// NotFound; every tensor of an accepted file lies inside the mapping, and
// its first and last bytes can be read.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "engine/weights.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

const std::string& InputPath() {
  static const std::string* path = [] {
    const char* tmp = std::getenv("TMPDIR");
    return new std::string(std::string(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp") +
                           "/fuzz_safetensors_" + std::to_string(getpid()) + ".safetensors");
  }();
  return *path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memserve;  // NOLINT: a C entry point
  {
    std::ofstream out(InputPath(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    FUZZ_CHECK(out.good());
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(InputPath());
  if (!file.ok()) {
    FUZZ_CHECK(file.status().code() == absl::StatusCode::kDataLoss ||
               file.status().code() == absl::StatusCode::kNotFound);
    return 0;
  }
  const auto mapping = (*file)->mapping();
  const uint8_t* begin = mapping.data();
  const uint8_t* end = begin + mapping.size();
  volatile uint8_t sink = 0;
  for (const auto& [name, tensor] : (*file)->tensors()) {
    const auto* bytes = static_cast<const uint8_t*>(tensor.data);
    FUZZ_CHECK(bytes >= begin && bytes <= end);
    FUZZ_CHECK(tensor.nbytes() <= static_cast<size_t>(end - bytes));
    if (tensor.nbytes() > 0) sink = sink + bytes[0] + bytes[tensor.nbytes() - 1];
  }
  return 0;
}
