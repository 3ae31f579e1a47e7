#include "kmip/kmip_client.h"

#include <utility>

namespace envcrypt::kmip {

KmipClient::KmipClient(const KmipEndpoint& endpoint)
    : options_{endpoint.host, endpoint.port, endpoint.ca, endpoint.cert, endpoint.key},
      endpoint_(endpoint_name(options_)),
      timeout_(endpoint.timeout_ms) {}

Status KmipClient::connect(Clock::time_point deadline) {
  if (connection_ != nullptr && connection_->stale()) {
    connection_.reset();
  }
  if (connection_ != nullptr) {
    return OkStatus();
  }
  if (context_ == nullptr) {
    ENVCRYPT_ASSIGN_OR_RETURN(context_, TlsClientContext::load(options_));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(connection_, TlsConnection::open(context_, deadline));
  return OkStatus();
}

Result<Ttlv> KmipClient::round_trip(const Ttlv& request, Clock::time_point deadline) {
  ENVCRYPT_TRY(connect(deadline));
  // The request and the response may hold a data key: both buffers are
  // wiped whatever happens.
  std::vector<std::uint8_t> sent = encode(request);
  const Status written = connection_->write_all(sent, deadline);
  wipe(sent);
  std::vector<std::uint8_t> received(kHeaderSize);
  auto fail = [&](const Error& error) -> Result<Ttlv> {
    connection_.reset();
    wipe(received);
    return error;
  };
  if (!written.ok()) {
    return fail(written.error());
  }
  if (Status header = connection_->read_exact(received, deadline); !header.ok()) {
    return fail(header.error());
  }
  auto length = encoded_length(received);
  if (!length.ok()) {
    return fail(Error(ErrorCode::kKmsUnreachable,
                      endpoint_ + ": malformed KMIP response: " + length.error().message()));
  }
  received.resize(*length);
  if (Status body = connection_->read_exact(std::span(received).subspan(kHeaderSize), deadline);
      !body.ok()) {
    return fail(body.error());
  }
  auto response = decode(received);
  wipe(received);
  if (!response.ok()) {
    return fail(Error(ErrorCode::kKmsUnreachable,
                      endpoint_ + ": malformed KMIP response: " + response.error().message()));
  }
  return std::move(response).value();
}

Result<Ttlv> KmipClient::call(Operation operation, Ttlv request_payload, std::string_view uid) {
  const auto deadline = Clock::now() + timeout_;
  if (!version_checked_ && operation != Operation::kDiscoverVersions) {
    ENVCRYPT_TRY(check_version(deadline));
  }
  return call_until(operation, std::move(request_payload), uid, deadline);
}

Result<Ttlv> KmipClient::call_until(Operation operation, Ttlv request_payload, std::string_view uid,
                                    Clock::time_point deadline) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      Ttlv response, round_trip(make_request(operation, std::move(request_payload)), deadline));
  auto payload = response_payload(response, operation);
  if (!payload.ok()) {
    const std::string subject = uid.empty() ? endpoint_ : endpoint_ + "/" + std::string(uid);
    return payload.error().with_context(subject);
  }
  return payload;
}

// Asks once per client whether the server speaks KMIP 1.4, so a server that
// does not is reported as such instead of through a confusing parse error
// on the first real operation.
Status KmipClient::check_version(Clock::time_point deadline) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload,
      call_until(Operation::kDiscoverVersions, discover_versions_request(), {}, deadline));
  ENVCRYPT_ASSIGN_OR_RETURN(const auto versions, parse_discover_versions(payload));
  std::string offered;
  for (const ProtocolVersion& version : versions) {
    if (version == kProtocolVersion) {
      version_checked_ = true;
      return OkStatus();
    }
    offered += (offered.empty() ? "" : ", ") + std::to_string(version.major) + "." +
               std::to_string(version.minor);
  }
  return Error(ErrorCode::kKmsUnreachable,
               endpoint_ + ": server does not speak KMIP 1.4 (it offers " +
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

Result<std::vector<std::string>> KmipClient::locate(const std::optional<std::string>& name) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv payload, call(Operation::kLocate, locate_request(name)));
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
                                       const GcmParameters& gcm) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv payload,
                            call(Operation::kEncrypt, encrypt_request(uid, plaintext, gcm), uid));
  return parse_encrypt(payload);
}

Result<SecretBytes> KmipClient::decrypt(std::string_view uid,
                                        std::span<const std::uint8_t> ciphertext,
                                        const GcmParameters& gcm,
                                        std::span<const std::uint8_t> tag) {
  ENVCRYPT_ASSIGN_OR_RETURN(
      const Ttlv payload,
      call(Operation::kDecrypt, decrypt_request(uid, ciphertext, gcm, tag), uid));
  return parse_decrypt(payload);
}

}  // namespace envcrypt::kmip
