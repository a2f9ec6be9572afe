// SentencePieceModel against Debian's libsentencepiece (v0.1.97, through the
// test-only shim) in one process: identical ids on thousands of random
// strings for models trained here with spm_train and for small hand-made
// models that force ties, unused pieces and control pieces; clear errors for
// malformed model files; linear time on 1 MB inputs.
#include "engine/sentencepiece_model.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/sentencepiece_shim.h"
#include "engine/testing/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// A tiny protobuf writer/reader for building and rewriting model files (the
// test's own, so that the code under test is not its own reference).

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string VarintField(int field, int64_t v) {
  return Varint(static_cast<uint64_t>(field) << 3) + Varint(static_cast<uint64_t>(v));
}
std::string BytesField(int field, const std::string& s) {
  return Varint((static_cast<uint64_t>(field) << 3) | 2) + Varint(s.size()) + s;
}
std::string FloatField(int field, float f) {
  std::string out = Varint((static_cast<uint64_t>(field) << 3) | 5);
  char b[4];
  std::memcpy(b, &f, 4);
  return out + std::string(b, 4);
}

enum Type { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct TestPiece {
  std::string text;
  float score;
  int type;
};

std::string PieceBytes(const TestPiece& p) {
  return BytesField(1, BytesField(1, p.text) + FloatField(2, p.score) + VarintField(3, p.type));
}

// Top-level fields of a serialized message, each as (number, whole field bytes).
std::vector<std::pair<int, std::string>> SplitFields(const std::string& s) {
  std::vector<std::pair<int, std::string>> out;
  size_t pos = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      const uint8_t b = static_cast<uint8_t>(s.at(pos++));
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < s.size()) {
    const size_t start = pos;
    const uint64_t key = varint();
    switch (key & 7) {
      case 0:
        varint();
        break;
      case 1:
        pos += 8;
        break;
      case 2: {
        const uint64_t len = varint();
        pos += len;
        break;
      }
      case 5:
        pos += 4;
        break;
      default:
        ADD_FAILURE() << "unexpected wire type in a model file";
        return out;
    }
    out.emplace_back(static_cast<int>(key >> 3), s.substr(start, pos - start));
  }
  return out;
}

