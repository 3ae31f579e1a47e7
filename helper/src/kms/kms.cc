#include "kms/kms.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>

#include "util/crypto.h"

namespace envcrypt {
namespace {

void append_u32_be(std::vector<std::uint8_t>& out, std::size_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>((value >> shift) & 0xff));
  }
}

void append_field(std::vector<std::uint8_t>& out, const std::string& field) {
  append_u32_be(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
}

}  // namespace

// Length-prefixed so that no two different contexts serialise to the same
// bytes ({"a":"bc"} vs {"ab":"c"}); std::map already iterates in sorted order.
// Layout: u32 count, then per pair u32 key length, key, u32 value length,
// value; all integers big-endian.
std::vector<std::uint8_t> canonical_context(const EncryptionContext& context) {
  std::vector<std::uint8_t> out;
  append_u32_be(out, context.size());
  for (const auto& [key, value] : context) {
    append_field(out, key);
    append_field(out, value);
  }
  return out;
}

std::string_view to_string(KeyState state) {
  switch (state) {
    case KeyState::kEnabled:
      return "Enabled";
    case KeyState::kDisabled:
      return "Disabled";
    case KeyState::kPendingDeletion:
      return "PendingDeletion";
    case KeyState::kPendingImport:
      return "PendingImport";
  }
  return "Unknown";
}

std::string_view to_string(KeyOrigin origin) {
  switch (origin) {
    case KeyOrigin::kKms:
      return "KMS";
    case KeyOrigin::kExternal:
      return "EXTERNAL";
  }
  return "Unknown";
}

Result<WrappedKey> KmsClient::rewrap_key(const WrappedKey& wrapped,
                                         const EncryptionContext& source_context,
                                         std::string_view destination_keyref,
                                         const EncryptionContext& destination_context,
                                         const CallContext& call) {
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes plaintext, unwrap_key(wrapped, source_context, call));
  return wrap_key(destination_keyref, plaintext, destination_context, call);
}

Error KmsClient::unsupported(std::string_view operation) const {
  return {ErrorCode::kUsage, std::string(operation) + " is not supported by this KMS backend"};
}

std::string_view to_string(GrantOperation operation) {
  switch (operation) {
    case GrantOperation::kGenerate:
      return "generate";
    case GrantOperation::kDecrypt:
      return "decrypt";
    case GrantOperation::kReencrypt:
      return "reencrypt";
    case GrantOperation::kDescribe:
      return "describe";
    case GrantOperation::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::vector<std::string> grant_operation_names(const std::vector<GrantOperation>& operations) {
  std::vector<std::string> names;
  for (const GrantOperation operation : operations) {
    names.emplace_back(to_string(operation));
  }
  return names;
}

Result<GrantOperation> parse_grant_operation(std::string_view name) {
  for (const GrantOperation operation :
       {GrantOperation::kGenerate, GrantOperation::kDecrypt, GrantOperation::kReencrypt,
        GrantOperation::kDescribe, GrantOperation::kAdmin}) {
    if (to_string(operation) == name) {
      return operation;
    }
  }
  return Error(ErrorCode::kUsage, "unknown grant operation '" + std::string(name) +
                                      "': use generate, decrypt, reencrypt, describe or admin");
}

Status authorize(const KeyAccess& key, std::string_view principal, GrantOperation wanted) {
  const auto covers = [wanted](const Grant& grant) {
    return std::any_of(
        grant.operations.begin(), grant.operations.end(), [wanted](GrantOperation held) {
          return held == wanted ||
                 (wanted == GrantOperation::kDescribe && held == GrantOperation::kAdmin);
        });
  };
  if (key.service_key || key.owner == principal ||
      std::any_of(key.grants.begin(), key.grants.end(), [&](const Grant& grant) {
        return grant.principal == principal && covers(grant);
      })) {
    return OkStatus();
  }
  return Error(ErrorCode::kDenied, "principal " + std::string(principal) + " holds no " +
                                       std::string(to_string(wanted)) + " grant on key " + key.uri);
}

Result<WrappedKey> Envelope::wrap(std::string_view keyref, const SecretBytes& data_key,
                                  const EncryptionContext& context) {
  return client_.wrap_key(keyref, data_key, context, call_);
}

Result<SecretBytes> Envelope::unwrap(const WrappedKey& wrapped, const EncryptionContext& context) {
  return client_.unwrap_key(wrapped, context, call_);
}

Result<WrappedKey> Envelope::rewrap(const WrappedKey& wrapped,
                                    const EncryptionContext& source_context,
                                    std::string_view destination_keyref,
                                    const EncryptionContext& destination_context) {
  return client_.rewrap_key(wrapped, source_context, destination_keyref, destination_context,
                            call_);
}

Status Envelope::verify(const WrappedKey& wrapped, const EncryptionContext& context,
                        const SecretBytes& data_key) {
  const std::string refused =
      wrapped.cmk_uri + ": the new wrap of the data key does not decrypt back to it";
  auto unwrapped = unwrap(wrapped, context);
  if (!unwrapped.ok()) {
    return Error(unwrapped.error().code(),
                 refused + " (" + unwrapped.error().message() + "); nothing was written");
  }
  // Sizes are public; the bytes are compared in constant time.
  if (unwrapped->size() != data_key.size() ||
      CRYPTO_memcmp(unwrapped->data(), data_key.data(), data_key.size()) != 0) {
    return Error(ErrorCode::kKmsUnreachable,
                 refused + " (the KMS returned other bytes); nothing was written");
  }
  return OkStatus();
}

Result<DataKey> Envelope::generate(std::string_view keyref, const EncryptionContext& context,
                                   std::size_t size) {
  DataKey key;
  ENVCRYPT_ASSIGN_OR_RETURN(key.plaintext, random_secret(size));
  ENVCRYPT_ASSIGN_OR_RETURN(key.wrapped, wrap(keyref, key.plaintext, context));
  ENVCRYPT_TRY(verify(key.wrapped, context, key.plaintext));
  return key;
}

}  // namespace envcrypt
