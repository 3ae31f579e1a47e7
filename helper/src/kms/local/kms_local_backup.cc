// Keystore backup and restore in the local KMS (keystore_backup.h): the
// region's records with their material unsealed, and writing records back
// sealed under this host's root key.
#include "kms/local/kms_local_store.h"

namespace envcrypt {

Result<CmkRecord> LocalKms::Impl::record_of(const StoredKey& key) const {
  CmkRecord record;
  static_cast<LocalKeyAttributes&>(record) = key;
  for (const StoredGrant& stored : key.grants) {
    Grant grant{stored.id, key.id, stored.principal, {}, stored.created_by, stored.created_at};
    for (const std::string& name : stored.operations) {
      ENVCRYPT_ASSIGN_OR_RETURN(const GrantOperation operation, parse_grant_operation(name));
      grant.operations.push_back(operation);
    }
    record.grants.push_back(std::move(grant));
  }
  if (key.origin == KeyOrigin::kExternal && !key.backup_allowed && !key.versions.empty()) {
    record.material_withheld = true;
    record.primary_version = 0;
    record.material_expires_at.reset();
    if (record.state != KeyState::kPendingDeletion) {
      record.state = KeyState::kPendingImport;
    }
    return record;
  }
  for (const StoredVersion& version : key.versions) {
    ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes material, material_of(key, version.version));
    record.versions.push_back({version.version, version.created_at, std::move(material)});
  }
  return record;
}

Result<KeystoreRecords> LocalKms::Impl::records_of(const Store& store) const {
  KeystoreRecords records;
  records.region = options.region;
  for (const auto& [id, key] : store.keys) {
    ENVCRYPT_ASSIGN_OR_RETURN(CmkRecord record, record_of(key));
    records.keys.emplace(id, std::move(record));
  }
  records.aliases = store.aliases;
  records.deleted = store.deleted;
  return records;
}

Result<StoredKey> LocalKms::Impl::stored_of(const CmkRecord& record) const {
  StoredKey key;
  static_cast<LocalKeyAttributes&>(key) = record;
  for (const Grant& grant : record.grants) {
    StoredGrant stored{grant.grant_id, grant.principal, {}, grant.created_by, grant.created_at};
    for (const GrantOperation operation : grant.operations) {
      stored.operations.emplace_back(to_string(operation));
    }
    key.grants.push_back(std::move(stored));
  }
  for (const CmkVersionRecord& version : record.versions) {
    ENVCRYPT_ASSIGN_OR_RETURN(SealedBlob sealed,
                              seal(version.material, material_aad(record.id, version.version)));
    key.versions.push_back({version.version, version.created_at, std::move(sealed)});
  }
  return key;
}

Result<bool> LocalKms::Impl::same_material(const StoredKey& key, const CmkRecord& record) const {
  if (key.versions.size() != record.versions.size()) {
    return false;
  }
  for (std::size_t i = 0; i < key.versions.size(); ++i) {
    if (key.versions[i].version != record.versions[i].version) {
      return false;
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material,
                              material_of(key, record.versions[i].version));
    if (!material.equals(record.versions[i].material.span())) {
      return false;
    }
  }
  return true;
}

std::string LocalKms::Impl::describe_keys(const Store& store) const {
  std::string list;
  for (const auto& [id, key] : store.keys) {
    list += (list.empty() ? "" : ", ") + uri_of(id);
    for (const auto& [name, target] : store.aliases) {
      if (target == id) {
        list += " alias/" + name;
      }
    }
  }
  const std::size_t count = store.keys.size();
  return std::to_string(count) + (count == 1 ? " key (" : " keys (") + list + ")";
}

Status LocalKms::Impl::merge_key(Store& store, const CmkRecord& record,
                                 RestoreOutcome& outcome) const {
  if (const auto deleted = store.deleted.find(record.id); deleted != store.deleted.end()) {
    return Error(ErrorCode::kConflict, "key " + uri_of(record.id) + " was deleted here on " +
                                           format_rfc3339(deleted->second) +
                                           " and is in the backup: nothing restored");
  }
  const auto found = store.keys.find(record.id);
  if (found == store.keys.end()) {
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey key, stored_of(record));
    store.keys.emplace(record.id, std::move(key));
    outcome.added.push_back(record.id);
    return OkStatus();
  }
  if (!record.material_withheld) {
    ENVCRYPT_ASSIGN_OR_RETURN(const bool same, same_material(found->second, record));
    if (!same) {
      return Error(ErrorCode::kConflict, "key " + uri_of(record.id) +
                                             " is here with other material than in the "
                                             "backup: nothing restored");
    }
  }
  outcome.kept.push_back(record.id);
  return OkStatus();
}

Status LocalKms::Impl::merge_names(Store& store, const KeystoreRecords& records) const {
  for (const auto& [name, id] : records.aliases) {
    const auto [slot, inserted] = store.aliases.emplace(name, id);
    if (!inserted && slot->second != id) {
      return Error(ErrorCode::kConflict, "alias alias/" + name + " names key " +
                                             uri_of(slot->second) + " here and key " + uri_of(id) +
                                             " in the backup: nothing restored");
    }
  }
  for (const auto& [id, when] : records.deleted) {
    if (store.keys.contains(id)) {
      return Error(ErrorCode::kConflict, "key " + uri_of(id) + " is here but the backup says " +
                                             "it was deleted on " + format_rfc3339(when) +
                                             ": nothing restored");
    }
    store.deleted.emplace(id, when);
  }
  return OkStatus();
}

Status LocalKms::Impl::restore_into(Store& store, const KeystoreRecords& records, bool merge,
                                    RestoreOutcome& outcome) {
  if (records.region != options.region) {
    return Error(ErrorCode::kUsage, "the backup is of region " + records.region +
                                        "; this host's local KMS serves region " + options.region +
                                        " (region in envcrypt.conf)");
  }
  outcome.fresh = store_was_new;
  if (store_was_new) {
    store = Store{};  // the service key transact() just made has served nothing
  } else if (!merge) {
    return Error(ErrorCode::kConflict, "keystore " + keystore.path_of(store_name).string() +
                                           " already holds " + describe_keys(store) +
                                           ": nothing restored (--merge adds the backup's "
                                           "keys to them)");
  }
  for (const auto& [id, record] : records.keys) {
    ENVCRYPT_TRY(merge_key(store, record, outcome));
  }
  return merge_names(store, records);
}

Status LocalKms::backup_keystore(
    const std::function<Status(KeystoreRecords&, AuditEvent&)>& write) {
  AuditEvent event{"BackupKeystore", "", std::nullopt, {}, "", {}};
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_ASSIGN_OR_RETURN(KeystoreRecords records, impl_->records_of(store));
    return write(records, event);
  });
  return impl_->finish<Ok>(event, status);
}

Result<RestoreOutcome> LocalKms::restore_keystore(
    const KeystoreRecords& records, bool merge, const std::map<std::string, std::string>& details) {
  AuditEvent event{"RestoreKeystore", "", std::nullopt, {}, "", details};
  event.details["merge"] = merge ? "true" : "false";
  RestoreOutcome outcome;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_TRY(impl_->restore_into(store, records, merge, outcome));
    event.details["added"] = std::to_string(outcome.added.size());
    event.details["kept"] = std::to_string(outcome.kept.size());
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<RestoreOutcome>(event, status.error());
  }
  return impl_->finish<RestoreOutcome>(event, std::move(outcome));
}

}  // namespace envcrypt
