// The embedded local KMS: CMKs of one region kept in a
// keystore directory, their material sealed with AES-256-GCM under a root key
// file, every change an atomic locked replacement of the region's keystore
// file, every operation one line of an HMAC-chained audit log.
// CMK URI: local://<region>/<key-id>.  Documentation/kms/local.rst and
// Documentation/kms/lifecycle.rst describe the operator's view.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/audit.h"
#include "kms/kms.h"
#include "tpm/tpm_seal.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

struct LocalKmsOptions {
  std::filesystem::path dir;       // keystore directory, e.g. /var/lib/envcrypt/kms
  std::filesystem::path root_key;  // e.g. /etc/envcrypt/root.key
  // A root key sealed to a TPM (root_key + ".tpm", root_key.h): the TCTI of
  // that TPM, and what asks for its PIN when it was sealed with one.
  std::string tpm_tcti = kDefaultTpmTcti;
  std::function<Result<SecretBytes>()> tpm_pin;
  std::string region;     // e.g. local-1
  std::string principal;  // e.g. host/<hostname>, recorded in the audit log
  // Unix seconds.  Empty means the system clock; tests move time forward to
  // reach deletion dates, rotation dates and token expiry.
  std::function<std::int64_t()> clock;
  // Runs after a change's intent line is durable and before the keystore
  // commit; an error fails the commit.  Only unit tests set it (to fail or
  // stop a commit); nothing reads it from a file or the environment.
  std::function<Status()> before_commit;
  // Where an audit line goes that the keystore's file system cannot take
  // yet (AuditLog::defer); empty: <run dir>/audit-deferred/<hash of dir>.
  std::filesystem::path audit_spool;
  // Whether the keystore's file system is read-only now; empty: statvfs.
  // Only unit tests set it (their keystore is on a writable disk).
  std::function<bool()> read_only;
};

// A CMK as `kms backup` and `kms restore` carry it (keystore_backup.h): the
// keystore record with each version's material unsealed, in locked memory.
struct CmkVersionRecord {
  std::uint32_t version = 0;
  std::int64_t created_at = 0;
  SecretBytes material;
};

// A local CMK's attributes, the same in the keystore (StoredKey,
// kms_local_store.h) and in a backup (CmkRecord): one struct, so the two
// cannot drift apart and a conversion copies them in one assignment.
struct LocalKeyAttributes {
  std::string id;
  KeyState state = KeyState::kEnabled;
  KeyOrigin origin = KeyOrigin::kKms;
  std::string description;
  std::string owner;
  bool service = false;
  std::int64_t created_at = 0;
  std::optional<std::uint32_t> rotation_interval_days;
  std::int64_t last_rotated_at = 0;
  std::uint32_t primary_version = 0;
  std::optional<std::int64_t> deletion_date;
  std::optional<std::int64_t> material_expires_at;
  // SHA-256 over a label and the imported material, so a re-import can be
  // checked against it after the material itself was deleted.
  std::string material_check;
  // Imported material may go into a `kms backup` (set at import).
  bool backup_allowed = false;
};

struct CmkRecord : LocalKeyAttributes {
  // Imported material left out of the backup (its key does not allow it):
  // the record is the key as after delete-key-material, PendingImport.
  bool material_withheld = false;
  std::vector<CmkVersionRecord> versions;
  std::vector<Grant> grants;
};

// Every key of one region, with its aliases and purge records.
struct KeystoreRecords {
  std::string region;
  std::map<std::string, CmkRecord> keys;
  std::map<std::string, std::string> aliases;   // name without "alias/" -> key id
  std::map<std::string, std::int64_t> deleted;  // key id -> purge time
};

// What restore_keystore did.
struct RestoreOutcome {
  bool fresh = false;              // the keystore had no file before
  std::vector<std::string> added;  // key ids written
  std::vector<std::string> kept;   // key ids already here with the same material
};

// Keystore backup and restore (keystore_backup.h): the capability of a KMS
// that keeps its keys in a keystore of this host.
class KeystoreBackup {
 public:
  virtual ~KeystoreBackup() = default;
  // Runs `write` on the region's records, material unsealed, under the
  // keystore lock, and audits it as BackupKeystore with the details `write`
  // adds to the event.
  virtual Status backup_keystore(
      const std::function<Status(KeystoreRecords&, AuditEvent&)>& write) = 0;
  // Writes `records` (checked by the caller) into the region's keystore,
  // each version sealed under this host's root key, in one commit.  A
  // keystore holding keys is refused unless `merge`; a merge refuses any
  // key or alias that differs.  Audited as RestoreKeystore with `details`.
  virtual Result<RestoreOutcome> restore_keystore(
      const KeystoreRecords& records, bool merge,
      const std::map<std::string, std::string>& details) = 0;
  // The audit log of the keystore directory, whose head a backup records.
  virtual AuditLog& audit_log() = 0;
  // The principal that takes the backup, recorded in it.
  [[nodiscard]] virtual const std::string& principal() const = 0;
};

