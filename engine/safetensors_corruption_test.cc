// SafetensorsFile::Open against corrupt files: targeted cases with exact
// messages, then thousands of random corruptions of a valid file. Every
// outcome must be either an error naming the file, or a set of tensors that
// all lie inside the mapping and whose bytes can all be read. Run it under
// AddressSanitizer too (bazel test --config=asan).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/testing/safetensors_writer.h"
#include "engine/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;
using testutil::MakeIotaTensor;
using testutil::MakeTempDir;
using testutil::RawSafetensors;
using testutil::SerializeSafetensors;
using testutil::TestTensor;
using testutil::WriteFile;

std::vector<TestTensor> BaseTensors() {
  return {
      MakeIotaTensor("tok_embeddings.weight", DType::kF32, {8, 4}),
      MakeIotaTensor("layers.0.attention.wq.weight", DType::kF32, {4, 4}, 1.0f, 0.25f),
      MakeIotaTensor("layers.0.feed_forward.keys", DType::kF32, {2, 3, 2}, -3.0f),
      MakeIotaTensor("memory.values.weight", DType::kBF16, {9, 4}, 0.5f, 0.5f),
      MakeIotaTensor("norm.weight", DType::kBF16, {4}),
      MakeIotaTensor("layers.0.ffn_norm.weight", DType::kBF16, {3}),
  };
}

// Checks the contract for one Open() outcome; returns true if it opened.
bool CheckOutcome(const std::string& path,
                  const absl::StatusOr<std::unique_ptr<SafetensorsFile>>& f,
                  const std::string& what) {
  if (!f.ok()) {
    EXPECT_THAT(std::string(f.status().message()), StartsWith(path + ": ")) << what;
    EXPECT_TRUE(f.status().code() == absl::StatusCode::kDataLoss) << what << ": " << f.status();
    return false;
  }
  const auto map = (*f)->mapping();
  const uint8_t* lo = map.data();
  const uint8_t* hi = map.data() + map.size();
  volatile uint8_t sink = 0;
  for (const auto& kv : (*f)->tensors()) {
    const TensorView& v = kv.second;
    EXPECT_EQ(v.name, kv.first);
    int64_t numel = 1;
    for (int64_t d : v.shape) {
      EXPECT_GE(d, 0);
      numel *= d;
    }
    EXPECT_EQ(numel, v.numel());
    const size_t nbytes = static_cast<size_t>(v.numel()) * DTypeSize(v.dtype);
    EXPECT_EQ(nbytes, v.nbytes());
    const uint8_t* p = static_cast<const uint8_t*>(v.data);
    EXPECT_TRUE(p >= lo && p <= hi && nbytes <= static_cast<size_t>(hi - p))
        << what << " " << kv.first;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % DTypeSize(v.dtype), 0u);
    if (p >= lo && p <= hi && nbytes <= static_cast<size_t>(hi - p)) {
      uint8_t acc = 0;
      for (size_t i = 0; i < nbytes; ++i) acc ^= p[i];
      sink = sink ^ acc;
    }
  }
  (void)sink;
  return true;
}

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("st_corrupt");
    path_ = dir_ + "/model.safetensors";
  }

  absl::Status OpenBytes(const std::string& bytes) {
    EXPECT_TRUE(WriteFile(path_, bytes).ok());
    auto f = SafetensorsFile::Open(path_);
    CheckOutcome(path_, f, "targeted");
    return f.status();
  }

  // Expects Open to fail with DataLoss and a message containing `substr`.
  void ExpectError(const std::string& bytes, const std::string& substr) {
    absl::Status st = OpenBytes(bytes);
    ASSERT_FALSE(st.ok()) << "expected failure containing: " << substr;
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(path_ + ": ")) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(substr)) << st;
  }

  // A file whose data section is `data_size` zero bytes and header `header`.
  static std::string WithHeader(const std::string& header, size_t data_size) {
    std::string h = header;
    while ((8 + h.size()) % 8 != 0) h += ' ';
    return RawSafetensors(h, std::string(data_size, '\0'));
  }

  std::string dir_;
  std::string path_;
};

