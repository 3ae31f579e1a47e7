// What the files of the local KMS (kms_local*.cc) share and nothing else
// includes: the keystore document of one region as stored, the helpers its
// operations have in common, and LocalKms::Impl, the state of one open
// keystore.  kms_local_store.cc holds the document's JSON form, sealing under
// the root key and the transactions; kms_local.cc resolution, authorisation
// and the envelope operations.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "audit/audit.h"
#include "kms/local/kms_local.h"
#include "util/crypto.h"
#include "util/keystore.h"

namespace envcrypt {

inline constexpr std::string_view kUriScheme = "local://";
inline constexpr std::string_view kAliasPrefix = "alias/";
inline constexpr std::string_view kServiceAlias = "acs/ecs";
inline constexpr std::string_view kReservedAliasPrefix = "acs/";
inline constexpr std::size_t kCmkSize = 32;
inline constexpr std::int64_t kSecondsPerDay = 86400;
inline constexpr std::int64_t kImportTokenLifetime = kSecondsPerDay;
inline constexpr std::uint32_t kMinDeletionWindowDays = 7;
inline constexpr std::uint32_t kMaxDeletionWindowDays = 366;
inline constexpr std::uint32_t kMaxRotationIntervalDays = 3650;
inline constexpr int kStoreFormat = 1;

// ---------------------------------------------------------------------------
// The keystore document of one region, as stored (JSON).  Key material only
// ever appears sealed under the root key.

struct SealedBlob {
  std::string nonce;  // hex
  std::string ciphertext;
  std::string tag;
};

struct StoredVersion {
  std::uint32_t version = 0;
  std::int64_t created_at = 0;
  SealedBlob material;
};

struct StoredGrant {
  std::string id;
  std::string principal;
  std::vector<std::string> operations;
  std::string created_by;
  std::int64_t created_at = 0;
};

struct PendingImportParameters {
  std::string token;  // hex
  std::int64_t expires_at = 0;
  SealedBlob private_key;  // RSA-2048 PKCS#8 PEM
};

struct StoredKey : LocalKeyAttributes {
  std::vector<StoredVersion> versions;
  std::vector<StoredGrant> grants;
  std::optional<PendingImportParameters> pending_import;
};

struct Store {
  std::map<std::string, StoredKey> keys;
  std::map<std::string, std::string> aliases;   // name without "alias/" -> key id
  std::map<std::string, std::int64_t> deleted;  // key id -> purge time
};

std::string serialize_store(const Store& store, const std::string& region);
Result<Store> parse_store(const std::string& text, const std::filesystem::path& path,
                          const std::string& region);

ByteView as_bytes(std::string_view text);

std::string strip_alias_prefix(std::string_view alias);

Result<std::string> new_key_id();

struct LocalKms::Impl {
  LocalKmsOptions options;
  Keystore keystore;
  AuditLog audit;
  SecretBytes root_key;
  std::string store_name;  // <region>.keystore.json
  // Events of a transaction beyond the operation's own line (automatic
  // rotation, expired material), appended to the audit log after it.
  std::vector<AuditEvent> side_events;
  // The intent line of the change being committed, for finish().
  std::optional<std::uint64_t> pending_intent;
  // Whether the store of the running transaction had no file before it.
  bool store_was_new = false;

  Impl(LocalKmsOptions opts, Keystore store, AuditLog log, SecretBytes root)
      : options(std::move(opts)),
        keystore(std::move(store)),
        audit(std::move(log)),
        root_key(std::move(root)),
        store_name(options.region + ".keystore.json") {}

  std::int64_t now() const { return options.clock(); }

  std::string uri_of(const std::string& key_id) const {
    return std::string(kUriScheme) + options.region + "/" + key_id;
  }

  // ----- sealing under the root key -----
  std::string material_aad(const std::string& key_id, std::uint32_t version) const;

  Result<SealedBlob> seal(const SecretBytes& secret, const std::string& aad) const;

  Result<SecretBytes> unseal(const SealedBlob& blob, const std::string& aad,
                             const std::string& what) const;

  Result<StoredVersion> new_version(const StoredKey& key, std::uint32_t number,
                                    const SecretBytes& material) const;

  Result<SecretBytes> material_of(const StoredKey& key, std::uint32_t number) const;

  // ----- the store and its transactions -----
  Result<StoredKey> make_key(const std::string& id, KeyOrigin origin) const;

  // The service key of the region exists from the first operation on.
  Status ensure_service_key(Store& store) const;

  // Imported material past its expiry is deleted, as DeleteKeyMaterial would.
  void expire_material(Store& store);

  // Runs `body` on the region's store under its lock and commits the store
  // if anything changed.  `body` failing commits nothing.  A change is
  // announced first by an intent line for `event` (durable before the
  // commit, so no change goes unaudited); finish() names that line in the
  // operation's own.
  Status transact(const AuditEvent& event, const std::function<Status(Store&)>& body);

