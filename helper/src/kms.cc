#include "kms.h"

#include <openssl/crypto.h>

#include <string>

#include "crypto.h"

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

Status KmsBackend::create_alias(std::string_view /*alias*/, std::string_view /*keyref*/) {
  return unsupported("create-alias");
}

Status KmsBackend::delete_alias(std::string_view /*alias*/) { return unsupported("delete-alias"); }

Result<std::map<std::string, std::string>> KmsBackend::list_aliases() {
  return unsupported("list-aliases");
}

Result<WrappedKey> KmsBackend::reencrypt(const WrappedKey& wrapped,
                                         const EncryptionContext& source_context,
                                         std::string_view destination_keyref,
                                         const EncryptionContext& destination_context) {
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes plaintext, decrypt(wrapped, source_context));
  return encrypt(destination_keyref, plaintext, destination_context);
}

Result<KeyInfo> KmsBackend::rotate_key(std::string_view /*keyref*/) {
  return unsupported("rotate-key");
}

Result<std::vector<KeyInfo>> KmsBackend::rotate_due() { return unsupported("rotate-due"); }

Result<ImportParameters> KmsBackend::get_parameters_for_import(std::string_view /*keyref*/) {
  return unsupported("get-parameters-for-import");
}

Result<KeyInfo> KmsBackend::import_key_material(std::string_view /*keyref*/,
                                                const ImportMaterialRequest& /*request*/) {
  return unsupported("import-key-material");
}

Result<KeyInfo> KmsBackend::delete_key_material(std::string_view /*keyref*/) {
  return unsupported("delete-key-material");
}

Result<Grant> KmsBackend::create_grant(std::string_view /*keyref*/, std::string_view /*principal*/,
                                       const std::vector<GrantOperation>& /*operations*/) {
  return unsupported("create-grant");
}

Status KmsBackend::revoke_grant(std::string_view /*keyref*/, std::string_view /*grant_id*/) {
  return unsupported("revoke-grant");
}

Result<std::vector<Grant>> KmsBackend::list_grants(std::string_view /*keyref*/) {
  return unsupported("list-grants");
}

Result<std::vector<std::string>> KmsBackend::purge_due() { return unsupported("purge-due"); }

Result<AuditLog*> KmsBackend::audit() { return unsupported("audit"); }

Error KmsBackend::unsupported(std::string_view operation) const {
  return {ErrorCode::kUsage, std::string(operation) + " is not supported by this KMS backend"};
}

Status verify_wrap(KmsBackend& kms, const WrappedKey& wrapped, const EncryptionContext& context,
                   const SecretBytes& data_key) {
  const std::string refused =
      wrapped.cmk_uri + ": the new wrap of the data key does not decrypt back to it";
  auto unwrapped = kms.decrypt(wrapped, context);
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

Result<DataKey> generate_data_key(KmsBackend& kms, std::string_view keyref,
                                  const EncryptionContext& context, std::size_t size) {
  DataKey key;
  ENVCRYPT_ASSIGN_OR_RETURN(key.plaintext, random_secret(size));
  ENVCRYPT_ASSIGN_OR_RETURN(key.wrapped, kms.encrypt(keyref, key.plaintext, context));
  ENVCRYPT_TRY(verify_wrap(kms, key.wrapped, context, key.plaintext));
  return key;
}

}  // namespace envcrypt
