// SentencePiece encoding without libsentencepiece (see sentencepiece_model.h).
// The rules follow SentencePiece v0.1.97 (normalizer.cc, model_interface.cc,
// unigram_model.cc EncodeOptimized, bpe_model.cc, word_model.cc,
// char_model.cc, sentencepiece_processor.cc PopulateSentencePieceText); the
// comments name the function each part mirrors.
#include "engine/sentencepiece_model.h"

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/status_macros.h"

namespace memserve {
namespace {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";          // U+2581
constexpr char kReplacementChar[] = "\xEF\xBF\xBD";      // U+FFFD
constexpr char kDefaultUnkSurface[] = " \xE2\x81\x87 ";  // " U+2047 "
constexpr float kUnkPenalty = 10.0;                      // unigram_model.cc
// Matches SentencePiece keeps from one trie search: Normalizer and
// PrefixMatcher keep the first 32 / 64 (their result arrays).
constexpr int kMaxCharsMapResults = 32;
constexpr int kMaxUserDefinedResults = 64;

// string_util::OneCharLen: the length a UTF-8 lead byte announces (1 for a
// continuation byte).
size_t OneCharLen(char c) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[static_cast<unsigned char>(c) >> 4];
}

// string_util::IsValidDecodeUTF8: true with *mblen set if `s` starts with a
// well-formed character (a literal U+FFFD included); false with *mblen = 1
// otherwise. REQUIRES: !s.empty().
bool IsValidDecodeUtf8(absl::string_view s, size_t* mblen) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t len = s.size();
  auto trail = [](unsigned char x) { return (x & 0xC0) == 0x80; };
  auto valid = [](uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); };
  *mblen = 1;
  if (b[0] < 0x80) return true;
  if (len >= 2 && (b[0] & 0xE0) == 0xC0) {
    const uint32_t cp = ((b[0] & 0x1Fu) << 6) | (b[1] & 0x3Fu);
    if (trail(b[1]) && cp >= 0x80 && valid(cp)) *mblen = 2;
  } else if (len >= 3 && (b[0] & 0xF0) == 0xE0) {
    const uint32_t cp = ((b[0] & 0x0Fu) << 12) | ((b[1] & 0x3Fu) << 6) | (b[2] & 0x3Fu);
    if (trail(b[1]) && trail(b[2]) && cp >= 0x800 && valid(cp)) *mblen = 3;
  } else if (len >= 4 && (b[0] & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b[0] & 0x07u) << 18) | ((b[1] & 0x3Fu) << 12) | ((b[2] & 0x3Fu) << 6) | (b[3] & 0x3Fu);
    if (trail(b[1]) && trail(b[2]) && trail(b[3]) && cp >= 0x10000 && valid(cp)) *mblen = 4;
  }
  return *mblen > 1;
}

// "<0x41>" -> 0x41 (model_interface.cc PieceToByte: exactly "<0x%02X>");
// -1 for anything else.
int PieceToByte(absl::string_view piece) {
  if (piece.size() != 6 || !absl::StartsWith(piece, "<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return -1;  // lower case is not SentencePiece's spelling
    }
    value = value * 16 + digit;
  }
  return value;
}

// Darts-clone (trie) keys are NUL-terminated C strings: a piece is keyed by
// its bytes up to the first NUL.
absl::string_view TrieKey(absl::string_view piece) { return piece.substr(0, piece.find('\0')); }

// ---------------------------------------------------------------------------
// Protobuf wire format (proto2): enough to read sentencepiece_model.proto.

class WireReader {
 public:
  explicit WireReader(absl::string_view s) : s_(s) {}
  bool done() const { return pos_ >= s_.size(); }

  struct Field {
    uint32_t number = 0;
    uint32_t wire_type = 0;
    uint64_t varint = 0;      // wire type 0
    uint32_t fixed32 = 0;     // wire type 5
    absl::string_view bytes;  // wire type 2
  };

