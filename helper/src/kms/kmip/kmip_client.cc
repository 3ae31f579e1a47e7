#include "kms/kmip/kmip_client.h"

#include <utility>

namespace envcrypt::kmip {

namespace {

FailoverPolicy failover_policy(const KmipEndpoint& endpoint) {
  FailoverPolicy policy;
  policy.server_timeout = std::chrono::milliseconds(endpoint.timeout_ms);
  policy.deadline = endpoint.call_deadline();
  return policy;
}

std::vector<std::string> server_names(const KmipEndpoint& endpoint) {
  std::vector<std::string> names;
  for (const KmipServer& server : endpoint.servers()) {
    names.push_back(endpoint_name({server.host, server.port, {}, {}, {}}));
  }
  return names;
}

}  // namespace

KmipClient::KmipClient(const KmipEndpoint& endpoint, RetryClock& clock)
    : failover_(failover_policy(endpoint), server_names(endpoint), clock) {
  for (const KmipServer& server : endpoint.servers()) {
    TlsOptions options{server.host, server.port, endpoint.ca, endpoint.cert, endpoint.key};
    std::string name = endpoint_name(options);
    servers_.push_back(Server{std::move(options), std::move(name), nullptr, nullptr});
  }
}

Status KmipClient::connect(Server& server, Clock::time_point deadline) {
  if (server.connection != nullptr && server.connection->stale()) {
    server.connection.reset();
  }
  if (server.connection != nullptr) {
    return OkStatus();
  }
  if (server.context == nullptr) {
    ENVCRYPT_ASSIGN_OR_RETURN(server.context, TlsClientContext::load(server.options));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(server.connection, TlsConnection::open(server.context, deadline));
  return OkStatus();
}

Result<Ttlv> KmipClient::round_trip(Server& server, const Ttlv& request,
                                    Clock::time_point deadline) {
  server.request_sent = false;
  ENVCRYPT_TRY(connect(server, deadline));
  // The request and the response may hold a data key: both buffers are
  // wiped whatever happens.
  std::vector<std::uint8_t> sent = encode(request);
  server.request_sent = true;
  const Status written = server.connection->write_all(sent, deadline);
  wipe(sent);
  std::vector<std::uint8_t> received(kHeaderSize);
  auto fail = [&](const Error& error) -> Result<Ttlv> {
    server.connection.reset();
    wipe(received);
    return error;
  };
  auto malformed = [&](const Error& error) {
    return fail(Error(ErrorCode::kKmsUnreachable,
                      server.name + ": malformed KMIP response: " + error.message()));
  };
  if (!written.ok()) {
    return fail(written.error());
  }
  if (Status header = server.connection->read_exact(received, deadline); !header.ok()) {
    return fail(header.error());
  }
  auto length = encoded_length(received);
  if (!length.ok()) {
    return malformed(length.error());
  }
  received.resize(*length);
  if (Status body =
          server.connection->read_exact(std::span(received).subspan(kHeaderSize), deadline);
      !body.ok()) {
    return fail(body.error());
  }
  auto response = decode(received);
  wipe(received);
  if (!response.ok()) {
    return malformed(response.error());
  }
  return std::move(response).value();
}

Result<Ttlv> KmipClient::call(Operation operation, const Ttlv& request_payload,
                              std::string_view uid, const CallContext& context) {
  std::optional<Ttlv> answer;
  bool may_have_acted = false;
  bool server_answered = false;
  const Status status = failover_.run(
      [&](std::size_t index, SteadyTime deadline) -> Status {
        Server& server = servers_[index];
        server.answered = false;
        auto result = call_server(server, operation, request_payload, uid, deadline);
        server_answered = server.answered;
        // A Create whose request went out may have made a key that the
        // lost answer would have named; making another on the next server
        // would leave an orphan, so that failure is final.  Every other
        // operation is safe to repeat.
        may_have_acted = operation == Operation::kCreate && !result.ok() &&
                         result.error().code() == ErrorCode::kKmsUnreachable && server.request_sent;
        ENVCRYPT_ASSIGN_OR_RETURN(answer, std::move(result));
        return OkStatus();
      },
      [&](const Error& error) {
        // A failure the server reported (a General Failure is
        // kKmsUnreachable too) is its answer, not a transport failure.
        if (error.code() != ErrorCode::kKmsUnreachable || may_have_acted || server_answered) {
          return AttemptFailure::kFinal;
        }
        return is_certificate_failure(error) ? AttemptFailure::kServerRefused
                                             : AttemptFailure::kTransient;
      },
      context);
  if (!status.ok()) {
    return may_have_acted ? status.error().with_context(
                                "KMIP Create sent but not answered, not repeated elsewhere")
                          : status.error();
  }
  return std::move(*answer);
}

Result<Ttlv> KmipClient::call_server(Server& server, Operation operation,
                                     const Ttlv& request_payload, std::string_view uid,
                                     Clock::time_point deadline) {
  if (!server.version_checked && operation != Operation::kDiscoverVersions) {
    if (Status checked = check_version(server, deadline); !checked.ok()) {
      server.request_sent = false;  // what went out was DiscoverVersions, not this operation
      server.answered = false;      // another server may speak 1.4
      return checked.error();
    }
  }
  return exchange(server, operation, request_payload, uid, deadline);
}

Result<Ttlv> KmipClient::exchange(Server& server, Operation operation, const Ttlv& request_payload,
                                  std::string_view uid, Clock::time_point deadline) {
  // Only this exchange's response counts: a DiscoverVersions answered
  // before it must not make its lost response look like the server's word.
  server.answered = false;
  ENVCRYPT_ASSIGN_OR_RETURN(Ttlv response,
                            round_trip(server, make_request(operation, request_payload), deadline));
  server.answered = true;
  auto payload = response_payload(response, operation);
  if (!payload.ok()) {
    const std::string subject = uid.empty() ? server.name : server.name + "/" + std::string(uid);
    return payload.error().with_context(subject);
  }
  return payload;
}

// Asks once per server whether it speaks KMIP 1.4, so a server that does
// not is reported as such instead of through a confusing parse error on
// the first real operation.
Status KmipClient::check_version(Server& server, Clock::time_point deadline) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload,
      exchange(server, Operation::kDiscoverVersions, discover_versions_request(), {}, deadline));
  ENVCRYPT_ASSIGN_OR_RETURN(const auto versions, parse_discover_versions(payload));
  std::string offered;
  for (const ProtocolVersion& version : versions) {
    if (version == kProtocolVersion) {
      server.version_checked = true;
      return OkStatus();
    }
    offered += (offered.empty() ? "" : ", ") + std::to_string(version.major) + "." +
               std::to_string(version.minor);
  }
  return Error(ErrorCode::kKmsUnreachable,
               server.name + ": server does not speak KMIP 1.4 (it offers " +
                   (offered.empty() ? "no version in common" : offered) + ")");
}