// The payload of a length-delimited field's bytes (as SplitFields gives them).
std::string Payload(const std::string& field) {
  size_t pos = 0;
  while (static_cast<uint8_t>(field[pos]) & 0x80) ++pos;  // key
  ++pos;
  uint64_t len = 0;
  for (int shift = 0;; shift += 7) {
    const uint8_t b = static_cast<uint8_t>(field[pos++]);
    len |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  return field.substr(pos, len);
}

// ---------------------------------------------------------------------------
// Random text.

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const char* const kWords[] = {
    "the",      "memory", "layer",  "model", "token",      "value",    "query",     "quick",
    "brown",    "fox",    "lazy",   "dog",   "café",       "naïve",    "résumé",    "Zürich",
    "São",      "Paulo",  "日本語", "東京",  "こんにちは", "世界",     "中文",      "한국어",
    "Привет",   "мир",    "Ελλάδα", "שלום",  "مرحبا",      "😀",        "🚀",         "🎉",
    "❤️",   "→",      "≤",      "€",     "…",          "“quoted”", "12345",     "2024",
    "Ｆｕｌｌ", "ｶﾀｶﾅ",   "ﬁne",    "①②",    "Ⅻ",          "x²",       "e\xCC\x81", "Å",
};

const uint32_t kCodepointRanges[][2] = {
    {0x20, 0x7E},       {0x00, 0x1F},         {0x7F, 0x9F},       {0xA0, 0xFF},
    {0x100, 0x24F},     {0x300, 0x36F},       {0x370, 0x3FF},     {0x400, 0x4FF},
    {0x590, 0x6FF},     {0x900, 0x97F},       {0xE00, 0xE7F},     {0x1100, 0x11FF},
    {0x2000, 0x206F},   {0x2100, 0x218F},     {0x2460, 0x24FF},   {0x2580, 0x2582},
    {0x3000, 0x30FF},   {0x3130, 0x318F},     {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},
    {0xE000, 0xE0FF},   {0xF900, 0xFAFF},     {0xFB00, 0xFB4F},   {0xFE00, 0xFE0F},
    {0xFF00, 0xFFEF},   {0xFFF0, 0xFFFF},     {0x1D400, 0x1D7FF}, {0x1F300, 0x1FAFF},
    {0x10000, 0x100FF}, {0x10FFF0, 0x10FFFF},
};

const char* const kBadBytes[] = {
    "\x80",
    "\xBF",
    "\xC0\xAF",
    "\xC1\x81",
    "\xE0\x80\xAF",
    "\xED\xA0\x80",
    "\xED\xBF\xBF",
    "\xF4\x90\x80\x80",
    "\xF5\x80\x80\x80",
    "\xFF",
    "\xFE",
    "\xE6\x97",
    "\xF0\x9F\x98",
    "\xC3",
    "\xEF\xBF\xBD",  // U+FFFD itself (valid)
};

const char* const kSpaces[] = {" ",        "  ",           "   ",          "\t",
                               "\n",       "\r\n",         " \t ",         "\xE3\x80\x80",
                               "\xC2\xA0", "\xE2\x80\x83", "\xE2\x96\x81", "\xE2\x96\x81 "};

class TextGenerator {
 public:
  TextGenerator(uint32_t seed, std::vector<std::string> extra) : rng_(seed), extra_(extra) {
    for (const char* w : kWords) extra_.push_back(w);
    for (const char* w : {"<s>", "</s>", "<unk>", "<0x41>", "<pad>", "▁", "▁the", "  the  "}) {
      extra_.push_back(w);
    }
  }

  std::string Next() {
    std::string s;
    const int parts = Pick(14);
    for (int i = 0; i < parts; ++i) AppendPart(&s);
    return s;
  }

  std::string Long(size_t bytes) {
    std::string s;
    while (s.size() < bytes) AppendPart(&s);
    return s;
  }

 private:
  int Pick(int n) { return static_cast<int>(rng_() % n); }

  void AppendPart(std::string* s) {
    switch (Pick(10)) {
      case 0:
      case 1:
      case 2:
        s->append(extra_[Pick(static_cast<int>(extra_.size()))]);
        break;
      case 3:
      case 4:
        s->append(kSpaces[Pick(sizeof(kSpaces) / sizeof(kSpaces[0]))]);
        break;
      case 5:
        s->append(kBadBytes[Pick(sizeof(kBadBytes) / sizeof(kBadBytes[0]))]);
        break;
      case 6:
        s->push_back(static_cast<char>(Pick(256)));
        break;
      case 7:
        s->append(std::to_string(rng_() % 100000));
        break;
      default: {
        const int n = 1 + Pick(6);
        const auto& r =
            kCodepointRanges[Pick(sizeof(kCodepointRanges) / sizeof(kCodepointRanges[0]))];
        for (int k = 0; k < n; ++k) {
          const uint32_t cp = r[0] + static_cast<uint32_t>(rng_() % (r[1] - r[0] + 1));
          if (cp >= 0xD800 && cp < 0xE000) continue;
          AppendUtf8(cp, s);
        }
      }
    }
  }

  std::mt19937 rng_;
  std::vector<std::string> extra_;
};

// A deterministic corpus: sentences of kWords plus mixed-script lines.
std::string Corpus() {
  std::mt19937 rng(1234);
  std::string out;
  const int n_words = sizeof(kWords) / sizeof(kWords[0]);
  for (int line = 0; line < 800; ++line) {
    const int n = 4 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out += (rng() % 9 == 0) ? "  " : " ";
      out += kWords[rng() % n_words];
      if (rng() % 5 == 0) out += std::to_string(rng() % 1000);
    }
    if (line % 7 == 0) out += "\t(" + std::to_string(line) + ")";
    out += ".\n";
  }
  return out;
}

// ---------------------------------------------------------------------------

struct Models {
  std::string dir;
  std::map<std::string, std::string> files;  // name -> serialized model
  std::string error;
};

