#include "kms/kmip/kmip_messages.h"

#include <utility>

namespace envcrypt::kmip {
namespace {

// Enumeration values of the KMIP 1.4 specification, section 9.1.3.2.
constexpr std::uint32_t kObjectTypeSymmetricKey = 0x02;
constexpr std::uint32_t kAlgorithmAes = 0x03;
constexpr std::uint32_t kBlockCipherModeGcm = 0x09;
constexpr std::uint32_t kNameTypeText = 0x01;
constexpr std::uint32_t kRevocationCessationOfOperation = 0x06;
constexpr std::uint32_t kResultStatusSuccess = 0x00;
constexpr std::int32_t kUsageMaskEncrypt = 0x04;
constexpr std::int32_t kUsageMaskDecrypt = 0x08;
constexpr std::int32_t kAes256Bits = 256;

// The longest part of a server's Result Message an error quotes.
constexpr std::size_t kMaxQuotedMessage = 256;

// A server's words, printable: every byte outside printable ASCII, and the
// backslash, becomes \xHH, so a hostile Result Message cannot forge lines
// of output or escapes of its own.
std::string quoted_server_text(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : text.substr(0, kMaxQuotedMessage)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && byte != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    }
  }
  if (text.size() > kMaxQuotedMessage) {
    out += "...";
  }
  return out;
}

Error malformed(const std::string& what) {
  return {ErrorCode::kKmsUnreachable, "malformed KMIP response: " + what};
}

// Runs a Ttlv::require and turns its error into a malformed-response error.
Result<const Ttlv*> expect(const Ttlv& parent, std::uint32_t item_tag, ItemType type,
                           std::string_view what) {
  auto found = parent.require(item_tag, type, what);
  if (!found.ok()) {
    return malformed(found.error().message());
  }
  return found;
}

Ttlv attribute(std::string_view name, Ttlv value) {
  return Ttlv::structure(tag::kAttribute,
                         {Ttlv::text(tag::kAttributeName, name), std::move(value)});
}

Ttlv name_attribute(std::string_view name) {
  return attribute("Name", Ttlv::structure(tag::kAttributeValue,
                                           {Ttlv::text(tag::kNameValue, name),
                                            Ttlv::enumeration(tag::kNameType, kNameTypeText)}));
}

Ttlv payload(std::vector<Ttlv> items) {
  return Ttlv::structure(tag::kRequestPayload, std::move(items));
}

Ttlv gcm_parameters() {
  return Ttlv::structure(tag::kCryptographicParameters,
                         {Ttlv::enumeration(tag::kBlockCipherMode, kBlockCipherModeGcm),
                          Ttlv::enumeration(tag::kCryptographicAlgorithm, kAlgorithmAes),
                          Ttlv::integer(tag::kTagLength, static_cast<std::int32_t>(kGcmTagSize))});
}

std::vector<std::uint8_t> to_vector(std::span<const std::uint8_t> bytes) {
  return {bytes.begin(), bytes.end()};
}

}  // namespace

std::string_view to_string(Operation operation) {
  switch (operation) {
    case Operation::kCreate:
      return "Create";
    case Operation::kLocate:
      return "Locate";
    case Operation::kGetAttributes:
      return "Get Attributes";
    case Operation::kActivate:
      return "Activate";
    case Operation::kRevoke:
      return "Revoke";
    case Operation::kDestroy:
      return "Destroy";
    case Operation::kDiscoverVersions:
      return "Discover Versions";
    case Operation::kEncrypt:
      return "Encrypt";
    case Operation::kDecrypt:
      return "Decrypt";
  }
  return "unknown operation";
}