  // Reads the next field; false on malformed input (truncation, a bad wire
  // type, field number 0, or a group, which this schema never uses).
  bool Next(Field* f) {
    uint64_t key;
    if (!Varint(&key)) return false;
    f->number = static_cast<uint32_t>(key >> 3);
    f->wire_type = static_cast<uint32_t>(key & 7);
    if (f->number == 0 || (key >> 3) > 0x1FFFFFFF) return false;
    switch (f->wire_type) {
      case 0:
        return Varint(&f->varint);
      case 1:
        return Skip(8);
      case 2: {
        uint64_t len;
        if (!Varint(&len) || len > s_.size() - pos_) return false;
        f->bytes = s_.substr(pos_, static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return true;
      }
      case 5:
        if (s_.size() - pos_ < 4) return false;
        f->fixed32 = 0;
        for (int i = 3; i >= 0; --i) {
          f->fixed32 = (f->fixed32 << 8) | static_cast<uint8_t>(s_[pos_ + i]);
        }
        pos_ += 4;
        return true;
      default:
        return false;
    }
  }

 private:
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
  bool Skip(size_t n) {
    if (n > s_.size() - pos_) return false;
    pos_ += n;
    return true;
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

// The ModelProto fields encoding needs, with the proto's defaults. A field
// with an unexpected wire type is skipped (as protobuf treats it as unknown).
struct NormalizerSpecData {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct TrainerSpecData {
  int model_type = 1;  // UNIGRAM
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_piece, bos_piece, eos_piece;
  bool has_unk_surface = false;
  std::string unk_surface;
};

struct ModelProtoData {
  struct RawPiece {
    std::string piece;
    float score = 0;
    int type = 1;  // NORMAL
  };
  std::vector<RawPiece> pieces;
  TrainerSpecData trainer;
  NormalizerSpecData normalizer;
  NormalizerSpecData denormalizer;
};

// Each parser merges into *out, as protobuf merges a repeated occurrence of a
// singular message field.
bool ParsePiece(absl::string_view s, ModelProtoData::RawPiece* out) {
  WireReader r(s);
  WireReader::Field f;
  while (!r.done()) {
    if (!r.Next(&f)) return false;
    if (f.number == 1 && f.wire_type == 2) out->piece = std::string(f.bytes);
    if (f.number == 2 && f.wire_type == 5) std::memcpy(&out->score, &f.fixed32, sizeof(float));
    if (f.number == 3 && f.wire_type == 0) out->type = static_cast<int32_t>(f.varint);
  }
  return true;
}

bool ParseTrainerSpec(absl::string_view s, TrainerSpecData* out) {
  WireReader r(s);
  WireReader::Field f;
  while (!r.done()) {
    if (!r.Next(&f)) return false;
    if (f.wire_type == 0) {
      switch (f.number) {
        case 3:
          out->model_type = static_cast<int32_t>(f.varint);
          break;
        case 24:
          out->treat_whitespace_as_suffix = f.varint != 0;
          break;
        case 35:
          out->byte_fallback = f.varint != 0;
          break;
      }
    } else if (f.wire_type == 2) {
      switch (f.number) {
        case 44:
          out->has_unk_surface = true;
          out->unk_surface = std::string(f.bytes);
          break;
        case 45:
          out->unk_piece = std::string(f.bytes);
          break;
        case 46:
          out->bos_piece = std::string(f.bytes);
          break;
        case 47:
          out->eos_piece = std::string(f.bytes);
          break;
      }
    }
  }
  return true;
}

bool ParseNormalizerSpec(absl::string_view s, NormalizerSpecData* out) {
  WireReader r(s);
  WireReader::Field f;
  while (!r.done()) {
    if (!r.Next(&f)) return false;
    if (f.wire_type == 2 && f.number == 1) out->name = std::string(f.bytes);
    if (f.wire_type == 2 && f.number == 2) out->precompiled_charsmap = std::string(f.bytes);
    if (f.wire_type == 0 && f.number == 3) out->add_dummy_prefix = f.varint != 0;
    if (f.wire_type == 0 && f.number == 4) out->remove_extra_whitespaces = f.varint != 0;
    if (f.wire_type == 0 && f.number == 5) out->escape_whitespaces = f.varint != 0;
  }
  return true;
}

// Returns the name of the first message that does not parse, or "" if all do.
std::string ParseModelProto(absl::string_view s, ModelProtoData* out) {
  WireReader r(s);
  WireReader::Field f;
  while (!r.done()) {
    if (!r.Next(&f)) return "ModelProto";
    if (f.wire_type != 2) continue;
    switch (f.number) {
      case 1:
        out->pieces.emplace_back();
        if (!ParsePiece(f.bytes, &out->pieces.back())) {
          return absl::StrCat("pieces[", out->pieces.size() - 1, "]");
        }
        break;
      case 2:
        if (!ParseTrainerSpec(f.bytes, &out->trainer)) return "trainer_spec";
        break;
      case 3:
        if (!ParseNormalizerSpec(f.bytes, &out->normalizer)) return "normalizer_spec";
        break;
      case 5:
        if (!ParseNormalizerSpec(f.bytes, &out->denormalizer)) return "denormalizer_spec";
        break;
    }
  }
  return "";
}

}  // namespace

// ---------------------------------------------------------------------------
// A byte trie (for the vocabulary and the user-defined symbols): a search
// steps one byte at a time, so a longest match costs the match's length.

class SentencePieceModel::ByteTrie {
 public:
  ByteTrie() : values_(1, -1) {}

  // Maps `key` to `value` unless `key` already has a value (darts-clone keeps
  // the first of duplicate keys). An empty key is never matched.
  void Insert(absl::string_view key, int value) {
    int node = 0;
    for (char c : key) {
      const auto [it, inserted] =
          edges_.try_emplace(EdgeKey(node, c), static_cast<int>(values_.size()));
      if (inserted) values_.push_back(-1);
      node = it->second;
    }
    if (node != 0 && values_[node] < 0) values_[node] = value;
  }
  // The node after byte `c` from `node`, or -1.
  int Child(int node, char c) const {
    const auto it = edges_.find(EdgeKey(node, c));
    return it == edges_.end() ? -1 : it->second;
  }
  // The value of the key ending at `node`, or -1.
  int value(int node) const { return values_[node]; }
  bool empty() const { return edges_.empty(); }

 private:
  static uint64_t EdgeKey(int node, char c) {
    return (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
  }
  absl::flat_hash_map<uint64_t, int> edges_;
  std::vector<int> values_;
};

// ---------------------------------------------------------------------------
// The precompiled charsmap: <uint32 little-endian trie size><darts-clone
// double array><NUL-terminated replacements>; a trie value is the offset of
// a replacement. Lookups are bounds-checked: a malformed map never reads
// outside itself (an entry pointing outside is no match).

class SentencePieceModel::CharsMap {
 public:
  static absl::StatusOr<std::unique_ptr<CharsMap>> Create(absl::string_view blob,
                                                          const std::string& name) {
    // Normalizer::DecodePrecompiledCharsMap, with the trie size checked
    // against the bytes that follow the size field.
    if (blob.size() <= 4) {
      return absl::DataLossError(absl::StrCat(
          name, ": normalizer_spec.precompiled_charsmap is broken (", blob.size(), " bytes)"));
    }
    uint32_t trie_size = 0;
    for (int i = 3; i >= 0; --i) trie_size = (trie_size << 8) | static_cast<uint8_t>(blob[i]);
    blob.remove_prefix(4);
    if (trie_size > blob.size() || trie_size / 4 == 0) {
      return absl::DataLossError(
          absl::StrCat(name, ": normalizer_spec.precompiled_charsmap is broken (its trie of ",
                       trie_size, " bytes does not fit the ", blob.size(), " bytes that follow)"));
    }
    auto map = std::unique_ptr<CharsMap>(new CharsMap());
    map->units_.resize(trie_size / 4);
    for (size_t i = 0; i < map->units_.size(); ++i) {
      uint32_t u = 0;
      for (int k = 3; k >= 0; --k) u = (u << 8) | static_cast<uint8_t>(blob[4 * i + k]);
      map->units_[i] = u;
    }
    map->replacements_ = std::string(blob.substr(trie_size));
    return map;
  }

  // Normalizer::NormalizePrefix's trie part: darts-clone commonPrefixSearch
  // over `s`, keeping the longest of the first 32 matches. True with
  // *length and *replacement set if there is a match.
  bool LongestMatch(absl::string_view s, size_t* length, absl::string_view* replacement) const {
    size_t node = Offset(units_[0]);
    int matches = 0;
    uint32_t value = 0;
    *length = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const uint32_t c = static_cast<unsigned char>(s[i]);
      node ^= c;
      if (node >= units_.size()) break;
      const uint32_t unit = units_[node];
      if (Label(unit) != c) break;
      node ^= Offset(unit);
      if (HasLeaf(unit)) {
        if (node >= units_.size()) break;
        if (matches < kMaxCharsMapResults) {
          *length = i + 1;
          value = units_[node] & 0x7FFFFFFFu;
        }
        ++matches;
      }
    }
    if (*length == 0 || value >= replacements_.size()) return false;
    const size_t end = replacements_.find('\0', value);
    *replacement = absl::string_view(replacements_)
                       .substr(value, end == std::string::npos ? std::string::npos : end - value);
    return true;
  }

 private:
  CharsMap() = default;
  // Darts::Details::DoubleArrayUnit.
  static bool HasLeaf(uint32_t u) { return ((u >> 8) & 1) == 1; }
  static uint32_t Label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
  static uint32_t Offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string replacements_;
};

struct SentencePieceModel::Maps {
  // ModelInterface's pieces_ (NORMAL, USER_DEFINED, UNUSED) and
  // reserved_id_map_ (the other types).
  absl::flat_hash_map<std::string, int> normal;
  absl::flat_hash_map<std::string, int> reserved;
};

// ---------------------------------------------------------------------------

SentencePieceModel::SentencePieceModel() : maps_(new Maps()) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
}
SentencePieceModel::~SentencePieceModel() = default;

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Parse(
    absl::string_view serialized, const std::string& name) {
  ModelProtoData proto;
  const std::string bad = ParseModelProto(serialized, &proto);
  if (!bad.empty()) {
    return absl::DataLossError(
        absl::StrCat(name, ": not a valid SentencePiece model (malformed protobuf in ", bad, ")"));
  }
  auto fail = [&name](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(name, ": not a valid SentencePiece model: ", what));
  };
  const TrainerSpecData& trainer = proto.trainer;
  if (trainer.model_type < 1 || trainer.model_type > 4) {
    return fail(absl::StrCat("unknown trainer_spec.model_type ", trainer.model_type,
                             " (known: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR)"));
  }
  if (!proto.denormalizer.precompiled_charsmap.empty()) {
    return absl::UnimplementedError(
        absl::StrCat(name,
                     ": SentencePiece models with a denormalizer are not supported "
                     "(decoding could not stream)"));
  }

  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel());
  m->model_type_ = static_cast<ModelType>(trainer.model_type);
  m->byte_fallback_ = trainer.byte_fallback;
  m->treat_whitespace_as_suffix_ = trainer.treat_whitespace_as_suffix;
  m->add_dummy_prefix_ = proto.normalizer.add_dummy_prefix;
  m->remove_extra_whitespaces_ = proto.normalizer.remove_extra_whitespaces;
  m->escape_whitespaces_ = proto.normalizer.escape_whitespaces;
  m->normalizer_name_ = proto.normalizer.name;
  // Decoding uses unk_surface as a C string.
  m->unk_surface_ = trainer.has_unk_surface ? std::string(TrieKey(trainer.unk_surface))
                                            : std::string(kDefaultUnkSurface);
  if (!proto.normalizer.precompiled_charsmap.empty()) {
    ASSIGN_OR_RETURN(m->charsmap_, CharsMap::Create(proto.normalizer.precompiled_charsmap, name));
  }