TEST_F(CorruptionTest, ValidBaseOpens) {
  ASSERT_TRUE(OpenBytes(SerializeSafetensors(BaseTensors(), {{"k", "v"}})).ok());
}

TEST_F(CorruptionTest, TooShort) {
  ExpectError("", "file is 0 bytes, too short");
  ExpectError("abc", "file is 3 bytes, too short");
}

TEST_F(CorruptionTest, HeaderLength) {
  std::string f = SerializeSafetensors(BaseTensors());
  std::string bad = f;
  std::memset(&bad[0], 0, 8);
  bad[0] = 1;
  ExpectError(bad, "header length 1 is smaller than 2");
  std::memset(&bad[0], 0xff, 8);
  ExpectError(bad, "header length 18446744073709551615 exceeds the");
  ExpectError(RawSafetensors("{}", "").substr(0, 9),
              "header length 2 exceeds the 1 bytes after the length field");
}

TEST_F(CorruptionTest, HeaderOverLimit) {
  // A sparse file larger than the 100 MB header limit.
  const uint64_t n = 100'000'001;
  std::string head(8, '\0');
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  ASSERT_TRUE(WriteFile(path_, head).ok());
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(8 + n + 16)), 0);
  auto f = SafetensorsFile::Open(path_);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("exceeds the 100000000-byte limit"));
}

TEST_F(CorruptionTest, HeaderJson) {
  ExpectError(WithHeader("{not json", 0), "header is not valid JSON");
  ExpectError(WithHeader("[1, 2]", 0), "header must be a JSON object");
  ExpectError(WithHeader("{} trailing", 0), "header is not valid JSON");
  ExpectError(RawSafetensors(std::string("{}\0\0xx", 6), ""), "NUL byte at offset 2");
  ExpectError(WithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                         4),
              "duplicate key \"a\"");
  ExpectError(WithHeader(std::string(100, '[') + std::string(100, ']'), 0), "nested deeper than");
  ExpectError(WithHeader(R"({"__metadata__": {"a": 1}})", 0),
              "__metadata__ entry 'a' must be a string");
  ExpectError(WithHeader(R"({"__metadata__": [1]})", 0),
              "__metadata__ must be an object of strings");
}

TEST_F(CorruptionTest, TensorEntries) {
  auto one = [](const std::string& entry) { return absl::StrCat(R"({"t": )", entry, "}"); };
  ExpectError(WithHeader(one(R"(5)"), 4), "tensor 't': entry must be an object");
  ExpectError(WithHeader(one(R"({"shape": [1], "data_offsets": [0, 4]})"), 4),
              "tensor 't': missing \"dtype\"");
  ExpectError(WithHeader(one(R"({"dtype": "F16", "shape": [2], "data_offsets": [0, 4]})"), 4),
              "tensor 't': unsupported dtype \"F16\" (supported: F32, BF16, I8)");
  ExpectError(WithHeader(one(R"({"dtype": 3, "shape": [1], "data_offsets": [0, 4]})"), 4),
              "tensor 't': \"dtype\" must be a string");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "data_offsets": [0, 4]})"), 4),
              "tensor 't': missing \"shape\"");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]})"), 4),
              "tensor 't': shape[0] must be a non-negative integer");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]})"), 4),
              "tensor 't': shape[0] must be a non-negative integer, got float");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]})"), 4),
              "shape[0] must be a non-negative integer, got string");
  ExpectError(
      WithHeader(one(R"({"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]})"),
                 4),
      "tensor 't': rank 9 exceeds the limit of 8");
  ExpectError(
      WithHeader(one(R"({"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904],
                                 "data_offsets": [0, 4]})"),
                 4),
      "has too many elements");
  ExpectError(
      WithHeader(
          one(R"({"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]})"), 4),
      "is too large");
  ExpectError(
      WithHeader(one(R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]})"),
                 4),
      "needs 4611686018427387904 x 4 bytes");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [1]})"), 4), "missing \"data_offsets\"");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})"), 4),
              "\"data_offsets\" must be a list of two non-negative integers");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})"), 4),
              "\"data_offsets\" must be a list of two non-negative integers");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]})"), 4),
              "data_offsets [4, 0] has begin > end");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})"), 4),
              "tensor 't': data_offsets [0, 8] exceed the data section of 4 bytes");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]})"), 4),
              "tensor 't': shape [2] x F32 needs 2 x 4 bytes but data_offsets [0, 4] hold 4");
  ExpectError(WithHeader(one(R"({"dtype": "F32", "shape": [], "data_offsets": [0, 2]})"), 2),
              "needs 1 x 4 bytes");
  ExpectError(
      WithHeader(R"({"\u0001x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4),
      "tensor '\\x01x'");
  ExpectError(WithHeader(R"({"": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4),
              "empty tensor name");
}

