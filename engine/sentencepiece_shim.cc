// Includes SentencePiece and no Abseil header (see sentencepiece_shim.h).
#include "engine/sentencepiece_shim.h"

#include <utility>

#include "sentencepiece_processor.h"

namespace memserve {

struct SentencePieceShim::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceShim::SentencePieceShim() : impl_(new Impl()) {}
SentencePieceShim::~SentencePieceShim() = default;

std::unique_ptr<SentencePieceShim> SentencePieceShim::Load(const std::string& serialized_model,
                                                           std::string* error) {
  std::unique_ptr<SentencePieceShim> shim(new SentencePieceShim());
  const auto st = shim->impl_->sp.LoadFromSerializedProto(serialized_model);
  if (!st.ok()) {
    *error = st.ToString();
    return nullptr;
  }
  return shim;
}

int SentencePieceShim::GetPieceSize() const { return impl_->sp.GetPieceSize(); }
std::string SentencePieceShim::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
bool SentencePieceShim::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceShim::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceShim::IsByte(int id) const { return impl_->sp.IsByte(id); }
bool SentencePieceShim::IsUnused(int id) const { return impl_->sp.IsUnused(id); }
int SentencePieceShim::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceShim::eos_id() const { return impl_->sp.eos_id(); }

bool SentencePieceShim::Encode(const std::string& text, std::vector<int>* ids,
                               std::string* error) const {
  ids->clear();
  const auto st = impl_->sp.Encode(text, ids);
  if (!st.ok()) {
    *error = st.ToString();
    return false;
  }
  return true;
}

std::string SentencePieceShim::DecodeIds(const std::vector<int>& ids) const {
  return impl_->sp.DecodeIds(ids);
}

}  // namespace memserve
