#include "server/exposure.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace memserve {

bool IsLoopbackHost(absl::string_view host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  const std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

bool IsLocalAddress(absl::string_view address) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return true;
  }
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return false;
  return IsLoopbackHost(address.substr(0, colon));
}

absl::Status CheckPlaintextExposure(absl::string_view flag, absl::string_view address, bool tls,
                                    bool insecure) {
  if (tls || insecure || IsLocalAddress(address)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      flag, " ", address, " is not a loopback address and would serve plaintext (no TLS",
      flag == "--listen" ? ": give --tls_cert and --tls_key" : " on this port",
      "); pass --insecure to serve it anyway (docs/security.md)"));
}

}  // namespace memserve
