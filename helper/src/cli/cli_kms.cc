// envcryptctl kms: key administration and aliases here; rotation, BYOK,
// grants, audit, the root key and keystore backups in their own files.
#include <iomanip>

#include "audit/audit.h"
#include "boot/key_guard.h"
#include "cli/cli_app.h"
#include "cli/keystore_backup_cli.h"
#include "cli/lifecycle_cli.h"
#include "cli/rewrap_cli.h"
#include "cli/root_key_cli.h"
#include "util/printable.h"

namespace envcrypt {

Status Cli::print_key(const KeyInfo& key) {
  if (json_) {
    print_json(key_json(key));
    return OkStatus();
  }
  out_ << "key id:       " << key.key_id << '\n'
       << "state:        " << to_string(key.state) << '\n'
       << "origin:       " << to_string(key.origin) << '\n'
       << "aliases:      ";
  for (std::size_t i = 0; i < key.aliases.size(); ++i) {
    out_ << (i != 0 ? ", " : "") << key.aliases[i];
  }
  out_ << '\n'
       << "description:  " << key.description << '\n'
       << "versions:     " << key.version_count << " (primary " << key.primary_version << ")\n"
       << "created:      " << format_rfc3339(key.created_at) << '\n';
  if (key.deletion_date) {
    out_ << "deletion:     " << format_rfc3339(*key.deletion_date) << '\n';
  }
  if (key.service_key) {
    out_ << "service key:  yes (cannot be disabled or deleted)\n";
  }
  out_ << key.uri << '\n';
  return OkStatus();
}

Status Cli::create_key() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_selected("create-key"));
  CreateKeyRequest request;
  request.description = description_;
  if (!alias_.empty()) {
    request.alias = alias_;
  }
  if (origin_ == "EXTERNAL") {
    request.origin = KeyOrigin::kExternal;
  }
  if (rotation_days_ != 0) {
    request.rotation_interval_days = rotation_days_;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, kms->create_key(request));
  return print_key(key);
}

Status Cli::list_keys() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_selected("list-keys"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto keys, kms->list_keys());
  if (json_) {
    json list = json::array();
    for (const auto& key : keys) {
      list.push_back(key_json(key));
    }
    print_json(list);
    return OkStatus();
  }
  out_ << std::left << std::setw(38) << "KEY ID" << std::setw(17) << "STATE"
       << "ALIASES\n";
  for (const auto& key : keys) {
    std::string aliases;
    for (const auto& alias : key.aliases) {
      aliases += (aliases.empty() ? "" : ",") + alias;
    }
    out_ << std::left << std::setw(38) << key.key_id << std::setw(17) << to_string(key.state)
         << aliases << '\n';
  }
  return OkStatus();
}

Status Cli::describe_key() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * kms, admin_for(keyref_, "describe-key"));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, kms->describe_key(keyref_));
  return print_key(key);
}

Status Cli::list_aliases() {
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * kms, aliases_selected("list-aliases"));
  ENVCRYPT_ASSIGN_OR_RETURN(auto aliases, kms->list_aliases());
  if (json_) {
    json j = json::object();
    for (const auto& [alias, key_id] : aliases) {
      j[alias] = key_id;
    }
    print_json(j);
    return OkStatus();
  }
  for (const auto& [alias, key_id] : aliases) {
    out_ << std::left << std::setw(32) << alias << key_id << '\n';
  }
  return OkStatus();
}

// After enable-key, disable-key or cancel-key-deletion: "<done> KEYREF", or
// under --json the key record as it is now (one JSON document, like every
// other --json command).
Status Cli::print_changed_key(KeyAdministration& backend, std::string_view done) {
  if (!json_) {
    out_ << done << ' ' << keyref_ << '\n';
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const KeyInfo key, backend.describe_key(keyref_));
  print_json(key_json(key));
  return OkStatus();
}