// The local KMS offers every capability of kms.h and keystore backups.
// One LocalKms per thread: processes and threads share a keystore through
// its file locks, but one object is not to be used from two threads at once.
class LocalKms final : public KmsClient,
                       public KeyAdministration,
                       public KeyAliases,
                       public KeyLifecycle,
                       public KeyImport,
                       public KeyGrants,
                       public KeyAudit,
                       public KeystoreBackup {
 public:
  // Prefer open_local_kms(); this is for tests that call the local KMS
  // directly.
  static Result<std::unique_ptr<LocalKms>> open(const LocalKmsOptions& options);
  ~LocalKms() override;
  LocalKms(const LocalKms&) = delete;
  LocalKms& operator=(const LocalKms&) = delete;

  // --- KmsClient ---
  [[nodiscard]] bool supports(std::string_view uri) const override;
  KeyAdministration* administration() override { return this; }
  KeyAliases* aliases() override { return this; }
  KeyLifecycle* lifecycle() override { return this; }
  KeyImport* key_import() override { return this; }
  KeyGrants* grants() override { return this; }
  KeyAudit* audit_trail() override { return this; }
  KeystoreBackup* keystore_backup() override { return this; }

  // --- KeyAdministration (kms_local_admin.cc) ---
  Result<KeyInfo> create_key(const CreateKeyRequest& request) override;
  Result<KeyInfo> describe_key(std::string_view keyref) override;
  Result<KeyDetails> describe_key_details(std::string_view keyref) override;
  Result<std::vector<KeyInfo>> list_keys() override;
  Status enable_key(std::string_view keyref) override;
  Status disable_key(std::string_view keyref) override;
  Result<KeyInfo> schedule_key_deletion(std::string_view keyref,
                                        std::uint32_t pending_window_days) override;
  Status cancel_key_deletion(std::string_view keyref) override;

  // --- KeyAliases (kms_local_admin.cc) ---
  Status create_alias(std::string_view alias, std::string_view keyref) override;
  Status delete_alias(std::string_view alias) override;
  Result<std::map<std::string, std::string>> list_aliases() override;

  // --- KeyLifecycle (kms_local_lifecycle.cc) ---
  Result<KeyInfo> rotate_key(std::string_view keyref) override;
  Result<std::vector<KeyInfo>> rotate_due() override;
  Result<std::vector<std::string>> purge_due() override;

  // --- KeyImport (kms_local_byok.cc).  The key must have origin EXTERNAL. ---
  Result<ImportParameters> get_parameters_for_import(std::string_view keyref) override;
  Result<KeyInfo> import_key_material(std::string_view keyref,
                                      const ImportMaterialRequest& request) override;
  Result<KeyInfo> delete_key_material(std::string_view keyref) override;

  // --- KeyGrants (kms_local_grants.cc) ---
  Result<Grant> create_grant(std::string_view keyref, std::string_view principal,
                             const std::vector<GrantOperation>& operations) override;
  Status revoke_grant(std::string_view keyref, std::string_view grant_id) override;
  Result<std::vector<Grant>> list_grants(std::string_view keyref) override;
  [[nodiscard]] const std::string& principal() const override;

  // --- KeyAudit and KeystoreBackup (kms_local_backup.cc) ---
  AuditLog& audit_log() override;
  Status backup_keystore(
      const std::function<Status(KeystoreRecords&, AuditEvent&)>& write) override;
  Result<RestoreOutcome> restore_keystore(
      const KeystoreRecords& records, bool merge,
      const std::map<std::string, std::string>& details) override;

  [[nodiscard]] const std::string& region() const;

 protected:
  // --- KmsClient's envelope operations; a local call has no network to
  // wait on, so the call context's deadline does not apply ---
  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& context, const CallContext& call) override;
  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& context,
                                 const CallContext& call) override;
  // The DK never leaves this call: unwrap and wrap happen in one locked step.
  Result<WrappedKey> rewrap_key(const WrappedKey& wrapped, const EncryptionContext& source_context,
                                std::string_view destination_keyref,
                                const EncryptionContext& destination_context,
                                const CallContext& call) override;

 private:
  struct Impl;
  explicit LocalKms(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

Result<std::unique_ptr<KmsClient>> open_local_kms(const LocalKmsOptions& options);

}  // namespace envcrypt