  Status announce(const AuditEvent& event);

  // Appends the operation's line (and any side events), and turns a failed
  // append into the operation's failure: nothing happens unaudited.
  template <typename T>
  Result<T> finish(AuditEvent& event, Result<T> result) {
    event.result = result.ok() ? "ok" : result.error().message();
    std::vector<AuditEvent> events = std::exchange(side_events, {});
    if (!result.ok()) {
      events.clear();  // a failed operation committed nothing, side effects included
    }
    events.insert(events.begin(), event);
    AuditPhase phase{false, std::exchange(pending_intent, std::nullopt)};
    for (const AuditEvent& each : events) {
      const Result<std::uint64_t> logged = audit.append(each, std::exchange(phase, {}));
      if (!logged.ok() && result.ok() && !keep_for_later(each, logged.error())) {
        return logged.error().with_context("audit log");
      }
    }
    return result;
  }

  // A read-only keystore (a read-only root, a /var not yet remounted) can
  // unwrap but not log: the line is kept in the spool and written by the
  // next append that can (AuditLog::defer).  Anything else, or a line that
  // cannot be kept either, fails the operation as before.
  bool keep_for_later(const AuditEvent& event, const Error& error);

  // ----- resolution, authorisation, state -----
  Result<StoredKey*> resolve(Store& store, std::string_view keyref) const;

  // kms.h's authorize() for this keystore's principal.
  Status authorize(const StoredKey& key, GrantOperation wanted) const;

  Status require_enabled(const StoredKey& key) const;

  Error service_key_refusal(const StoredKey& key, const std::string& action) const;

  Status require_external(const StoredKey& key) const;

  KeyInfo info_of(const Store& store, const StoredKey& key) const;

  // ----- key versions -----
  Status add_version(StoredKey& key) const;

  Status check_rotatable(const StoredKey& key) const;

  [[nodiscard]] bool rotation_due(const StoredKey& key) const;

  Status rotate_if_due(StoredKey& key, const std::string& trigger);

  // ----- envelope operations, shared by Encrypt, Decrypt and ReEncrypt -----
  static std::string wrap_aad(const std::string& uri, std::uint32_t version,
                              const EncryptionContext& context);

  Result<WrappedKey> wrap_in(Store& store, std::string_view keyref, const SecretBytes& plaintext,
                             const EncryptionContext& context, GrantOperation operation,
                             AuditEvent& event);

  Result<SecretBytes> unwrap_in(Store& store, const WrappedKey& wrapped,
                                const EncryptionContext& context, GrantOperation operation,
                                AuditEvent& event);

  // ----- keystore backup and restore -----
  // A stored key as a backup carries it.  Imported material whose key does
  // not allow backups is never unsealed: the record is the key as
  // delete-key-material would leave it, marked withheld.
  Result<CmkRecord> record_of(const StoredKey& key) const;

  Result<KeystoreRecords> records_of(const Store& store) const;

  // A restored key, each version sealed under this host's root key; times
  // are the original ones.
  Result<StoredKey> stored_of(const CmkRecord& record) const;

  // Whether `key` holds exactly the versions and material of `record`.
  Result<bool> same_material(const StoredKey& key, const CmkRecord& record) const;

  // "2 keys (local://r/<id> alias/acs/ecs, local://r/<id>)", for a refusal.
  std::string describe_keys(const Store& store) const;

  // A key already here stays as it is (its state, grants and aliases are
  // this host's) when its material is the backup's; other material is a
  // conflict.  A withheld key never replaces one that is here.
  Status merge_key(Store& store, const CmkRecord& record, RestoreOutcome& outcome) const;

  Status merge_names(Store& store, const KeystoreRecords& records) const;

  Status restore_into(Store& store, const KeystoreRecords& records, bool merge,
                      RestoreOutcome& outcome);

  // Runs `body` on the key `keyref` resolves to, after the grant check, and
  // audits the result as `operation`.
  template <typename T>
  Result<T> with_key(const std::string& operation, std::string_view keyref, GrantOperation needed,
                     const std::function<Result<T>(Store&, StoredKey&, AuditEvent&)>& body) {
    AuditEvent event{operation, "", std::nullopt, {}, "", {}};
    std::optional<T> answer;
    const Status status = transact(event, [&](Store& store) -> Status {
      ENVCRYPT_ASSIGN_OR_RETURN(StoredKey * key, resolve(store, keyref));
      event.key_id = key->id;
      event.key_version =
          key->primary_version == 0 ? std::nullopt : std::optional(key->primary_version);
      ENVCRYPT_TRY(authorize(*key, needed));
      ENVCRYPT_ASSIGN_OR_RETURN(T value, body(store, *key, event));
      answer.emplace(std::move(value));
      return OkStatus();
    });
    if (!status.ok()) {
      return finish<T>(event, status.error());
    }
    return finish<T>(event, std::move(*answer));
  }
};

}  // namespace envcrypt
