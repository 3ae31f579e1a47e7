// The files of `envcryptctl kms backup` and `kms restore`: writing a
// keystore backup (keystore_backup.h) to a new file and opening one, with
// the rules around them (never replace a file, a bounded read of a regular
// file, the region a restore must match).  The CLI only parses and prints.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kms/local/keystore_backup.h"
#include "kms/local/kms_local.h"
#include "kms/recovery.h"
#include "util/result.h"

namespace envcrypt {

// What `kms backup` wrote.
struct BackupSummary {
  std::string region;
  std::size_t keys = 0;
  std::size_t versions = 0;
  std::vector<std::string> withheld;  // CMK URIs whose material stayed out
  std::optional<AuditAnchor> audit_head;
  std::string audit_problem;  // why there is no head, when the trail does not verify
};

// Refuses a backup file name that is taken (by anything, even a dangling
// symbolic link): "<to> exists: kms backup never overwrites a file"
// (ErrorCode::kConflict).
Status check_backup_target(const std::filesystem::path& to);

// Writes `kms`'s keystore, encrypted to `key`, to the new file `to`, from
// one consistent state under the keystore lock.  Never replaces a file
// (check_backup_target), not even one that appears meanwhile.
Result<BackupSummary> write_keystore_backup(KeystoreBackup& kms, const std::filesystem::path& to,
                                            const RecoveryPublicKey& key);

// Everything `kms restore` checks before it opens the keystore: the file
// (a regular file no larger than any backup), its header, the private key,
// the authenticated payload.  Errors about the file name it: "backup
// <from>: ...".
Result<BackupContents> open_keystore_backup(const std::filesystem::path& from,
                                            const std::filesystem::path& recovery_private_key);

// CMK URIs, and so every disk header, name the region: keys restored into
// another one would serve no disk (ErrorCode::kUsage).  Checked before the
// local KMS opens, which would create a root key.
Status check_backup_region(const KeystoreRecords& records, const std::string& region);

// Restores `contents` (opened and checked) into `kms`; the audit event
// records where it came from.
Result<RestoreOutcome> restore_keystore_backup(KeystoreBackup& kms, const BackupContents& contents,
                                               const std::filesystem::path& from, bool merge);

// The CMK URIs of the keys whose imported material the backup does not hold.
std::vector<std::string> withheld_key_uris(const KeystoreRecords& records);

// An audit head as the messages and records show it; "none" without one.
std::string audit_anchor_text(const std::optional<AuditAnchor>& anchor);

}  // namespace envcrypt
