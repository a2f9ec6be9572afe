#include "engine/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"
#include "engine/strict_json.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using json = nlohmann::json;

// Limits of the format as memserve reads it (docs/checkpoint-format.md).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation
constexpr int kMaxHeaderDepth = 8;
constexpr size_t kMaxRank = 8;
constexpr size_t kMaxIndexBytes = 64 << 20;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

// Tensor names come from untrusted files: keep messages printable.
std::string Quote(absl::string_view name) { return absl::StrCat("'", absl::CHexEscape(name), "'"); }

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

const char* JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "float";
    default:
      return "unsupported value";
  }
}

// A JSON integer >= 0 (floats, negative numbers and other types fail).
bool AsNonNegative(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = static_cast<uint64_t>(i);
    return true;
  }
  return false;
}

bool ParseDType(const std::string& s, DType* t) {
  if (s == "F32") {
    *t = DType::kF32;
    return true;
  }
  if (s == "BF16") {
    *t = DType::kBF16;
    return true;
  }
  if (s == "I8") {
    *t = DType::kI8;
    return true;
  }
  return false;
}

struct Range {
  uint64_t begin;
  uint64_t end;
  const std::string* name;
};

// 0 = absent, 1 = regular file, -1 = exists but is not a regular file.
int FileKind(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return S_ISREG(st.st_mode) ? 1 : -1;
}

}  // namespace

