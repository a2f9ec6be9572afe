#include "engine/testing/safetensors_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace testutil {

TestTensor MakeTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                      const std::vector<float>& values) {
  TestTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (dtype == DType::kF32) {
    t.bytes.resize(values.size() * 4);
    if (!values.empty()) std::memcpy(&t.bytes[0], values.data(), values.size() * 4);
  } else {
    t.bytes.resize(values.size() * 2);
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t b = F32ToBf16(values[i]);
      std::memcpy(&t.bytes[2 * i], &b, 2);
    }
  }
  return t;
}

TestTensor MakeIotaTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                          float start, float step) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + step * static_cast<float>(i);
  return MakeTensor(name, dtype, std::move(shape), v);
}

std::string SafetensorsHeaderJson(const std::vector<TestTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  // Keep file order = data order: build the text by hand (nlohmann sorts keys).
  std::string out = "{";
  bool first = true;
  if (!metadata.empty()) {
    out += "\"__metadata__\":";
    out += nlohmann::json(metadata).dump();
    first = false;
  }
  uint64_t offset = 0;
  for (const TestTensor& t : tensors) {
    if (!first) out += ",";
    first = false;
    nlohmann::json shape = nlohmann::json::array();
    for (int64_t d : t.shape) shape.push_back(d);
    absl::StrAppend(&out, nlohmann::json(t.name).dump(), ":{\"dtype\":\"", DTypeName(t.dtype),
                    "\",\"shape\":", shape.dump(), ",\"data_offsets\":[", offset, ",",
                    offset + t.bytes.size(), "]}");
    offset += t.bytes.size();
  }
  out += "}";
  return out;
}

std::string RawSafetensors(absl::string_view header_json, absl::string_view data) {
  std::string out(8, '\0');
  const uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.append(header_json.data(), header_json.size());
  out.append(data.data(), data.size());
  return out;
}

std::string SerializeSafetensors(const std::vector<TestTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::string header = SafetensorsHeaderJson(tensors, metadata);
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::string data;
  for (const TestTensor& t : tensors) data += t.bytes;
  return RawSafetensors(header, data);
}

absl::Status WriteFile(const std::string& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot create ", path));
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string MakeTempDir(const std::string& prefix) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::string tmpl =
      absl::StrCat(root != nullptr && *root != '\0' ? root : "/tmp", "/", prefix, "_XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "mkdtemp(%s) failed: %s\n", tmpl.c_str(), std::strerror(errno));
    std::abort();
  }
  return std::string(buf.data());
}

}  // namespace testutil
}  // namespace memserve
