// envcrypt configuration: TOML at
// /etc/envcrypt/envcrypt.conf, overridden by --config or ENVCRYPT_CONFIG.
// A missing file means all defaults; unknown keys are errors naming the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace envcrypt {

struct KmipServer {
  std::string host;
  std::uint16_t port = 5696;
};

// One key manager, possibly a cluster of servers that hold the same keys
// (same uids and material) and trust the same client certificate.
struct KmipEndpoint {
  std::string name;  // the [kms.kmip.<name>] table name
  std::string host;  // the first server: the one CMK URIs name
  std::uint16_t port = 5696;
  std::vector<KmipServer> failover;  // the others, tried after it in this order
  std::filesystem::path ca;
  std::filesystem::path cert;
  std::filesystem::path key;
  std::uint32_t timeout_ms = 5000;  // each server: connect, TLS, request and response
  std::uint32_t deadline_ms = 0;    // each call over all servers; 0: timeout_ms per server

  // host:port, then the failover servers.
  [[nodiscard]] std::vector<KmipServer> servers() const;
  [[nodiscard]] std::chrono::milliseconds call_deadline() const;
};

inline constexpr std::chrono::seconds kDefaultAttachTimeout{90};

// [boot]: how disks are attached at boot and on hot-plug.
struct BootConfig {
  // Attach every envcrypt disk that appears, not only those envcrypttab
  // lists, as "envcrypt-<uuid>" (Documentation/admin-guide/boot.rst).
  bool auto_attach = false;
  // attach_timeout_seconds: how long attach at boot retries a disk whose
  // KMS is unreachable before giving up on it.
  std::chrono::seconds attach_timeout = kDefaultAttachTimeout;
};

// The longest [outage_cache] max_age: thirty days.
inline constexpr std::chrono::milliseconds kMaxOutageCacheAge{std::chrono::hours(24 * 30)};

// [outage_cache]: a TPM-sealed copy of a disk's DK that attach may use
// while the disk's KMS cannot be reached, and only then
// (Documentation/admin-guide/outage-cache.rst).  Off unless `disks` names
// the disk.
struct OutageCacheConfig {
  // envcrypttab names (mapping names) or disk uuids; "*" is every disk.
  std::vector<std::string> disks;
  // How long after the KMS last confirmed the key an entry may still serve.
  std::chrono::milliseconds max_age{std::chrono::hours(24)};
  std::filesystem::path dir = "/var/lib/envcrypt/outage-cache";
  // PCRs (SHA-256 bank) the sealed copies are bound to, ascending.
  std::vector<std::uint32_t> pcrs;

  [[nodiscard]] bool enabled_for(const std::string& name, const std::string& disk_uuid) const;
};

struct Config {
  std::string region = "local-1";
  std::string principal;  // default: "host/<hostname>"
  std::string default_cmk = "alias/acs/ecs";
  std::filesystem::path local_dir = "/var/lib/envcrypt/kms";
  std::filesystem::path local_root_key = "/etc/envcrypt/root.key";
  // The TPM of a sealed root key (tpm2-tss TCTI configuration string).
  std::string local_tpm_tcti = "device:/dev/tpmrm0";
  std::map<std::string, KmipEndpoint> kmip_endpoints;  // by name
  BootConfig boot;
  OutageCacheConfig outage_cache;
  std::filesystem::path source;  // the file read, empty when defaults only
};

// Reads the configuration: `explicit_path` (from --config) first, else
// $ENVCRYPT_CONFIG, else /etc/envcrypt/envcrypt.conf.  A missing default file
// gives all defaults; a missing explicit file is an error.  The file must be
// owned by root or the running user and not be group or world writable
// (ErrorCode::kDenied, one line naming the file and its mode).
Result<Config> load_config(const std::optional<std::filesystem::path>& explicit_path);
Result<Config> parse_config(const std::string& toml_text, const std::filesystem::path& source);

}  // namespace envcrypt
