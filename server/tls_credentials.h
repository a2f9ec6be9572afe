// The gRPC port's TLS credentials from --tls_cert, --tls_key and
// --tls_client_ca, reloadable without dropping connections
// (docs/security.md, "Rotating keys and certificates").
//
// The files are checked with OpenSSL (every certificate parses, the key
// parses and matches the leaf certificate), then copied into a private
// staging directory (mode 0700 under $TMPDIR, else /tmp) that gRPC's
// FileWatcherCertificateProvider re-reads every second. Reload() checks the
// files again and, only when they are good, swaps the staged copy (a
// symlink renamed over the old one), so editing the files alone changes
// nothing, a bad file on reload leaves the served certificate as it was, and
// open connections keep the session they negotiated. New handshakes use the
// new certificate within about a second of Reload returning.
#ifndef MEMSERVE_SERVER_TLS_CREDENTIALS_H_
#define MEMSERVE_SERVER_TLS_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"

namespace memserve {

struct TlsFiles {
  std::string cert;       // --tls_cert: PEM certificate chain, leaf first
  std::string key;        // --tls_key: PEM private key of the leaf
  std::string client_ca;  // --tls_client_ca: PEM CA certificates; empty: no mTLS
};

// Not thread-safe: Reload from one thread (the server's signal loop).
class ReloadableTls {
 public:
  // Checks and stages `files`. Errors are one line naming the flag and the
  // file: NotFound / PermissionDenied when a file cannot be read,
  // InvalidArgument when it is not usable (no PEM block of the right kind,
  // a block OpenSSL cannot parse, a key that does not match the
  // certificate), Internal when the staging directory cannot be written.
  static absl::StatusOr<std::unique_ptr<ReloadableTls>> Create(const TlsFiles& files);
  ~ReloadableTls();  // removes the staging directory

  ReloadableTls(const ReloadableTls&) = delete;
  ReloadableTls& operator=(const ReloadableTls&) = delete;

  // TLS, or mTLS (a client certificate signed by client_ca required) when
  // client_ca is set, served from the staged files.
  std::shared_ptr<grpc::ServerCredentials> credentials() const { return credentials_; }

  // Re-reads the files given to Create. On error (Create's), the staged
  // files and so the served certificate stay as they were.
  absl::Status Reload();

 private:
  ReloadableTls() = default;
  absl::Status Stage();

  TlsFiles files_;
  std::string dir_;  // the staging directory
  int generation_ = 0;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

// The credentials for the flags: nullptr (plaintext) when none of the three
// is set; InvalidArgument naming the flags for a bad combination (a cert
// without a key or the reverse, a client CA without both); else Create's.
absl::StatusOr<std::unique_ptr<ReloadableTls>> TlsFromFlags(const TlsFiles& files);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_TLS_CREDENTIALS_H_
