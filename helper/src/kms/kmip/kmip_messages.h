// KMIP 1.4 messages for the operations envcrypt uses: request construction
// and response parsing, pure functions over Ttlv trees (no I/O), so every
// message can be checked byte for byte in unit tests.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/kmip/ttlv.h"
#include "util/crypto.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt::kmip {

// Tags (KMIP 1.4 section 9.1.3.1), only those envcrypt sends or reads.
namespace tag {
inline constexpr std::uint32_t kAttribute = 0x420008;
inline constexpr std::uint32_t kAttributeName = 0x42000A;
inline constexpr std::uint32_t kAttributeValue = 0x42000B;
inline constexpr std::uint32_t kBatchCount = 0x42000D;
inline constexpr std::uint32_t kBatchItem = 0x42000F;
inline constexpr std::uint32_t kBlockCipherMode = 0x420011;
inline constexpr std::uint32_t kCryptographicAlgorithm = 0x420028;
inline constexpr std::uint32_t kCryptographicParameters = 0x42002B;
inline constexpr std::uint32_t kIvCounterNonce = 0x42003D;
inline constexpr std::uint32_t kMaximumItems = 0x42004F;
inline constexpr std::uint32_t kNameType = 0x420054;
inline constexpr std::uint32_t kNameValue = 0x420055;
inline constexpr std::uint32_t kObjectType = 0x420057;
inline constexpr std::uint32_t kOperation = 0x42005C;
inline constexpr std::uint32_t kProtocolVersion = 0x420069;
inline constexpr std::uint32_t kProtocolVersionMajor = 0x42006A;
inline constexpr std::uint32_t kProtocolVersionMinor = 0x42006B;
inline constexpr std::uint32_t kRequestHeader = 0x420077;
inline constexpr std::uint32_t kRequestMessage = 0x420078;
inline constexpr std::uint32_t kRequestPayload = 0x420079;
inline constexpr std::uint32_t kResponseHeader = 0x42007A;
inline constexpr std::uint32_t kResponseMessage = 0x42007B;
inline constexpr std::uint32_t kResponsePayload = 0x42007C;
inline constexpr std::uint32_t kResultMessage = 0x42007D;
inline constexpr std::uint32_t kResultReason = 0x42007E;
inline constexpr std::uint32_t kResultStatus = 0x42007F;
inline constexpr std::uint32_t kRevocationReason = 0x420081;
inline constexpr std::uint32_t kRevocationReasonCode = 0x420082;
inline constexpr std::uint32_t kTemplateAttribute = 0x420091;
inline constexpr std::uint32_t kTimeStamp = 0x420092;
inline constexpr std::uint32_t kUniqueIdentifier = 0x420094;
inline constexpr std::uint32_t kData = 0x4200C2;
inline constexpr std::uint32_t kTagLength = 0x4200CE;
inline constexpr std::uint32_t kAuthenticatedEncryptionAdditionalData = 0x4200FE;
inline constexpr std::uint32_t kAuthenticatedEncryptionTag = 0x4200FF;
}  // namespace tag

enum class Operation : std::uint32_t {
  kCreate = 0x01,
  kLocate = 0x08,
  kGetAttributes = 0x0B,
  kActivate = 0x12,
  kRevoke = 0x13,
  kDestroy = 0x14,
  kDiscoverVersions = 0x1E,
  kEncrypt = 0x1F,
  kDecrypt = 0x20,
};
std::string_view to_string(Operation operation);

// Result Reason (KMIP 1.4 section 9.1.3.2.29), plus the KMIP 2.0 reasons a
// newer server may answer with that envcrypt can explain.
enum class ResultReason : std::uint32_t {
  kItemNotFound = 0x01,
  kResponseTooLarge = 0x02,
  kAuthenticationNotSuccessful = 0x03,
  kInvalidMessage = 0x04,
  kOperationNotSupported = 0x05,
  kMissingData = 0x06,
  kInvalidField = 0x07,
  kFeatureNotSupported = 0x08,
  kOperationCanceledByRequester = 0x09,
  kCryptographicFailure = 0x0A,
  kIllegalOperation = 0x0B,
  kPermissionDenied = 0x0C,
  kObjectArchived = 0x0D,
  kIndexOutOfBounds = 0x0E,
  kApplicationNamespaceNotSupported = 0x0F,
  kKeyFormatTypeNotSupported = 0x10,
  kKeyCompressionTypeNotSupported = 0x11,
  kEncodingOptionError = 0x12,
  kKeyValueNotPresent = 0x13,
  kAttestationRequired = 0x14,
  kAttestationFailed = 0x15,
  kSensitive = 0x16,
  kNotExtractable = 0x17,
  kObjectAlreadyExists = 0x18,
  kObjectDestroyed = 0x36,         // KMIP 2.0
  kObjectNotFound = 0x37,          // KMIP 2.0
  kNotAuthorised = 0x39,           // KMIP 2.0
  kWrongKeyLifecycleState = 0x43,  // KMIP 2.0
  kGeneralFailure = 0x100,
};
std::string_view to_string(ResultReason reason);

