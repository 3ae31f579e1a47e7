// Key administration in the local KMS: create, describe and list keys,
// enable and disable them, schedule and cancel their deletion, and aliases.
#include "kms/local/kms_local_store.h"

namespace envcrypt {
namespace {

Status check_alias_name(const std::string& name) {
  const bool valid =
      !name.empty() && name.size() <= 256 && name.front() != '/' && name.back() != '/' &&
      name.find("//") == std::string::npos &&
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-") ==
          std::string::npos;
  if (!valid) {
    return Error(ErrorCode::kUsage, "invalid alias 'alias/" + name +
                                        "': use letters, digits, '/', '_' and '-' (at most 256)");
  }
  if (name.starts_with(kReservedAliasPrefix)) {
    return Error(ErrorCode::kUsage,
                 "alias 'alias/" + name + "' is reserved: the acs/ prefix names service keys");
  }
  return OkStatus();
}

}  // namespace

Result<KeyInfo> LocalKms::create_key(const CreateKeyRequest& request) {
  AuditEvent event{"CreateKey", "", std::nullopt, {}, "", {}};
  event.details["origin"] = std::string(to_string(request.origin));
  std::optional<KeyInfo> info;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    std::optional<std::string> alias;
    if (request.alias) {
      alias = strip_alias_prefix(*request.alias);
      event.details["alias"] = "alias/" + *alias;
      ENVCRYPT_TRY(check_alias_name(*alias));
      if (store.aliases.contains(*alias)) {
        return Error(ErrorCode::kConflict, "alias alias/" + *alias + " already exists (key " +
                                               impl_->uri_of(store.aliases.at(*alias)) + ")");
      }
    }
    if (request.rotation_interval_days) {
      const std::uint32_t days = *request.rotation_interval_days;
      if (request.origin == KeyOrigin::kExternal) {
        return Error(ErrorCode::kUsage,
                     "a key with origin EXTERNAL cannot rotate automatically: its material is "
                     "imported");
      }
      if (days < 1 || days > kMaxRotationIntervalDays) {
        return Error(ErrorCode::kUsage, "rotation interval must be 1-" +
                                            std::to_string(kMaxRotationIntervalDays) +
                                            " days, got " + std::to_string(days));
      }
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string id, new_key_id());
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey key, impl_->make_key(id, request.origin));
    key.description = request.description;
    key.rotation_interval_days = request.rotation_interval_days;
    event.key_id = id;
    event.key_version =
        key.primary_version == 0 ? std::nullopt : std::optional(key.primary_version);
    auto [slot, inserted] = store.keys.emplace(id, std::move(key));
    (void)inserted;
    if (alias) {
      store.aliases.emplace(*alias, id);
    }
    info = impl_->info_of(store, slot->second);
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<KeyInfo>(event, status.error());
  }
  return impl_->finish<KeyInfo>(event, std::move(*info));
}

Result<KeyInfo> LocalKms::describe_key(std::string_view keyref) {
  return impl_->with_key<KeyInfo>(
      "DescribeKey", keyref, GrantOperation::kDescribe,
      [&](Store& store, StoredKey& key, AuditEvent&) -> Result<KeyInfo> {
        return impl_->info_of(store, key);
      });
}

Result<KeyDetails> LocalKms::describe_key_details(std::string_view keyref) {
  return impl_->with_key<KeyDetails>(
      "DescribeKey", keyref, GrantOperation::kDescribe,
      [&](Store& store, StoredKey& key, AuditEvent&) -> Result<KeyDetails> {
        KeyDetails details;
        details.info = impl_->info_of(store, key);
        details.owner = key.owner;
        details.rotation_interval_days = key.rotation_interval_days;
        details.last_rotated_at = key.last_rotated_at;
        for (const StoredVersion& version : key.versions) {
          details.versions.push_back({version.version, version.created_at});
        }
        details.material_expires_at = key.material_expires_at;
        return details;
      });
}

Result<std::vector<KeyInfo>> LocalKms::list_keys() {
  AuditEvent event{"ListKeys", "", std::nullopt, {}, "", {}};
  std::vector<KeyInfo> keys;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (const auto& [id, key] : store.keys) {
      keys.push_back(impl_->info_of(store, key));
    }
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<std::vector<KeyInfo>>(event, status.error());
  }
  return impl_->finish<std::vector<KeyInfo>>(event, std::move(keys));
}

