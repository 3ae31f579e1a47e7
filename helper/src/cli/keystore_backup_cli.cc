#include "cli/keystore_backup_cli.h"

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "kms/local/keystore_backup_file.h"
#include "kms/local/kms_local.h"

namespace envcrypt {
namespace {

using json = nlohmann::json;

struct BackupArgs {
  std::string to;
  std::string recovery_key;
  std::string from;
  std::string recovery_private_key;
  bool merge = false;
};

// The local KMS of the configured region: backups carry a local keystore,
// which a KMIP server keeps for itself.
Result<KeystoreBackup*> local_kms(const LifecycleCommandHooks& hooks) {
  if (hooks.kms_selector != nullptr && !hooks.kms_selector->empty() &&
      *hooks.kms_selector != "local" && *hooks.kms_selector != "local://") {
    return Error(ErrorCode::kUsage,
                 "keystore backups are of the local KMS only, not " + *hooks.kms_selector);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * client, registry->for_selector(std::nullopt));
  KeystoreBackup* local = client->keystore_backup();
  if (local == nullptr) {
    return Error(ErrorCode::kInternal, "the configured local KMS keeps no keystore to back up");
  }
  return local;
}

void print_backup(const LifecycleCommandHooks& hooks, const BackupArgs& args,
                  const RecoveryPublicKey& key, const BackupSummary& summary) {
  for (const std::string& uri : summary.withheld) {
    *hooks.err << "kms backup: key " << uri
               << ": imported material not in the backup (its key does not allow it); after a "
                  "restore the key is PendingImport\n";
  }
  if (!summary.audit_problem.empty()) {
    *hooks.err << "kms backup: the audit trail does not verify (" << summary.audit_problem
               << "): the backup records no audit head\n";
  }
  if (*hooks.json) {
    *hooks.out << json{{"file", args.to},
                       {"region", summary.region},
                       {"keys", summary.keys},
                       {"versions", summary.versions},
                       {"material_not_in_backup", summary.withheld},
                       {"recovery_key", to_hex(key.id)},
                       {"audit_head", audit_anchor_text(summary.audit_head)}}
                      .dump(2)
               << '\n';
    return;
  }
  *hooks.out << "backed up " << summary.keys << " keys (" << summary.versions
             << " versions) of region " << summary.region << " to " << args.to
             << ", encrypted to recovery key " << short_key_id(key.id) << "; audit head "
             << audit_anchor_text(summary.audit_head) << '\n';
}

Status backup(const LifecycleCommandHooks& hooks, const BackupArgs& args) {
  ENVCRYPT_ASSIGN_OR_RETURN(const RecoveryPublicKey key,
                            read_recovery_public_key(args.recovery_key));
  ENVCRYPT_TRY(check_backup_target(args.to));  // before the KMS opens
  ENVCRYPT_ASSIGN_OR_RETURN(KeystoreBackup * kms, local_kms(hooks));
  ENVCRYPT_ASSIGN_OR_RETURN(const BackupSummary summary, write_keystore_backup(*kms, args.to, key));
  print_backup(hooks, args, key, summary);
  return OkStatus();
}

void print_restore(const LifecycleCommandHooks& hooks, const BackupArgs& args,
                   const KeystoreRecords& records, const RestoreOutcome& outcome) {
  const std::vector<std::string> withheld = withheld_key_uris(records);
  if (*hooks.json) {
    *hooks.out << json{{"file", args.from},
                       {"region", records.region},
                       {"added", outcome.added},
                       {"kept", outcome.kept},
                       {"pending_import", withheld}}
                      .dump(2)
               << '\n';
    return;
  }
  *hooks.out << "restored " << outcome.added.size() << " keys of region " << records.region
             << " from " << args.from;
  if (!outcome.kept.empty()) {
    *hooks.out << " (" << outcome.kept.size() << " already here with the same material, kept)";
  }
  *hooks.out << '\n';
  for (const std::string& uri : withheld) {
    *hooks.out << "key " << uri
               << ": imported material was not in the backup: PendingImport, import it again\n";
  }
}

Status restore(const LifecycleCommandHooks& hooks, const BackupArgs& args) {
  ENVCRYPT_ASSIGN_OR_RETURN(const BackupContents contents,
                            open_keystore_backup(args.from, args.recovery_private_key));
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  ENVCRYPT_TRY(check_backup_region(contents.records, registry->config().region));
  ENVCRYPT_ASSIGN_OR_RETURN(KeystoreBackup * kms, local_kms(hooks));
  ENVCRYPT_ASSIGN_OR_RETURN(const RestoreOutcome outcome,
                            restore_keystore_backup(*kms, contents, args.from, args.merge));
  print_restore(hooks, args, contents.records, outcome);
  return OkStatus();
}

}  // namespace

void add_keystore_backup_commands(CLI::App& kms, const LifecycleCommandHooks& hooks) {
  auto args = std::make_shared<BackupArgs>();
  auto* backup_command = kms.add_subcommand(
      "backup", "write the local keystore, encrypted to a recovery public key, to a new file");
  backup_command->add_option("--to", args->to, "the backup file to create")->required();
  backup_command
      ->add_option("--recovery-key", args->recovery_key, "X25519 recovery public key (PEM)")
      ->required();
  backup_command->callback([hooks, args] {
    hooks.select("kms backup", [hooks, args] { return backup(hooks, *args); });
  });

  auto* restore_command =
      kms.add_subcommand("restore", "restore a keystore backup into this host's local KMS");
  restore_command->add_option("FILE", args->from, "the backup file")->required();
  restore_command
      ->add_option("--recovery-private-key", args->recovery_private_key,
                   "X25519 recovery private key (PEM) the backup was encrypted to")
      ->required();
  restore_command->add_flag("--merge", args->merge,
                            "add the backup's keys to a keystore that holds keys already");
  restore_command->callback([hooks, args] {
    hooks.select("kms restore", [hooks, args] { return restore(hooks, *args); });
  });
}

}  // namespace envcrypt
