// Safe defaults for where `memserve serve` listens (docs/security.md, "Safe
// defaults"): plaintext is served on loopback only, unless the operator says
// --insecure.
#ifndef MEMSERVE_SERVER_EXPOSURE_H_
#define MEMSERVE_SERVER_EXPOSURE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace memserve {

// True when `host` (no port; IPv6 with or without brackets) can only be
// reached from this machine: "localhost", 127.0.0.0/8, ::1 and
// ::ffff:127.0.0.0/104. Any other name or address, wildcards (0.0.0.0, ::)
// included, is not loopback: names other than "localhost" are not resolved.
bool IsLoopbackHost(absl::string_view host);

// True when the listen address `address` (HOST:PORT, or a gRPC "unix:" /
// "unix-abstract:" socket, which is local) can only be reached from this
// machine. REQUIRES: `address` passed the flag's syntax check.
bool IsLocalAddress(absl::string_view address);

// OK when `address` (the value of `flag`) is local, or the port serves TLS
// (`tls`), or `insecure` (--insecure) was given; else InvalidArgument with
// one line naming `flag`, the address and --insecure.
absl::Status CheckPlaintextExposure(absl::string_view flag, absl::string_view address, bool tls,
                                    bool insecure);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_EXPOSURE_H_
