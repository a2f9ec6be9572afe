// API keys (`memserve serve --api_keys_file`): the one rule both transports
// apply before a call touches the engine. docs/security.md, "API keys".
//
// The file holds one key per line; blank lines and lines whose first
// non-blank character is '#' are ignored; surrounding spaces are trimmed. A
// line `sha256:<64 hex digits>` is a hashed key (the SHA-256 of the key the
// client presents); any other line is the key itself (printable ASCII, no
// spaces, at most 4096 bytes).
//
// A call presents a key as `authorization: Bearer <key>` (gRPC metadata or
// HTTP header). The check hashes the presented key and compares the digest
// with every configured digest in constant time (no early exit, neither
// within a digest nor across keys), so neither the key nor which bytes of it
// matched leak through timing. Keys are never logged: errors and log lines
// say only "missing" or "invalid".
#ifndef MEMSERVE_SERVER_API_AUTH_H_
#define MEMSERVE_SERVER_API_AUTH_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memserve {

using Sha256Digest = std::array<uint8_t, 32>;

// SHA-256 of `data` (OpenSSL's libcrypto).
Sha256Digest Sha256(absl::string_view data);

// The key of an `authorization` value `Bearer <key>` (the scheme
// case-insensitive, spaces around trimmed; the key may be empty); nullopt
// for another scheme.
std::optional<absl::string_view> BearerKey(absl::string_view authorization);

// The configured keys. Immutable after loading: thread-safe.
class ApiKeys {
 public:
  // Parses the contents of a key file; errors name `flag`, `path` and the
  // 1-based line number, never the line's text: InvalidArgument for a
  // malformed line or a file without keys.
  static absl::StatusOr<ApiKeys> Parse(absl::string_view contents, absl::string_view flag,
                                       absl::string_view path);
  // Reads and parses `path`; InvalidArgument also when it cannot be read.
  static absl::StatusOr<ApiKeys> Load(const std::string& path, absl::string_view flag);

  size_t size() const { return digests_.size(); }

  // Why a call is refused, for the log line's `auth=` field.
  enum class Failure { kMissing, kInvalid };
  static const char* FailureName(Failure failure);

  // Checks the value of the `authorization` header / metadata (nullopt when
  // the call has none): nullopt when it is `Bearer <a configured key>`
  // (the scheme is case-insensitive), else why not.
  std::optional<Failure> Check(std::optional<absl::string_view> authorization) const;

  // Unauthenticated, with a message for the client that does not contain
  // the key.
  static absl::Status Error(Failure failure);

 private:
  std::vector<Sha256Digest> digests_;
};

}  // namespace memserve

#endif  // MEMSERVE_SERVER_API_AUTH_H_