Models* g_models = nullptr;

std::string ReadAll(const std::string& path) {
  std::string data;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return data;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  std::fclose(f);
  return data;
}

// Trains `name` with spm_train; records a failure in g_models->error.
void Train(const std::string& name, const std::string& flags) {
  const std::string& dir = g_models->dir;
  const std::string cmd = absl::StrCat(
      "/usr/bin/spm_train --input=", dir, "/corpus.txt --model_prefix=", dir, "/", name,
      " --num_threads=1 --minloglevel=2 --random_seed=1 --hard_vocab_limit=false ", flags, " > ",
      dir, "/", name, ".log 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    absl::StrAppend(&g_models->error, "spm_train failed: ", cmd, "\n",
                    ReadAll(dir + "/" + name + ".log"));
    return;
  }
  g_models->files[name] = ReadAll(dir + "/" + name + ".model");
}

// Rewrites a model: pieces through `piece_fn` (may change type), then
// `append` (protobuf merges a repeated singular message field, so appending
// a normalizer_spec or trainer_spec overrides single fields).
std::string Rewrite(const std::string& model,
                    const std::function<void(int id, TestPiece* p)>& piece_fn,
                    const std::string& append) {
  std::string out;
  int id = 0;
  for (const auto& [number, bytes] : SplitFields(model)) {
    if (number != 1) {
      out += bytes;
      continue;
    }
    TestPiece p{"", 0, kNormal};
    for (const auto& [n2, b2] : SplitFields(Payload(bytes))) {
      if (n2 == 1) p.text = Payload(b2);
      if (n2 == 2) std::memcpy(&p.score, b2.data() + 1, 4);
      if (n2 == 3) p.type = static_cast<uint8_t>(b2[1]);
    }
    piece_fn(id++, &p);
    out += PieceBytes(p);
  }
  return out + append;
}

class SentencePieceModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_models = new Models();
    g_models->dir = testutil::MakeTempDir("spm_models");
    if (::access("/usr/bin/spm_train", X_OK) != 0) {
      g_models->error =
          "/usr/bin/spm_train not found (Debian package sentencepiece; "
          "tools/setup.sh installs it)";
      return;
    }
    const std::string dir = g_models->dir;
    if (!testutil::WriteFile(dir + "/corpus.txt", Corpus()).ok()) {
      g_models->error = "cannot write the corpus";
      return;
    }
    // Custom normalization rules: multi-character sources, a deletion, a
    // one-to-many replacement, whitespace folded to a space.
    if (!testutil::WriteFile(dir + "/rules.tsv",
                             "41 42\t58\n"        // AB -> X
                             "41 42 43\t59 5A\n"  // ABC -> YZ
                             "63\t\n"             // c -> (deleted)
                             "09\t20\n"           // tab -> space
                             "3000\t20\n"         // ideographic space -> space
                             "78\t20 78 20\n"     // x -> " x "
                             "E9\t65 301\n"       // é -> e + combining acute
                             "FF21\t41\n")        // fullwidth A -> A
             .ok()) {
      g_models->error = "cannot write rules.tsv";
      return;
    }
    const std::string users = "'--user_defined_symbols=<sep>,[MASK],🙂,ab,42,∑∑,the'";
    Train("uni_nfkc", "--vocab_size=600 --character_coverage=0.995");
    Train("uni_bytes_identity",
          "--vocab_size=600 --byte_fallback=true --normalization_rule_name=identity "
          "--remove_extra_whitespaces=false --character_coverage=0.99");
    Train("uni_user",
          "--vocab_size=600 --add_dummy_prefix=false --split_digits=true "
          "'--control_symbols=<ctl>,#' " +
              users);
    Train("uni_suffix_cf",
          "--vocab_size=500 --treat_whitespace_as_suffix=true "
          "--normalization_rule_name=nmt_nfkc_cf");
    Train("uni_nfkc_keepws_bytes",
          "--vocab_size=600 --normalization_rule_name=nfkc --remove_extra_whitespaces=false "
          "--add_dummy_prefix=false --byte_fallback=true");
    Train("uni_tsv", "--vocab_size=400 --normalization_rule_tsv=" + dir + "/rules.tsv");
    Train("bpe_llama",
          "--model_type=bpe --vocab_size=700 --byte_fallback=true --split_digits=true "
          "--normalization_rule_name=identity --remove_extra_whitespaces=false "
          "--add_dummy_prefix=true --allow_whitespace_only_pieces=true "
          "--character_coverage=0.995 --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1");
    Train("bpe_nfkc", "--model_type=bpe --vocab_size=600 --character_coverage=0.98");
    Train("bpe_user",
          "--model_type=bpe --vocab_size=600 --byte_fallback=true --add_dummy_prefix=false "
          "--split_digits=true " +
              users);
    Train("bpe_suffix",
          "--model_type=bpe --vocab_size=500 --treat_whitespace_as_suffix=true "
          "--normalization_rule_name=identity --pad_id=3 --unk_id=1 --bos_id=2 --eos_id=0");
    Train("word", "--model_type=word --vocab_size=300 --use_all_vocab=true");
    Train("char", "--model_type=char --vocab_size=150 --character_coverage=0.99");
    if (!g_models->error.empty()) return;

    // Variants made by rewriting trained models.
    auto& files = g_models->files;
    auto keep = [](int, TestPiece*) {};
    // escape_whitespaces = false (no spm_train flag sets it).
    files["uni_noescape"] = Rewrite(files["uni_nfkc"], keep, BytesField(3, VarintField(5, 0)));
    files["bpe_noescape_keepws"] =
        Rewrite(files["bpe_nfkc"], keep,
                BytesField(3, VarintField(5, 0) + VarintField(4, 0) + VarintField(3, 0)));
    // Every 5th merged piece UNUSED: BPE splits those back; unigram skips them.
    auto unuse = [](int id, TestPiece* p) {
      if (p->type == kNormal && id % 5 == 0 && p->text.size() > 3) p->type = kUnused;
    };
    files["bpe_unused"] = Rewrite(files["bpe_llama"], unuse, "");
    files["uni_unused"] = Rewrite(files["uni_nfkc"], unuse, "");
    // Identity normalization on a unigram model trained with nmt_nfkc.
    files["uni_identity_switch"] =
        Rewrite(files["uni_user"], keep, BytesField(3, BytesField(2, "") + BytesField(1, "x")));
  }
  static void TearDownTestSuite() {
    delete g_models;
    g_models = nullptr;
  }

  void SetUp() override { ASSERT_TRUE(g_models->error.empty()) << g_models->error; }

  static std::unique_ptr<SentencePieceModel> Ours(const std::string& name,
                                                  const std::string& data) {
    auto m = SentencePieceModel::Parse(data, name);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(m).value() : nullptr;
  }
  static std::unique_ptr<SentencePieceShim> Reference(const std::string& data) {
    std::string error;
    auto sp = SentencePieceShim::Load(data, &error);
    EXPECT_NE(sp, nullptr) << error;
    return sp;
  }
};

// Compares ids for `text`; returns false (with a message) on a difference.
bool SameIds(const SentencePieceModel& ours, const SentencePieceShim& ref, const std::string& text,
             std::string* message) {
  std::vector<int> want;
  std::string error;
  const bool ref_ok = ref.Encode(text, &want, &error);
  const auto got = ours.Encode(text);
  if (got.ok() != ref_ok) {
    *message = absl::StrCat("text \"", absl::CHexEscape(text), "\": reference ",
                            ref_ok ? "ok" : "failed: " + error, ", ours ", got.status().ToString());
    return false;
  }
  if (ref_ok && *got != want) {
    *message = absl::StrCat("text \"", absl::CHexEscape(text), "\"\n  normalized \"",
                            absl::CHexEscape(ours.Normalize(text)), "\"\n  want ",
                            absl::StrJoin(want, ","), "\n  got  ", absl::StrJoin(*got, ","));
    return false;
  }
  return true;
}

