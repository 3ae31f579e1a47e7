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
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "result.h"

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
  // the file.
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

class TlsConnection {
 public:
  // Connects and completes the handshake by `deadline`.  Errors are
  // ErrorCode::kKmsUnreachable and say what failed: "connect: Connection
  // refused", "TLS handshake: certificate verify failed: ...".
  static Result<std::unique_ptr<TlsConnection>> open(std::shared_ptr<TlsClientContext> context,
                                                     Clock::time_point deadline);
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
