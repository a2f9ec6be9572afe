#include "engine/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/file_util.h"
#include "engine/sentencepiece_shim.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

// A SentencePiece model is a few MB at most (Llama-2: 500 KB).
constexpr size_t kMaxTokenizerFileBytes = 64 << 20;

constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD
constexpr char kSpaceSymbol[] = "\xE2\x96\x81";      // U+2581

// The well-formed UTF-8 sequence starting at s[i] (Unicode table 3-7):
// returns its length (1-4), 0 if s ends before it is complete but every byte
// so far is allowed, or -1 if s[i] cannot start one here.
int Utf8SequenceAt(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c == 0xE0) {
    need = 3, lo = 0xA0;  // no overlongs
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    need = 3;
  } else if (c == 0xED) {
    need = 3, hi = 0x9F;  // no surrogates
  } else if (c == 0xF0) {
    need = 4, lo = 0x90;  // no overlongs
  } else if (c >= 0xF1 && c <= 0xF3) {
    need = 4;
  } else if (c == 0xF4) {
    need = 4, hi = 0x8F;  // <= U+10FFFF
  } else {
    return -1;  // continuation byte, C0/C1 overlong lead, or F5..FF
  }
  for (int k = 1; k < need; ++k) {
    if (i + k >= s.size()) return 0;
    const unsigned char d = static_cast<unsigned char>(s[i + k]);
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return -1;
  }
  return need;
}

// Moves the decodable prefix of *pending to *out. With `final`, an
// incomplete trailing sequence is decodable too (as U+FFFD per byte).
void Drain(std::string* pending, bool final, std::string* out) {
  const absl::string_view s(*pending);
  size_t i = 0;
  while (i < s.size()) {
    const int n = Utf8SequenceAt(s, i);
    if (n > 0) {
      out->append(s.data() + i, n);
      i += n;
    } else if (n < 0 || final) {
      out->append(kReplacementChar);
      i += 1;
    } else {
      break;  // incomplete: wait for more bytes
    }
  }
  pending->erase(0, i);
}

// ---------------------------------------------------------------------------
// bytes: ids 0..255 are bytes, BOS 256, EOS 257.

class ByteTokenizer final : public Tokenizer {
 public:
  ByteTokenizer() : Tokenizer(256, 257) {}

  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    ids.reserve(text.size() + (add_bos ? 1 : 0));
    if (add_bos) ids.push_back(bos_id());
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::string TokenBytes(int id) const override {
    if (id < 0 || id >= 256) return "";
    return std::string(1, static_cast<char>(id));
  }
  int vocab_size() const override { return 258; }
  std::string kind() const override { return "bytes"; }

 protected:
  TokenClass Classify(int id) const override {
    return id >= 0 && id < 256 ? TokenClass::kByte : TokenClass::kSpecial;
  }
};

// ---------------------------------------------------------------------------
// sp: a SentencePiece model. Decoding follows SentencePieceProcessor::Decode
// (v0.1.97) exactly, so that streamed text equals its output.

// The few ModelProto fields decoding depends on, read from the serialized
// proto (Debian ships no sentencepiece_model.pb.h).
struct SpModelFlags {
  bool add_dummy_prefix = true;          // NormalizerSpec field 3 (default true)
  bool remove_extra_whitespaces = true;  // NormalizerSpec field 4 (default true)
  bool has_denormalizer = false;         // DenormalizerSpec with a charsmap
};

