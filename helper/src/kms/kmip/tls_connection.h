// A TLS 1.2+ client connection to one KMIP endpoint, with mutual
// authentication: the client presents its certificate and key, and the
// server's certificate must chain to the configured CA and name the
// configured host (DNS name or IP address).  Every step is bounded by a
// deadline.  A failed connection is not retried here: the caller decides
// whether to try another server or wait (retry.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;

namespace envcrypt::kmip {

using Clock = std::chrono::steady_clock;

struct TlsOptions {
  std::string host;
  std::uint16_t port = 5696;
  std::filesystem::path ca;
  std::filesystem::path cert;
  std::filesystem::path key;
};

// The client's TLS configuration (CA, certificate, key), loaded once and
// shared by every connection to the endpoint.
class TlsClientContext {
 public:
  // Errors (unreadable or mismatched files) are ErrorCode::kUsage and name
  // the file.  The key file must be owned by root or the running user and
  // be neither readable nor writable by group or others, like the local
  // KMS root key (ErrorCode::kDenied, naming the file and its mode).  The
  // context cleanses TLS plaintext buffers once used (they carry DKs).
  static Result<std::shared_ptr<TlsClientContext>> load(const TlsOptions& options);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  [[nodiscard]] const TlsOptions& options() const { return options_; }
  [[nodiscard]] SSL_CTX* native() const { return ctx_; }

 private:
  TlsClientContext(TlsOptions options, SSL_CTX* ctx) : options_(std::move(options)), ctx_(ctx) {}

  TlsOptions options_;
  SSL_CTX* ctx_;
};

// One address a host name resolved to.
struct ResolvedAddress {
  int family = 0;
  int socktype = 0;
  int protocol = 0;
  std::vector<std::uint8_t> address;  // a struct sockaddr of its family
};
using AddressList = std::vector<ResolvedAddress>;
// Resolves host and port (blocking, perhaps for long).  Errors are
// ErrorCode::kKmsUnreachable "resolve <host>: <reason>".
using Resolver = std::function<Result<AddressList>(const std::string& host, std::uint16_t port)>;
// getaddrinfo(3).
Result<AddressList> system_resolve(const std::string& host, std::uint16_t port);
// Runs `resolver` on a thread of its own and waits for it until `deadline`:
// getaddrinfo has no timeout, and a DNS server that never answers must not
// hold the caller past timeout_ms.  A resolution still running then is
// abandoned (its thread ends by itself and frees what it found).
// `endpoint` prefixes the errors.
Result<AddressList> resolve_until(const Resolver& resolver, const std::string& endpoint,
                                  const std::string& host, std::uint16_t port,
                                  Clock::time_point deadline);

class TlsConnection {
 public:
  // Resolves (bounded, resolve_until), connects and completes the handshake
  // by `deadline`.  Errors are ErrorCode::kKmsUnreachable and say what
  // failed: "connect: Connection refused", "TLS handshake: certificate
  // verify failed: ...".
  static Result<std::unique_ptr<TlsConnection>> open(std::shared_ptr<TlsClientContext> context,
                                                     Clock::time_point deadline,
                                                     const Resolver& resolver = system_resolve);
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  Status write_all(std::span<const std::uint8_t> bytes, Clock::time_point deadline);
  Status read_exact(std::span<std::uint8_t> bytes, Clock::time_point deadline);

  // True when the server has closed the connection (or sent something
  // unasked), so it must not be reused for the next request.
  [[nodiscard]] bool stale();

 private:
  TlsConnection(std::shared_ptr<TlsClientContext> context, int fd, SSL* ssl)
      : context_(std::move(context)), fd_(fd), ssl_(ssl) {}

  // Waits until the socket is ready for what OpenSSL asked for
  // (SSL_ERROR_WANT_READ/WRITE), or fails at the deadline.
  Status wait_for(int ssl_error, Clock::time_point deadline, std::string_view step) const;
  [[nodiscard]] Error failure(std::string_view step, int ssl_result) const;

  std::shared_ptr<TlsClientContext> context_;
  int fd_;
  SSL* ssl_;
};

// True for a handshake that failed on a certificate (the server's is not
// trusted, or the server refused ours): the same server will fail the same
// way until someone changes a certificate, so it is not worth retrying.
bool is_certificate_failure(const Error& error);

// "kmip://host:port", the prefix of every error about the endpoint.
std::string endpoint_name(const TlsOptions& options);

}  // namespace envcrypt::kmip
