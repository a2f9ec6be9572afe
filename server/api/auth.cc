#include "server/api/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace memserve {
namespace {

constexpr absl::string_view kHashedPrefix = "sha256:";
constexpr size_t kMaxKeyBytes = 4096;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsKeyChar(char c) { return c > ' ' && c < 0x7f; }

}  // namespace

Sha256Digest Sha256(absl::string_view data) {
  Sha256Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(absl::string_view contents, absl::string_view flag,
                                       absl::string_view path) {
  ApiKeys keys;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ":", number, ": ", why));
    };
    if (absl::StartsWith(line, kHashedPrefix)) {
      absl::string_view hex = line.substr(kHashedPrefix.size());
      Sha256Digest digest;
      if (hex.size() != 2 * digest.size()) {
        return bad(absl::StrCat("a hashed key is sha256: and 64 hex digits, got ", hex.size(),
                                " characters after sha256:"));
      }
      for (size_t i = 0; i < digest.size(); ++i) {
        const int high = HexValue(hex[2 * i]);
        const int low = HexValue(hex[2 * i + 1]);
        if (high < 0 || low < 0) return bad("a hashed key is sha256: and 64 hex digits");
        digest[i] = static_cast<uint8_t>(high * 16 + low);
      }
      keys.digests_.push_back(digest);
      continue;
    }
    if (line.size() > kMaxKeyBytes) {
      return bad(absl::StrCat("a key is at most ", kMaxKeyBytes, " bytes"));
    }
    for (char c : line) {
      if (!IsKeyChar(c)) return bad("a key is printable ASCII without spaces");
    }
    keys.digests_.push_back(Sha256(line));
  }
  if (keys.digests_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": no keys (one key per line; # starts a comment)"));
  }
  return keys;
}

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  if (in) contents << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read the file"));
  }
  return Parse(contents.str(), flag, path);
}

const char* ApiKeys::FailureName(Failure failure) {
  return failure == Failure::kMissing ? "missing" : "invalid";
}

std::optional<absl::string_view> BearerKey(absl::string_view authorization) {
  const absl::string_view value = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer";
  if (value.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  const absl::string_view rest = value.substr(kScheme.size());
  if (!rest.empty() && rest.front() != ' ') return std::nullopt;
  return absl::StripLeadingAsciiWhitespace(rest);
}

std::optional<ApiKeys::Failure> ApiKeys::Check(
    std::optional<absl::string_view> authorization) const {
  if (!authorization.has_value()) return Failure::kMissing;
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  if (value.empty()) return Failure::kMissing;
  const std::optional<absl::string_view> key = BearerKey(value);
  if (!key.has_value()) return Failure::kInvalid;
  if (key->empty()) return Failure::kMissing;
  const Sha256Digest presented = Sha256(*key);
  // Every configured digest is compared in full, whatever matched.
  int matches = 0;
  for (const Sha256Digest& digest : digests_) {
    matches |= CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) == 0;
  }
  if (matches != 0) return std::nullopt;
  return Failure::kInvalid;
}

absl::Status ApiKeys::Error(Failure failure) {
  return absl::UnauthenticatedError(
      failure == Failure::kMissing
          ? "this server requires an API key: send the header `authorization: Bearer <key>`"
          : "invalid API key (the `authorization: Bearer <key>` header)");
}

}  // namespace memserve