TEST_F(CorruptionTest, Layout) {
  // Misaligned: an F32 after a 2-byte BF16.
  ExpectError(WithHeader(R"({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})",
                         6),
              "tensor 'b': data at file offset");
  // The header length itself can misalign the data section.
  ExpectError(RawSafetensors(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd"),
              "is not aligned to 4 bytes");
  ExpectError(WithHeader(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                         8),
              "tensor 'b': data_offsets [4, 8] overlap tensor 'a' (ends at 8)");
  ExpectError(WithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                         4),
              "overlap tensor");
  ExpectError(WithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                         12),
              "tensor 'b': data section bytes [4, 8) before it belong to no tensor");
  ExpectError(WithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12),
              "data section bytes [4, 12) after the last tensor belong to no tensor");
  ExpectError(WithHeader("{}", 4), "data section bytes [0, 4) after the last tensor");
  // Truncated data section.
  std::string f = SerializeSafetensors(BaseTensors());
  ExpectError(f.substr(0, f.size() - 1), "exceed the data section");
}

TEST_F(CorruptionTest, AcceptedOddities) {
  // Empty tensors anywhere between others, zero-dims, leading whitespace.
  EXPECT_TRUE(
      OpenBytes(WithHeader(R"(  {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "e": {"dtype": "BF16", "shape": [0, 9223372036854775807], "data_offsets": [4, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "x": {"dtype": "F32", "shape": [1],
      "data_offsets": [8, 12], "extra": "ignored"}})",
                           12))
          .ok());
}

