// The KMS interface, in the spirit of Tink's KmsClient: a client says which
// CMK URIs it serves and wraps and unwraps data keys under them; key
// administration, aliases, lifecycle, BYOK, grants, audit and keystore
// backup are capabilities a client offers or not, found through its
// accessors, never by casting.  Clients: `local://` (kms_local.*) and
// `kmip://` (kmip/*).  Callers pick the client from the CMK URI's scheme
// (kms_registry.*), never from flags spread through the code.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/retry.h"
#include "util/secret.h"

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
// Each operation's to_string(), in order.
std::vector<std::string> grant_operation_names(const std::vector<GrantOperation>& operations);
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
class KeystoreBackup;  // kms_local.h: only the local KMS keeps a keystore to
                       // back up

// What describe_key's KeyInfo does not carry.
struct KeyVersionInfo {
  std::uint32_t version = 0;
  std::int64_t created_at = 0;
};

struct KeyDetails {
  KeyInfo info;
  std::string owner;  // the principal that created the key; holds every operation
  std::optional<std::uint32_t> rotation_interval_days;
  std::int64_t last_rotated_at = 0;  // creation or last rotation
  std::vector<KeyVersionInfo> versions;
  std::optional<std::int64_t> material_expires_at;  // EXTERNAL keys only
};

// Who may use a key: what the one authorisation decision, authorize(),
// looks at.
struct KeyAccess {
  std::string uri;           // canonical CMK URI, for the refusal
  std::string owner;         // holds every operation
  bool service_key = false;  // serves every principal of its region
  std::vector<Grant> grants;
};

// May `principal` do `wanted` with `key`?  The owner holds every operation;
// the service key serves every principal of its region; anyone else needs a
// grant naming the operation (an admin grant also covers describe).  The
// local KMS asks it on every operation and preflight before an unwrap, so
// the two never disagree.  A refusal is ErrorCode::kDenied, "principal P
// holds no <operation> grant on key <uri>".
Status authorize(const KeyAccess& key, std::string_view principal, GrantOperation wanted);

// The capabilities a KMS client may offer besides envelope encryption.  A
// client hands each out through an accessor of KmsClient that answers
// nullptr when it does not offer it; offered() turns that into the client's
// own explanation for the operation asked for.

// Create, describe, list, enable, disable and delete keys.
class KeyAdministration {
 public:
  virtual ~KeyAdministration() = default;
  virtual Result<KeyInfo> create_key(const CreateKeyRequest& request) = 0;
  virtual Result<KeyInfo> describe_key(std::string_view keyref) = 0;
  virtual Result<KeyDetails> describe_key_details(std::string_view keyref) = 0;
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
};

// Aliases ("alias/<name>") kept apart from the keys they name.
class KeyAliases {
 public:
  virtual ~KeyAliases() = default;
  virtual Status create_alias(std::string_view alias, std::string_view keyref) = 0;
  virtual Status delete_alias(std::string_view alias) = 0;
  virtual Result<std::map<std::string, std::string>> list_aliases() = 0;  // alias -> key id
};

// Key versions and the end of a key's life (Documentation/kms/lifecycle.rst).
class KeyLifecycle {
 public:
  virtual ~KeyLifecycle() = default;
  // Adds a version and makes it primary; older versions still decrypt.
  virtual Result<KeyInfo> rotate_key(std::string_view keyref) = 0;
  // Rotates every Enabled key whose rotation interval has elapsed; returns
  // them.
  virtual Result<std::vector<KeyInfo>> rotate_due() = 0;
  // Destroys every key whose deletion date has passed; returns their ids.
  virtual Result<std::vector<std::string>> purge_due() = 0;
};

// BYOK: key material brought in under a wrapping key.
class KeyImport {
 public:
  virtual ~KeyImport() = default;
  virtual Result<ImportParameters> get_parameters_for_import(std::string_view keyref) = 0;
  virtual Result<KeyInfo> import_key_material(std::string_view keyref,
                                              const ImportMaterialRequest& request) = 0;
  // Destroys imported material: the key returns to PendingImport.
  virtual Result<KeyInfo> delete_key_material(std::string_view keyref) = 0;
};

// Grants: who besides a key's owner may use it, and for what.
class KeyGrants {
 public:
  virtual ~KeyGrants() = default;
  // `principal` is host/<name>, user/<name> or service/<name>.
  virtual Result<Grant> create_grant(std::string_view keyref, std::string_view principal,
                                     const std::vector<GrantOperation>& operations) = 0;
  virtual Status revoke_grant(std::string_view keyref, std::string_view grant_id) = 0;
  virtual Result<std::vector<Grant>> list_grants(std::string_view keyref) = 0;
  // The principal this client acts as, whose grants decide.
  [[nodiscard]] virtual const std::string& principal() const = 0;
};

