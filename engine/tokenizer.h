// Tokenizers (docs/model.md, "Tokenizers") and
// the incremental, UTF-8-safe detokenizer used for streaming.
//
// Decoding model: every token contributes exact bytes (TokenBytes); the text
// of a sequence is those bytes concatenated, with SentencePiece's leading-
// space rule applied, then made valid UTF-8: a byte that cannot start or
// continue a well-formed character becomes U+FFFD (one per byte, the same
// rule SentencePiece uses for byte-fallback pieces). Decode() and
// IncrementalDecoder give identical text for the same ids.
#ifndef MEMSERVE_ENGINE_TOKENIZER_H_
#define MEMSERVE_ENGINE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/config.h"

namespace memserve {

// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
// Tokenizers accept any bytes; callers that need text (e.g. a proto string
// field) check with this.
bool IsValidUtf8(absl::string_view s);

// Thread-safety: a Tokenizer is immutable after Create(); all const methods
// may be called concurrently.
class Tokenizer {
 public:
  virtual ~Tokenizer();

  // "bytes" (no file) or "sp" (`model_dir`/`cfg.file`, a SentencePiece model,
  // read and encoded by engine/sentencepiece_model.h).
  // Errors: InvalidArgument for a bad config (kind, ids out of range, ids
  // that disagree with the SentencePiece model), Unimplemented for "tiktoken"
  // or an sp model with a denormalizer, NotFound / DataLoss naming the file
  // for a missing, unreadable or malformed model.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerConfig& cfg,
                                                           const std::string& model_dir);

  // Token ids for arbitrary bytes `text` (invalid UTF-8 is the caller's
  // concern), with BOS first if `add_bos`. Never adds EOS. sp: exactly
  // SentencePiece's ids; InvalidArgument for the rare text SentencePiece
  // refuses (see SentencePieceModel::Encode).
  virtual absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const = 0;

  // The exact bytes token `id` contributes to decoded text: "" for control
  // tokens (BOS/EOS/pad) and ids outside [0, vocab_size()).
  //  bytes: ids < 256 are that byte.
  //  sp: the piece with U+2581 replaced by ' '; a byte-fallback piece <0xAB>
  //      is that single byte; the unknown piece is its surface (" \u2047 " by
  //      default), exactly as SentencePiece decodes it.
  virtual std::string TokenBytes(int id) const = 0;

  // True for sp models with add_dummy_prefix / remove_extra_whitespaces:
  // decoding drops the leading space that encoding added (the first ordinary
  // piece's U+2581, as SentencePiece::Decode does).
  virtual bool StripsLeadingSpace() const;

  // Full decode; equal to concatenating IncrementalDecoder::Push over `ids`
  // followed by Flush().
  std::string Decode(absl::Span<const int> ids) const;

  virtual int vocab_size() const = 0;
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  virtual std::string kind() const = 0;

 protected:
  Tokenizer(int bos_id, int eos_id) : bos_id_(bos_id), eos_id_(eos_id) {}

  // What a token is, for the decoding rules.
  enum class TokenClass {
    kByte,      // one raw byte (bytes ids < 256, sp <0xAB>): may continue a character
    kOrdinary,  // a text piece of whole characters
    kSpecial,   // control, unknown or out-of-range id
  };
  // Only a kByte token can complete a character held back by the decoder;
  // any other token first turns held bytes into U+FFFD (as SentencePiece
  // decodes each run of byte pieces on its own).
  virtual TokenClass Classify(int id) const = 0;

  // The leading-space rule (consulted only when StripsLeadingSpace()): the
  // U+2581 that begins an ordinary piece is dropped when no text precedes it
  // and no earlier piece had its space dropped.
  // Whether ordinary piece `id` begins with U+2581 (its TokenBytes then begin
  // with that ' ').
  virtual bool BeginsWithSpaceSymbol(int id) const;
  // remove_extra_whitespaces: keep stripping while the stripped pieces leave
  // the text empty, instead of only the first.
  virtual bool StripsRepeatedLeadingSpace() const;

 private:
  friend class IncrementalDecoder;
  int bos_id_;
  int eos_id_;
};

// Streams text as tokens arrive, one per Push. Output is always whole UTF-8
// characters: the bytes of a character split across byte tokens are held
// until it is complete. Every byte that is not part of a well-formed
// character becomes one U+FFFD, emitted as soon as that is certain: when a
// later byte cannot continue the sequence, when a non-byte token arrives
// (only byte tokens can complete a character), or at Flush() (end of stream).
// Example: bytes E6 97 A5 -> "日" after the third; E6 97 then 'A' -> two
// U+FFFD then "A".
//
// REQUIRES: the Tokenizer outlives the decoder. Not thread-safe.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer);

  // Newly completed text after token `id` (possibly empty).
  std::string Push(int id);
  // Remaining text at end of stream; the decoder is then reset to its
  // initial state.
  std::string Flush();
  // Number of bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tok_;
  std::string pending_;        // bytes of an incomplete character
  bool is_bos_ws_ = true;      // SentencePiece's "may still strip a leading space"
  bool bos_ws_seen_ = false;   // the previous ordinary piece had its space stripped
  bool produced_any_ = false;  // any byte has been contributed so far
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_TOKENIZER_H_
