#include "engine/tokenizer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sentencepiece_shim.h"
#include "engine/testing/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char kFffd[] = "\xEF\xBF\xBD";

// An independent reference for "bytes -> text": decode one code point at a
// time by arithmetic (like SentencePiece's DecodeUTF8); a byte that does not
// start a valid, minimal, non-surrogate code point <= U+10FFFF is U+FFFD.
std::string ReferenceSanitize(const std::string& b) {
  std::string out;
  size_t i = 0;
  auto trail = [&](size_t k) {
    return k < b.size() && (static_cast<unsigned char>(b[k]) & 0xC0) == 0x80;
  };
  while (i < b.size()) {
    const unsigned char c = static_cast<unsigned char>(b[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0 && trail(i + 1)) {
      len = 2;
      cp = ((c & 0x1Fu) << 6) | (b[i + 1] & 0x3F);
      if (cp < 0x80) len = 0;
    } else if ((c & 0xF0) == 0xE0 && trail(i + 1) && trail(i + 2)) {
      len = 3;
      cp = ((c & 0x0Fu) << 12) | ((b[i + 1] & 0x3Fu) << 6) | (b[i + 2] & 0x3F);
      if (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000)) len = 0;
    } else if ((c & 0xF8) == 0xF0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
      len = 4;
      cp = ((c & 0x07u) << 18) | ((b[i + 1] & 0x3Fu) << 12) | ((b[i + 2] & 0x3Fu) << 6) |
           (b[i + 3] & 0x3F);
      if (cp < 0x10000 || cp > 0x10FFFF) len = 0;
    }
    if (len == 0) {
      out += kFffd;
      i += 1;
    } else {
      out.append(b, i, len);
      i += len;
    }
  }
  return out;
}

std::unique_ptr<Tokenizer> MakeBytes() {
  TokenizerConfig cfg;
  cfg.kind = "bytes";
  cfg.bos_id = 256;
  cfg.eos_id = 257;
  auto tok = Tokenizer::Create(cfg, "");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(tok).value();
}

// Pushes ids one by one; checks every chunk is valid UTF-8; returns all text.
std::string Stream(const Tokenizer& tok, const std::vector<int>& ids,
                   std::vector<std::string>* chunks = nullptr) {
  IncrementalDecoder dec(tok);
  std::string out;
  for (int id : ids) {
    std::string s = dec.Push(id);
    EXPECT_TRUE(IsValidUtf8(s)) << "chunk after id " << id;
    if (chunks) chunks->push_back(s);
    out += s;
  }
  std::string tail = dec.Flush();
  EXPECT_TRUE(IsValidUtf8(tail));
  EXPECT_EQ(dec.pending_bytes(), 0u);
  if (chunks) chunks->push_back(tail);
  return out + tail;
}

