// The outage cache: a TPM-sealed copy of a disk's data key that attach uses
// only while the disk's KMS cannot be reached, only within [outage_cache]
// max_age of the KMS's last confirmation, and never once the KMS has
// refused the key (Documentation/admin-guide/outage-cache.rst).
//
// One entry per disk, <dir>/<disk uuid>.json (0600, in a 0700 directory):
//   {"format": "envcrypt-outage-cache", "version": 1, "disk": "<uuid>",
//    "cmk": "<uri>", "cmk_version": N, "wrap_sha256": "<64 hex>",
//    "confirmed_at": <unix seconds>, "sealed": {<tpm_seal.h sealed blob>}}
// The TPM seals DK || SHA-256(binding), the binding being every other
// field, so only the TPM that sealed an entry can open it and an edited
// field (a later confirmed_at, another disk) fails the check.  Each use
// is kept as one JSON line in <dir>/<disk uuid>.uses until the next attach
// that reaches the KMS writes it to the audit trail.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "header/header.h"
#include "tpm/tpm_seal.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

// An entry as stored: everything but the key is readable without the TPM.
struct CacheEntry {
  std::string disk_uuid;
  std::string cmk_uri;
  std::uint32_t cmk_version = 0;
  std::string wrap_sha256;  // of the header's wrapped DK: nonce, tag, ciphertext
  std::int64_t confirmed_at = 0;
  TpmSealedBlob sealed;
};

std::string encode_cache_entry(const CacheEntry& entry);
// Treats the text as hostile: every field checked, no unknown field, at
// most 64 KiB; ErrorCode::kCorrupt naming what is wrong.
Result<CacheEntry> decode_cache_entry(std::string_view text);

// One attach served by the cache.
struct CacheUse {
  std::int64_t time = 0;
  std::string reason;  // why the KMS could not be reached
  std::int64_t valid_until = 0;
  std::string cmk_uri;
  std::uint32_t cmk_version = 0;
};

std::string encode_cache_use(const CacheUse& use);  // one line, no newline
Result<CacheUse> decode_cache_use(std::string_view line);

// Whether a disk has an entry, for status --keys and preflight.
struct CacheState {
  bool enabled = false;  // [outage_cache] disks names the disk
  std::optional<CacheEntry> entry;
  std::int64_t valid_until = 0;  // confirmed_at + max_age, when there is an entry
  std::string problem;           // why the entry could not be read, if so

  // "valid", "expired", "none" or "unreadable" at `now`.
  [[nodiscard]] std::string condition(std::int64_t now) const;
  // Whether status and preflight have anything to say: enabled, or an entry.
  [[nodiscard]] bool worth_showing() const {
    return enabled || entry.has_value() || !problem.empty();
  }
  // "valid until <time>", "expired at <time>", "none", "unreadable: <why>",
  // with "(disk not enabled: removed at its next attach)" when so.
  [[nodiscard]] std::string describe(std::int64_t now) const;
  // {"enabled": b, "condition": "...", "valid_until": "<time>" or null,
  //  "problem": "..." (only when unreadable)}: status --keys and preflight.
  [[nodiscard]] nlohmann::json to_json(std::int64_t now) const;
};

class OutageCache {
 public:
  using Clock = std::function<std::int64_t()>;  // unix seconds

  OutageCache(OutageCacheConfig config, std::string tcti, Clock clock);

  [[nodiscard]] bool enabled_for(const std::string& name, const std::string& disk_uuid) const {
    return config_.enabled_for(name, disk_uuid);
  }
  [[nodiscard]] const OutageCacheConfig& config() const { return config_; }

  // Seals `data_key` (checked against the header) as the disk's entry,
  // confirmed now, replacing any older one.
  Status store(const DiskHeader& header, const SecretBytes& data_key);
  // Removes the disk's entry; true when there was one.
  Result<bool> forget(const std::string& disk_uuid);
  // The disk's key from its entry, when the entry matches the header, is
  // within max_age, unseals on this TPM and passes the key check; the use
  // is recorded before the key is returned (no record, no key).
  Result<SecretBytes> use(const DiskHeader& header, const std::string& reason,
                          std::int64_t* valid_until);
  [[nodiscard]] CacheState state(const std::string& name, const std::string& disk_uuid) const;

  // The uses not yet written to the audit trail, oldest first; a line that
  // does not decode comes back as a use whose reason says so.
  Result<std::vector<CacheUse>> pending_uses(const std::string& disk_uuid) const;
  Status clear_uses(const std::string& disk_uuid);

 private:
  [[nodiscard]] std::filesystem::path entry_path(const std::string& disk_uuid) const;
  [[nodiscard]] std::filesystem::path uses_path(const std::string& disk_uuid) const;
  Result<std::optional<CacheEntry>> read_entry(const std::string& disk_uuid) const;
  Status record_use(const std::string& disk_uuid, const CacheUse& use);

  OutageCacheConfig config_;
  std::string tcti_;
  Clock clock_;
};

// The cache of this host's configuration, on the system clock.
OutageCache system_outage_cache(const Config& config);
std::int64_t system_clock_seconds();

}  // namespace envcrypt
