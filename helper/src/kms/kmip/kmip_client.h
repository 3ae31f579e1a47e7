// A KMIP 1.4 client for one endpoint, which may be several servers holding
// the same keys: one request per round trip over a TLS connection per
// server, opened on first use and reused while the server keeps it open.
// Each call tries the servers in turn (retry.h: the one that answered last
// first), each bounded by timeout_ms (connect, handshake, request,
// response), all within the endpoint's call deadline; only transport
// failures move on to the next server, never the server's own answer.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "kms/kmip/kmip_messages.h"
#include "kms/kmip/tls_connection.h"
#include "kms/kmip/ttlv.h"
#include "util/result.h"
#include "util/retry.h"
#include "util/secret.h"

namespace envcrypt::kmip {

class KmipClient {
 public:
  explicit KmipClient(const KmipEndpoint& endpoint, RetryClock& clock = steady_retry_clock());

  // "kmip://host:port" of the endpoint's first server, the one CMK URIs name.
  [[nodiscard]] const std::string& endpoint() const { return servers_.front().name; }

  // One operation: its Response Payload, or an Error.  Errors of the
  // transport name each server tried; errors the server reports name the
  // server and the object (`uid`, when the operation has one) and quote
  // the server's message.  The call ends by the endpoint's deadline or
  // `context`'s, whichever is first.
  Result<Ttlv> call(Operation operation, const Ttlv& request_payload, std::string_view uid = {},
                    const CallContext& context = {});

  Result<std::vector<ProtocolVersion>> discover_versions();
  Result<std::string> create_aes256(const std::optional<std::string>& name);
  Status activate(std::string_view uid);
  Status revoke(std::string_view uid);
  Status destroy(std::string_view uid);
  Result<std::vector<std::string>> locate(const std::optional<std::string>& name,
                                          const CallContext& context = {});
  Result<Attributes> get_attributes(std::string_view uid, const std::vector<std::string>& names);
  Result<Ciphertext> encrypt(std::string_view uid, std::span<const std::uint8_t> plaintext,
                             const GcmParameters& gcm, const CallContext& context = {});
  Result<SecretBytes> decrypt(std::string_view uid, std::span<const std::uint8_t> ciphertext,
                              const GcmParameters& gcm, std::span<const std::uint8_t> tag,
                              const CallContext& context = {});

 private:
  // One server of the endpoint and what this client keeps for it.
  struct Server {
    TlsOptions options;
    std::string name;  // kmip://host:port
    std::shared_ptr<TlsClientContext> context;
    std::unique_ptr<TlsConnection> connection;
    bool version_checked = false;
    bool request_sent = false;  // the last request reached the wire
    bool answered = false;      // the last exchange got a well-formed response
  };

  static Status connect(Server& server, Clock::time_point deadline);
  static Status check_version(Server& server, Clock::time_point deadline);
  static Result<Ttlv> call_server(Server& server, Operation operation, const Ttlv& request_payload,
                                  std::string_view uid, Clock::time_point deadline);
  static Result<Ttlv> exchange(Server& server, Operation operation, const Ttlv& request_payload,
                               std::string_view uid, Clock::time_point deadline);
  static Result<Ttlv> round_trip(Server& server, const Ttlv& request, Clock::time_point deadline);

  std::vector<Server> servers_;
  Failover failover_;
};

}  // namespace envcrypt::kmip
