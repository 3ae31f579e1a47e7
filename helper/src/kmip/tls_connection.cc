#include "kmip/tls_connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace envcrypt::kmip {
namespace {

// The phrases that start the two certificate failures' reasons; also what
// is_certificate_failure() looks for.
constexpr std::string_view kVerifyFailed = "server certificate verify failed: ";
constexpr std::string_view kServerAlert = "TLS alert from the server: ";

std::string openssl_reason() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) {
    return "unknown OpenSSL error";
  }
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "OpenSSL error " + std::to_string(code);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 24 * 3600 * 1000));
}

bool is_ip_address(const std::string& host) {
  unsigned char buffer[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

// Waits for `events` on `fd` until the deadline: true when ready.
bool poll_until(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd entry{fd, events, 0};
    const int ready = poll(&entry, 1, remaining_ms(deadline));
    if (ready > 0) {
      return true;
    }
    if (ready == 0 || errno != EINTR) {
      return false;
    }
  }
}

// One non-blocking TCP connection attempt to one address: the socket, or
// the errno that made it fail (ETIMEDOUT when the deadline passed).
struct ConnectAttempt {
  int fd = -1;
  int error = 0;
};

ConnectAttempt connect_once(const addrinfo& address, Clock::time_point deadline) {
  const int fd = socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        address.ai_protocol);
  if (fd < 0) {
    return {-1, errno};
  }
  if (connect(fd, address.ai_addr, address.ai_addrlen) == 0) {
    return {fd, 0};
  }
  int error = errno;
  if (error == EINPROGRESS) {
    if (!poll_until(fd, POLLOUT, deadline)) {
      error = ETIMEDOUT;
    } else {
      socklen_t length = sizeof(error);
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        error = errno;
      }
    }
  }
  if (error == 0) {
    return {fd, 0};
  }
  close(fd);
  return {-1, error};
}

// Blocks SIGPIPE in this thread while writing to a socket the server may
// have closed, and discards a SIGPIPE raised meanwhile, so a vanished server
// is an error return rather than the death of the process.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      const timespec no_wait{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &no_wait) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

}  // namespace

bool is_certificate_failure(const Error& error) {
  const std::string& message = error.message();
  return error.code() == ErrorCode::kKmsUnreachable &&
         (message.find(": " + std::string(kVerifyFailed)) != std::string::npos ||
          message.find(": " + std::string(kServerAlert)) != std::string::npos);
}

std::string endpoint_name(const TlsOptions& options) {
  const bool ipv6 = options.host.find(':') != std::string::npos;
  return "kmip://" + (ipv6 ? "[" + options.host + "]" : options.host) + ":" +
         std::to_string(options.port);
}