  // ModelInterface::InitializePieces.
  bool byte_found[256] = {};
  auto user_defined = std::make_unique<ByteTrie>();
  m->pieces_.reserve(proto.pieces.size());
  for (size_t i = 0; i < proto.pieces.size(); ++i) {
    const ModelProtoData::RawPiece& raw = proto.pieces[i];
    const int id = static_cast<int>(i);
    if (raw.type < 1 || raw.type > 6) {
      return fail(absl::StrCat("piece ", id, " has unknown type ", raw.type));
    }
    if (raw.piece.empty()) return fail(absl::StrCat("piece ", id, " is empty"));
    Piece p;
    p.text = raw.piece;
    p.score = raw.score;
    p.type = static_cast<PieceType>(raw.type);
    const bool is_normal = p.type == PieceType::kNormal || p.type == PieceType::kUserDefined ||
                           p.type == PieceType::kUnused;
    auto& map = is_normal ? m->maps_->normal : m->maps_->reserved;
    if (!map.try_emplace(p.text, id).second) {
      return fail(absl::StrCat("piece \"", absl::CHexEscape(p.text), "\" is defined twice"));
    }
    if (p.type == PieceType::kUserDefined) user_defined->Insert(TrieKey(p.text), id);
    if (p.type == PieceType::kUnknown) {
      if (m->unk_id_ >= 0) {
        return fail(absl::StrCat("two unknown pieces (", m->unk_id_, " and ", id, ")"));
      }
      m->unk_id_ = id;
    }
    if (p.type == PieceType::kByte) {
      if (!trainer.byte_fallback) {
        return fail(absl::StrCat("byte piece ", p.text, " although byte_fallback is false"));
      }
      const int byte = PieceToByte(p.text);
      if (byte < 0) {
        return fail(absl::StrCat("byte piece \"", absl::CHexEscape(p.text), "\" is invalid"));
      }
      byte_found[byte] = true;
      m->byte_ids_[byte] = id;
    }
    m->pieces_.push_back(std::move(p));
  }
  if (m->unk_id_ < 0) return fail("no unknown piece");
  if (trainer.byte_fallback &&
      std::find(std::begin(byte_found), std::end(byte_found), false) != std::end(byte_found)) {
    return fail("byte_fallback is true but not all 256 byte pieces <0x00>..<0xFF> exist");
  }
  if (!user_defined->empty()) m->user_defined_ = std::move(user_defined);