int64_t TensorView::numel() const {
  // SafetensorsFile guarantees the product of the non-zero dims fits int64.
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) return 0;
    n *= d;
  }
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": open"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": fstat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::DataLossError(
        absl::StrCat(path, ": file is ", file_size,
                     " bytes, too short for the 8-byte header length (truncated?)"));
  }
  if (file_size > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat(path, ": file too large to map"));
  }
  // MAP_NORESERVE: the table may be far larger than free RAM + swap; pages
  // are read from the page cache on demand and never copied.
  void* map = ::mmap(nullptr, static_cast<size_t>(file_size), PROT_READ,
                     MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) return absl::ErrnoToStatus(map_err, absl::StrCat(path, ": mmap"));

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = static_cast<size_t>(file_size);
  const uint8_t* base = static_cast<const uint8_t*>(map);

  auto file_error = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(path, ": ", msg));
  };

  // 8-byte little-endian header length.
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len < 2) {
    return file_error(absl::StrCat("header length ", header_len, " is smaller than 2 (\"{}\")"));
  }
  if (header_len > file_size - 8) {
    return file_error(absl::StrCat("header length ", header_len, " exceeds the ", file_size - 8,
                                   " bytes after the length field (truncated or corrupt)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return file_error(absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes,
                                   "-byte limit"));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  const uint8_t* data = base + data_start;

  json header;
  absl::Status parsed = ParseStrictJson(
      absl::string_view(reinterpret_cast<const char*>(base + 8), static_cast<size_t>(header_len)),
      kMaxHeaderDepth, &header);
  if (!parsed.ok()) return file_error(absl::StrCat("header is not valid JSON: ", parsed.message()));
  if (!header.is_object()) {
    return file_error(absl::StrCat("header must be a JSON object, got ", JsonTypeName(header)));
  }

  std::vector<Range> ranges;
  ranges.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return file_error(
            absl::StrCat("__metadata__ must be an object of strings, got ", JsonTypeName(entry)));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return file_error(absl::StrCat("__metadata__ entry ", Quote(m.key()),
                                         " must be a string, got ", JsonTypeName(m.value())));
        }
      }
      continue;
    }
    auto tensor_error = [&](absl::string_view msg) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", Quote(name), ": ", msg));
    };
    if (name.empty()) return tensor_error("empty tensor name");
    if (!entry.is_object())
      return tensor_error(absl::StrCat("entry must be an object, got ", JsonTypeName(entry)));

    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end()) return tensor_error("missing \"dtype\"");
    if (!dtype_it->is_string())
      return tensor_error(
          absl::StrCat("\"dtype\" must be a string, got ", JsonTypeName(*dtype_it)));
    TensorView view;
    view.name = name;
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    if (!ParseDType(dtype_name, &view.dtype)) {
      return tensor_error(absl::StrCat("unsupported dtype \"", absl::CHexEscape(dtype_name),
                                       "\" (supported: F32, BF16, I8)"));
    }
    const uint64_t elem = DTypeSize(view.dtype);

    auto shape_it = entry.find("shape");
    if (shape_it == entry.end()) return tensor_error("missing \"shape\"");
    if (!shape_it->is_array())
      return tensor_error(absl::StrCat("\"shape\" must be a list, got ", JsonTypeName(*shape_it)));
    if (shape_it->size() > kMaxRank) {
      return tensor_error(
          absl::StrCat("rank ", shape_it->size(), " exceeds the limit of ", kMaxRank));
    }
    // numel = product of dims; the product of the non-zero dims must fit int64
    // so that numel(), strides and byte sizes never overflow downstream.
    uint64_t nonzero_product = 1;
    bool has_zero = false;
    for (size_t i = 0; i < shape_it->size(); ++i) {
      uint64_t d = 0;
      if (!AsNonNegative((*shape_it)[i], &d)) {
        return tensor_error(absl::StrCat("shape[", i, "] must be a non-negative integer, got ",
                                         JsonTypeName((*shape_it)[i])));
      }
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return tensor_error(absl::StrCat("shape[", i, "] = ", d, " is too large"));
      }
      view.shape.push_back(static_cast<int64_t>(d));
      if (d == 0) {
        has_zero = true;
        continue;
      }
      uint64_t p = 0;
      if (__builtin_mul_overflow(nonzero_product, d, &p) ||
          p > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return tensor_error(
            absl::StrCat("shape ", ShapeString(view.shape), "... has too many elements"));
      }
      nonzero_product = p;
    }
    const uint64_t numel = has_zero ? 0 : nonzero_product;

    auto off_it = entry.find("data_offsets");
    if (off_it == entry.end()) return tensor_error("missing \"data_offsets\"");
    uint64_t begin = 0, end = 0;
    if (!off_it->is_array() || off_it->size() != 2 || !AsNonNegative((*off_it)[0], &begin) ||
        !AsNonNegative((*off_it)[1], &end)) {
      return tensor_error(
          "\"data_offsets\" must be a list of two non-negative integers [begin, end]");
    }
    if (begin > end) {
      return tensor_error(absl::StrCat("data_offsets [", begin, ", ", end, "] has begin > end"));
    }
    if (end > data_size) {
      return tensor_error(absl::StrCat("data_offsets [", begin, ", ", end,
                                       "] exceed the data section of ", data_size,
                                       " bytes (truncated?)"));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, elem, &nbytes) || nbytes != end - begin) {
      return tensor_error(absl::StrCat("shape ", ShapeString(view.shape), " x ", dtype_name,
                                       " needs ", numel, " x ", elem, " bytes but data_offsets [",
                                       begin, ", ", end, "] hold ", end - begin));
    }
    if ((data_start + begin) % elem != 0) {
      return tensor_error(absl::StrCat("data at file offset ", data_start + begin,
                                       " is not aligned to ", elem, " bytes"));
    }
    view.data = data + begin;
    ranges.push_back(Range{begin, end, nullptr});
    auto ins = f->tensors_.emplace(name, std::move(view));
    ranges.back().name = &ins.first->first;
  }

  // The ranges must tile the data section: no overlaps, no holes, nothing
  // after the last tensor (the safetensors spec; a hole is a corruption sign).
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return *a.name < *b.name;
  });
  uint64_t cursor = 0;
  const std::string* prev = nullptr;
  for (const Range& r : ranges) {
    if (r.begin < cursor) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", Quote(*r.name), ": data_offsets [",
                                              r.begin, ", ", r.end, "] overlap tensor ",
                                              Quote(*prev), " (ends at ", cursor, ")"));
    }
    if (r.begin > cursor) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", Quote(*r.name),
                                              ": data section bytes [", cursor, ", ", r.begin,
                                              ") before it belong to no tensor"));
    }
    cursor = r.end;
    prev = r.name;
  }
  if (cursor != data_size) {
    return file_error(absl::StrCat("data section bytes [", cursor, ", ", data_size,
                                   ") after the last tensor belong to no tensor"));
  }
  return f;
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& dir) {
  const std::string single = dir + "/" + kSingleFile;
  const std::string index_path = dir + "/" + kIndexFile;
  const int single_kind = FileKind(single);
  const int index_kind = FileKind(index_path);

  std::unique_ptr<WeightStore> store(new WeightStore());
  store->dir_ = dir;

  if (single_kind != 0 && index_kind != 0) {
    return absl::DataLossError(absl::StrCat(dir, ": both ", kSingleFile, " and ", kIndexFile,
                                            " exist; a checkpoint has exactly one of them"));
  }
  if (single_kind == 0 && index_kind == 0) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile, " exists"));
  }

  if (single_kind != 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single));
    for (const auto& kv : file->tensors())
      store->index_.emplace(kv.first, std::make_pair(file.get(), kv.second));
    store->files_.push_back(std::move(file));
    return store;
  }

  // Sharded: {"weight_map": {tensor: shard file name}, ...other keys ignored}.
  std::string text;
  RETURN_IF_ERROR(ReadSmallFile(index_path, kMaxIndexBytes, &text));
  json index;
  absl::Status parsed = ParseStrictJson(text, 16, &index);
  auto index_error = [&](absl::string_view msg) {
    return absl::DataLossError(absl::StrCat(index_path, ": ", msg));
  };
  if (!parsed.ok()) return index_error(absl::StrCat("not valid JSON: ", parsed.message()));
  if (!index.is_object()) return index_error("must be a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return index_error("\"weight_map\" must be an object {tensor name: shard file}");
  }
  std::map<std::string, std::string> weight_map;
  std::map<std::string, std::string> first_tensor;  // shard file -> a tensor listed in it
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return index_error(
          absl::StrCat("weight_map entry for tensor ", Quote(it.key()), " must be a file name"));
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos) {
      return index_error(absl::StrCat("weight_map entry for tensor ", Quote(it.key()),
                                      ": shard name ", Quote(shard),
                                      " must be a plain file name in the checkpoint directory"));
    }
    weight_map.emplace(it.key(), shard);
    first_tensor.emplace(shard, it.key());
    shards.insert(shard);
  }

  std::map<std::string, const SafetensorsFile*> by_shard;
  for (const std::string& shard : shards) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
        SafetensorsFile::Open(dir + "/" + shard);
    if (!opened.ok() && opened.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(index_path, ": tensor ",
                                              Quote(first_tensor.at(shard)), " is mapped to ",
                                              opened.status().message()));
    }
    if (!opened.ok()) return opened.status();
    std::unique_ptr<SafetensorsFile> file = *std::move(opened);
    for (const auto& kv : file->tensors()) {
      auto ins = store->index_.emplace(kv.first, std::make_pair(file.get(), kv.second));
      if (!ins.second) {
        return absl::DataLossError(
            absl::StrCat(dir, ": tensor ", Quote(kv.first), " appears in both ",
                         ins.first->second.first->path(), " and ", file->path()));
      }
    }
    by_shard.emplace(shard, file.get());
    store->files_.push_back(std::move(file));
  }
  // The index and the shards must agree both ways.
  for (const auto& kv : weight_map) {
    const SafetensorsFile* expected = by_shard.at(kv.second);
    auto it = store->index_.find(kv.first);
    if (it == store->index_.end() || it->second.first != expected) {
      return absl::DataLossError(absl::StrCat(index_path, ": tensor ", Quote(kv.first),
                                              " is mapped to ", expected->path(),
                                              " but that file does not contain it"));
    }
  }
  for (const auto& kv : store->index_) {
    if (weight_map.count(kv.first) == 0) {
      return absl::DataLossError(absl::StrCat(kv.second.first->path(), ": tensor ", Quote(kv.first),
                                              " is not listed in ", index_path));
    }
  }
  return store;
}

absl::StatusOr<TensorView> WeightStore::Get(const std::string& name,
                                            absl::Span<const int64_t> shape) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(
        dir_, ": tensor ", Quote(name), " not found (expected shape ", ShapeString(shape), ")"));
  }
  const TensorView& view = it->second.second;
  if (!std::equal(view.shape.begin(), view.shape.end(), shape.begin(), shape.end())) {
    return absl::DataLossError(absl::StrCat(it->second.first->path(), ": tensor ", Quote(name),
                                            ": expected shape ", ShapeString(shape), ", found ",
                                            ShapeString(view.shape)));
  }
  return view;
}

bool WeightStore::Has(const std::string& name) const { return index_.count(name) != 0; }

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& kv : index_) names.push_back(kv.first);
  return names;
}

}  // namespace memserve