// The hash-chained audit trail of the operations of this KMS.
class KeyAudit {
 public:
  virtual ~KeyAudit() = default;
  virtual AuditLog& audit_log() = 0;
};

struct DataKey;
class Envelope;

// A KMS as Tink's KmsClient sees one: it says which CMK URIs it serves and
// hands out its envelope operations (Envelope, below) under a call context.
// Everything else is a capability it may offer (above).  Clients:
// `local://` (kms_local.*) and `kmip://` (kmip/*); KmsRegistry picks one by
// the URI's scheme.
class KmsClient {
 public:
  virtual ~KmsClient() = default;

  // Does this client serve the given CMK URI or key reference?
  [[nodiscard]] virtual bool supports(std::string_view uri) const = 0;

  // Wrap, unwrap, rewrap and generate data keys, each KMS call they make
  // done by `call`'s deadline when it has one (attach at boot passes its
  // attach deadline), else by the client's own (KMIP: deadline_ms).
  Envelope envelope(const CallContext& call = {});

  // The capabilities this client offers; nullptr for one it does not.
  virtual KeyAdministration* administration() { return nullptr; }
  virtual KeyAliases* aliases() { return nullptr; }
  virtual KeyLifecycle* lifecycle() { return nullptr; }
  virtual KeyImport* key_import() { return nullptr; }
  virtual KeyGrants* grants() { return nullptr; }
  virtual KeyAudit* audit_trail() { return nullptr; }
  virtual KeystoreBackup* keystore_backup() { return nullptr; }

  // The error for `operation` when its capability is missing: ErrorCode::kUsage
  // and, by default, "<operation> is not supported by this KMS backend"; a
  // client overrides it to say why its server cannot offer it.
  [[nodiscard]] virtual Error unsupported(std::string_view operation) const;

 protected:
  friend class Envelope;

  // What each client implements for Envelope.  `keyref` is a key id,
  // alias/<name> or CMK URI.
  virtual Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                                      const EncryptionContext& context,
                                      const CallContext& call) = 0;
  virtual Result<SecretBytes> unwrap_key(const WrappedKey& wrapped,
                                         const EncryptionContext& context,
                                         const CallContext& call) = 0;
  // KMS ReEncrypt: the same DK under the primary version of
  // `destination_keyref`.  The default unwraps and wraps through this
  // client, so the DK passes through the helper's memory as at attach; a
  // client that can do it in one step overrides it.
  virtual Result<WrappedKey> rewrap_key(const WrappedKey& wrapped,
                                        const EncryptionContext& source_context,
                                        std::string_view destination_keyref,
                                        const EncryptionContext& destination_context,
                                        const CallContext& call);
};

// GenerateDataKey's answer: the DK and its wrap.
struct DataKey {
  SecretBytes plaintext;
  WrappedKey wrapped;
};

// A client's envelope operations under one call context, as Tink's Aead is
// a KmsClient's for one key: what format, attach, rewrap, recovery and
// image encrypt use, never the client's virtuals directly.
class Envelope {
 public:
  Envelope(KmsClient& client, const CallContext& call) : client_(client), call_(call) {}

  // KMS Encrypt of a data key under `keyref`.
  Result<WrappedKey> wrap(std::string_view keyref, const SecretBytes& data_key,
                          const EncryptionContext& context);
  // KMS Decrypt.
  Result<SecretBytes> unwrap(const WrappedKey& wrapped, const EncryptionContext& context);
  // KMS ReEncrypt (KmsClient::rewrap_key).
  Result<WrappedKey> rewrap(const WrappedKey& wrapped, const EncryptionContext& source_context,
                            std::string_view destination_keyref,
                            const EncryptionContext& destination_context);
  // GenerateDataKey: a fresh DK of `size` bytes from OpenSSL's DRBG,
  // wrapped by the client and unwrapped back (verify()), so DK generation
  // is one code path for every client.
  Result<DataKey> generate(std::string_view keyref, const EncryptionContext& context,
                           std::size_t size);
  // Unwraps a new wrap and compares the result with `data_key` in constant
  // time, so a wrap the KMS cannot open again (a server that ignored our
  // nonce, a faulty HSM, a bug) is refused before a header commits it.
  // The error names the CMK URI and ends "nothing was written"; a failed
  // Decrypt keeps its own error code, other bytes are
  // ErrorCode::kKmsUnreachable.
  Status verify(const WrappedKey& wrapped, const EncryptionContext& context,
                const SecretBytes& data_key);

 private:
  KmsClient& client_;
  CallContext call_;
};

inline Envelope KmsClient::envelope(const CallContext& call) { return {*this, call}; }

// `capability` (one of `client`'s accessors), or the client's explanation
// why it cannot do `operation`.
template <typename Capability>
Result<Capability*> offered(const KmsClient& client, Capability* capability,
                            std::string_view operation) {
  if (capability == nullptr) {
    return client.unsupported(operation);
  }
  return capability;
}

}  // namespace envcrypt
