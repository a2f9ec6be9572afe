// A SentencePiece model (the ".model" file: a serialized
// sentencepiece.ModelProto) read and applied by memserve itself, with no
// libsentencepiece and no protobuf runtime.
//
// Why: Debian's libsentencepiece carries protobuf-lite 3.14 and exports its
// symbols; memserve links protobuf 3.21 for gRPC, and a process holding both
// aborts ("compiled against version 3.14.0 of the Protocol Buffer runtime").
// So memserve reads the model with its own wire-format reader and implements
// the encoder, as llama.cpp and Hugging Face tokenizers do.
//
// Contract: for every model file that SentencePiece v0.1.97 (the Debian
// library) loads, Encode(text) returns exactly the ids of
// SentencePieceProcessor::Encode(text, &ids) with default options (no
// sampling, no extra options), for any bytes `text`: well-formed UTF-8 or
// not, empty or 1 MB. engine/sentencepiece_model_test.cc compares the two in
// one process on thousands of random strings for models trained with
// spm_train (unigram and BPE, byte fallback on and off, nmt_nfkc and identity
// normalization, the whitespace options, user-defined symbols).
//
// What encoding does (SentencePiece's rules, stated once here):
//  1. Normalize: user-defined symbols are copied as they are (longest match);
//     otherwise the longest match in the precompiled charsmap (a darts-clone
//     double-array trie over the input bytes plus a blob of NUL-terminated
//     replacements) is replaced; otherwise one UTF-8 character is copied, and
//     a byte that does not start a well-formed character becomes U+FFFD.
//     remove_extra_whitespaces drops leading and trailing spaces and squeezes
//     runs; add_dummy_prefix puts one space first (last with
//     treat_whitespace_as_suffix); escape_whitespaces writes ' ' as U+2581.
//  2. Segment the normalized text by the model type: UNIGRAM (Viterbi over
//     all vocabulary matches; unknown characters cost min_score - 10;
//     user-defined pieces score bytes * max_score - 0.1), BPE (repeatedly
//     merge the adjacent pair whose merged piece has the highest score, the
//     leftmost on ties; user-defined symbols never merge), WORD (split before
//     each U+2581), CHAR (one character or user-defined symbol per piece).
//  3. A run of consecutive unknown pieces is one unknown id; with
//     byte_fallback each unknown piece becomes its UTF-8 bytes' <0xXX> ids.
// Encoding runs in time linear in the input (BPE: n log n); memory is linear.
//
// Read from the ModelProto: pieces (piece, score, type), trainer_spec
// (model_type, byte_fallback, treat_whitespace_as_suffix, unk/bos/eos piece
// names, unk_surface), normalizer_spec (name, precompiled_charsmap,
// add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces) and whether
// denormalizer_spec has a charsmap. Everything else is skipped (the trainer
// flags such as split_digits shape the vocabulary, not the encoding).
// Not done: self_test_data is not run; sampling / n-best encodings.
#ifndef MEMSERVE_ENGINE_SENTENCEPIECE_MODEL_H_
#define MEMSERVE_ENGINE_SENTENCEPIECE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memserve {

// Thread-safety: immutable after Parse(); all const methods may be called
// concurrently.
class SentencePieceModel {
 public:
  // sentencepiece_model.proto's ModelProto.SentencePiece.Type values.
  enum class PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };
  // TrainerSpec.ModelType values.
  enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  struct Piece {
    std::string text;  // may contain U+2581 for spaces
    float score = 0;
    PieceType type = PieceType::kNormal;
  };

  // Parses a serialized ModelProto. `name` (the file path) begins every error
  // message. Errors: DataLoss for bytes that are not a well-formed ModelProto
  // or a model SentencePiece would refuse (no pieces, an empty or duplicate
  // piece, no or two unknown pieces, byte pieces that are malformed or
  // without byte_fallback, byte_fallback without all 256 byte pieces, an
  // unknown piece type or model type, a broken precompiled_charsmap);
  // Unimplemented for a model with a denormalizer charsmap.
  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Parse(absl::string_view serialized,
                                                                   const std::string& name);
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // The ids SentencePiece gives `text` (see the contract above); no BOS/EOS.
  // Errors: InvalidArgument when SentencePiece itself refuses the text (a
  // WORD/CHAR/BPE segment that spells a control piece, e.g. "<s>" as a word).
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text) const;

  // The normalized text Encode segments (step 1 above); for tests and tools.
  std::string Normalize(absl::string_view text) const;

  int piece_size() const { return static_cast<int>(pieces_.size()); }
  // REQUIRES: 0 <= id < piece_size().
  const Piece& piece(int id) const { return pieces_[id]; }
  // The byte a BYTE piece stands for. REQUIRES: piece(id).type == kByte.
  unsigned char PieceByte(int id) const;

  ModelType model_type() const { return model_type_; }
  // SentencePieceProcessor::bos_id()/eos_id(): the id of the piece named
  // trainer_spec.bos_piece ("<s>") / eos_piece ("</s>") if it is a control
  // piece, else -1.
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int unk_id() const { return unk_id_; }
  bool byte_fallback() const { return byte_fallback_; }
  bool add_dummy_prefix() const { return add_dummy_prefix_; }
  bool remove_extra_whitespaces() const { return remove_extra_whitespaces_; }
  // What decoding shows for the unknown piece (trainer_spec.unk_surface,
  // default " \u2047 ").
  const std::string& unk_surface() const { return unk_surface_; }
  const std::string& normalizer_name() const { return normalizer_name_; }

 private:
  class ByteTrie;
  class CharsMap;
  using Segment = std::pair<absl::string_view, int>;  // piece text in the normalized text, id

  SentencePieceModel();

  // The longest user-defined symbol that is a prefix of `s` (SentencePiece's
  // PrefixMatcher): its length, or 0 if none.
  size_t MatchUserDefined(absl::string_view s) const;
  // Normalizer::NormalizePrefix: the replacement of the first unit of `s`
  // and how many input bytes it consumes. REQUIRES: !s.empty().
  std::pair<absl::string_view, size_t> NormalizePrefix(absl::string_view s) const;
  // ModelInterface::PieceToId: control/unknown/byte pieces first, then the
  // others; unk_id() if none.
  int PieceToId(absl::string_view piece) const;

  std::vector<Segment> EncodeUnigram(absl::string_view normalized) const;
  std::vector<Segment> EncodeBpe(absl::string_view normalized) const;
  std::vector<Segment> EncodeWord(absl::string_view normalized) const;
  std::vector<Segment> EncodeChar(absl::string_view normalized) const;

  std::vector<Piece> pieces_;
  ModelType model_type_ = ModelType::kUnigram;
  int unk_id_ = -1;
  int bos_id_ = -1;
  int eos_id_ = -1;
  int byte_ids_[256];
  bool byte_fallback_ = false;
  bool treat_whitespace_as_suffix_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  std::string unk_surface_;
  std::string normalizer_name_;
  float min_score_ = 0;  // over NORMAL pieces, as unigram::Model computes them
  float max_score_ = 0;

  std::unique_ptr<CharsMap> charsmap_;      // null: identity normalization
  std::unique_ptr<ByteTrie> user_defined_;  // user-defined symbols; null if none
  std::unique_ptr<ByteTrie> vocab_trie_;    // unigram: NORMAL/USER_DEFINED/UNUSED pieces
  struct Maps;                              // piece text -> id
  std::unique_ptr<Maps> maps_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_SENTENCEPIECE_MODEL_H_