TEST(Utf8Test, IsValidUtf8) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("日本語 🙂 é"));
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));   // U+10FFFF
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBD"));       // U+FFFD itself
  EXPECT_FALSE(IsValidUtf8("\xE6\x97"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(BytesTokenizerTest, Basics) {
  auto tok = MakeBytes();
  EXPECT_EQ(tok->kind(), "bytes");
  EXPECT_EQ(tok->vocab_size(), 258);
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_FALSE(tok->StripsLeadingSpace());
  auto ids = tok->Encode("hé", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(256, 'h', 0xC3, 0xA9));
  auto no_bos = tok->Encode(std::string("\xff\0", 2), false);
  ASSERT_TRUE(no_bos.ok());
  EXPECT_THAT(*no_bos, ElementsAre(255, 0));  // any bytes, no EOS
  EXPECT_EQ(tok->TokenBytes('A'), "A");
  EXPECT_EQ(tok->TokenBytes(0xC3), "\xC3");
  EXPECT_EQ(tok->TokenBytes(256), "");
  EXPECT_EQ(tok->TokenBytes(257), "");
  EXPECT_EQ(tok->TokenBytes(-1), "");
  EXPECT_EQ(tok->TokenBytes(1000), "");
  EXPECT_EQ(tok->Decode({256, 'h', 'i', 257}), "hi");
  EXPECT_EQ(tok->Decode({}), "");
}

TEST(BytesTokenizerTest, RoundTripValidText) {
  auto tok = MakeBytes();
  for (const std::string text :
       {"", "hello world", "日本語", "emoji 🙂🚀 mixed é", "\t\n  spaces  "}) {
    auto ids = tok->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(tok->Decode(*ids), text);
    EXPECT_EQ(Stream(*tok, *ids), text);
  }
}

TEST(BytesTokenizerTest, MultiByteCharactersStreamWhole) {
  auto tok = MakeBytes();
  std::vector<std::string> chunks;
  auto ids = tok->Encode("日本語", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Stream(*tok, *ids, &chunks), "日本語");
  EXPECT_THAT(chunks, ElementsAre("", "", "日", "", "", "本", "", "", "語", ""));

  chunks.clear();
  ids = tok->Encode("a🙂b", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Stream(*tok, *ids, &chunks), "a🙂b");
  EXPECT_THAT(chunks, ElementsAre("a", "", "", "", "🙂", "b", ""));

  IncrementalDecoder dec(*tok);
  EXPECT_EQ(dec.Push(0xF0), "");
  EXPECT_EQ(dec.Push(0x9F), "");
  EXPECT_EQ(dec.pending_bytes(), 2u);
  EXPECT_EQ(dec.Push(0x99), "");
  EXPECT_EQ(dec.Push(0x82), "🙂");
  EXPECT_EQ(dec.pending_bytes(), 0u);
}

TEST(BytesTokenizerTest, InvalidSequencesBecomeReplacementChars) {
  auto tok = MakeBytes();
  {
    // E6 97 then 'A': both held bytes are replaced when 'A' shows they cannot
    // form a character.
    IncrementalDecoder dec(*tok);
    EXPECT_EQ(dec.Push(0xE6), "");
    EXPECT_EQ(dec.Push(0x97), "");
    EXPECT_EQ(dec.Push('A'), absl::StrCat(kFffd, kFffd, "A"));
    EXPECT_EQ(dec.Flush(), "");
  }
  {
    // Known invalid at once: a lone continuation byte, an impossible lead.
    IncrementalDecoder dec(*tok);
    EXPECT_EQ(dec.Push(0x80), kFffd);
    EXPECT_EQ(dec.Push(0xFF), kFffd);
    EXPECT_EQ(dec.Push(0xC0), kFffd);
    // E0 then 80: 80 cannot follow E0 (overlong), so E0 is replaced; 80 too.
    EXPECT_EQ(dec.Push(0xE0), "");
    EXPECT_EQ(dec.Push(0x80), absl::StrCat(kFffd, kFffd));
    // ED A0 is a surrogate prefix.
    EXPECT_EQ(dec.Push(0xED), "");
    EXPECT_EQ(dec.Push(0xA0), absl::StrCat(kFffd, kFffd));
  }
  {
    // End of stream with an incomplete character: one U+FFFD per held byte.
    IncrementalDecoder dec(*tok);
    EXPECT_EQ(dec.Push('x'), "x");
    EXPECT_EQ(dec.Push(0xF0), "");
    EXPECT_EQ(dec.Push(0x9F), "");
    EXPECT_EQ(dec.Flush(), absl::StrCat(kFffd, kFffd));
    // The decoder is reusable after Flush.
    EXPECT_EQ(dec.Push('y'), "y");
  }
  {
    // A special token (EOS) cannot continue a character: held bytes end.
    IncrementalDecoder dec(*tok);
    EXPECT_EQ(dec.Push(0xE6), "");
    EXPECT_EQ(dec.Push(257), kFffd);
    EXPECT_EQ(dec.Push(0x97), kFffd);
  }
  EXPECT_EQ(tok->Decode({0xE6, 0x97, 0xA5, 0xE6}), absl::StrCat("日", kFffd));
}

TEST(BytesTokenizerTest, RandomIdsStreamEqualsDecodeAndReference) {
  auto tok = MakeBytes();
  std::mt19937 rng(42);
  const std::vector<std::string> pieces = {"日", "🙂", "é", "a", " ", "\xF4\x8F\xBF\xBF"};
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<int> ids;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      switch (rng() % 4) {
        case 0:
          ids.push_back(static_cast<int>(rng() % 258));
          break;
        case 1:
          ids.push_back(0x80 + static_cast<int>(rng() % 0x40));
          break;  // continuation
        case 2:
          ids.push_back(0xC0 + static_cast<int>(rng() % 0x40));
          break;  // lead
        default:
          for (char c : pieces[rng() % pieces.size()]) ids.push_back(static_cast<unsigned char>(c));
      }
    }
    const std::string decoded = tok->Decode(ids);
    std::string raw;
    for (int id : ids) {
      if (id < 256) raw += static_cast<char>(id);
    }
    // Ids >= 256 end an incomplete character, so compare the reference per
    // run of byte ids.
    std::string want;
    std::string run;
    for (int id : ids) {
      if (id < 256) {
        run += static_cast<char>(id);
      } else {
        want += ReferenceSanitize(run);
        run.clear();
      }
    }
    want += ReferenceSanitize(run);
    ASSERT_EQ(decoded, want) << "iter " << iter;
    ASSERT_EQ(Stream(*tok, ids), decoded) << "iter " << iter;
    ASSERT_TRUE(IsValidUtf8(decoded));
    if (IsValidUtf8(raw)) {
      bool has_special = false;
      for (int id : ids) has_special |= id >= 256;
      if (!has_special) {
        ASSERT_EQ(decoded, raw);
      }
    }
  }
}