std::string_view to_string(ResultReason reason) {
  switch (reason) {
    case ResultReason::kItemNotFound:
      return "Item Not Found";
    case ResultReason::kResponseTooLarge:
      return "Response Too Large";
    case ResultReason::kAuthenticationNotSuccessful:
      return "Authentication Not Successful";
    case ResultReason::kInvalidMessage:
      return "Invalid Message";
    case ResultReason::kOperationNotSupported:
      return "Operation Not Supported";
    case ResultReason::kMissingData:
      return "Missing Data";
    case ResultReason::kInvalidField:
      return "Invalid Field";
    case ResultReason::kFeatureNotSupported:
      return "Feature Not Supported";
    case ResultReason::kOperationCanceledByRequester:
      return "Operation Canceled By Requester";
    case ResultReason::kCryptographicFailure:
      return "Cryptographic Failure";
    case ResultReason::kIllegalOperation:
      return "Illegal Operation";
    case ResultReason::kPermissionDenied:
      return "Permission Denied";
    case ResultReason::kObjectArchived:
      return "Object Archived";
    case ResultReason::kIndexOutOfBounds:
      return "Index Out of Bounds";
    case ResultReason::kApplicationNamespaceNotSupported:
      return "Application Namespace Not Supported";
    case ResultReason::kKeyFormatTypeNotSupported:
      return "Key Format Type Not Supported";
    case ResultReason::kKeyCompressionTypeNotSupported:
      return "Key Compression Type Not Supported";
    case ResultReason::kEncodingOptionError:
      return "Encoding Option Error";
    case ResultReason::kKeyValueNotPresent:
      return "Key Value Not Present";
    case ResultReason::kAttestationRequired:
      return "Attestation Required";
    case ResultReason::kAttestationFailed:
      return "Attestation Failed";
    case ResultReason::kSensitive:
      return "Sensitive";
    case ResultReason::kNotExtractable:
      return "Not Extractable";
    case ResultReason::kObjectAlreadyExists:
      return "Object Already Exists";
    case ResultReason::kObjectDestroyed:
      return "Object Destroyed";
    case ResultReason::kObjectNotFound:
      return "Object Not Found";
    case ResultReason::kNotAuthorised:
      return "Not Authorised";
    case ResultReason::kWrongKeyLifecycleState:
      return "Wrong Key Lifecycle State";
    case ResultReason::kGeneralFailure:
      return "General Failure";
  }
  return "unknown result reason";
}

ErrorCode error_code_for(ResultReason reason, Operation operation) {
  switch (reason) {
    case ResultReason::kItemNotFound:
    case ResultReason::kObjectNotFound:
    case ResultReason::kObjectDestroyed:
    case ResultReason::kKeyValueNotPresent:
      return ErrorCode::kNotFound;
    case ResultReason::kAuthenticationNotSuccessful:
    case ResultReason::kPermissionDenied:
    case ResultReason::kNotAuthorised:
    case ResultReason::kIllegalOperation:
    case ResultReason::kWrongKeyLifecycleState:
    case ResultReason::kObjectArchived:
    case ResultReason::kAttestationRequired:
    case ResultReason::kAttestationFailed:
    case ResultReason::kSensitive:
    case ResultReason::kNotExtractable:
      return ErrorCode::kDenied;
    case ResultReason::kOperationNotSupported:
    case ResultReason::kFeatureNotSupported:
    case ResultReason::kApplicationNamespaceNotSupported:
    case ResultReason::kKeyFormatTypeNotSupported:
    case ResultReason::kKeyCompressionTypeNotSupported:
      return ErrorCode::kUsage;
    case ResultReason::kObjectAlreadyExists:
      return ErrorCode::kConflict;
    case ResultReason::kCryptographicFailure:
      // On Decrypt the server says the GCM tag did not verify: the wrap or
      // its encryption context is not what the key wrapped.
      return operation == Operation::kDecrypt ? ErrorCode::kCorrupt : ErrorCode::kKmsUnreachable;
    case ResultReason::kGeneralFailure:
    case ResultReason::kOperationCanceledByRequester:
      // The server failed without saying why: nothing is known about the
      // header, so it is the KMS that failed, never "corrupt header".
      return ErrorCode::kKmsUnreachable;
    case ResultReason::kResponseTooLarge:
    case ResultReason::kInvalidMessage:
    case ResultReason::kMissingData:
    case ResultReason::kInvalidField:
    case ResultReason::kIndexOutOfBounds:
    case ResultReason::kEncodingOptionError:
      // The server refused the request envcrypt built.
      return ErrorCode::kInternal;
  }
  return ErrorCode::kKmsUnreachable;
}

