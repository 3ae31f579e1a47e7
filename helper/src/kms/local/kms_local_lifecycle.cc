// Key lifecycle in the local KMS: new versions (rotation on request, on use
// and when due) and the purge of keys whose deletion date has passed.
#include "kms/local/kms_local_store.h"

namespace envcrypt {

Status LocalKms::Impl::add_version(StoredKey& key) const {
  const std::uint32_t number = key.versions.empty() ? 1 : key.versions.back().version + 1;
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material, random_secret(kCmkSize));
  ENVCRYPT_ASSIGN_OR_RETURN(StoredVersion version, new_version(key, number, material));
  key.versions.push_back(std::move(version));
  key.primary_version = number;
  key.last_rotated_at = now();
  return OkStatus();
}

Status LocalKms::Impl::check_rotatable(const StoredKey& key) const {
  if (key.origin == KeyOrigin::kExternal) {
    return Error(ErrorCode::kUsage, "key " + uri_of(key.id) +
                                        " has imported material (origin EXTERNAL) and cannot "
                                        "be rotated");
  }
  if (key.state != KeyState::kEnabled) {
    return Error(ErrorCode::kDenied, "key " + uri_of(key.id) + " is " +
                                         std::string(to_string(key.state)) +
                                         "; only an Enabled key can be rotated");
  }
  return OkStatus();
}

[[nodiscard]] bool LocalKms::Impl::rotation_due(const StoredKey& key) const {
  return key.rotation_interval_days && key.state == KeyState::kEnabled &&
         key.origin == KeyOrigin::kKms &&
         now() >= key.last_rotated_at +
                      static_cast<std::int64_t>(*key.rotation_interval_days) * kSecondsPerDay;
}

Status LocalKms::Impl::rotate_if_due(StoredKey& key, const std::string& trigger) {
  if (!rotation_due(key)) {
    return OkStatus();
  }
  ENVCRYPT_TRY(add_version(key));
  side_events.push_back(
      {"RotateKey", key.id, key.primary_version, {}, "ok", {{"trigger", trigger}}});
  return OkStatus();
}

Result<KeyInfo> LocalKms::rotate_key(std::string_view keyref) {
  return impl_->with_key<KeyInfo>(
      "RotateKey", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<KeyInfo> {
        ENVCRYPT_TRY(impl_->check_rotatable(key));
        ENVCRYPT_TRY(impl_->add_version(key));
        event.key_version = key.primary_version;
        event.details["trigger"] = "request";
        return impl_->info_of(store, key);
      });
}

Result<std::vector<KeyInfo>> LocalKms::rotate_due() {
  AuditEvent event{"RotateDue", "", std::nullopt, {}, "", {}};
  std::vector<KeyInfo> rotated;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (auto& [id, key] : store.keys) {
      if (impl_->rotation_due(key)) {
        ENVCRYPT_TRY(impl_->rotate_if_due(key, "interval elapsed, rotate-due"));
        rotated.push_back(impl_->info_of(store, key));
      }
    }
    return OkStatus();
  });
  event.details["rotated"] = std::to_string(rotated.size());
  if (!status.ok()) {
    return impl_->finish<std::vector<KeyInfo>>(event, status.error());
  }
  return impl_->finish<std::vector<KeyInfo>>(event, std::move(rotated));
}

Result<std::vector<std::string>> LocalKms::purge_due() {
  AuditEvent event{"PurgeDue", "", std::nullopt, {}, "", {}};
  std::vector<std::string> purged;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (auto it = store.keys.begin(); it != store.keys.end();) {
      const StoredKey& key = it->second;
      if (key.state != KeyState::kPendingDeletion || !key.deletion_date ||
          *key.deletion_date > impl_->now()) {
        ++it;
        continue;
      }
      purged.push_back(key.id);
      impl_->side_events.push_back(
          {"DeleteKey",
           key.id,
           std::nullopt,
           {},
           "ok",
           {{"reason", "deletion date " + format_rfc3339(*key.deletion_date) + " reached"}}});
      std::erase_if(store.aliases, [&](const auto& alias) { return alias.second == key.id; });
      store.deleted[key.id] = impl_->now();
      it = store.keys.erase(it);
    }
    return OkStatus();
  });
  event.details["purged"] = std::to_string(purged.size());
  if (!status.ok()) {
    return impl_->finish<std::vector<std::string>>(event, status.error());
  }
  return impl_->finish<std::vector<std::string>>(event, std::move(purged));
}

}  // namespace envcrypt