TEST(TokenizerCreateTest, Errors) {
  TokenizerConfig cfg;
  cfg.kind = "tiktoken";
  auto t = Tokenizer::Create(cfg, "/tmp");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("tiktoken"));

  cfg.kind = "words";
  t = Tokenizer::Create(cfg, "/tmp");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);

  cfg.kind = "bytes";
  cfg.bos_id = 1;
  t = Tokenizer::Create(cfg, "");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);

  const std::string dir = testutil::MakeTempDir("tok_err");
  cfg.kind = "sp";
  cfg.file = "tokenizer.model";
  cfg.bos_id = 1;
  cfg.eos_id = 2;
  t = Tokenizer::Create(cfg, dir);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(dir + "/tokenizer.model"));

  ASSERT_TRUE(
      testutil::WriteFile(dir + "/tokenizer.model", "definitely not a protobuf \xff\xff\xff").ok());
  t = Tokenizer::Create(cfg, dir);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(dir + "/tokenizer.model"));
}

// ---------------------------------------------------------------------------
// SentencePiece: models trained at test time with spm_train (tools/setup.sh
// installs it; its absence is a test failure, not a skip).

std::string FindSpmTrain() {
  if (::access("/usr/bin/spm_train", X_OK) == 0) return "/usr/bin/spm_train";
  if (::access("/usr/local/bin/spm_train", X_OK) == 0) return "/usr/local/bin/spm_train";
  return "";
}

const char* kCorpusLines[] = {
    "The quick brown fox jumps over the lazy dog.",
    "Memory layers at scale use product keys and a shared value table.",
    "日本語のテキストも少し含めます。",
    "Ünïcödé çharacters: naïve café résumé.",
    "Emoji: 🙂🚀🎉 and more 🙂.",
    "  leading spaces and   multiple   spaces ",
    "Numbers 12345 67890 and symbols #$%&*()",
};