// Random strings (and a few fixed ones) through both encoders.
void CompareOnRandomText(const std::string& name, const std::string& data, int n_random,
                         uint32_t seed) {
  auto ours = SentencePieceModel::Parse(data, name);
  ASSERT_TRUE(ours.ok()) << ours.status();
  std::string error;
  auto ref = SentencePieceShim::Load(data, &error);
  ASSERT_NE(ref, nullptr) << error;
  ASSERT_EQ((*ours)->piece_size(), ref->GetPieceSize());
  std::vector<std::string> extra;  // the model's own pieces, as text
  for (int id = 0; id < ref->GetPieceSize(); id += 3) {
    std::string p = ref->IdToPiece(id);
    extra.push_back(p);
    size_t at;
    while ((at = p.find("\xE2\x96\x81")) != std::string::npos) p.replace(at, 3, " ");
    extra.push_back(p);
  }
  for (const char* s : {"<sep>", "[MASK]", "🙂", "ab", "42", "∑∑", "the", "<ctl>", "#", "ABC"}) {
    extra.push_back(s);
  }
  TextGenerator gen(seed, extra);
  std::vector<std::string> texts = {"",
                                    " ",
                                    "   ",
                                    "\t\n",
                                    "a",
                                    "Hello world",
                                    "  lead and trail  ",
                                    "日本語のテキスト",
                                    std::string("nul\0byte", 8),
                                    "\xff",
                                    "▁",
                                    "▁▁ ▁",
                                    "<s>",
                                    "#",
                                    "ab<sep>ab"};
  for (int i = 0; i < n_random; ++i) texts.push_back(gen.Next());
  int failures = 0;
  for (const std::string& text : texts) {
    std::string message;
    if (!SameIds(**ours, *ref, text, &message)) {
      ADD_FAILURE() << name << ": " << message;
      if (++failures >= 5) break;
    }
  }
}

TEST_F(SentencePieceModelTest, TrainedModelsMatchSentencePiece) {
  ASSERT_GE(g_models->files.size(), 17u);
  uint32_t seed = 1;
  for (const auto& [name, data] : g_models->files) {
    SCOPED_TRACE(name);
    CompareOnRandomText(name, data, 3000, seed++);
  }
}

TEST_F(SentencePieceModelTest, PropertiesMatchSentencePiece) {
  for (const auto& [name, data] : g_models->files) {
    SCOPED_TRACE(name);
    auto ours = Ours(name, data);
    auto ref = Reference(data);
    ASSERT_NE(ours, nullptr);
    ASSERT_NE(ref, nullptr);
    ASSERT_EQ(ours->piece_size(), ref->GetPieceSize());
    EXPECT_EQ(ours->bos_id(), ref->bos_id());
    EXPECT_EQ(ours->eos_id(), ref->eos_id());
    for (int id = 0; id < ours->piece_size(); ++id) {
      const auto& p = ours->piece(id);
      ASSERT_EQ(p.text, ref->IdToPiece(id));
      ASSERT_EQ(p.type == SentencePieceModel::PieceType::kControl, ref->IsControl(id));
      ASSERT_EQ(p.type == SentencePieceModel::PieceType::kUnknown, ref->IsUnknown(id));
      ASSERT_EQ(p.type == SentencePieceModel::PieceType::kByte, ref->IsByte(id));
      ASSERT_EQ(p.type == SentencePieceModel::PieceType::kUnused, ref->IsUnused(id));
      if (p.type == SentencePieceModel::PieceType::kUnknown) {
        EXPECT_EQ(ours->unk_surface(), ref->DecodeIds({id}));
      }
    }
  }
  EXPECT_EQ(Ours("bpe_suffix", g_models->files["bpe_suffix"])->unk_id(), 1);
  EXPECT_EQ(Ours("bpe_nfkc", g_models->files["bpe_nfkc"])->model_type(),
            SentencePieceModel::ModelType::kBpe);
  EXPECT_EQ(Ours("word", g_models->files["word"])->model_type(),
            SentencePieceModel::ModelType::kWord);
  EXPECT_EQ(Ours("uni_nfkc", g_models->files["uni_nfkc"])->normalizer_name(), "nmt_nfkc");
}

