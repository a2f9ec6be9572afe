// A std-only wrapper around sentencepiece::SentencePieceProcessor.
//
// Why: sentencepiece_processor.h declares `namespace absl { using
// std::string_view; }`, which makes `absl::string_view` ambiguous next to
// Debian's Abseil (whose absl::string_view is its own class). So no file may
// include both; this header includes neither and its .cc includes only
// SentencePiece.
#ifndef MEMSERVE_ENGINE_SENTENCEPIECE_SHIM_H_
#define MEMSERVE_ENGINE_SENTENCEPIECE_SHIM_H_

#include <memory>
#include <string>
#include <vector>

namespace memserve {

class SentencePieceShim {
 public:
  // Loads a serialized ModelProto. On failure returns null and sets *error.
  static std::unique_ptr<SentencePieceShim> Load(const std::string& serialized_model,
                                                 std::string* error);
  ~SentencePieceShim();

  int GetPieceSize() const;
  std::string IdToPiece(int id) const;  // REQUIRES: 0 <= id < GetPieceSize()
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  bool IsUnused(int id) const;
  int bos_id() const;  // -1 if the model has none
  int eos_id() const;

  // False (and *error set) if SentencePiece reports an error.
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  // SentencePiece's own decoding. REQUIRES: every id in [0, GetPieceSize()).
  std::string DecodeIds(const std::vector<int>& ids) const;

 private:
  SentencePieceShim();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memserve

#endif  // MEMSERVE_ENGINE_SENTENCEPIECE_SHIM_H_