struct SpModel {
  std::string dir;
  std::string name;  // file name inside dir
};

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spm_train_ = new std::string(FindSpmTrain());
    dir_ = new std::string(testutil::MakeTempDir("sp_models"));
    if (spm_train_->empty()) return;
    std::string corpus;
    for (int i = 0; i < 210; ++i) {
      absl::StrAppend(&corpus, kCorpusLines[i % 7], " ", i, "\n");
    }
    if (!testutil::WriteFile(*dir_ + "/corpus.txt", corpus).ok()) return;
    Train("default", "");
    Train("keepws", "--remove_extra_whitespaces=false");  // Llama-2 style normalization
    Train("noprefix", "--remove_extra_whitespaces=false --add_dummy_prefix=false");
  }
  static void TearDownTestSuite() {
    delete spm_train_;
    delete dir_;
  }

  static void Train(const std::string& name, const std::string& flags) {
    const std::string cmd =
        absl::StrCat(*spm_train_, " --input=", *dir_, "/corpus.txt --model_prefix=", *dir_, "/",
                     name, " --vocab_size=400 --hard_vocab_limit=false --byte_fallback=true",
                     " --character_coverage=1.0 --num_threads=1 --minloglevel=2 ", flags, " > ",
                     *dir_, "/", name, ".log 2>&1");
    const int rc = std::system(cmd.c_str());
    if (rc != 0) std::fprintf(stderr, "spm_train failed (%d): %s\n", rc, cmd.c_str());
  }

  void SetUp() override {
    ASSERT_FALSE(spm_train_->empty())
        << "spm_train not found (install Debian's 'sentencepiece' package; tools/setup.sh does)";
  }

  static TokenizerConfig Config(const std::string& name) {
    TokenizerConfig cfg;
    cfg.kind = "sp";
    cfg.file = name + ".model";
    cfg.bos_id = 1;  // spm_train defaults: unk 0, bos 1, eos 2
    cfg.eos_id = 2;
    return cfg;
  }

  static std::unique_ptr<Tokenizer> Load(const std::string& name) {
    auto tok = Tokenizer::Create(Config(name), *dir_);
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? std::move(tok).value() : nullptr;
  }

  static std::unique_ptr<SentencePieceShim> Reference(const std::string& name) {
    FILE* f = std::fopen((*dir_ + "/" + name + ".model").c_str(), "rb");
    EXPECT_NE(f, nullptr);
    if (f == nullptr) return nullptr;
    std::string data;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
    std::fclose(f);
    std::string error;
    auto sp = SentencePieceShim::Load(data, &error);
    EXPECT_NE(sp, nullptr) << error;
    return sp;
  }

  static std::string* spm_train_;
  static std::string* dir_;
};

std::string* SentencePieceTest::spm_train_ = nullptr;
std::string* SentencePieceTest::dir_ = nullptr;

const std::vector<std::string> kTexts = {
    "The quick brown fox.",
    "日本語のテキスト",
    "unseen chars use byte fallback: 中文 🦀 ∑ ж",
    "  two leading spaces, trailing  ",
    "Emoji: 🙂🚀🎉",
    "",
    "a",
};

TEST_F(SentencePieceTest, Basics) {
  auto tok = Load("default");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->kind(), "sp");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_GT(tok->vocab_size(), 259);
  EXPECT_TRUE(tok->StripsLeadingSpace());
  EXPECT_EQ(tok->TokenBytes(1), "");
  EXPECT_EQ(tok->TokenBytes(2), "");
  EXPECT_EQ(tok->TokenBytes(-5), "");
  EXPECT_EQ(tok->TokenBytes(tok->vocab_size()), "");
  EXPECT_EQ(tok->TokenBytes(0), " \xE2\x81\x87 ");      // <unk> surface
  EXPECT_EQ(tok->TokenBytes(3), std::string(1, '\0'));  // <0x00>, the first byte piece
  auto ids = tok->Encode("The quick", true);
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 2u);
  EXPECT_EQ((*ids)[0], 1);
  for (size_t i = 1; i < ids->size(); ++i) EXPECT_NE((*ids)[i], 2);  // no EOS
  EXPECT_EQ(tok->Decode(*ids), "The quick");
  EXPECT_FALSE(Load("noprefix")->StripsLeadingSpace());
  EXPECT_TRUE(Load("keepws")->StripsLeadingSpace());
}

TEST_F(SentencePieceTest, EncodeDecodeMatchesSentencePiece) {
  for (const std::string name : {"default", "keepws", "noprefix"}) {
    auto tok = Load(name);
    auto ref = Reference(name);
    ASSERT_NE(tok, nullptr);
    ASSERT_NE(ref, nullptr);
    for (const std::string& text : kTexts) {
      auto ids = tok->Encode(text, /*add_bos=*/false);
      ASSERT_TRUE(ids.ok()) << ids.status();
      std::vector<int> ref_ids;
      std::string error;
      ASSERT_TRUE(ref->Encode(text, &ref_ids, &error)) << error;
      EXPECT_EQ(*ids, ref_ids);
      const std::string want = ref->DecodeIds(ref_ids);
      EXPECT_EQ(tok->Decode(*ids), want) << name << ": " << text;
      std::vector<std::string> chunks;
      EXPECT_EQ(Stream(*tok, *ids, &chunks), want) << name << ": " << text;
      if (name != "default") {
        // Without whitespace normalization, decoding restores the text.
        EXPECT_EQ(want, text) << name;
      }
    }
  }
}

