// --max_streams_per_client: how many generation calls (streaming or not,
// either transport) one client may have open at once, so that one client
// cannot take the whole queue and batch from the others (docs/security.md,
// "Limits"). A client is its API key when the server has keys, else its
// peer address (IP, without the port).
#ifndef MEMSERVE_SERVER_API_CLIENT_LIMITS_H_
#define MEMSERVE_SERVER_API_CLIENT_LIMITS_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace memserve {

// Thread-safe.
class ClientStreamLimiter {
 public:
  // `max_per_client` open calls per client; 0: no limit.
  explicit ClientStreamLimiter(int max_per_client) : max_per_client_(max_per_client) {}

  // One open call of a client, released when destroyed. Movable; a
  // default-constructed or moved-from Slot holds nothing.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept { *this = std::move(other); }
    Slot& operator=(Slot&& other) noexcept;
    ~Slot() { Release(); }

   private:
    friend class ClientStreamLimiter;
    Slot(ClientStreamLimiter* limiter, std::string client)
        : limiter_(limiter), client_(std::move(client)) {}
    void Release();

    ClientStreamLimiter* limiter_ = nullptr;
    std::string client_;
  };

  // A slot for `client`, or ResourceExhausted naming --max_streams_per_client
  // and its value when the client already has that many.
  // REQUIRES: the limiter outlives the slot.
  absl::StatusOr<Slot> Acquire(const std::string& client);

  // The client's open calls.
  int open(const std::string& client) const;

 private:
  const int max_per_client_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> open_ ABSL_GUARDED_BY(mu_);  // no zero entries
};

}  // namespace memserve

#endif  // MEMSERVE_SERVER_API_CLIENT_LIMITS_H_
