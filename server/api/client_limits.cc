#include "server/api/client_limits.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace memserve {

ClientStreamLimiter::Slot& ClientStreamLimiter::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = std::exchange(other.limiter_, nullptr);
    client_ = std::move(other.client_);
  }
  return *this;
}

void ClientStreamLimiter::Slot::Release() {
  if (limiter_ == nullptr) return;
  absl::MutexLock lock(&limiter_->mu_);
  auto it = limiter_->open_.find(client_);
  if (it != limiter_->open_.end() && --it->second == 0) limiter_->open_.erase(it);
  limiter_ = nullptr;
}

absl::StatusOr<ClientStreamLimiter::Slot> ClientStreamLimiter::Acquire(const std::string& client) {
  if (max_per_client_ <= 0) return Slot();
  absl::MutexLock lock(&mu_);
  int& open = open_[client];
  if (open >= max_per_client_) {  // open > 0: max_per_client_ > 0
    return absl::ResourceExhaustedError(absl::StrCat(
        "this client already has ", open,
        " generation calls open; the limit is --max_streams_per_client=", max_per_client_,
        " (retry when one ends)"));
  }
  ++open;
  return Slot(this, client);
}

int ClientStreamLimiter::open(const std::string& client) const {
  absl::MutexLock lock(&mu_);
  auto it = open_.find(client);
  return it == open_.end() ? 0 : it->second;
}

}  // namespace memserve
