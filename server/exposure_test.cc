#include "server/exposure.h"

#include "gtest/gtest.h"

namespace memserve {
namespace {

TEST(IsLoopbackHostTest, LoopbackAddressesAndLocalhost) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "LocalHost", "::1", "[::1]",
                           "::ffff:127.0.0.1", "[0:0:0:0:0:0:0:1]"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
}

TEST(IsLoopbackHostTest, WildcardsNamesAndOtherAddressesAreNot) {
  for (const char* host :
       {"0.0.0.0", "::", "[::]", "10.0.0.1", "192.0.2.1", "128.0.0.1", "::ffff:10.0.0.1", "myhost",
        "localhost.example", "", "[]", "127.0.0.1.nip.io"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

TEST(IsLocalAddressTest, HostPortAndUnixSockets) {
  EXPECT_TRUE(IsLocalAddress("127.0.0.1:50051"));
  EXPECT_TRUE(IsLocalAddress("[::1]:0"));
  EXPECT_TRUE(IsLocalAddress("localhost:8000"));
  EXPECT_TRUE(IsLocalAddress("unix:/tmp/memserve.sock"));
  EXPECT_TRUE(IsLocalAddress("unix-abstract:memserve"));
  EXPECT_FALSE(IsLocalAddress("0.0.0.0:50051"));
  EXPECT_FALSE(IsLocalAddress("[::]:50051"));
  EXPECT_FALSE(IsLocalAddress("memserve.example:50051"));
}

TEST(CheckPlaintextExposureTest, RefusesPlaintextOnANetworkUnlessInsecure) {
  EXPECT_TRUE(CheckPlaintextExposure("--listen", "127.0.0.1:50051", false, false).ok());
  EXPECT_TRUE(CheckPlaintextExposure("--listen", "0.0.0.0:50051", /*tls=*/true, false).ok());
  EXPECT_TRUE(CheckPlaintextExposure("--listen", "0.0.0.0:50051", false, /*insecure=*/true).ok());
  const absl::Status s = CheckPlaintextExposure("--listen", "0.0.0.0:50051", false, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "--listen 0.0.0.0:50051 is not a loopback address and would serve plaintext (no "
            "TLS: give --tls_cert and --tls_key); pass --insecure to serve it anyway "
            "(docs/security.md)");
  const absl::Status http = CheckPlaintextExposure("--http_listen", "[::]:8000", false, false);
  EXPECT_EQ(http.message(),
            "--http_listen [::]:8000 is not a loopback address and would serve plaintext (no TLS "
            "on this port); pass --insecure to serve it anyway (docs/security.md)");
}

}  // namespace
}  // namespace memserve
