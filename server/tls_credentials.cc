#include "server/tls_credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace memserve {
namespace {

// The contents of the PEM file `path` given as `flag`, which must hold a
// block "-----BEGIN <something ending in `kind`>-----". NotFound (or
// PermissionDenied) when it cannot be read, InvalidArgument when it has no
// such block; one line naming the flag and the file.
absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path,
                                        const std::string& kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string what = absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(what) : absl::NotFoundError(what);
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t begin = text.find("-----BEGIN ");
  while (begin != std::string::npos) {
    const size_t end = text.find("-----", begin + 11);
    if (end == std::string::npos) break;
    if (absl::EndsWith(text.substr(begin + 11, end - begin - 11), kind)) return text;
    begin = text.find("-----BEGIN ", end + 5);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": ", path, " is not a PEM file with a ", kind, " block"));
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

std::unique_ptr<BIO, BioDeleter> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate of `pem`, in order; empty when one does not parse.
std::vector<X509Ptr> ParseCertificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  auto bio = MemoryBio(pem);
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    out.push_back(std::move(cert));
  }
  // The loop ends at the end of the input (PEM_R_NO_START_LINE) or at a
  // block that does not parse.
  const unsigned long error = ERR_peek_last_error();
  const bool clean_end =
      ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE;
  ERR_clear_error();
  if (!clean_end) out.clear();
  return out;
}

struct CheckedFiles {
  std::string cert, key, client_ca;
};

// Reads and checks `files` (see ReloadableTls::Create).
absl::StatusOr<CheckedFiles> ReadAndCheck(const TlsFiles& files) {
  CheckedFiles out;
  absl::StatusOr<std::string> cert = ReadPemFile("--tls_cert", files.cert, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("--tls_key", files.key, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  const auto unusable = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serve TLS with --tls_cert ", files.cert,
                                                   " and --tls_key ", files.key, ": ", why));
  };
  std::vector<X509Ptr> chain = ParseCertificates(*cert);
  if (chain.empty()) return unusable("a CERTIFICATE block of --tls_cert does not parse");
  std::unique_ptr<EVP_PKEY, KeyDeleter> private_key;
  {
    auto bio = MemoryBio(*key);
    private_key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
  }
  if (private_key == nullptr) return unusable("the PRIVATE KEY block of --tls_key does not parse");
  if (X509_check_private_key(chain.front().get(), private_key.get()) != 1) {
    ERR_clear_error();
    return unusable("the key does not match the (first) certificate");
  }
  out.cert = *std::move(cert);
  out.key = *std::move(key);
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("--tls_client_ca", files.client_ca, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    if (ParseCertificates(*ca).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca: ", files.client_ca,
                                                     ": a CERTIFICATE block does not parse"));
    }
    out.client_ca = *std::move(ca);
  }
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReloadableTls>> ReloadableTls::Create(const TlsFiles& files) {
  std::unique_ptr<ReloadableTls> tls(new ReloadableTls());
  tls->files_ = files;
  const char* tmp = getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && tmp[0] != '\0' ? tmp : "/tmp", "/memserve-tls-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {  // mode 0700
    return absl::InternalError(absl::StrCat("cannot make a directory for the TLS files (", pattern,
                                            "): ", std::strerror(errno)));
  }
  tls->dir_ = pattern;
  if (absl::Status s = tls->Stage(); !s.ok()) return s;
  const std::string current = tls->dir_ + "/current/";
  tls->provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      current + "key.pem", current + "cert.pem", files.client_ca.empty() ? "" : current + "ca.pem",
      /*refresh_interval_sec=*/1);
  grpc::experimental::TlsServerCredentialsOptions options(tls->provider_);
  options.watch_identity_key_cert_pairs();
  if (files.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  tls->credentials_ = grpc::experimental::TlsServerCredentials(options);
  return tls;
}

ReloadableTls::~ReloadableTls() {
  credentials_.reset();
  provider_.reset();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

absl::Status ReloadableTls::Stage() {
  absl::StatusOr<CheckedFiles> checked = ReadAndCheck(files_);
  if (!checked.ok()) return checked.status();
  const int generation = generation_ + 1;
  const std::string name = absl::StrCat("gen-", generation);
  const std::string gen_dir = absl::StrCat(dir_, "/", name);
  if (mkdir(gen_dir.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot make ", gen_dir, ": ", std::strerror(errno)));
  }
  const mode_t old_mask = umask(077);
  absl::Status written = WriteFile(gen_dir + "/key.pem", checked->key);
  if (written.ok()) written = WriteFile(gen_dir + "/cert.pem", checked->cert);
  if (written.ok() && !checked->client_ca.empty()) {
    written = WriteFile(gen_dir + "/ca.pem", checked->client_ca);
  }
  umask(old_mask);
  std::error_code ec;
  if (!written.ok()) {
    std::filesystem::remove_all(gen_dir, ec);
    return written;
  }
  // The watcher reads dir/current/*: point `current` at the new generation
  // in one rename, so that it never sees a key and a certificate of
  // different generations in one pass.
  const std::string link = dir_ + "/current";
  const std::string tmp_link = dir_ + "/current.tmp";
  std::filesystem::remove(tmp_link, ec);
  std::filesystem::create_directory_symlink(name, tmp_link, ec);
  if (!ec) std::filesystem::rename(tmp_link, link, ec);
  if (ec) {
    std::filesystem::remove_all(gen_dir, ec);
    return absl::InternalError(absl::StrCat("cannot update ", link, ": ", ec.message()));
  }
  // The generation before the previous one is no longer read.
  if (generation >= 3) {
    std::filesystem::remove_all(absl::StrCat(dir_, "/gen-", generation - 2), ec);
  }
  generation_ = generation;
  return absl::OkStatus();
}

absl::Status ReloadableTls::Reload() { return Stage(); }

absl::StatusOr<std::unique_ptr<ReloadableTls>> TlsFromFlags(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert and --tls_key go together: give both or neither (got only ",
                     files.cert.empty() ? "--tls_key" : "--tls_cert", ")"));
  }
  if (files.cert.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca requires --tls_cert and --tls_key");
    }
    return std::unique_ptr<ReloadableTls>();
  }
  return ReloadableTls::Create(files);
}

}  // namespace memserve
