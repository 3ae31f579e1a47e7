// A KMIP 1.4 client for one endpoint: one request per round trip over a
// TLS connection that is opened on first use and reused while the server
// keeps it open.  Each call is bounded by the endpoint's timeout_ms, which
// covers connecting (with retries), the handshake, the request and the
// response.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "kmip/kmip_messages.h"
#include "kmip/tls_connection.h"
#include "kmip/ttlv.h"
#include "result.h"
#include "secret.h"

namespace envcrypt::kmip {

class KmipClient {
 public:
  explicit KmipClient(const KmipEndpoint& endpoint);

  // "kmip://host:port".
  [[nodiscard]] const std::string& endpoint() const { return endpoint_; }

  // One operation: its Response Payload, or an Error.  Errors of the
  // transport name the endpoint; errors the server reports name the object
  // (`uid`, when the operation has one) and quote the server's message.
  Result<Ttlv> call(Operation operation, Ttlv request_payload, std::string_view uid = {});

  Result<std::vector<ProtocolVersion>> discover_versions();
  Result<std::string> create_aes256(const std::optional<std::string>& name);
  Status activate(std::string_view uid);
  Status revoke(std::string_view uid);
  Status destroy(std::string_view uid);
  Result<std::vector<std::string>> locate(const std::optional<std::string>& name);
  Result<Attributes> get_attributes(std::string_view uid, const std::vector<std::string>& names);
  Result<Ciphertext> encrypt(std::string_view uid, std::span<const std::uint8_t> plaintext,
                             const GcmParameters& gcm);
  Result<SecretBytes> decrypt(std::string_view uid, std::span<const std::uint8_t> ciphertext,
                              const GcmParameters& gcm, std::span<const std::uint8_t> tag);

 private:
  Status connect(Clock::time_point deadline);
  Status check_version(Clock::time_point deadline);
  Result<Ttlv> call_until(Operation operation, Ttlv request_payload, std::string_view uid,
                          Clock::time_point deadline);
  Result<Ttlv> round_trip(const Ttlv& request, Clock::time_point deadline);

  TlsOptions options_;
  std::string endpoint_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<TlsClientContext> context_;
  std::unique_ptr<TlsConnection> connection_;
  bool version_checked_ = false;
};

}  // namespace envcrypt::kmip
