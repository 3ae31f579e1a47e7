#include "kms/local/keystore_backup_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <ctime>
#include <string_view>
#include <system_error>
#include <utility>

#include "audit/audit.h"
#include "util/file_io.h"
#include "util/unique_fd.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

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
// before it is read.  Errors name the file: "backup <path>: ...".
Result<Bytes> read_backup_file(const fs::path& path) {
  const std::string file = "backup " + path.string();
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    return error_from_errno(ErrorCode::kNotFound, file, errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kUsage, file + ": not a regular file");
  }
  constexpr std::size_t kLargest = kBackupHeaderSize + kMaxBackupPayload;
  if (static_cast<std::size_t>(st.st_size) > kLargest) {
    return Error(ErrorCode::kUsage, file + ": " + std::to_string(st.st_size) +
                                        " bytes: larger than any keystore backup, not one");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const std::string text,
                            read_to_end(fd.get(), file + ": read", kLargest));
  return Bytes(text.begin(), text.end());
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

// Runs inside the keystore lock: the file is made from one consistent state.
Status write_locked(KeystoreBackup& kms, const fs::path& to, const RecoveryPublicKey& key,
                    KeystoreRecords& records, AuditEvent& event, BackupSummary& summary) {
  event.details["to"] = to.string();
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
  ENVCRYPT_TRY(write_new_file(to, file));
  const KeystoreRecords& written = contents.records;
  summary.region = written.region;
  summary.keys = written.keys.size();
  summary.versions = version_count(written);
  summary.audit_head = contents.audit_head;
  summary.withheld = withheld_key_uris(written);
  event.details["keys"] = std::to_string(summary.keys);
  event.details["withheld"] = std::to_string(summary.withheld.size());
  event.details["audit_head"] = audit_anchor_text(summary.audit_head);
  return OkStatus();
}

}  // namespace

std::vector<std::string> withheld_key_uris(const KeystoreRecords& records) {
  std::vector<std::string> withheld;
  for (const auto& [id, key] : records.keys) {
    if (key.material_withheld) {
      withheld.push_back(uri_of(records, id));
    }
  }
  return withheld;
}

std::string audit_anchor_text(const std::optional<AuditAnchor>& anchor) {
  return anchor ? format_audit_anchor(*anchor) : "none";
}

Status check_backup_target(const fs::path& to) {
  std::error_code ignored;
  if (fs::symlink_status(to, ignored).type() != fs::file_type::not_found) {
    return exists_error(to);
  }
  return OkStatus();
}

Result<BackupSummary> write_keystore_backup(KeystoreBackup& kms, const fs::path& to,
                                            const RecoveryPublicKey& key) {
  ENVCRYPT_TRY(check_backup_target(to));
  BackupSummary summary;
  ENVCRYPT_TRY(kms.backup_keystore([&](KeystoreRecords& records, AuditEvent& event) {
    return write_locked(kms, to, key, records, event, summary);
  }));
  return summary;
}

Result<BackupContents> open_keystore_backup(const fs::path& from,
                                            const fs::path& recovery_private_key) {
  auto in_file = [&from](const Error& error) {
    return error.with_context("backup " + from.string());
  };
  ENVCRYPT_ASSIGN_OR_RETURN(const Bytes file, read_backup_file(from));
  if (Result<BackupHeader> header = decode_backup_header(file); !header.ok()) {
    return in_file(header.error());
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const RecoveryPrivateKey key,
                            read_recovery_private_key(recovery_private_key));
  Result<BackupContents> contents = decode_backup(file, key);
  if (!contents.ok()) {
    return in_file(contents.error());
  }
  return contents;
}

Status check_backup_region(const KeystoreRecords& records, const std::string& region) {
  if (records.region != region) {
    return Error(ErrorCode::kUsage, "the backup is of region " + records.region +
                                        "; this host's local KMS serves region " + region +
                                        " (region in envcrypt.conf)");
  }
  return OkStatus();
}

Result<RestoreOutcome> restore_keystore_backup(KeystoreBackup& kms, const BackupContents& contents,
                                               const fs::path& from, bool merge) {
  const std::map<std::string, std::string> details = {
      {"from", from.string()},
      {"source_principal", contents.principal},
      {"backup_created_at", format_rfc3339(contents.created_at)},
      {"source_audit_head", audit_anchor_text(contents.audit_head)},
      {"keys", std::to_string(contents.records.keys.size())}};
  return kms.restore_keystore(contents.records, merge, details);
}

}  // namespace envcrypt