  // SentencePieceProcessor::bos_id / eos_id.
  auto control_id = [&m](const std::string& piece, const char* fallback) {
    const int id = m->PieceToId(TrieKey(piece.empty() ? std::string(fallback) : piece));
    return m->pieces_[id].type == PieceType::kControl ? id : -1;
  };
  m->bos_id_ = control_id(trainer.bos_piece, "<s>");
  m->eos_id_ = control_id(trainer.eos_piece, "</s>");

  if (m->model_type_ == ModelType::kUnigram) {
    // unigram::Model::Model and BuildTrie: scores over NORMAL pieces (FLT_MIN
    // as SentencePiece starts max_score_), the trie over the normal map in
    // sorted order.
    m->min_score_ = FLT_MAX;
    m->max_score_ = FLT_MIN;
    std::vector<std::pair<absl::string_view, int>> sorted;
    for (int id = 0; id < m->piece_size(); ++id) {
      const Piece& p = m->pieces_[id];
      if (p.type == PieceType::kNormal) {
        m->min_score_ = std::min(m->min_score_, p.score);
        m->max_score_ = std::max(m->max_score_, p.score);
      }
      if (p.type == PieceType::kNormal || p.type == PieceType::kUserDefined ||
          p.type == PieceType::kUnused) {
        sorted.emplace_back(p.text, id);
      }
    }
    if (sorted.empty()) return fail("a unigram model without normal pieces");
    std::sort(sorted.begin(), sorted.end());
    m->vocab_trie_ = std::make_unique<ByteTrie>();
    for (const auto& [text, id] : sorted) m->vocab_trie_->Insert(TrieKey(text), id);
    if (m->vocab_trie_->empty()) return fail("a unigram model whose pieces all begin with NUL");
  }
  return m;
}

