// The KMS interface, in the spirit of Tink's KmsClient: a backend says which
// CMK URIs it serves and performs envelope operations and key administration
// for them.  Backends: `local://` (kms_local.*) and `kmip://` (kmip/*).
// Callers pick the backend from the CMK URI's scheme (kms_registry.*), never
// from flags spread through the code.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"
#include "secret.h"

namespace envcrypt {

// Encryption context: bound into the wrap as AAD (AWS/Alibaba KMS style).
// envcryptctl puts the disk uuid and geometry in it.  Serialised canonically
// (sorted keys) by canonical_context() so every backend uses the same bytes.
using EncryptionContext = std::map<std::string, std::string>;
std::vector<std::uint8_t> canonical_context(const EncryptionContext& context);

// A DK wrapped under one version of a CMK with AES-256-GCM.
struct WrappedKey {
  std::string cmk_uri;  // canonical URI: local://<region>/<key-id> or kmip://host:port/uid
  std::uint32_t cmk_version = 0;
  std::vector<std::uint8_t> nonce;       // 12 bytes
  std::vector<std::uint8_t> tag;         // 16 bytes
  std::vector<std::uint8_t> ciphertext;  // same length as the plaintext DK
};

enum class KeyState { kEnabled, kDisabled, kPendingDeletion, kPendingImport };
enum class KeyOrigin { kKms, kExternal };
std::string_view to_string(KeyState state);
std::string_view to_string(KeyOrigin origin);

struct KeyInfo {
  std::string key_id;
  std::string uri;  // canonical CMK URI
  std::vector<std::string> aliases;
  KeyState state = KeyState::kEnabled;
  KeyOrigin origin = KeyOrigin::kKms;
  std::string description;
  std::uint32_t primary_version = 1;
  std::uint32_t version_count = 1;
  std::int64_t created_at = 0;                // unix seconds
  std::optional<std::int64_t> deletion_date;  // PendingDeletion only
  bool service_key = false;
};

struct CreateKeyRequest {
  std::string description;
  std::optional<std::string> alias;  // without the "alias/" prefix
  KeyOrigin origin = KeyOrigin::kKms;
  std::optional<std::uint32_t> rotation_interval_days;
};

// Operations a grant hands to a principal.  kAdmin covers every key
// administration operation (enable, disable, rotate, deletion, aliases,
// grants, import).
enum class GrantOperation { kGenerate, kDecrypt, kReencrypt, kDescribe, kAdmin };
std::string_view to_string(GrantOperation operation);
// Accepts the names to_string() prints: generate, decrypt, reencrypt, describe, admin.
Result<GrantOperation> parse_grant_operation(std::string_view name);

struct Grant {
  std::string grant_id;
  std::string key_id;
  std::string principal;
  std::vector<GrantOperation> operations;
  std::string created_by;
  std::int64_t created_at = 0;
};

// GetParametersForImport's answer (BYOK).
struct ImportParameters {
  std::string key_id;
  std::string public_key_pem;  // RSA-2048 SubjectPublicKeyInfo PEM
  std::string import_token;    // opaque, hex
  std::string wrapping_algorithm = "RSAES_OAEP_SHA_256";
  std::int64_t expires_at = 0;  // unix seconds, 24 h after issue
};

struct ImportMaterialRequest {
  std::vector<std::uint8_t> encrypted_material;  // RSAES-OAEP-SHA-256 of 32 bytes
  std::string import_token;
  std::optional<std::int64_t> material_expires_at;  // unix seconds
  // Whether the material may leave the keystore in a `kms backup`
  // (keystore_backup.h).  Off unless asked for at import: material brought
  // in from outside is the importer's to copy, not ours.
  bool allow_backup = false;
};

class AuditLog;

class KmsBackend {
 public:
  virtual ~KmsBackend() = default;

  // Does this backend serve the given CMK URI or key reference?
  [[nodiscard]] virtual bool supports(std::string_view uri) const = 0;

  // Envelope operations.  `keyref` is a key id, alias/<name> or CMK URI.
  virtual Result<WrappedKey> encrypt(std::string_view keyref, const SecretBytes& plaintext,
                                     const EncryptionContext& context) = 0;
  virtual Result<SecretBytes> decrypt(const WrappedKey& wrapped,
                                      const EncryptionContext& context) = 0;

