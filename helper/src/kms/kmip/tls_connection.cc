#include "kms/kmip/tls_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "util/secret.h"
#include "util/secret_io.h"
#include "util/unique_fd.h"

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

ConnectAttempt connect_once(const ResolvedAddress& address, Clock::time_point deadline) {
  const int fd =
      socket(address.family, address.socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, address.protocol);
  if (fd < 0) {
    return {-1, errno};
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(address.address.data()),
              static_cast<socklen_t>(address.address.size())) == 0) {
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

// The largest client key file read (a PEM RSA-8192 key is about 6.5 KiB).
constexpr std::size_t kMaxKeyFileSize = 64 * 1024;

std::string octal_mode(mode_t mode) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return text.data();
}

// Refuses a private key others could read or replace: owned by root or the
// running user, no group or other read or write bit.
Status check_key_file(const std::string& endpoint, const std::filesystem::path& path,
                      const struct stat& st) {
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kUsage,
                 endpoint + ": client key " + path.string() + " is not a regular file");
  }
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    return Error(ErrorCode::kDenied, endpoint + ": client key " + path.string() +
                                         " is owned by uid " + std::to_string(st.st_uid) +
                                         ", neither root nor the running user (uid " +
                                         std::to_string(geteuid()) + "): refusing it");
  }
  if ((st.st_mode & 066) != 0) {
    return Error(ErrorCode::kDenied,
                 endpoint + ": client key " + path.string() + " has mode " +
                     octal_mode(st.st_mode) +
                     ": refusing a private key that group or others can read or write (chmod "
                     "600 " +
                     path.string() + ")");
  }
  return OkStatus();
}

// Reads the client key through one descriptor, checked before a byte is
// read, into memory that is wiped after use.
Result<SecretBytes> read_key_file(const std::string& endpoint, const std::filesystem::path& path) {
  const UniqueFd owned(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  const int fd = owned.get();
  if (fd < 0) {
    return error_from_errno(ErrorCode::kUsage, endpoint + ": client key " + path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, endpoint + ": client key " + path.string(), errno);
  }
  ENVCRYPT_TRY(check_key_file(endpoint, path, st));
  if (st.st_size <= 0 || static_cast<std::size_t>(st.st_size) > kMaxKeyFileSize) {
    return Error(ErrorCode::kUsage, endpoint + ": client key " + path.string() + " has " +
                                        std::to_string(st.st_size) + " bytes, expected 1 to " +
                                        std::to_string(kMaxKeyFileSize));
  }
  auto key = read_secret(fd, static_cast<std::size_t>(st.st_size), "client key " + path.string());
  if (!key.ok()) {
    return key.error().with_context(endpoint);
  }
  return key;
}

// Loads the PEM private key in `pem` into the context.
bool use_private_key(SSL_CTX* ctx, const SecretBytes& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) {
    return false;
  }
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  const bool used = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  return used;
}

// What resolve_until() shares with a resolution it may abandon.
struct PendingResolution {
  std::mutex mutex;
  std::condition_variable done_signal;
  bool done = false;
  std::optional<Result<AddressList>> result;
};

}  // namespace

namespace {

// getaddrinfo with `flags` (AI_NUMERICHOST: no lookup, an address literal
// only).
Result<AddressList> lookup_addresses(const std::string& host, std::uint16_t port, int flags) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | flags;
  addrinfo* addresses = nullptr;
  const int lookup = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (lookup != 0) {
    return Error(ErrorCode::kKmsUnreachable, "resolve " + host + ": " + gai_strerror(lookup));
  }
  AddressList list;
  for (const addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(address->ai_addr);
    list.push_back({address->ai_family, address->ai_socktype, address->ai_protocol,
                    std::vector<std::uint8_t>(bytes, bytes + address->ai_addrlen)});
  }
  freeaddrinfo(addresses);
  return list;
}

}  // namespace

Result<AddressList> system_resolve(const std::string& host, std::uint16_t port) {
  return lookup_addresses(host, port, 0);
}

