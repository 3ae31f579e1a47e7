#include "cli/keystore_backup_cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "kms/local/keystore_backup.h"
#include "kms/local/kms_local.h"
#include "util/file_io.h"
#include "util/keystore.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
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

Error exists_error(const fs::path& path) {
  return {ErrorCode::kConflict, path.string() + " exists: kms backup never overwrites a file"};
}

// Never replaces a file, not even one that appeared while this one was
// being written.
Status write_new_file(const fs::path& path, const Bytes& bytes) {
  Status written = write_file_durably(
      path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
      {.mode = 0600, .if_exists = IfExists::kRefuse});
  if (!written.ok() && written.error().code() == ErrorCode::kConflict) {
    return exists_error(path);
  }
  return written;
}

// The backup file, read whole; a file larger than any backup is refused
// before it is read.
Result<Bytes> read_backup_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return Error(ErrorCode::kNotFound, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(ErrorCode::kUsage, "not a regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size > kBackupHeaderSize + kMaxBackupPayload) {
    ::close(fd);
    return Error(ErrorCode::kUsage,
                 std::to_string(size) + " bytes: larger than any keystore backup, not one");
  }
  Bytes bytes(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = ::read(fd, bytes.data() + done, size - done);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      const int error = got < 0 ? errno : EIO;
      ::close(fd);
      return error_from_errno(ErrorCode::kIo, "read", error);
    }
    done += static_cast<std::size_t>(got);
  }
  ::close(fd);
  return bytes;
}

std::string uri_of(const KeystoreRecords& records, const std::string& id) {
  return "local://" + records.region + "/" + id;
}

std::size_t version_count(const KeystoreRecords& records) {
  std::size_t count = 0;
  for (const auto& [id, key] : records.keys) {
    count += key.versions.size();
  }
  return count;
}

std::vector<std::string> withheld_keys(const KeystoreRecords& records) {
  std::vector<std::string> withheld;
  for (const auto& [id, key] : records.keys) {
    if (key.material_withheld) {
      withheld.push_back(id);
    }
  }
  return withheld;
}

std::string anchor_text(const std::optional<AuditAnchor>& anchor) {
  return anchor ? format_audit_anchor(*anchor) : "none";
}

struct BackupSummary {
  std::string region;
  std::size_t keys = 0;
  std::size_t versions = 0;
  std::vector<std::string> withheld;  // CMK URIs
  std::optional<AuditAnchor> audit_head;
  std::string audit_problem;  // why there is no head
};

// Runs inside the keystore lock: the file is made from one consistent state.
Status write_backup(KeystoreBackup& kms, const BackupArgs& args, const RecoveryPublicKey& key,
                    KeystoreRecords& records, AuditEvent& event, BackupSummary& summary) {
  event.details["to"] = args.to;
  event.details["recovery_key"] = to_hex(key.id);
  BackupContents contents;
  ENVCRYPT_ASSIGN_OR_RETURN(const AuditVerification audit, kms.audit_log().verify());
  if (audit.intact && audit.lines > 0) {
    contents.audit_head = audit.head;
  } else if (!audit.intact) {
    summary.audit_problem = "line " + std::to_string(audit.first_bad_line) + ": " + audit.problem;
  }
  contents.created_at = static_cast<std::int64_t>(std::time(nullptr));
  contents.principal = kms.principal();
  contents.records = std::move(records);
  ENVCRYPT_ASSIGN_OR_RETURN(const Bytes file, encode_backup(contents, key));
  ENVCRYPT_TRY(write_new_file(args.to, file));
  const KeystoreRecords& written = contents.records;
  summary.region = written.region;
  summary.keys = written.keys.size();
  summary.versions = version_count(written);
  summary.audit_head = contents.audit_head;
  for (const std::string& id : withheld_keys(written)) {
    summary.withheld.push_back(uri_of(written, id));
  }
  event.details["keys"] = std::to_string(summary.keys);
  event.details["withheld"] = std::to_string(summary.withheld.size());
  event.details["audit_head"] = anchor_text(summary.audit_head);
  return OkStatus();
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
                       {"audit_head", anchor_text(summary.audit_head)}}
                      .dump(2)
               << '\n';
    return;
  }
  *hooks.out << "backed up " << summary.keys << " keys (" << summary.versions
             << " versions) of region " << summary.region << " to " << args.to
             << ", encrypted to recovery key " << short_key_id(key.id) << "; audit head "
             << anchor_text(summary.audit_head) << '\n';
}