std::string_view explanation(ResultReason reason, Operation operation) {
  switch (error_code_for(reason, operation)) {
    case ErrorCode::kCorrupt:
      return " (the server could not authenticate the wrapped key: the wrap or its encryption "
             "context is not what this key wrapped)";
    case ErrorCode::kKmsUnreachable:
      return " (the KMS server failed and gave no cause; the disk header is not known to be "
             "at fault; the server's log may say more)";
    case ErrorCode::kInternal:
      return " (the server did not accept the request envcrypt sent)";
    default:
      return "";
  }
}

std::string_view to_string(State state) {
  switch (state) {
    case State::kPreActive:
      return "Pre-Active";
    case State::kActive:
      return "Active";
    case State::kDeactivated:
      return "Deactivated";
    case State::kCompromised:
      return "Compromised";
    case State::kDestroyed:
      return "Destroyed";
    case State::kDestroyedCompromised:
      return "Destroyed Compromised";
  }
  return "unknown state";
}

Ttlv make_request(Operation operation, Ttlv request_payload) {
  return Ttlv::structure(
      tag::kRequestMessage,
      {Ttlv::structure(
           tag::kRequestHeader,
           {Ttlv::structure(tag::kProtocolVersion,
                            {Ttlv::integer(tag::kProtocolVersionMajor, kProtocolVersion.major),
                             Ttlv::integer(tag::kProtocolVersionMinor, kProtocolVersion.minor)}),
            Ttlv::integer(tag::kBatchCount, 1)}),
       Ttlv::structure(tag::kBatchItem,
                       {Ttlv::enumeration(tag::kOperation, static_cast<std::uint32_t>(operation)),
                        std::move(request_payload)})});
}

Result<Ttlv> response_payload(const Ttlv& response, Operation operation) {
  if (response.tag() != tag::kResponseMessage || response.type() != ItemType::kStructure) {
    return malformed("not a Response Message");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* header, expect(response, tag::kResponseHeader,
                                                       ItemType::kStructure, "Response Header"));
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* batch_count,
                            expect(*header, tag::kBatchCount, ItemType::kInteger, "Batch Count"));
  const auto batch_items = response.find_all(tag::kBatchItem);
  if (batch_count->number() != 1 || batch_items.size() != 1) {
    return malformed("expected one batch item, got " + std::to_string(batch_items.size()));
  }
  const Ttlv& item = *batch_items.front();
  if (item.type() != ItemType::kStructure) {
    return malformed("Batch Item is not a Structure");
  }
  if (const Ttlv* echoed = item.find(tag::kOperation); echoed != nullptr) {
    if (echoed->type() != ItemType::kEnumeration ||
        echoed->number() != static_cast<std::int64_t>(operation)) {
      return malformed("answer is for another operation than " + std::string(to_string(operation)));
    }
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* status, expect(item, tag::kResultStatus,
                                                       ItemType::kEnumeration, "Result Status"));
  if (status->number() == kResultStatusSuccess) {
    const Ttlv* found = item.find(tag::kResponsePayload);
    if (found == nullptr) {
      // Several operations (e.g. Discover Versions with nothing in common)
      // may answer with no payload at all.
      return Ttlv::structure(tag::kResponsePayload);
    }
    if (found->type() != ItemType::kStructure) {
      return malformed("Response Payload is not a Structure");
    }
    return *found;
  }
  auto reason = ResultReason::kGeneralFailure;
  if (const Ttlv* raw_reason = item.find(tag::kResultReason);
      raw_reason != nullptr && raw_reason->type() == ItemType::kEnumeration) {
    reason = static_cast<ResultReason>(raw_reason->number());
  }
  std::string message = "KMIP " + std::string(to_string(operation)) + " failed: ";
  const std::string_view reason_name = to_string(reason);
  message += reason_name == "unknown result reason"
                 ? "result reason " + std::to_string(static_cast<std::uint32_t>(reason))
                 : std::string(reason_name);
  if (const Ttlv* text = item.find(tag::kResultMessage);
      text != nullptr && text->type() == ItemType::kTextString && !text->text_value().empty()) {
    message += ": ";
    message += quoted_server_text(text->text_value());
  }
  message += explanation(reason, operation);
  return Error(error_code_for(reason, operation), message);
}

