// The recovery wrap on a disk (recovery.h is the construction): upgrading a
// version 1 header to version 2, adding, removing and showing a recovery
// wrap, and `recover`, which opens the DK with the recovery private key and
// wraps it under a working CMK.  Every header change goes through
// update_header (header_io.h): killed at any instant, the disk attaches with
// the old header or the new one.  Every use of a recovery key, and every
// change to a recovery wrap, is a line in the KMS audit trail, written
// ahead as an intent before the header changes (audit.h).
//
// The upgrade is its own command, never a side effect: a version 1 header
// stays version 1 (readable by every envcryptctl) until `upgrade-header`
// makes it version 2; `recovery add` on a version 1 header refuses and names
// that command.  `format --recovery-key` writes version 2 directly.
//
// Test hook (test builds only, test_hooks.h): ENVCRYPT_FAULT=recovery:<step>
// kills the process at <step>: prepared (nothing written yet), then
// update_header's steps (kRewrapSteps[1..] in rewrap.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "header/header.h"
#include "kms/kms_registry.h"
#include "kms/recovery.h"
#include "util/result.h"

namespace envcrypt {

struct RecoveryTarget {
  std::filesystem::path device;
  std::optional<std::filesystem::path> header_file;  // the header lives there
};

struct HeaderChange {
  DiskHeader before;
  DiskHeader after;  // == before when nothing was written
  bool changed = false;
};

// v1 -> v2; a version 2 header is left as it is (changed false) unless a
// copy is not current (an interrupted upgrade), which is then rewritten.
Result<HeaderChange> upgrade_header_volume(KmsRegistry& kms, const RecoveryTarget& target);

// Wraps the DK (unwrapped through the disk's CMK and checked against its key
// check value) to `key`.  Refuses a version 1 header (ErrorCode::kUsage,
// naming upgrade-header) and, unless `replace`, a disk that already has a
// recovery wrap (ErrorCode::kConflict).
Result<HeaderChange> add_recovery_wrap(KmsRegistry& kms, const RecoveryTarget& target,
                                       const RecoveryPublicKey& key, bool replace);

// Removes the recovery wrap; the header stays version 2.  No wrap to remove
// is ErrorCode::kNotFound.
Result<HeaderChange> remove_recovery_wrap(KmsRegistry& kms, const RecoveryTarget& target);

struct RecoverResult {
  HeaderChange change;
  std::string cmk_uri;  // where the DK is wrapped now
  std::uint32_t cmk_version = 0;
};

// Opens the recovery wrap with `key`, checks the DK against the key check
// value, wraps it under `cmk` (default: the CMK that wraps it now, which
// then must still work), decrypts that wrap back, and writes it.  The
// recovery wrap stays.  Nothing is written on any failure.
Result<RecoverResult> recover_volume(KmsRegistry& kms, const RecoveryTarget& target,
                                     const RecoveryPrivateKey& key,
                                     const std::optional<std::string>& cmk);

// The wrap a disk is expected to be formatted with (format --recovery-key):
// makes `header` version 2 with a recovery wrap of `data_key` to `key`.
Status attach_recovery_wrap(DiskHeader& header, const SecretBytes& data_key,
                            const RecoveryPublicKey& key);

// Audits a format that wrote a recovery wrap (after the fact: the disk had
// no header before).
Status audit_recovery_format(KmsRegistry& kms, const DiskHeader& header);

}  // namespace envcrypt