// Minimal protobuf wire-format reader.
class WireReader {
 public:
  explicit WireReader(absl::string_view s) : s_(s) {}
  bool done() const { return pos_ >= s_.size(); }

  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= s_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(s_[pos_++]);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  // Reads one field; for length-delimited fields `*bytes` is its payload.
  bool Field(uint32_t* number, uint32_t* wire_type, uint64_t* value, absl::string_view* bytes) {
    uint64_t key;
    if (!Varint(&key)) return false;
    *number = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    switch (*wire_type) {
      case 0:
        return Varint(value);
      case 1:
        return Skip(8);
      case 5:
        return Skip(4);
      case 2: {
        uint64_t len;
        if (!Varint(&len) || len > s_.size() - pos_) return false;
        *bytes = s_.substr(pos_, static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return true;
      }
      default:
        return false;  // groups are not used by sentencepiece_model.proto
    }
  }

 private:
  bool Skip(size_t n) {
    if (n > s_.size() - pos_) return false;
    pos_ += n;
    return true;
  }
  absl::string_view s_;
  size_t pos_ = 0;
};

bool ReadSpModelFlags(absl::string_view model_proto, SpModelFlags* flags) {
  WireReader top(model_proto);
  while (!top.done()) {
    uint32_t num, wt;
    uint64_t val = 0;
    absl::string_view bytes;
    if (!top.Field(&num, &wt, &val, &bytes)) return false;
    if (wt != 2 || (num != 3 && num != 5)) continue;
    WireReader sub(bytes);
    while (!sub.done()) {
      uint32_t n2, wt2;
      uint64_t v2 = 0;
      absl::string_view b2;
      if (!sub.Field(&n2, &wt2, &v2, &b2)) return false;
      if (num == 3 && wt2 == 0 && n2 == 3) flags->add_dummy_prefix = v2 != 0;
      if (num == 3 && wt2 == 0 && n2 == 4) flags->remove_extra_whitespaces = v2 != 0;
      if (num == 5 && wt2 == 2 && n2 == 2 && !b2.empty()) flags->has_denormalizer = true;
    }
  }
  return true;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const TokenizerConfig& cfg,
                                                         const std::string& path) {
    std::string data;
    RETURN_IF_ERROR(ReadSmallFile(path, kMaxTokenizerFileBytes, &data));
    std::string error;
    std::unique_ptr<SentencePieceShim> sp = SentencePieceShim::Load(data, &error);
    if (sp == nullptr) {
      return absl::DataLossError(absl::StrCat(path, ": not a valid SentencePiece model: ", error));
    }
    SpModelFlags flags;
    if (!ReadSpModelFlags(data, &flags)) {
      return absl::DataLossError(
          absl::StrCat(path, ": cannot read the model's normalizer settings"));
    }
    if (flags.has_denormalizer) {
      return absl::UnimplementedError(absl::StrCat(path,
                                                   ": SentencePiece models with a denormalizer are "
                                                   "not supported (decoding could not stream)"));
    }
    const int n = sp->GetPieceSize();
    auto check_id = [&](const char* field, int id, int model_id) -> absl::Status {
      if (id < 0 || id >= n) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer.", field, " ", id,
                                                       " is outside the model's ", n, " pieces"));
      }
      if (model_id >= 0 && model_id != id) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer.", field, " ", id,
                                                       " disagrees with the model's ", field, " ",
                                                       model_id));
      }
      if (!sp->IsControl(id)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer.", field, " ", id,
                                                       " (piece \"", sp->IdToPiece(id),
                                                       "\") is not a control piece"));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(check_id("bos_id", cfg.bos_id, sp->bos_id()));
    RETURN_IF_ERROR(check_id("eos_id", cfg.eos_id, sp->eos_id()));
    return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(cfg, std::move(sp), flags));
  }

  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const override {
    std::vector<int> pieces;
    std::string error;
    if (!sp_->Encode(std::string(text), &pieces, &error)) {
      return absl::InternalError(absl::StrCat("SentencePiece Encode failed: ", error));
    }
    if (!add_bos) return pieces;
    std::vector<int> ids;
    ids.reserve(pieces.size() + 1);
    ids.push_back(bos_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }
  std::string TokenBytes(int id) const override {
    if (id < 0 || id >= static_cast<int>(pieces_.size())) return "";
    return pieces_[id].bytes;
  }
  bool StripsLeadingSpace() const override {
    return flags_.add_dummy_prefix || flags_.remove_extra_whitespaces;
  }
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  std::string kind() const override { return "sp"; }

 protected:
  TokenClass Classify(int id) const override {
    if (id < 0 || id >= static_cast<int>(pieces_.size())) return TokenClass::kSpecial;
    return pieces_[id].cls;
  }
  bool BeginsWithSpaceSymbol(int id) const override {
    return id >= 0 && id < static_cast<int>(pieces_.size()) && pieces_[id].space_symbol_first;
  }
  bool StripsRepeatedLeadingSpace() const override { return flags_.remove_extra_whitespaces; }

 private:
  struct Piece {
    std::string bytes;
    TokenClass cls = TokenClass::kSpecial;
    bool space_symbol_first = false;
  };

  SentencePieceTokenizer(const TokenizerConfig& cfg, std::unique_ptr<SentencePieceShim> sp,
                         SpModelFlags flags)
      : Tokenizer(cfg.bos_id, cfg.eos_id), sp_(std::move(sp)), flags_(flags) {
    const int n = sp_->GetPieceSize();
    pieces_.resize(n);
    for (int id = 0; id < n; ++id) {
      Piece& p = pieces_[id];
      const std::string piece = sp_->IdToPiece(id);
      if (sp_->IsControl(id)) {
        p.cls = TokenClass::kSpecial;  // invisible
      } else if (sp_->IsUnknown(id)) {
        p.cls = TokenClass::kSpecial;
        p.bytes = sp_->DecodeIds({id});  // the model's unk surface
      } else if (sp_->IsByte(id)) {
        // "<0xAB>"
        p.cls = TokenClass::kByte;
        unsigned int b = 0;
        if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%2X>", &b) == 1) {
          p.bytes = std::string(1, static_cast<char>(b));
        }
      } else {
        // Normal, user-defined and unused pieces decode as their text.
        p.cls = TokenClass::kOrdinary;
        p.space_symbol_first = absl::StartsWith(piece, kSpaceSymbol);
        p.bytes = absl::StrReplaceAll(piece, {{kSpaceSymbol, " "}});
      }
    }
  }

  std::unique_ptr<SentencePieceShim> sp_;
  SpModelFlags flags_;
  std::vector<Piece> pieces_;
};

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const int n = Utf8SequenceAt(s, i);
    if (n <= 0) return false;
    i += n;
  }
  return true;
}