Result<std::vector<ProtocolVersion>> KmipClient::discover_versions() {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv payload,
                            call(Operation::kDiscoverVersions, discover_versions_request()));
  return parse_discover_versions(payload);
}

Result<std::string> KmipClient::create_aes256(const std::optional<std::string>& name) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv payload,
                            call(Operation::kCreate, create_aes256_request(name)));
  return parse_unique_identifier(payload);
}

Status KmipClient::activate(std::string_view uid) {
  ENVCRYPT_TRY(call(Operation::kActivate, unique_identifier_request(uid), uid));
  return OkStatus();
}

Status KmipClient::revoke(std::string_view uid) {
  ENVCRYPT_TRY(call(Operation::kRevoke, revoke_request(uid), uid));
  return OkStatus();
}

Status KmipClient::destroy(std::string_view uid) {
  ENVCRYPT_TRY(call(Operation::kDestroy, unique_identifier_request(uid), uid));
  return OkStatus();
}

Result<std::vector<std::string>> KmipClient::locate(const std::optional<std::string>& name,
                                                    const CallContext& context) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv payload,
                            call(Operation::kLocate, locate_request(name), {}, context));
  return parse_locate(payload);
}

Result<Attributes> KmipClient::get_attributes(std::string_view uid,
                                              const std::vector<std::string>& names) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload, call(Operation::kGetAttributes, get_attributes_request(uid, names), uid));
  return parse_get_attributes(payload);
}

Result<Ciphertext> KmipClient::encrypt(std::string_view uid,
                                       std::span<const std::uint8_t> plaintext,
                                       const GcmParameters& gcm, const CallContext& context) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload,
      call(Operation::kEncrypt, encrypt_request(uid, plaintext, gcm), uid, context));
  return parse_encrypt(payload);
}

Result<SecretBytes> KmipClient::decrypt(std::string_view uid,
                                        std::span<const std::uint8_t> ciphertext,
                                        const GcmParameters& gcm, std::span<const std::uint8_t> tag,
                                        const CallContext& context) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload,
      call(Operation::kDecrypt, decrypt_request(uid, ciphertext, gcm, tag), uid, context));
  return parse_decrypt(payload);
}

}  // namespace envcrypt::kmip
