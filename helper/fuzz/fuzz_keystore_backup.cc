// The keystore backup decoder (keystore_backup.h).  The first byte picks
// the entry point: 0, a whole backup file opened with the fixed test key of
// backup_key.h (header checks, key id, authentication); anything else, a
// decrypted payload (an 8-byte creation time, a 4-byte key count, then the
// payload), which only authenticates for whoever holds the recovery public
// key but must be checked all the same.  Properties: no sanitizer finding;
// an accepted payload encodes back to one that decodes to the same keys,
// versions, material, aliases and purge records.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "backup_key.h"
#include "fuzz_check.h"
#include "kms/local/keystore_backup.h"

namespace {

using envcrypt::BackupContents;
using envcrypt::fuzz::require;

bool same_records(const BackupContents& a, const BackupContents& b) {
  if (a.records.region != b.records.region || a.records.aliases != b.records.aliases ||
      a.records.deleted != b.records.deleted || a.principal != b.principal ||
      a.records.keys.size() != b.records.keys.size()) {
    return false;
  }
  for (const auto& [id, key] : a.records.keys) {
    const auto other = b.records.keys.find(id);
    if (other == b.records.keys.end() || other->second.versions.size() != key.versions.size() ||
        other->second.state != key.state || other->second.grants.size() != key.grants.size()) {
      return false;
    }
    for (std::size_t i = 0; i < key.versions.size(); ++i) {
      if (!key.versions[i].material.equals(other->second.versions[i].material.span())) {
        return false;
      }
    }
  }
  return true;
}

void check_payload(const std::uint8_t* data, std::size_t size) {
  if (size < 12) {
    return;
  }
  std::uint64_t created = 0;
  std::uint32_t keys = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    created = (created << 8) | data[i];
  }
  for (std::size_t i = 8; i < 12; ++i) {
    keys = (keys << 8) | data[i];
  }
  const auto created_at = static_cast<std::int64_t>(created);
  const envcrypt::SecretBytes payload(data + 12, size - 12);
  const auto contents = envcrypt::decode_backup_payload(payload, created_at, keys);
  if (!contents.ok()) {
    return;
  }
  const auto again = envcrypt::encode_backup_payload(*contents);
  if (!again.ok()) {
    return;  // larger than a backup may be once encoded again
  }
  const auto decoded = envcrypt::decode_backup_payload(*again, created_at, keys);
  require(decoded.ok(), "an accepted payload encodes back to one that decodes");
  require(same_records(*contents, *decoded), "decode(encode(payload)) == payload");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  if (data[0] != 0) {
    check_payload(data + 1, size - 1);
    return 0;
  }
  static const std::optional<envcrypt::RecoveryPrivateKey> key = [] {
    auto parsed = envcrypt::fuzz::backup_private_key();
    return parsed.ok() ? std::optional(std::move(parsed).value()) : std::nullopt;
  }();
  require(key.has_value(), "the test recovery key parses");
  const envcrypt::ByteView file(data + 1, size - 1);
  (void)envcrypt::decode_backup(file, *key);
  return 0;
}