Status backup(const LifecycleCommandHooks& hooks, const BackupArgs& args) {
  ENVCRYPT_ASSIGN_OR_RETURN(const RecoveryPublicKey key,
                            read_recovery_public_key(args.recovery_key));
  std::error_code ignored;
  if (fs::symlink_status(args.to, ignored).type() != fs::file_type::not_found) {
    return exists_error(args.to);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeystoreBackup * kms, local_kms(hooks));
  BackupSummary summary;
  ENVCRYPT_TRY(kms->backup_keystore([&](KeystoreRecords& records, AuditEvent& event) {
    return write_backup(*kms, args, key, records, event, summary);
  }));
  print_backup(hooks, args, key, summary);
  return OkStatus();
}

// Everything `kms restore` checks before it opens the keystore: the file,
// its header, the private key, the authenticated payload.  Nothing is
// written (not even a root key) unless all of it passes.
Result<BackupContents> open_backup(const BackupArgs& args) {
  auto in_file = [&args](const Error& error) { return error.with_context("backup " + args.from); };
  Result<Bytes> file = read_backup_file(args.from);
  if (!file.ok()) {
    return in_file(file.error());
  }
  if (Result<BackupHeader> header = decode_backup_header(*file); !header.ok()) {
    return in_file(header.error());
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const RecoveryPrivateKey key,
                            read_recovery_private_key(args.recovery_private_key));
  Result<BackupContents> contents = decode_backup(*file, key);
  if (!contents.ok()) {
    return in_file(contents.error());
  }
  return contents;
}

void print_restore(const LifecycleCommandHooks& hooks, const BackupArgs& args,
                   const KeystoreRecords& records, const RestoreOutcome& outcome) {
  const std::vector<std::string> withheld = withheld_keys(records);
  if (*hooks.json) {
    std::vector<std::string> pending;
    for (const std::string& id : withheld) {
      pending.push_back(uri_of(records, id));
    }
    *hooks.out << json{{"file", args.from},
                       {"region", records.region},
                       {"added", outcome.added},
                       {"kept", outcome.kept},
                       {"pending_import", pending}}
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
  for (const std::string& id : withheld) {
    *hooks.out << "key " << uri_of(records, id)
               << ": imported material was not in the backup: PendingImport, import it again\n";
  }
}

// CMK URIs, and so every disk header, name the region: keys restored into
// another one would serve no disk.  Checked before the KMS opens, which
// would create a root key.
Status check_region(const LifecycleCommandHooks& hooks, const KeystoreRecords& records) {
  ENVCRYPT_ASSIGN_OR_RETURN(KmsRegistry * registry, hooks.registry());
  const std::string& region = registry->config().region;
  if (records.region != region) {
    return Error(ErrorCode::kUsage, "the backup is of region " + records.region +
                                        "; this host's local KMS serves region " + region +
                                        " (region in envcrypt.conf)");
  }
  return OkStatus();
}

Status restore(const LifecycleCommandHooks& hooks, const BackupArgs& args) {
  ENVCRYPT_ASSIGN_OR_RETURN(const BackupContents contents, open_backup(args));
  ENVCRYPT_TRY(check_region(hooks, contents.records));
  ENVCRYPT_ASSIGN_OR_RETURN(KeystoreBackup * kms, local_kms(hooks));
  const std::map<std::string, std::string> details = {
      {"from", args.from},
      {"source_principal", contents.principal},
      {"backup_created_at", format_rfc3339(contents.created_at)},
      {"source_audit_head", anchor_text(contents.audit_head)},
      {"keys", std::to_string(contents.records.keys.size())}};
  ENVCRYPT_ASSIGN_OR_RETURN(const RestoreOutcome outcome,
                            kms->restore_keystore(contents.records, args.merge, details));
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