Tokenizer::~Tokenizer() = default;

bool Tokenizer::StripsLeadingSpace() const { return false; }
bool Tokenizer::BeginsWithSpaceSymbol(int) const { return false; }
bool Tokenizer::StripsRepeatedLeadingSpace() const { return false; }

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerConfig& cfg,
                                                             const std::string& model_dir) {
  if (cfg.kind == "bytes") {
    if ((cfg.bos_id != -1 && cfg.bos_id != 256) || (cfg.eos_id != -1 && cfg.eos_id != 257)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bytes tokenizer: bos_id/eos_id must be 256/257, got ", cfg.bos_id, "/", cfg.eos_id));
    }
    return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  }
  if (cfg.kind == "sp") {
    if (cfg.file.empty())
      return absl::InvalidArgumentError("sp tokenizer: tokenizer.file is empty");
    const std::string path = cfg.file.front() == '/' ? cfg.file : model_dir + "/" + cfg.file;
    return SentencePieceTokenizer::Load(cfg, path);
  }
  if (cfg.kind == "tiktoken") {
    return absl::UnimplementedError(
        "tokenizer kind \"tiktoken\" is not supported yet (supported: bytes, sp)");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer kind \"", cfg.kind, "\" (supported: bytes, sp)"));
}

std::string Tokenizer::Decode(absl::Span<const int> ids) const {
  IncrementalDecoder dec(*this);
  std::string out;
  for (int id : ids) out += dec.Push(id);
  out += dec.Flush();
  return out;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer) : tok_(tokenizer) {}

std::string IncrementalDecoder::Push(int id) {
  std::string out;
  const Tokenizer::TokenClass cls = tok_.Classify(id);
  if (cls != Tokenizer::TokenClass::kByte) Drain(&pending_, /*final=*/true, &out);
  std::string bytes = tok_.TokenBytes(id);
  if (cls == Tokenizer::TokenClass::kOrdinary && tok_.StripsLeadingSpace()) {
    // SentencePieceProcessor::Decode's is_bos_ws / bos_ws_seen logic.
    if (bos_ws_seen_ || produced_any_) is_bos_ws_ = false;
    bos_ws_seen_ = false;
    if (is_bos_ws_ && tok_.BeginsWithSpaceSymbol(id) && !bytes.empty() && bytes[0] == ' ') {
      bytes.erase(0, 1);
      bos_ws_seen_ = !tok_.StripsRepeatedLeadingSpace();
    }
  }
  if (!bytes.empty()) produced_any_ = true;
  pending_ += bytes;
  Drain(&pending_, /*final=*/false, &out);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out;
  Drain(&pending_, /*final=*/true, &out);
  is_bos_ws_ = true;
  bos_ws_seen_ = false;
  produced_any_ = false;
  return out;
}

}  // namespace memserve