// The envcrypt error class for a KMIP failure of `operation`.  Only a
// Cryptographic Failure of Decrypt (the GCM tag did not verify) says the
// wrap is at fault (kCorrupt); a General Failure is the server's
// (kKmsUnreachable), whatever the operation.
ErrorCode error_code_for(ResultReason reason, Operation operation);
// What the error code means for the operator, appended to the message:
// " (...)", or empty.
std::string_view explanation(ResultReason reason, Operation operation);

// Key lifecycle state (KMIP 1.4 section 3.22).
enum class State : std::uint32_t {
  kPreActive = 1,
  kActive = 2,
  kDeactivated = 3,
  kCompromised = 4,
  kDestroyed = 5,
  kDestroyedCompromised = 6,
};
std::string_view to_string(State state);

struct ProtocolVersion {
  std::int32_t major = 1;
  std::int32_t minor = 4;
  friend bool operator==(const ProtocolVersion&, const ProtocolVersion&) = default;
};
// Every request says 1.4: Authenticated Encryption Additional Data and Tag
// exist only from 1.4 on.
inline constexpr ProtocolVersion kProtocolVersion{1, 4};

// A Request Message carrying one batch item.
Ttlv make_request(Operation operation, Ttlv request_payload);

// The Response Payload of a Response Message holding one batch item for
// `operation`.  A failed operation becomes an Error whose code follows its
// Result Reason and whose message quotes the server's Result Message
// ("KMIP Decrypt failed: Permission Denied: <server's words>", the words
// escaped: bytes outside printable ASCII as \xHH, at most 256).  A response
// that is not well formed is ErrorCode::kKmsUnreachable.
Result<Ttlv> response_payload(const Ttlv& response, Operation operation);

// Request payloads.
Ttlv discover_versions_request();
// AES-256, usage mask Encrypt|Decrypt, and a Name attribute when `name` is
// given.
Ttlv create_aes256_request(const std::optional<std::string>& name);
// Activate, Destroy and Get Attributes-style payloads that name one object.
Ttlv unique_identifier_request(std::string_view uid);
Ttlv get_attributes_request(std::string_view uid, const std::vector<std::string>& names);
// Revocation with reason Cessation of Operation: the key was retired, not
// compromised.
Ttlv revoke_request(std::string_view uid);
// Symmetric keys, optionally only those with Name `name`.
Ttlv locate_request(const std::optional<std::string>& name);

struct GcmParameters {
  // kGcmNonceSize bytes; Encrypt without one asks the server to choose it.
  std::span<const std::uint8_t> nonce;
  std::span<const std::uint8_t> aad;
};
Ttlv encrypt_request(std::string_view uid, std::span<const std::uint8_t> plaintext,
                     const GcmParameters& gcm);
Ttlv decrypt_request(std::string_view uid, std::span<const std::uint8_t> ciphertext,
                     const GcmParameters& gcm, std::span<const std::uint8_t> tag);

// Response payload readers.
Result<std::vector<ProtocolVersion>> parse_discover_versions(const Ttlv& payload);
Result<std::string> parse_unique_identifier(const Ttlv& payload);
Result<std::vector<std::string>> parse_locate(const Ttlv& payload);

struct Ciphertext {
  std::vector<std::uint8_t> data;
  std::vector<std::uint8_t> tag;
  std::vector<std::uint8_t> iv;  // the server's own IV/Counter/Nonce; empty: it used ours
};
Result<Ciphertext> parse_encrypt(const Ttlv& payload);
// The nonce the wrap opens with: the server's when it answered with one
// (it must be kGcmNonceSize bytes, what a header stores), else `sent`.
Result<std::vector<std::uint8_t>> wrap_nonce(std::span<const std::uint8_t> sent,
                                             const Ciphertext& sealed);
Result<SecretBytes> parse_decrypt(const Ttlv& payload);

// The attributes Get Attributes returned, by attribute name; each value is
// the Attribute Value item.  Multi-valued attributes (Name) appear once per
// value.
struct Attributes {
  std::vector<std::pair<std::string, Ttlv>> values;
  [[nodiscard]] const Ttlv* first(std::string_view name) const;
  [[nodiscard]] std::vector<const Ttlv*> all(std::string_view name) const;
};
Result<Attributes> parse_get_attributes(const Ttlv& payload);

}  // namespace envcrypt::kmip