Result<std::shared_ptr<TlsClientContext>> TlsClientContext::load(const TlsOptions& options) {
  const std::string endpoint = endpoint_name(options);
  auto config_error = [&](const std::string& what, const std::filesystem::path& file) {
    return Error(ErrorCode::kUsage,
                 endpoint + ": " + what + " " + file.string() + ": " + openssl_reason());
  };
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    return Error(ErrorCode::kInternal, endpoint + ": SSL_CTX_new: " + openssl_reason());
  }
  std::shared_ptr<TlsClientContext> context(new TlsClientContext(options, ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (options.ca.empty() || options.cert.empty() || options.key.empty()) {
    return Error(ErrorCode::kUsage, endpoint + ": ca, cert and key must all be configured");
  }
  if (SSL_CTX_load_verify_locations(ctx, options.ca.c_str(), nullptr) != 1) {
    return config_error("CA certificate", options.ca);
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, options.cert.c_str()) != 1) {
    return config_error("client certificate", options.cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, options.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return config_error("client key", options.key);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return config_error("client key does not match the certificate", options.cert);
  }
  return context;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<TlsConnection>> TlsConnection::open(
    std::shared_ptr<TlsClientContext> context, Clock::time_point deadline) {
  const TlsOptions& options = context->options();
  const std::string endpoint = endpoint_name(options);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const int lookup =
      getaddrinfo(options.host.c_str(), std::to_string(options.port).c_str(), &hints, &addresses);
  if (lookup != 0) {
    return Error(ErrorCode::kKmsUnreachable,
                 endpoint + ": resolve " + options.host + ": " + gai_strerror(lookup));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> address_list(addresses, freeaddrinfo);

  // One attempt per address: retrying a server that refused is the
  // caller's decision (retry.h), after it has tried the other servers.
  ConnectAttempt attempt;
  for (const addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    attempt = connect_once(*address, deadline);
    if (attempt.fd >= 0) {
      break;
    }
  }
  if (attempt.fd < 0) {
    const std::string reason =
        attempt.error == ETIMEDOUT ? "timed out" : std::string(std::strerror(attempt.error));
    return Error(ErrorCode::kKmsUnreachable, endpoint + ": connect: " + reason);
  }

  SSL* ssl = SSL_new(context->native());
  if (ssl == nullptr) {
    close(attempt.fd);
    return Error(ErrorCode::kInternal, endpoint + ": SSL_new: " + openssl_reason());
  }
  std::unique_ptr<TlsConnection> connection(new TlsConnection(std::move(context), attempt.fd, ssl));
  SSL_set_fd(ssl, attempt.fd);
  // The server's certificate must name the host we were told to reach: an
  // IP address is matched against its IP subjectAltNames, a name against its
  // DNS names.  A name is also sent as SNI.
  if (is_ip_address(options.host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), options.host.c_str());
  } else {
    SSL_set1_host(ssl, options.host.c_str());
    SSL_set_tlsext_host_name(ssl, options.host.c_str());
  }
  for (;;) {
    errno = 0;
    const int result = SSL_connect(ssl);
    if (result == 1) {
      break;
    }
    const int error = SSL_get_error(ssl, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      ENVCRYPT_TRY(connection->wait_for(error, deadline, "TLS handshake"));
      continue;
    }
    return connection->failure("TLS handshake", result);
  }
  return connection;
}

TlsConnection::~TlsConnection() {
  // A quiet close: no close_notify, which could block on a dead peer.
  SSL_free(ssl_);
  close(fd_);
}

Status TlsConnection::wait_for(int ssl_error, Clock::time_point deadline,
                               std::string_view step) const {
  const short events = ssl_error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
  if (!poll_until(fd_, events, deadline)) {
    return Error(ErrorCode::kKmsUnreachable,
                 endpoint_name(context_->options()) + ": " + std::string(step) +
                     ": timed out (no answer from the server within the configured timeout_ms)");
  }
  return OkStatus();
}

Error TlsConnection::failure(std::string_view step, int ssl_result) const {
  const std::string prefix = endpoint_name(context_->options()) + ": " + std::string(step) + ": ";
  const int error = SSL_get_error(ssl_, ssl_result);
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    ERR_clear_error();
    return {ErrorCode::kKmsUnreachable,
            prefix + std::string(kVerifyFailed) + X509_verify_cert_error_string(verify)};
  }
  if (error == SSL_ERROR_ZERO_RETURN ||
      (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
    return {ErrorCode::kKmsUnreachable, prefix + "connection closed by the server"};
  }
  if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    return {ErrorCode::kKmsUnreachable, prefix + std::strerror(errno)};
  }
  const std::string reason = openssl_reason();
  // The server refusing the client's certificate arrives as an alert (with
  // TLS 1.3 only on the first read after the handshake).
  if (reason.find(" alert ") != std::string::npos) {
    return {ErrorCode::kKmsUnreachable, prefix + std::string(kServerAlert) + reason};
  }
  if (reason.find("unexpected eof") != std::string::npos) {
    return {ErrorCode::kKmsUnreachable, prefix + "connection closed by the server"};
  }
  return {ErrorCode::kKmsUnreachable, prefix + "TLS error: " + reason};
}

Status TlsConnection::write_all(std::span<const std::uint8_t> bytes, Clock::time_point deadline) {
  const SigpipeGuard guard;
  while (!bytes.empty()) {
    std::size_t written = 0;
    errno = 0;
    const int result = SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written);
    if (result == 1) {
      bytes = bytes.subspan(written);
      continue;
    }
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      ENVCRYPT_TRY(wait_for(error, deadline, "write"));
      continue;
    }
    return failure("write", result);
  }
  return OkStatus();
}

Status TlsConnection::read_exact(std::span<std::uint8_t> bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    std::size_t got = 0;
    errno = 0;
    const int result = SSL_read_ex(ssl_, bytes.data(), bytes.size(), &got);
    if (result == 1) {
      bytes = bytes.subspan(got);
      continue;
    }
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      ENVCRYPT_TRY(wait_for(error, deadline, "read"));
      continue;
    }
    return failure("read", result);
  }
  return OkStatus();
}

bool TlsConnection::stale() {
  pollfd entry{fd_, POLLIN, 0};
  if (SSL_pending(ssl_) == 0 && poll(&entry, 1, 0) == 0) {
    return false;
  }
  // Something arrived while no request was outstanding.  A TLS 1.3 session
  // ticket is harmless (the peek consumes it and wants more); application
  // data, a close_notify, an EOF or an error all mean the connection is done.
  std::uint8_t byte = 0;
  const int result = SSL_peek(ssl_, &byte, 1);
  if (result > 0) {
    return true;
  }
  const int error = SSL_get_error(ssl_, result);
  ERR_clear_error();
  return error != SSL_ERROR_WANT_READ;
}

}  // namespace envcrypt::kmip
