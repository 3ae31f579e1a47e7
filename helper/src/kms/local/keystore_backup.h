// The keystore backup file of `envcryptctl kms backup` and `kms restore`
// (Documentation/kms/local.rst, "Keystore backup and restore"): every CMK
// of one local KMS region, its versions' material, aliases, grants, key
// policy and purge records, and the head of the audit trail, encrypted as
// one payload to an offline X25519 recovery public key with the recovery
// construction of recovery.h.
//
//   offset  size  field (integers big-endian)
//        0    16  magic "ENVCRYPT-KSBACK\n"
//       16     2  format version, 1
//       18     2  flags, 0
//       20     8  creation time, Unix seconds
//       28     4  number of keys
//       32    32  recovery key id (SHA-256 of the public key's SPKI DER)
//       64    32  ephemeral X25519 public key
//       96    12  AES-256-GCM nonce
//      108    16  AES-256-GCM tag
//      124     4  payload length N
//      128     N  encrypted payload
//
// Every header field is authenticated: the key id and ephemeral key by the
// recovery AAD, the others through the encryption context (below).  The
// payload is a u32 length, a JSON document without key material, then 32
// bytes of material per key version in the document's order; it is built
// and opened only in locked memory.  Anyone holding the recovery PUBLIC key
// can make a file that authenticates, so a decoded payload is checked field
// by field like any other hostile input.  Nothing here touches a file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "audit/audit.h"
#include "kms/local/kms_local.h"
#include "kms/recovery.h"
#include "util/crypto.h"
#include "util/result.h"

namespace envcrypt {

inline constexpr std::size_t kBackupHeaderSize = 128;
inline constexpr std::uint16_t kBackupFormatVersion = 1;
// The payload is opened in the locked arena (secret.h, 1 MiB), so it has a
// bound well inside it: about 800 keys.
inline constexpr std::size_t kMaxBackupPayload = std::size_t{512} * 1024;

struct BackupContents {
  KeystoreRecords records;
  std::int64_t created_at = 0;
  std::string principal;                  // the host that made it
  std::optional<AuditAnchor> audit_head;  // the source log's last line, when it verified
};

// The cleartext header, as `kms restore` reads it before any key is used.
struct BackupHeader {
  std::int64_t created_at = 0;
  std::uint32_t key_count = 0;
  RecoveryKeyId key_id{};
  RecoveryWrap wrap;  // key id, ephemeral key, nonce, tag, ciphertext
};

// The file for `contents`, encrypted to `key`.  A payload larger than
// kMaxBackupPayload is ErrorCode::kUsage.
Result<Bytes> encode_backup(const BackupContents& contents, const RecoveryPublicKey& key);

// The header of a file, every structural check done (magic, version,
// flags, lengths).  Refusals, one line each:
//   kUsage          "empty file: not a keystore backup"
//                   "not a keystore backup (no ENVCRYPT-KSBACK magic)"
//                   "unsupported backup format version N (this envcryptctl reads 1)"
//   kCorrupt  "truncated: N bytes, ..."  (shorter than its header says)
//                   "unknown flags 0xNNNN: tampered, or made by a newer envcryptctl"
//                   "payload length N is not 1-524288: tampered"
//                   "N bytes after the end of the backup: tampered"
Result<BackupHeader> decode_backup_header(ByteView file);

// The whole file opened with `key`: the header, then
//   kDenied         "encrypted to recovery key <64 hex>, not to <64 hex> (wrong recovery private
//   key)" kCorrupt  "authentication failed: the backup was altered or damaged (tampered)"
//                   "payload: <what is wrong>" (a file that authenticates but
//                   was made by something else than envcryptctl)
Result<BackupContents> decode_backup(ByteView file, const RecoveryPrivateKey& key);

// The payload alone, checked against its header's creation time and key
// count (the fuzzer's second entry point).
Result<BackupContents> decode_backup_payload(const SecretBytes& payload, std::int64_t created_at,
                                             std::uint32_t key_count);
// The payload `encode_backup` encrypts (for the fuzzer's seeds).
Result<SecretBytes> encode_backup_payload(const BackupContents& contents);

}  // namespace envcrypt