Result<AddressList> resolve_until(const Resolver& resolver, const std::string& endpoint,
                                  const std::string& host, std::uint16_t port,
                                  Clock::time_point deadline) {
  // An address literal needs no resolver: it is answered at once, so it
  // never "times out" when an attempt starts close to the deadline.
  if (auto literal = lookup_addresses(host, port, AI_NUMERICHOST); literal.ok()) {
    return literal;
  }
  auto pending = std::make_shared<PendingResolution>();
  // The thread owns copies of everything it uses: it may outlive this call.
  std::thread([pending, resolver, host, port] {
    Result<AddressList> result = resolver(host, port);
    const std::lock_guard lock(pending->mutex);
    pending->result.emplace(std::move(result));
    pending->done = true;
    pending->done_signal.notify_all();
  }).detach();
  std::unique_lock lock(pending->mutex);
  if (!pending->done_signal.wait_until(lock, deadline, [&] { return pending->done; })) {
    return Error(ErrorCode::kKmsUnreachable,
                 endpoint + ": resolve " + host +
                     ": timed out (no answer from the resolver within the configured timeout_ms)");
  }
  if (!pending->result->ok()) {
    return pending->result->error().with_context(endpoint);
  }
  return std::move(*pending->result).value();
}

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
  // Records carry DKs: OpenSSL wipes its plaintext buffers once read.
  SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
  if (options.ca.empty() || options.cert.empty() || options.key.empty()) {
    return Error(ErrorCode::kUsage, endpoint + ": ca, cert and key must all be configured");
  }
  // The key first: a key file others can read is refused before anything
  // else is looked at.
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes key_pem, read_key_file(endpoint, options.key));
  if (SSL_CTX_load_verify_locations(ctx, options.ca.c_str(), nullptr) != 1) {
    return config_error("CA certificate", options.ca);
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, options.cert.c_str()) != 1) {
    return config_error("client certificate", options.cert);
  }
  if (!use_private_key(ctx, key_pem)) {
    return config_error("client key", options.key);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return config_error("client key does not match the certificate", options.cert);
  }
  return context;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<TlsConnection>> TlsConnection::open(
    std::shared_ptr<TlsClientContext> context, Clock::time_point deadline,
    const Resolver& resolver) {
  const TlsOptions& options = context->options();
  const std::string endpoint = endpoint_name(options);

  ENVCRYPT_ASSIGN_OR_RETURN(
      const AddressList addresses,
      resolve_until(resolver, endpoint, options.host, options.port, deadline));

  // One attempt per address: retrying a server that refused is the
  // caller's decision (retry.h), after it has tried the other servers.
  ConnectAttempt attempt;
  for (const ResolvedAddress& address : addresses) {
    attempt = connect_once(address, deadline);
    if (attempt.fd >= 0) {
      break;
    }
  }
  if (attempt.fd < 0) {
    if (attempt.error == ETIMEDOUT) {
      return Error(ErrorCode::kKmsUnreachable, endpoint + ": connect: timed out");
    }
    return error_from_errno(ErrorCode::kKmsUnreachable, endpoint + ": connect", attempt.error);
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
  // Each setter's result is checked: a host OpenSSL cannot take (an
  // embedded NUL, say) must fail here, not leave the name unchecked.
  const bool expected_name_set =
      is_ip_address(options.host)
          ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), options.host.c_str()) == 1
          : X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), options.host.data(),
                                        options.host.size()) == 1 &&
                SSL_set_tlsext_host_name(ssl, options.host.c_str()) == 1;
  if (!expected_name_set) {
    ERR_clear_error();
    return Error(ErrorCode::kUsage,
                 endpoint + ": the configured host cannot be checked against the server's " +
                     "certificate (OpenSSL refused it as a host name or IP address)");
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
  // SSL_VERIFY_PEER already fails the handshake on a bad chain or name;
  // this makes sure no path through OpenSSL skipped that verdict.
  const long verify = SSL_get_verify_result(ssl);
  if (SSL_get0_peer_certificate(ssl) == nullptr || verify != X509_V_OK) {
    return Error(ErrorCode::kKmsUnreachable,
                 endpoint + ": TLS handshake: " + std::string(kVerifyFailed) +
                     (verify != X509_V_OK ? X509_verify_cert_error_string(verify)
                                          : "the server sent no certificate"));
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
    return error_from_errno(ErrorCode::kKmsUnreachable,
                            endpoint_name(context_->options()) + ": " + std::string(step), errno);
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