TEST_F(SentencePieceTest, ByteFallbackStreamsWholeCharacters) {
  auto tok = Load("keepws");
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("中🦀", false);  // neither is in the training corpus
  ASSERT_TRUE(ids.ok());
  std::vector<std::string> chunks;
  EXPECT_EQ(Stream(*tok, *ids, &chunks), "中🦀");
  // Every chunk is whole characters; "中" (3 bytes) and "🦀" (4 bytes) each
  // appear in exactly one chunk.
  int with_zhong = 0, with_crab = 0;
  for (const std::string& c : chunks) {
    with_zhong += c.find("中") != std::string::npos;
    with_crab += c.find("🦀") != std::string::npos;
  }
  EXPECT_EQ(with_zhong, 1);
  EXPECT_EQ(with_crab, 1);
  EXPECT_GE(ids->size(), 7u);  // byte pieces were used
}

// Random id sequences (byte pieces, control, unknown, ordinary pieces in any
// order): our Decode equals SentencePiece's, and streaming equals Decode.
TEST_F(SentencePieceTest, RandomIdsMatchSentencePieceDecode) {
  for (const std::string name : {"default", "keepws", "noprefix"}) {
    auto tok = Load(name);
    auto ref = Reference(name);
    ASSERT_NE(tok, nullptr);
    ASSERT_NE(ref, nullptr);
    const int n = tok->vocab_size();
    ASSERT_EQ(n, ref->GetPieceSize());
    std::vector<int> space_pieces;  // pieces that begin with U+2581
    std::vector<int> byte_pieces;
    for (int id = 0; id < n; ++id) {
      if (ref->IdToPiece(id).rfind("\xE2\x96\x81", 0) == 0) space_pieces.push_back(id);
      if (ref->IsByte(id)) byte_pieces.push_back(id);
    }
    ASSERT_FALSE(space_pieces.empty());
    ASSERT_EQ(byte_pieces.size(), 256u);
    std::mt19937 rng(7);
    for (int iter = 0; iter < 3000; ++iter) {
      std::vector<int> ids;
      const int len = static_cast<int>(rng() % 12);
      for (int i = 0; i < len; ++i) {
        switch (rng() % 5) {
          case 0:
            ids.push_back(static_cast<int>(rng() % 4));
            break;  // unk, bos, eos, <0x00>
          case 1:
            ids.push_back(space_pieces[rng() % space_pieces.size()]);
            break;
          case 2:
          case 3:
            ids.push_back(byte_pieces[0x80 + rng() % 0x80]);
            break;  // UTF-8 lead/continuation bytes
          default:
            ids.push_back(static_cast<int>(rng() % n));
            break;
        }
      }
      const std::string want = ref->DecodeIds(ids);
      ASSERT_EQ(tok->Decode(ids), want) << name << " iter " << iter;
      ASSERT_EQ(Stream(*tok, ids), want) << name << " iter " << iter;
    }
  }
}

TEST_F(SentencePieceTest, InvalidUtf8InputIsEncoded) {
  auto tok = Load("keepws");
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode(std::string("\xff abc \xe6\x97 x\0y", 12), true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // SentencePiece's normalizer turns each invalid byte into U+FFFD.
  const std::string text = tok->Decode(*ids);
  EXPECT_TRUE(IsValidUtf8(text));
  EXPECT_THAT(text, HasSubstr(" abc "));
  EXPECT_THAT(text, HasSubstr(kFffd));
}

TEST_F(SentencePieceTest, ConfigIdsMustMatchModel) {
  TokenizerConfig cfg = Config("default");
  cfg.bos_id = 2;
  auto t = Tokenizer::Create(cfg, *dir_);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("bos_id 2 disagrees with the model's bos_id 1"));
  cfg = Config("default");
  cfg.eos_id = 100000;
  t = Tokenizer::Create(cfg, *dir_);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("eos_id 100000 is outside"));
}

}  // namespace
}  // namespace memserve