unsigned char SentencePieceModel::PieceByte(int id) const {
  return static_cast<unsigned char>(PieceToByte(pieces_[id].text));
}

int SentencePieceModel::PieceToId(absl::string_view piece) const {
  auto it = maps_->reserved.find(piece);
  if (it != maps_->reserved.end()) return it->second;
  it = maps_->normal.find(piece);
  if (it != maps_->normal.end()) return it->second;
  return unk_id_;
}

size_t SentencePieceModel::MatchUserDefined(absl::string_view s) const {
  if (user_defined_ == nullptr) return 0;
  size_t longest = 0;
  int matches = 0;
  int node = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    node = user_defined_->Child(node, s[i]);
    if (node < 0) break;
    if (user_defined_->value(node) >= 0 && matches++ < kMaxUserDefinedResults) longest = i + 1;
  }
  return longest;
}

std::pair<absl::string_view, size_t> SentencePieceModel::NormalizePrefix(
    absl::string_view s) const {
  const size_t user = MatchUserDefined(s);
  if (user > 0) return {s.substr(0, user), user};
  if (charsmap_ != nullptr) {
    size_t length;
    absl::string_view replacement;
    if (charsmap_->LongestMatch(s, &length, &replacement)) return {replacement, length};
  }
  size_t mblen;
  if (!IsValidDecodeUtf8(s, &mblen)) return {kReplacementChar, 1};
  return {s.substr(0, mblen), mblen};
}