// Long inputs: equal ids on 200 KB; 1 MB (random, one repeated letter, CJK,
// spaces) encodes in < 1 s here (printed), bounded at 20 s so that a loaded
// machine or ASan passes while a quadratic encoder (hours at 1 MB) fails.
TEST_F(SentencePieceModelTest, LongInputsAreFastAndEqual) {
  TextGenerator gen(99, {});
  const std::string text = gen.Long(200 << 10);
  const std::string mb_random = gen.Long(1 << 20);
  const std::string mb_a(1 << 20, 'a');
  std::string mb_cjk_building;
  while (mb_cjk_building.size() < (1u << 20)) mb_cjk_building += "日本語のテキスト東京";
  const std::string mb_cjk = mb_cjk_building;
  const std::string mb_spaces(1 << 20, ' ');
  for (const char* name : {"uni_nfkc", "bpe_llama", "bpe_user", "word", "char", "uni_tsv"}) {
    SCOPED_TRACE(name);
    const std::string& data = g_models->files[name];
    auto ours = Ours(name, data);
    auto ref = Reference(data);
    ASSERT_NE(ours, nullptr);
    std::string message;
    EXPECT_TRUE(SameIds(*ours, *ref, text, &message)) << message.substr(0, 2000);
    for (const std::string* mb : {&mb_random, &mb_a, &mb_cjk, &mb_spaces}) {
      const auto start = std::chrono::steady_clock::now();
      const auto ids = ours->Encode(*mb);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ASSERT_TRUE(ids.ok()) << ids.status();
      std::printf("%s: 1 MB (%.20s...) -> %zu ids in %.3f s\n", name,
                  absl::CHexEscape(mb->substr(0, 12)).c_str(), ids->size(), seconds);
      EXPECT_LT(seconds, 20.0) << "encoding 1 MB took " << seconds << " s";
    }
  }
}

// ---------------------------------------------------------------------------
// Hand-made models: few pieces over a small alphabet with many equal scores,
// so random strings hit ties, unused pieces, user-defined bonuses and
// control pieces.

std::string HandModel(const std::vector<TestPiece>& pieces, const std::string& trainer,
                      const std::string& normalizer) {
  std::string out;
  for (const TestPiece& p : pieces) out += PieceBytes(p);
  return out + BytesField(2, trainer) + BytesField(3, normalizer);
}

std::vector<TestPiece> SmallVocab() {
  return {
      {"<unk>", 0, kUnknown},    {"<s>", 0, kControl}, {"</s>", 0, kControl},
      {"#", 0, kControl},        {"a", -1, kNormal},   {"b", -1, kNormal},
      {"c", -2, kNormal},        {"▁", -1, kNormal},   {"ab", -2, kNormal},
      {"bc", -2, kNormal},       {"abc", -3, kNormal}, {"▁a", -2, kNormal},
      {"▁ab", -3, kNormal},      {"bb", -2, kUnused},  {"ca", 0, kUserDefined},
      {"cab", -1, kNormal},      {"aa", -2, kNormal},  {"aaa", -3, kNormal},
      {"▁▁", -2, kNormal},       {"b▁", -2, kNormal},  {"é", -1, kNormal},
      {"\xCC\x81", -1, kNormal},  // combining acute
  };
}

void CompareSmallAlphabet(const std::string& name, const std::string& data, uint32_t seed) {
  auto ours = SentencePieceModel::Parse(data, name);
  ASSERT_TRUE(ours.ok()) << ours.status();
  std::string error;
  auto ref = SentencePieceShim::Load(data, &error);
  ASSERT_NE(ref, nullptr) << error;
  const char* const alphabet[] = {"a", "b",    "c",  " ", "  ", "#",  "é",  "e\xCC\x81",
                                  "z", "\xFF", "ca", "▁", "\t", "日", "<s>"};
  std::mt19937 rng(seed);
  int failures = 0;
  for (int i = 0; i < 4000 && failures < 5; ++i) {
    std::string text;
    const int n = static_cast<int>(rng() % 16);
    for (int k = 0; k < n; ++k) text += alphabet[rng() % (sizeof(alphabet) / sizeof(alphabet[0]))];
    std::string message;
    if (!SameIds(**ours, *ref, text, &message)) {
      ADD_FAILURE() << name << ": " << message;
      ++failures;
    }
  }
}