Ttlv discover_versions_request() {
  return payload({Ttlv::structure(
      tag::kProtocolVersion, {Ttlv::integer(tag::kProtocolVersionMajor, kProtocolVersion.major),
                              Ttlv::integer(tag::kProtocolVersionMinor, kProtocolVersion.minor)})});
}

Ttlv create_aes256_request(const std::optional<std::string>& name) {
  Ttlv attributes = Ttlv::structure(
      tag::kTemplateAttribute,
      {attribute("Cryptographic Algorithm", Ttlv::enumeration(tag::kAttributeValue, kAlgorithmAes)),
       attribute("Cryptographic Length", Ttlv::integer(tag::kAttributeValue, kAes256Bits)),
       attribute("Cryptographic Usage Mask",
                 Ttlv::integer(tag::kAttributeValue, kUsageMaskEncrypt | kUsageMaskDecrypt))});
  if (name.has_value()) {
    attributes.add(name_attribute(*name));
  }
  return payload(
      {Ttlv::enumeration(tag::kObjectType, kObjectTypeSymmetricKey), std::move(attributes)});
}

Ttlv unique_identifier_request(std::string_view uid) {
  return payload({Ttlv::text(tag::kUniqueIdentifier, uid)});
}

Ttlv get_attributes_request(std::string_view uid, const std::vector<std::string>& names) {
  Ttlv request = unique_identifier_request(uid);
  for (const std::string& name : names) {
    request.add(Ttlv::text(tag::kAttributeName, name));
  }
  return request;
}

Ttlv revoke_request(std::string_view uid) {
  return payload({Ttlv::text(tag::kUniqueIdentifier, uid),
                  Ttlv::structure(tag::kRevocationReason,
                                  {Ttlv::enumeration(tag::kRevocationReasonCode,
                                                     kRevocationCessationOfOperation)})});
}

Ttlv locate_request(const std::optional<std::string>& name) {
  Ttlv request = payload(
      {attribute("Object Type", Ttlv::enumeration(tag::kAttributeValue, kObjectTypeSymmetricKey))});
  if (name.has_value()) {
    request.add(name_attribute(*name));
  }
  return request;
}

Ttlv encrypt_request(std::string_view uid, std::span<const std::uint8_t> plaintext,
                     const GcmParameters& gcm) {
  Ttlv request = payload({Ttlv::text(tag::kUniqueIdentifier, uid), gcm_parameters(),
                          Ttlv::bytes(tag::kData, plaintext)});
  if (!gcm.nonce.empty()) {
    request.add(Ttlv::bytes(tag::kIvCounterNonce, gcm.nonce));
  }
  request.add(Ttlv::bytes(tag::kAuthenticatedEncryptionAdditionalData, gcm.aad));
  return request;
}

Ttlv decrypt_request(std::string_view uid, std::span<const std::uint8_t> ciphertext,
                     const GcmParameters& gcm, std::span<const std::uint8_t> tag) {
  return payload({Ttlv::text(tag::kUniqueIdentifier, uid), gcm_parameters(),
                  Ttlv::bytes(tag::kData, ciphertext), Ttlv::bytes(tag::kIvCounterNonce, gcm.nonce),
                  Ttlv::bytes(tag::kAuthenticatedEncryptionAdditionalData, gcm.aad),
                  Ttlv::bytes(tag::kAuthenticatedEncryptionTag, tag)});
}

Result<std::vector<ProtocolVersion>> parse_discover_versions(const Ttlv& payload) {
  std::vector<ProtocolVersion> versions;
  for (const Ttlv* version : payload.find_all(tag::kProtocolVersion)) {
    ENVCRYPT_ASSIGN_OR_RETURN(
        const Ttlv* major,
        expect(*version, tag::kProtocolVersionMajor, ItemType::kInteger, "Protocol Version Major"));
    ENVCRYPT_ASSIGN_OR_RETURN(
        const Ttlv* minor,
        expect(*version, tag::kProtocolVersionMinor, ItemType::kInteger, "Protocol Version Minor"));
    versions.push_back(
        {static_cast<std::int32_t>(major->number()), static_cast<std::int32_t>(minor->number())});
  }
  return versions;
}