Status LocalKms::enable_key(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "EnableKey", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.state == KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is PendingDeletion: cancel the deletion first");
        }
        if (key.state == KeyState::kPendingImport) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is PendingImport: import its material first");
        }
        key.state = KeyState::kEnabled;
        return Ok{};
      });
}

Status LocalKms::disable_key(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "DisableKey", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.service) {
          return impl_->service_key_refusal(key, "be disabled");
        }
        if (key.state == KeyState::kPendingDeletion || key.state == KeyState::kPendingImport) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) + " is " +
                                               std::string(to_string(key.state)) +
                                               ": only an Enabled key can be disabled");
        }
        key.state = KeyState::kDisabled;
        return Ok{};
      });
}

Result<KeyInfo> LocalKms::schedule_key_deletion(std::string_view keyref,
                                                std::uint32_t pending_window_days) {
  return impl_->with_key<KeyInfo>(
      "ScheduleKeyDeletion", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<KeyInfo> {
        event.details["pending_window_days"] = std::to_string(pending_window_days);
        if (key.service) {
          return impl_->service_key_refusal(key, "be scheduled for deletion");
        }
        if (pending_window_days < kMinDeletionWindowDays ||
            pending_window_days > kMaxDeletionWindowDays) {
          return Error(ErrorCode::kUsage, "pending window must be " +
                                              std::to_string(kMinDeletionWindowDays) + "-" +
                                              std::to_string(kMaxDeletionWindowDays) +
                                              " days, got " + std::to_string(pending_window_days));
        }
        if (key.state == KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is already PendingDeletion (deletion date " +
                                               format_rfc3339(key.deletion_date.value_or(0)) + ")");
        }
        key.state = KeyState::kPendingDeletion;
        key.deletion_date =
            impl_->now() + static_cast<std::int64_t>(pending_window_days) * kSecondsPerDay;
        event.details["deletion_date"] = format_rfc3339(*key.deletion_date);
        return impl_->info_of(store, key);
      });
}

Status LocalKms::cancel_key_deletion(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "CancelKeyDeletion", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.service) {
          return impl_->service_key_refusal(key, "be scheduled for deletion or cancelled");
        }
        if (key.state != KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) + " is " +
                                               std::string(to_string(key.state)) +
                                               ", not PendingDeletion");
        }
        // A key without material (imported, then deleted) cannot be Disabled:
        // it waits for its material again.
        key.state = key.versions.empty() ? KeyState::kPendingImport : KeyState::kDisabled;
        key.deletion_date.reset();
        return Ok{};
      });
}

Status LocalKms::create_alias(std::string_view alias, std::string_view keyref) {
  const std::string name = strip_alias_prefix(alias);
  return impl_->with_key<Ok>("CreateAlias", keyref, GrantOperation::kAdmin,
                             [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<Ok> {
                               event.details["alias"] = "alias/" + name;
                               ENVCRYPT_TRY(check_alias_name(name));
                               if (store.aliases.contains(name)) {
                                 return Error(ErrorCode::kConflict,
                                              "alias alias/" + name + " already exists (key " +
                                                  impl_->uri_of(store.aliases.at(name)) + ")");
                               }
                               store.aliases.emplace(name, key.id);
                               return Ok{};
                             });
}

Status LocalKms::delete_alias(std::string_view alias) {
  const std::string name = strip_alias_prefix(alias);
  const std::string reference = "alias/" + name;
  if (name.starts_with(kReservedAliasPrefix)) {
    AuditEvent event{"DeleteAlias", "", std::nullopt, {}, "", {{"alias", reference}}};
    return impl_->finish<Ok>(event, Error(ErrorCode::kDenied, "alias " + reference +
                                                                  " names a service key and "
                                                                  "cannot be deleted"));
  }
  return impl_->with_key<Ok>("DeleteAlias", reference, GrantOperation::kAdmin,
                             [&](Store& store, StoredKey&, AuditEvent& event) -> Result<Ok> {
                               event.details["alias"] = reference;
                               store.aliases.erase(name);
                               return Ok{};
                             });
}

Result<std::map<std::string, std::string>> LocalKms::list_aliases() {
  AuditEvent event{"ListAliases", "", std::nullopt, {}, "", {}};
  std::map<std::string, std::string> aliases;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (const auto& [name, id] : store.aliases) {
      aliases.emplace(std::string(kAliasPrefix) + name, id);
    }
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<std::map<std::string, std::string>>(event, status.error());
  }
  return impl_->finish<std::map<std::string, std::string>>(event, std::move(aliases));
}

}  // namespace envcrypt
