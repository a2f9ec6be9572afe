#include "engine/tokenizer.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/file_util.h"
#include "engine/sentencepiece_model.h"
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

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const TokenizerConfig& cfg,
                                                         const std::string& path) {
    std::string data;
    RETURN_IF_ERROR(ReadSmallFile(path, kMaxTokenizerFileBytes, &data));
    ASSIGN_OR_RETURN(std::unique_ptr<SentencePieceModel> sp, SentencePieceModel::Parse(data, path));
    const int n = sp->piece_size();
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
      if (sp->piece(id).type != SentencePieceModel::PieceType::kControl) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tokenizer.", field, " ", id,
                                                       " (piece \"", sp->piece(id).text,
                                                       "\") is not a control piece"));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(check_id("bos_id", cfg.bos_id, sp->bos_id()));
    RETURN_IF_ERROR(check_id("eos_id", cfg.eos_id, sp->eos_id()));
    return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(cfg, std::move(sp)));
  }

  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const override {
    ASSIGN_OR_RETURN(std::vector<int> pieces, sp_->Encode(text));
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
    return sp_->add_dummy_prefix() || sp_->remove_extra_whitespaces();
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
  bool StripsRepeatedLeadingSpace() const override { return sp_->remove_extra_whitespaces(); }

 private:
  struct Piece {
    std::string bytes;
    TokenClass cls = TokenClass::kSpecial;
    bool space_symbol_first = false;
  };

  SentencePieceTokenizer(const TokenizerConfig& cfg, std::unique_ptr<SentencePieceModel> sp)
      : Tokenizer(cfg.bos_id, cfg.eos_id), sp_(std::move(sp)) {
    using PieceType = SentencePieceModel::PieceType;
    const int n = sp_->piece_size();
    pieces_.resize(n);
    for (int id = 0; id < n; ++id) {
      Piece& p = pieces_[id];
      const SentencePieceModel::Piece& piece = sp_->piece(id);
      switch (piece.type) {
        case PieceType::kControl:
          p.cls = TokenClass::kSpecial;  // invisible
          break;
        case PieceType::kUnknown:
          p.cls = TokenClass::kSpecial;
          p.bytes = sp_->unk_surface();
          break;
        case PieceType::kByte:  // "<0xAB>"
          p.cls = TokenClass::kByte;
          p.bytes = std::string(1, static_cast<char>(sp_->PieceByte(id)));
          break;
        case PieceType::kNormal:
        case PieceType::kUserDefined:
        case PieceType::kUnused:
          // Decoded as their text.
          p.cls = TokenClass::kOrdinary;
          p.space_symbol_first = absl::StartsWith(piece.text, kSpaceSymbol);
          p.bytes = absl::StrReplaceAll(piece.text, {{kSpaceSymbol, " "}});
          break;
      }
    }
  }

  std::unique_ptr<SentencePieceModel> sp_;
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