TEST(SentencePieceHandModelTest, AllModelTypesMatchSentencePiece) {
  const std::string identity = BytesField(1, "identity");
  const std::string keep_ws = identity + VarintField(4, 0);
  const std::string no_prefix = identity + VarintField(3, 0);
  struct Case {
    std::string name;
    int model_type;
    std::string trainer_extra;
    std::string normalizer;
  };
  const std::vector<Case> cases = {
      {"unigram", 1, "", identity},
      {"unigram_keepws", 1, "", keep_ws},
      {"unigram_suffix", 1, VarintField(24, 1), keep_ws},
      {"bpe", 2, "", identity},
      {"bpe_keepws", 2, "", keep_ws},
      {"bpe_noprefix", 2, "", no_prefix},
      {"word", 3, "", identity},
      {"word_noprefix", 3, "", no_prefix},
      {"char", 4, "", identity},
      {"char_keepws", 4, "", keep_ws},
  };
  uint32_t seed = 7;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    CompareSmallAlphabet(
        c.name,
        HandModel(SmallVocab(), VarintField(3, c.model_type) + c.trainer_extra, c.normalizer),
        seed++);
  }
  // With byte fallback (all 256 byte pieces).
  std::vector<TestPiece> with_bytes = SmallVocab();
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", b);
    with_bytes.push_back({piece, 0, kByte});
  }
  for (int type : {1, 2, 3, 4}) {
    SCOPED_TRACE(type);
    CompareSmallAlphabet(absl::StrCat("bytes_", type),
                         HandModel(with_bytes, VarintField(3, type) + VarintField(35, 1), keep_ws),
                         seed++);
  }
  // All scores equal (pure ties), and all positive (max_score is used).
  std::vector<TestPiece> flat = SmallVocab();
  for (auto& p : flat) p.score = p.type == kNormal ? -1.0f : 0.0f;
  std::vector<TestPiece> positive = SmallVocab();
  for (auto& p : positive) p.score = p.type == kNormal ? 1.0f + 0.5f * p.text.size() : 0.0f;
  for (int type : {1, 2}) {
    CompareSmallAlphabet("flat", HandModel(flat, VarintField(3, type), identity), seed++);
    CompareSmallAlphabet("positive", HandModel(positive, VarintField(3, type), identity), seed++);
  }
}

TEST(SentencePieceHandModelTest, ControlPieceSegmentIsAnErrorLikeSentencePiece) {
  // "#" is a control piece: a CHAR model segment "#" is refused by both.
  const std::string data = HandModel(SmallVocab(), VarintField(3, 4), BytesField(1, "identity"));
  auto ours = SentencePieceModel::Parse(data, "m");
  ASSERT_TRUE(ours.ok());
  auto ids = (*ours)->Encode("a#b");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("control piece 3"));
  std::string error;
  auto ref = SentencePieceShim::Load(data, &error);
  ASSERT_NE(ref, nullptr);
  std::vector<int> ref_ids;
  EXPECT_FALSE(ref->Encode("a#b", &ref_ids, &error));
}

// ---------------------------------------------------------------------------
// Malformed and unsupported model files: one clear error naming the file.

absl::Status ParseStatus(const std::string& data) {
  return SentencePieceModel::Parse(data, "/models/x/tokenizer.model").status();
}

void ExpectError(const std::string& data, absl::StatusCode code, const std::string& needle) {
  const absl::Status st = ParseStatus(data);
  EXPECT_EQ(st.code(), code) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("/models/x/tokenizer.model"));
  EXPECT_THAT(std::string(st.message()), HasSubstr(needle));
}