// ---------------------------------------------------------------------------
// Random corruptions.

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  uint64_t U(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  bool Coin() { return U(2) == 0; }

  uint64_t InterestingInt() {
    static const uint64_t kVals[] = {0,
                                     1,
                                     2,
                                     3,
                                     4,
                                     7,
                                     8,
                                     15,
                                     16,
                                     31,
                                     255,
                                     256,
                                     4096,
                                     65535,
                                     1ull << 31,
                                     (1ull << 32) - 1,
                                     1ull << 32,
                                     1ull << 62,
                                     (1ull << 63) - 1,
                                     1ull << 63,
                                     ~0ull};
    switch (U(3)) {
      case 0:
        return kVals[U(sizeof(kVals) / sizeof(kVals[0]))];
      case 1:
        return U(300);
      default:
        return rng_();
    }
  }

  json RandomScalar() {
    switch (U(8)) {
      case 0:
        return json(static_cast<int64_t>(-1 - static_cast<int64_t>(U(1000))));
      case 1:
        return json(InterestingInt());
      case 2:
        return json(1.5);
      case 3:
        return json("F32");
      case 4:
        return json("BF16");
      case 5:
        return json(nullptr);
      case 6:
        return json::array();
      default:
        return json(static_cast<int64_t>(U(64)));
    }
  }

  // Structured damage to one field of the header.
  void MutateJson(json* h) {
    std::vector<std::string> names;
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (it.key() != "__metadata__") names.push_back(it.key());
    }
    const std::string& n = names[U(names.size())];
    json& e = (*h)[n];
    switch (U(14)) {
      case 0: {  // swap offsets of two tensors
        const std::string& m = names[U(names.size())];
        std::swap(e["data_offsets"], (*h)[m]["data_offsets"]);
        break;
      }
      case 1:
        e["data_offsets"][U(2)] = InterestingInt();
        break;
      case 2:
        e["data_offsets"][U(2)] = static_cast<int64_t>(e["data_offsets"][U(2)].get<uint64_t>()) +
                                  static_cast<int64_t>(U(9)) - 4;
        break;
      case 3:
        e["shape"][U(e["shape"].size() + 1)] = InterestingInt();
        break;
      case 4:
        e["shape"] = json::array({static_cast<int64_t>(-1 - static_cast<int64_t>(U(5)))});
        break;
      case 5:
        e["dtype"] = RandomScalar();
        if (Coin()) e["dtype"] = Coin() ? "F16" : "I64";
        break;
      case 6:
        e.erase(Coin() ? "dtype" : (Coin() ? "shape" : "data_offsets"));
        break;
      case 7: {  // overlap: copy another tensor's range
        const std::string& m = names[U(names.size())];
        e["data_offsets"] = (*h)[m]["data_offsets"];
        break;
      }
      case 8:
        (*h)[absl::StrCat("extra", U(3))] =
            json{{"dtype", "F32"}, {"shape", {U(4)}}, {"data_offsets", {U(40), U(80)}}};
        break;
      case 9:
        (*h)["__metadata__"] = Coin() ? json{{"x", RandomScalar()}} : RandomScalar();
        break;
      case 10:
        e = RandomScalar();
        break;
      case 11:
        e["shape"] = json::array();
        for (int i = 0, k = static_cast<int>(U(12)); i < k; ++i) e["shape"].push_back(U(3));
        break;
      case 12:
        e["data_offsets"] = json::array({RandomScalar(), RandomScalar()});
        break;
      default:
        e[absl::StrCat("k", U(3))] = RandomScalar();
        break;
    }
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
};

std::string SetHeaderLength(std::string f, uint64_t n) {
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return f;
}