// Normalizer::Normalize (without the alignment, which encoding does not use).
std::string SentencePieceModel::Normalize(absl::string_view input) const {
  std::string out;
  if (remove_extra_whitespaces_) {
    while (!input.empty()) {
      const auto p = NormalizePrefix(input);
      if (p.first != " ") break;
      input.remove_prefix(p.second);
    }
  }
  if (input.empty()) return out;
  out.reserve(input.size() * 3);
  const absl::string_view space = escape_whitespaces_ ? kSpaceSymbol : " ";
  if (!treat_whitespace_as_suffix_ && add_dummy_prefix_) out.append(space.data(), space.size());
  bool is_prev_space = remove_extra_whitespaces_;
  while (!input.empty()) {
    const auto p = NormalizePrefix(input);
    absl::string_view sp = p.first;
    while (is_prev_space && absl::ConsumePrefix(&sp, " ")) {
    }
    if (!sp.empty()) {
      for (char c : sp) {
        if (escape_whitespaces_ && c == ' ') {
          out.append(kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      is_prev_space = absl::EndsWith(sp, " ");
    }
    input.remove_prefix(p.second);
    if (!remove_extra_whitespaces_) is_prev_space = false;
  }
  if (remove_extra_whitespaces_) {
    while (absl::EndsWith(out, space)) out.resize(out.size() - space.size());
  }
  if (treat_whitespace_as_suffix_ && add_dummy_prefix_) out.append(space.data(), space.size());
  return out;
}

// unigram::Model::EncodeOptimized: Viterbi over byte positions, keeping the
// best path that ends at each. The arithmetic types are SentencePiece's (a
// candidate is compared in double, stored in float), so ties break the same.
std::vector<SentencePieceModel::Segment> SentencePieceModel::EncodeUnigram(
    absl::string_view normalized) const {
  struct BestPathNode {
    int id = -1;
    float best_path_score = 0;
    int starts_at = -1;
  };
  const int size = static_cast<int>(normalized.size());
  const float unk_score = min_score_ - kUnkPenalty;
  std::vector<BestPathNode> best(size + 1);
  int starts_at = 0;
  while (starts_at < size) {
    const float best_path_score_till_here = best[starts_at].best_path_score;
    bool has_single_node = false;
    const int mblen =
        std::min<int>(static_cast<int>(OneCharLen(normalized[starts_at])), size - starts_at);
    int node = 0;
    for (int key_pos = starts_at; key_pos < size;) {
      node = vocab_trie_->Child(node, normalized[key_pos]);
      if (node < 0) break;
      ++key_pos;
      const int id = vocab_trie_->value(node);
      if (id < 0 || pieces_[id].type == PieceType::kUnused) continue;
      BestPathNode& target = best[key_pos];
      const int length = key_pos - starts_at;
      const double score = pieces_[id].type == PieceType::kUserDefined
                               ? (static_cast<float>(length) * max_score_ - 0.1)
                               : static_cast<double>(pieces_[id].score);
      const double candidate = score + best_path_score_till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = static_cast<float>(candidate);
        target.starts_at = starts_at;
        target.id = id;
      }
      if (!has_single_node && length == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      BestPathNode& target = best[starts_at + mblen];
      const float candidate = unk_score + best_path_score_till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = candidate;
        target.starts_at = starts_at;
        target.id = unk_id_;
      }
    }
    starts_at += mblen;
  }
  std::vector<Segment> result;
  int ends_at = size;
  while (ends_at > 0) {
    const BestPathNode& node = best[ends_at];
    // A path always reaches the end: every character has a piece or an
    // unknown node, and pieces end on character boundaries.
    if (node.starts_at < 0) return {};
    result.emplace_back(normalized.substr(node.starts_at, ends_at - node.starts_at), node.id);
    ends_at = node.starts_at;
  }
  std::reverse(result.begin(), result.end());
  return result;
}

// bpe::Model::SampleEncode with alpha 0.
std::vector<SentencePieceModel::Segment> SentencePieceModel::EncodeBpe(
    absl::string_view normalized) const {
  struct Symbol {
    int prev;
    int next;
    bool freeze;  // a user-defined symbol: never merged
    absl::string_view piece;
  };
  struct SymbolPair {
    int left;
    int right;
    float score;
    size_t size;
  };
  // Highest score first; the leftmost of equal scores first.
  struct Lower {
    bool operator()(const SymbolPair& a, const SymbolPair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  std::priority_queue<SymbolPair, std::vector<SymbolPair>, Lower> agenda;
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  // Merged UNUSED piece -> the two symbols it was made of (the last pair
  // queued with that text, as SentencePiece records it).
  absl::flat_hash_map<absl::string_view, std::pair<absl::string_view, absl::string_view>> rev_merge;

  auto maybe_add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const absl::string_view piece(symbols[left].piece.data(),
                                  symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = maps_->normal.find(piece);
    if (it == maps_->normal.end()) return;
    agenda.push(SymbolPair{left, right, pieces_[it->second].score, piece.size()});
    if (pieces_[it->second].type == PieceType::kUnused) {
      rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
    }
  };

  // Characters (or whole user-defined symbols).
  for (int index = 0; !normalized.empty(); ++index) {
    Symbol s;
    const size_t user = MatchUserDefined(normalized);
    s.freeze = user > 0;
    const size_t mblen = user > 0 ? user : std::min(normalized.size(), OneCharLen(normalized[0]));
    s.piece = normalized.substr(0, mblen);
    s.prev = index == 0 ? -1 : index - 1;
    normalized.remove_prefix(mblen);
    s.next = normalized.empty() ? -1 : index + 1;
    symbols.push_back(s);
  }
  if (symbols.empty()) return {};
  for (size_t i = 1; i < symbols.size(); ++i) {
    maybe_add_pair(static_cast<int>(i) - 1, static_cast<int>(i));
  }

  while (!agenda.empty()) {
    const SymbolPair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale: one side was merged away or has grown since the pair was queued.
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.size) {
      continue;
    }
    left.piece = absl::string_view(left.piece.data(), left.piece.size() + right.piece.size());
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = absl::string_view();
    maybe_add_pair(left.prev, top.left);
    maybe_add_pair(top.left, left.next);
  }

  // An UNUSED piece is split back into the pieces it was merged from.
  std::vector<Segment> result;
  std::vector<absl::string_view> stack;
  for (int index = 0; index != -1; index = symbols[index].next) {
    stack.push_back(symbols[index].piece);
    while (!stack.empty()) {
      const absl::string_view w = stack.back();
      stack.pop_back();
      const int id = PieceToId(w);
      const auto it = pieces_[id].type == PieceType::kUnused ? rev_merge.find(w) : rev_merge.end();
      if (it == rev_merge.end()) {
        result.emplace_back(w, id);
      } else {
        stack.push_back(it->second.second);
        stack.push_back(it->second.first);
      }
    }
  }
  return result;
}

// word::Model::Encode: SplitIntoWords (a new word at the start and before
// each U+2581), each word's id.
std::vector<SentencePieceModel::Segment> SentencePieceModel::EncodeWord(
    absl::string_view normalized) const {
  std::vector<absl::string_view> words;
  const char* begin = normalized.data();
  const char* end = begin + normalized.size();
  while (begin < end) {
    const size_t mblen = std::min<size_t>(OneCharLen(*begin), end - begin);
    const bool is_ws = absl::string_view(begin, mblen) == kSpaceSymbol;
    if (begin == normalized.data() || is_ws) words.emplace_back(begin, 0);
    words.back() = absl::string_view(words.back().data(), words.back().size() + mblen);
    begin += mblen;
  }
  std::vector<Segment> result;
  result.reserve(words.size());
  for (absl::string_view w : words) result.emplace_back(w, PieceToId(w));
  return result;
}

// character::Model::Encode.
std::vector<SentencePieceModel::Segment> SentencePieceModel::EncodeChar(
    absl::string_view normalized) const {
  std::vector<Segment> result;
  while (!normalized.empty()) {
    const size_t user = MatchUserDefined(normalized);
    const size_t mblen = user > 0 ? user : std::min(normalized.size(), OneCharLen(normalized[0]));
    const absl::string_view w = normalized.substr(0, mblen);
    result.emplace_back(w, PieceToId(w));
    normalized.remove_prefix(mblen);
  }
  return result;
}

absl::StatusOr<std::vector<int>> SentencePieceModel::Encode(absl::string_view text) const {
  const std::string normalized = Normalize(text);
  std::vector<Segment> segments;
  if (!normalized.empty()) {
    switch (model_type_) {
      case ModelType::kUnigram:
        segments = EncodeUnigram(normalized);
        break;
      case ModelType::kBpe:
        segments = EncodeBpe(normalized);
        break;
      case ModelType::kWord:
        segments = EncodeWord(normalized);
        break;
      case ModelType::kChar:
        segments = EncodeChar(normalized);
        break;
    }
  }
  // SentencePieceProcessor::PopulateSentencePieceText.
  std::vector<int> ids;
  ids.reserve(segments.size());
  size_t consumed = 0;
  bool is_prev_unk = false;
  for (const auto& [w, id] : segments) {
    const PieceType type = pieces_[id].type;
    if (type == PieceType::kControl) {
      // SentencePiece fails such an encoding ("all normalized characters are
      // not consumed").
      return absl::InvalidArgumentError(
          absl::StrCat("SentencePiece cannot encode this text: its segment \"", absl::CHexEscape(w),
                       "\" is the control piece ", id));
    }
    const bool is_unk = type == PieceType::kUnknown;
    if (is_unk && byte_fallback_) {
      for (char b : w) ids.push_back(byte_ids_[static_cast<unsigned char>(b)]);
    } else if (!(is_unk && is_prev_unk)) {
      ids.push_back(id);  // a run of unknown pieces is one unknown id
    }
    consumed += w.size();
    is_prev_unk = is_unk;
  }
  if (consumed != normalized.size()) {
    return absl::InternalError(absl::StrCat("SentencePiece encoding consumed ", consumed, " of ",
                                            normalized.size(), " normalized bytes"));
  }
  return ids;
}

}  // namespace memserve