TEST(SentencePieceModelErrorsTest, MalformedFilesAreRefusedWithTheFileNamed) {
  const std::string unigram = BytesField(2, VarintField(3, 1));
  const std::string ok = HandModel(SmallVocab(), VarintField(3, 1), "");
  ASSERT_TRUE(ParseStatus(ok).ok()) << ParseStatus(ok);

  ExpectError("definitely not a protobuf \xff\xff\xff", absl::StatusCode::kDataLoss,
              "malformed protobuf");
  ExpectError(ok.substr(0, ok.size() - 1), absl::StatusCode::kDataLoss, "malformed protobuf");
  ExpectError("", absl::StatusCode::kDataLoss, "no unknown piece");
  ExpectError(PieceBytes({"a", 0, kNormal}) + unigram, absl::StatusCode::kDataLoss,
              "no unknown piece");
  ExpectError(PieceBytes({"<unk>", 0, kUnknown}) + PieceBytes({"<u2>", 0, kUnknown}) + unigram,
              absl::StatusCode::kDataLoss, "two unknown pieces");
  ExpectError(ok + PieceBytes({"ab", 0, kNormal}), absl::StatusCode::kDataLoss,
              "\"ab\" is defined twice");
  ExpectError(ok + PieceBytes({"", 0, kNormal}), absl::StatusCode::kDataLoss, "is empty");
  ExpectError(ok + PieceBytes({"x", 0, 9}), absl::StatusCode::kDataLoss, "unknown type 9");
  ExpectError(ok + PieceBytes({"<0x41>", 0, kByte}), absl::StatusCode::kDataLoss,
              "byte_fallback is false");
  ExpectError(ok + PieceBytes({"<0xZZ>", 0, kByte}) + BytesField(2, VarintField(35, 1)),
              absl::StatusCode::kDataLoss, "is invalid");
  ExpectError(ok + PieceBytes({"<0x41>", 0, kByte}) + BytesField(2, VarintField(35, 1)),
              absl::StatusCode::kDataLoss, "not all 256 byte pieces");
  ExpectError(ok + BytesField(2, VarintField(3, 7)), absl::StatusCode::kDataLoss,
              "unknown trainer_spec.model_type 7");
  ExpectError(ok + BytesField(3, BytesField(2, "\x10\x00\x00\x00xx")), absl::StatusCode::kDataLoss,
              "precompiled_charsmap is broken");
  ExpectError(ok + BytesField(3, BytesField(2, "abc")), absl::StatusCode::kDataLoss,
              "precompiled_charsmap is broken");
  ExpectError(ok + BytesField(5, BytesField(2, "whatever")), absl::StatusCode::kUnimplemented,
              "denormalizer");
  ExpectError(PieceBytes({"<unk>", 0, kUnknown}) + PieceBytes({"<s>", 0, kControl}) + unigram,
              absl::StatusCode::kDataLoss, "without normal pieces");
}

// Truncated and bit-flipped copies of a real model never crash: each either
// loads (and then encodes without crashing) or is refused with DataLoss.
TEST_F(SentencePieceModelTest, CorruptedFilesNeverCrash) {
  const std::string& good = g_models->files["uni_nfkc"];
  std::mt19937 rng(5);
  TextGenerator gen(6, {});
  std::vector<std::string> texts;
  for (int i = 0; i < 20; ++i) texts.push_back(gen.Next());
  int loaded = 0, refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string data = good;
    if (trial % 3 == 0) {
      data.resize(rng() % good.size());
    } else {
      for (int k = 0; k < 1 + trial % 7; ++k) data[rng() % data.size()] ^= 1 << (rng() % 8);
    }
    auto m = SentencePieceModel::Parse(data, "corrupt.model");
    if (!m.ok()) {
      ++refused;
      EXPECT_TRUE(m.status().code() == absl::StatusCode::kDataLoss ||
                  m.status().code() == absl::StatusCode::kUnimplemented)
          << m.status();
      EXPECT_THAT(std::string(m.status().message()), HasSubstr("corrupt.model"));
      continue;
    }
    ++loaded;
    for (const std::string& t : texts) (void)(*m)->Encode(t);
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace memserve