void Cli::add_kms_commands(CLI::App& app) {
  auto* kms = app.add_subcommand("kms", "key management");
  kms->require_subcommand(1);
  kms->add_option("--kms", kms_selector_,
                  "kmip://<endpoint> or kmip://<host>:<port> (default: the local KMS)");

  auto on = [this](CLI::App* command, std::string verb, std::function<Status()> action,
                   bool names_key) {
    command->callback([this, verb, action, names_key] {
      what_ = "kms " + verb + (names_key ? " " + keyref_ : "");
      action_ = action;
    });
  };

  auto* create = kms->add_subcommand("create-key", "create a customer master key");
  create->add_option("--description", description_);
  create->add_option("--alias", alias_, "alias/<name> for the new key");
  create->add_option("--origin", origin_, "KMS or EXTERNAL (import your own material)")
      ->transform(CLI::IsMember({"KMS", "EXTERNAL"}, CLI::ignore_case));
  create->add_option("--rotation-interval,--rotation-interval-days", rotation_days_,
                     "rotate by itself every DAYS days (1-3650)");
  on(
      create, "create-key", [this] { return create_key(); }, false);

  on(
      kms->add_subcommand("list-keys", "list the keys"), "list-keys",
      [this] { return list_keys(); }, false);
  on(
      kms->add_subcommand("list-aliases", "list the aliases"), "list-aliases",
      [this] { return list_aliases(); }, false);

  auto keyed = [&](const char* name, const char* help) {
    auto* command = kms->add_subcommand(name, help);
    command->add_option("KEYREF", keyref_, "key id, alias/<name> or CMK URI")->required();
    return command;
  };
  on(
      keyed("describe-key", "show a key"), "describe-key", [this] { return describe_key(); }, true);
  on(
      keyed("enable-key", "allow a key's use again"), "enable-key",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend, admin_for(keyref_, "enable-key"));
        ENVCRYPT_TRY(backend->enable_key(keyref_));
        return print_changed_key(*backend, "enabled");
      },
      true);
  // Safe disable (lifecycle_cli.h): refused while the key wraps a known disk.
  auto* disable = keyed("disable-key", "refuse every use of a key");
  disable->add_flag("--force", force_, "even if it still wraps a disk of this host");
  on(
      disable, "disable-key",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend, admin_for(keyref_, "disable-key"));
        ENVCRYPT_TRY(refuse_if_key_in_use(*backend, keyref_, force_));
        ENVCRYPT_TRY(backend->disable_key(keyref_));
        return print_changed_key(*backend, "disabled");
      },
      true);
  auto* schedule = keyed("schedule-key-deletion", "delete a key after a waiting period");
  schedule->add_option("--pending-window-days", pending_window_days_, "7 to 366 (default 30)")
      ->check(CLI::Range(7, 366));
  schedule->add_flag("--force", force_, "even if it still wraps a disk of this host");
  schedule->add_flag("--destroy-now", destroy_now_,
                     "on a KMS without a pending window (KMIP): destroy the key at once");
  on(
      schedule, "schedule-key-deletion",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend,
                                  admin_for(keyref_, "schedule-key-deletion"));
        ENVCRYPT_ASSIGN_OR_RETURN(
            KeyInfo key,
            schedule_key_deletion(*backend, keyref_, pending_window_days_, force_, destroy_now_));
        return print_key(key);
      },
      true);
  on(
      keyed("cancel-key-deletion", "cancel a scheduled deletion (the key stays disabled)"),
      "cancel-key-deletion",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAdministration * backend,
                                  admin_for(keyref_, "cancel-key-deletion"));
        ENVCRYPT_TRY(backend->cancel_key_deletion(keyref_));
        return print_changed_key(*backend, "deletion cancelled for");
      },
      true);

  auto* create_alias = kms->add_subcommand("create-alias", "name a key");
  create_alias->add_option("ALIAS", alias_, "alias/<name>")->required();
  create_alias->add_option("KEYREF", keyref_)->required();
  on(
      create_alias, "create-alias",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * backend, aliases_for(keyref_, "create-alias"));
        ENVCRYPT_TRY(backend->create_alias(alias_, keyref_));
        if (json_) {
          print_json({{"alias", alias_}, {"target_key", keyref_}, {"created", true}});
        } else {
          out_ << "created " << alias_ << " -> " << keyref_ << '\n';
        }
        return OkStatus();
      },
      false);
  auto* delete_alias = kms->add_subcommand("delete-alias", "remove an alias");
  delete_alias->add_option("ALIAS", alias_)->required();
  on(
      delete_alias, "delete-alias",
      [this]() -> Status {
        ENVCRYPT_ASSIGN_OR_RETURN(KeyAliases * backend, aliases_selected("delete-alias"));
        ENVCRYPT_TRY(backend->delete_alias(alias_));
        if (json_) {
          print_json({{"alias", alias_}, {"deleted", true}});
        } else {
          out_ << "deleted " << alias_ << '\n';
        }
        return OkStatus();
      },
      false);

  // Rotation, BYOK, grants, audit, and rewrap at the top level: lifecycle_cli.cc.
  const BootCommandHooks common = command_hooks();
  const LifecycleCommandHooks hooks{common.registry, &kms_selector_, common.json,
                                    common.out,      common.err,     common.select};
  add_lifecycle_kms_commands(*kms, hooks);
  add_root_key_commands(*kms, hooks);
  add_keystore_backup_commands(*kms, hooks);
  add_rewrap_command(app, hooks);
}

}  // namespace envcrypt