TEST_F(CorruptionTest, RandomCorruptions) {
  const std::vector<TestTensor> tensors = BaseTensors();
  const std::string base = SerializeSafetensors(tensors, {{"format", "pt"}});
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(base[i]);
  const std::string header_text = base.substr(8, header_len);
  const std::string data = base.substr(8 + header_len);
  const json header = json::parse(header_text);

  constexpr int kSeeds = 8800;  // 800 per kind; ~2 s, ~4 s under ASan
  constexpr int kKinds = 11;
  int opened[kKinds] = {0};
  int failed[kKinds] = {0};
  for (int seed = 0; seed < kSeeds; ++seed) {
    Mutator m(static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull + 1);
    const int kind = seed % kKinds;
    std::string f = base;
    switch (kind) {
      case 0:  // truncate
        f.resize(m.U(f.size()));
        break;
      case 1: {  // flip bits in the length field and header
        const int flips = 1 + static_cast<int>(m.U(4));
        for (int i = 0; i < flips; ++i) f[m.U(8 + header_len)] ^= static_cast<char>(1u << m.U(8));
        break;
      }
      case 2: {  // overwrite random bytes anywhere
        const int n = 1 + static_cast<int>(m.U(6));
        for (int i = 0; i < n; ++i) f[m.U(f.size())] = static_cast<char>(m.U(256));
        break;
      }
      case 3:  // header length: huge, small, or off by a little
        switch (m.U(3)) {
          case 0:
            f = SetHeaderLength(f, m.InterestingInt());
            break;
          case 1:
            f = SetHeaderLength(f, m.U(header_len + 40));
            break;
          default:
            f = SetHeaderLength(f, header_len + m.U(17) - 8);
            break;
        }
        break;
      case 4:  // header replaced by random bytes
        for (uint64_t i = 0; i < header_len; ++i) f[8 + i] = static_cast<char>(m.U(256));
        break;
      case 5: {  // header replaced by random JSON-ish characters
        static const char kAlpha[] = "{}[]\":,0123456789-eE. \\u";
        for (uint64_t i = 0; i < header_len; ++i) {
          if (m.U(4) == 0) f[8 + i] = kAlpha[m.U(sizeof(kAlpha) - 1)];
        }
        break;
      }
      case 6:
      case 7: {  // structured damage, re-serialized (maybe with resized data)
        json h = header;
        const int n = 1 + static_cast<int>(m.U(3));
        for (int i = 0; i < n; ++i) {
          // A mutation may meet a value an earlier one made non-object:
          // nlohmann then throws in the test's own code; skip that mutation.
          try {
            m.MutateJson(&h);
          } catch (const json::exception&) {
          }
        }
        std::string text = h.dump();
        while ((8 + text.size()) % 8 != 0 && m.U(4) != 0) text += ' ';
        std::string d = data;
        if (m.U(4) == 0) d.resize(m.U(d.size() + 64));
        f = RawSafetensors(text, d);
        break;
      }
      case 8: {  // duplicate a key in the text
        std::string text = header_text;
        const size_t pos = text.find("\"norm.weight\"");
        const size_t end = text.find('}', pos);
        text.insert(1, text.substr(pos, end - pos + 1) + ",");
        if (m.Coin())
          text = absl::StrReplaceAll(text, {{"\"norm.weight\"", "\"tok_embeddings.weight\""}});
        f = RawSafetensors(text, data);
        break;
      }
      case 9: {  // replace a digit run with a random number
        std::string text = header_text;
        size_t pos = m.U(text.size());
        while (pos < text.size() && !(text[pos] >= '0' && text[pos] <= '9')) ++pos;
        if (pos < text.size()) {
          size_t end = pos;
          while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
          std::string num = std::to_string(m.InterestingInt());
          if (m.U(5) == 0) num = "-" + num;
          if (m.U(5) == 0) num += ".0";
          if (m.U(7) == 0) num = "1e400";
          text.replace(pos, end - pos, num);
        }
        f = RawSafetensors(text, data);
        break;
      }
      default: {  // insert or delete a few bytes inside the header
        const size_t pos = 8 + m.U(header_len);
        if (m.Coin()) {
          f.erase(pos, 1 + m.U(4));
        } else {
          f.insert(pos, std::string(1 + m.U(4), static_cast<char>(m.U(256))));
        }
        break;
      }
    }
    // Unlink first: rewriting a truncated file makes ext4 flush it on close
    // (auto_da_alloc), which is 10x slower than writing a new one.
    ::unlink(path_.c_str());
    ASSERT_TRUE(WriteFile(path_, f).ok());
    auto st = SafetensorsFile::Open(path_);
    const bool ok = CheckOutcome(path_, st, absl::StrCat("seed ", seed, " kind ", kind));
    (ok ? opened : failed)[kind]++;
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "stopping at seed " << seed << " kind " << kind;
      return;
    }
  }
  int total_failed = 0;
  int total_opened = 0;
  for (int k = 0; k < kKinds; ++k) {
    std::printf("kind %2d: %4d rejected, %4d opened\n", k, failed[k], opened[k]);
    total_failed += failed[k];
    total_opened += opened[k];
    EXPECT_GT(failed[k], 0) << "kind " << k << " never produced a corrupt file";
  }
  // Data-only damage (kind 2) and truncations of padding keep some files valid.
  EXPECT_GT(total_opened, 0);
  EXPECT_GT(total_failed, kSeeds / 2);
}

}  // namespace
}  // namespace memserve
