// The TLS client without a KMIP server: name resolution bounded by the
// deadline (an injected resolver that hangs), the client key file's owner
// and mode, the context's options, and a host OpenSSL cannot check.
#include "kms/kmip/tls_connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "cli/cli_test_support.h"

namespace envcrypt::kmip {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

TEST(ResolveUntil, AResolverThatHangsIsAbandonedAtTheDeadline) {
  const Resolver hangs = [](const std::string&, std::uint16_t) -> Result<AddressList> {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    return AddressList{};
  };
  const auto started = Clock::now();
  auto addresses = resolve_until(hangs, "kmip://kms.example:5696", "kms.example", 5696,
                                 started + milliseconds(200));
  const long long waited = elapsed_ms(started);
  ASSERT_FALSE(addresses.ok());
  EXPECT_EQ(addresses.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(addresses.error().message(),
            "kmip://kms.example:5696: resolve kms.example: timed out (no answer from the resolver "
            "within the configured timeout_ms)");
  EXPECT_GE(waited, 190);
  EXPECT_LT(waited, 1000);
}

TEST(ResolveUntil, AnAnswerBeforeTheDeadlineIsPassedOn) {
  const Resolver answers = [](const std::string& host, std::uint16_t port) -> Result<AddressList> {
    if (host == "missing.example") {
      return Error(ErrorCode::kKmsUnreachable,
                   "resolve missing.example: Name or service not known");
    }
    return AddressList{{AF_INET, SOCK_STREAM, 0, std::vector<std::uint8_t>(port % 256, 1)}};
  };
  const auto deadline = Clock::now() + milliseconds(2000);
  auto found = resolve_until(answers, "kmip://a:7", "a", 7, deadline);
  ASSERT_TRUE(found.ok()) << found.error().message();
  ASSERT_EQ(found->size(), 1U);
  EXPECT_EQ(found->front().address.size(), 7U);
  auto missing =
      resolve_until(answers, "kmip://missing.example:5696", "missing.example", 5696, deadline);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(),
            "kmip://missing.example:5696: resolve missing.example: Name or service not known");
}

TEST(ResolveUntil, TheSystemResolverFindsLoopback) {
  auto found = resolve_until(system_resolve, "kmip://127.0.0.1:5696", "127.0.0.1", 5696,
                             Clock::now() + milliseconds(2000));
  ASSERT_TRUE(found.ok()) << found.error().message();
  ASSERT_FALSE(found->empty());
  EXPECT_EQ(found->front().family, AF_INET);
}

// Found by test_kmip_failover.sh: the last attempt before the deadline
// reported "resolve 127.0.0.1: timed out" instead of the server's refusal.
TEST(ResolveUntil, AnAddressLiteralNeedsNoResolverEvenAtTheDeadline) {
  const Resolver hangs = [](const std::string&, std::uint16_t) -> Result<AddressList> {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    return Error(ErrorCode::kInternal, "the resolver was asked");
  };
  for (const char* literal : {"127.0.0.1", "::1"}) {
    auto found = resolve_until(hangs, "kmip://x:5696", literal, 5696, Clock::now());
    ASSERT_TRUE(found.ok()) << literal << ": " << found.error().message();
    EXPECT_EQ(found->size(), 1U) << literal;
  }
}

// A self-signed certificate and key made with the openssl CLI: enough for
// TlsClientContext::load (it is CA and client certificate at once).
class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-tls");
    options_.host = "kms.example";
    options_.ca = dir_ / "cert.pem";
    options_.cert = dir_ / "cert.pem";
    options_.key = dir_ / "key.pem";
    const std::string command =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "
        "/CN=envcrypt-test -keyout " +
        options_.key.string() + " -out " + options_.cert.string() + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    ASSERT_EQ(::chmod(options_.key.c_str(), 0600), 0);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  TlsOptions options_;
};

TEST_F(TlsContextTest, ContextCleansesPlaintext) {
  auto context = TlsClientContext::load(options_);
  ASSERT_TRUE(context.ok()) << context.error().message();
  EXPECT_NE(SSL_CTX_get_options((*context)->native()) & SSL_OP_CLEANSE_PLAINTEXT, 0U);
}

TEST_F(TlsContextTest, KeyFileOthersCanReadIsRefused) {
  for (const mode_t mode : {0640, 0604, 0620}) {
    ASSERT_EQ(::chmod(options_.key.c_str(), mode), 0);
    auto context = TlsClientContext::load(options_);
    ASSERT_FALSE(context.ok());
    EXPECT_EQ(context.error().code(), ErrorCode::kDenied);
    char octal[8];
    std::snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(context.error().message(),
              "kmip://kms.example:5696: client key " + options_.key.string() + " has mode " +
                  octal + ": refusing a private key that group or others can read or write " +
                  "(chmod 600 " + options_.key.string() + ")");
  }
  ASSERT_EQ(::chmod(options_.key.c_str(), 0400), 0);
  EXPECT_TRUE(TlsClientContext::load(options_).ok());
}

TEST_F(TlsContextTest, KeyFileOfAnotherUserIsRefused) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "giving the key file to another owner needs root";
  }
  ASSERT_EQ(::chown(options_.key.c_str(), 4242, 4242), 0);
  auto context = TlsClientContext::load(options_);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(context.error().message(),
            "kmip://kms.example:5696: client key " + options_.key.string() +
                " is owned by uid 4242, neither root nor the running user (uid 0): refusing it");
}

// A host OpenSSL cannot take as a name to check (an embedded NUL) is
// refused before the handshake instead of leaving the name unchecked.
TEST_F(TlsContextTest, AHostOpenSslCannotCheckIsRefused) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const Resolver loopback = [address](const std::string&, std::uint16_t) -> Result<AddressList> {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(&address);
    return AddressList{{AF_INET, SOCK_STREAM, 0, {bytes, bytes + sizeof(address)}}};
  };
  options_.host = std::string("kms.example\0evil.example", 24);
  options_.port = ntohs(address.sin_port);
  auto context = TlsClientContext::load(options_);
  ASSERT_TRUE(context.ok()) << context.error().message();
  auto connection = TlsConnection::open(*context, Clock::now() + milliseconds(500), loopback);
  ::close(listener);
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(connection.error().message(),
            endpoint_name(options_) +
                ": the configured host cannot be checked against the server's certificate "
                "(OpenSSL refused it as a host name or IP address)");
}

}  // namespace
}  // namespace envcrypt::kmip