  // Key administration.
  virtual Result<KeyInfo> create_key(const CreateKeyRequest& request) = 0;
  virtual Result<KeyInfo> describe_key(std::string_view keyref) = 0;
  virtual Result<std::vector<KeyInfo>> list_keys() = 0;
  virtual Status enable_key(std::string_view keyref) = 0;
  virtual Status disable_key(std::string_view keyref) = 0;
  virtual Result<KeyInfo> schedule_key_deletion(std::string_view keyref,
                                                std::uint32_t pending_window_days) = 0;
  virtual Status cancel_key_deletion(std::string_view keyref) = 0;
  // Why schedule_key_deletion() destroys at once, for a backend with no
  // pending-deletion window (KMIP); nothing for one that waits.
  [[nodiscard]] virtual std::optional<std::string> immediate_deletion() const {
    return std::nullopt;
  }

  // Aliases ("alias/<name>").  A backend without aliases answers with
  // ErrorCode::kUsage and a message saying so (see unsupported()).
  virtual Status create_alias(std::string_view alias, std::string_view keyref);
  virtual Status delete_alias(std::string_view alias);
  virtual Result<std::map<std::string, std::string>> list_aliases();  // alias -> key id

  // Key lifecycle (Documentation/kms/lifecycle.rst).  Every one but
  // reencrypt answers unsupported() unless the backend overrides it: the
  // local KMS offers them all; a KMIP server (PyKMIP 0.10) serves none of
  // ReKey, import with a wrapping key, grants or an audit trail.
  //
  // KMS ReEncrypt: the same DK under the primary version of
  // `destination_keyref`.  The default decrypts and encrypts through this
  // backend, so the DK passes through the helper's memory as at attach;
  // a backend that can do it in one step overrides it.
  virtual Result<WrappedKey> reencrypt(const WrappedKey& wrapped,
                                       const EncryptionContext& source_context,
                                       std::string_view destination_keyref,
                                       const EncryptionContext& destination_context);
  // Adds a version and makes it primary; older versions still decrypt.
  virtual Result<KeyInfo> rotate_key(std::string_view keyref);
  // Rotates every Enabled key whose rotation interval has elapsed; returns them.
  virtual Result<std::vector<KeyInfo>> rotate_due();
  virtual Result<ImportParameters> get_parameters_for_import(std::string_view keyref);
  virtual Result<KeyInfo> import_key_material(std::string_view keyref,
                                              const ImportMaterialRequest& request);
  // Destroys imported material: the key returns to PendingImport.
  virtual Result<KeyInfo> delete_key_material(std::string_view keyref);
  virtual Result<Grant> create_grant(std::string_view keyref, std::string_view principal,
                                     const std::vector<GrantOperation>& operations);
  virtual Status revoke_grant(std::string_view keyref, std::string_view grant_id);
  virtual Result<std::vector<Grant>> list_grants(std::string_view keyref);
  // Destroys every key whose deletion date has passed; returns their ids.
  virtual Result<std::vector<std::string>> purge_due();
  // The hash-chained audit trail of the operations of this KMS.
  virtual Result<AuditLog*> audit();

 protected:
  // The error a backend returns for an operation its server cannot offer.
  [[nodiscard]] virtual Error unsupported(std::string_view operation) const;
};

// Decrypts a new wrap back through `kms` and compares the result with
// `data_key` in constant time, so a wrap the KMS cannot open again (a
// server that ignored our nonce, a faulty HSM, a bug) is refused before a
// header commits it.  The error names the CMK URI and ends "nothing was
// written"; a failed Decrypt keeps its own error code, other bytes are
// ErrorCode::kKmsUnreachable.
Status verify_wrap(KmsBackend& kms, const WrappedKey& wrapped, const EncryptionContext& context,
                   const SecretBytes& data_key);

// GenerateDataKey: a fresh DK of `size` bytes from OpenSSL's DRBG, wrapped
// by the backend and decrypted back (verify_wrap).  Shared by every backend
// so DK generation is one code path.
struct DataKey {
  SecretBytes plaintext;
  WrappedKey wrapped;
};
Result<DataKey> generate_data_key(KmsBackend& kms, std::string_view keyref,
                                  const EncryptionContext& context, std::size_t size);

}  // namespace envcrypt