Result<std::string> parse_unique_identifier(const Ttlv& payload) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* uid, expect(payload, tag::kUniqueIdentifier,
                                                    ItemType::kTextString, "Unique Identifier"));
  if (uid->text_value().empty()) {
    return malformed("empty Unique Identifier");
  }
  return std::string(uid->text_value());
}

Result<std::vector<std::string>> parse_locate(const Ttlv& payload) {
  std::vector<std::string> uids;
  for (const Ttlv* uid : payload.find_all(tag::kUniqueIdentifier)) {
    if (uid->type() != ItemType::kTextString) {
      return malformed("Unique Identifier is not a Text String");
    }
    uids.emplace_back(uid->text_value());
  }
  return uids;
}

Result<Ciphertext> parse_encrypt(const Ttlv& payload) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* data,
                            expect(payload, tag::kData, ItemType::kByteString, "Data"));
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* auth_tag,
                            expect(payload, tag::kAuthenticatedEncryptionTag, ItemType::kByteString,
                                   "Authenticated Encryption Tag"));
  if (auth_tag->data().size() != kGcmTagSize) {
    return malformed("Authenticated Encryption Tag of " + std::to_string(auth_tag->data().size()) +
                     " bytes, expected " + std::to_string(kGcmTagSize));
  }
  Ciphertext sealed{to_vector(data->data()), to_vector(auth_tag->data()), {}};
  // A server that generates the IV itself (many do in FIPS mode) returns
  // it here; the wrap opens only with it.
  if (const Ttlv* iv = payload.find(tag::kIvCounterNonce); iv != nullptr) {
    if (iv->type() != ItemType::kByteString || iv->data().empty()) {
      return malformed("IV/Counter/Nonce is not a non-empty Byte String");
    }
    sealed.iv = to_vector(iv->data());
  }
  return sealed;
}

Result<std::vector<std::uint8_t>> wrap_nonce(std::span<const std::uint8_t> sent,
                                             const Ciphertext& sealed) {
  if (sealed.iv.empty()) {
    return to_vector(sent);
  }
  if (sealed.iv.size() != kGcmNonceSize) {
    return Error(ErrorCode::kKmsUnreachable,
                 "KMIP Encrypt answered with a " + std::to_string(sealed.iv.size()) +
                     "-byte IV of the server's choosing; an envcrypt header holds a " +
                     std::to_string(kGcmNonceSize) + "-byte GCM nonce");
  }
  return sealed.iv;
}

Result<SecretBytes> parse_decrypt(const Ttlv& payload) {
  ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* data,
                            expect(payload, tag::kData, ItemType::kByteString, "Data"));
  return SecretBytes(data->data().data(), data->data().size());
}

const Ttlv* Attributes::first(std::string_view name) const {
  for (const auto& [attribute_name, value] : values) {
    if (attribute_name == name) {
      return &value;
    }
  }
  return nullptr;
}

std::vector<const Ttlv*> Attributes::all(std::string_view name) const {
  std::vector<const Ttlv*> found;
  for (const auto& [attribute_name, value] : values) {
    if (attribute_name == name) {
      found.push_back(&value);
    }
  }
  return found;
}

Result<Attributes> parse_get_attributes(const Ttlv& payload) {
  Attributes attributes;
  for (const Ttlv* item : payload.find_all(tag::kAttribute)) {
    ENVCRYPT_ASSIGN_OR_RETURN(const Ttlv* name, expect(*item, tag::kAttributeName,
                                                       ItemType::kTextString, "Attribute Name"));
    const Ttlv* value = item->find(tag::kAttributeValue);
    if (value == nullptr) {
      return malformed("attribute " + std::string(name->text_value()) + " has no value");
    }
    attributes.values.emplace_back(std::string(name->text_value()), *value);
  }
  return attributes;
}

}  // namespace envcrypt::kmip
