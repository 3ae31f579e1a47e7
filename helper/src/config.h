// envcrypt configuration (DESIGN.md section 5): TOML at
// /etc/envcrypt/envcrypt.conf, overridden by --config or ENVCRYPT_CONFIG.
// A missing file means all defaults; unknown keys are errors naming the key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "result.h"

namespace envcrypt {

struct KmipEndpoint {
  std::string name;  // the [kms.kmip.<name>] table name
  std::string host;
  std::uint16_t port = 5696;
  std::filesystem::path ca;
  std::filesystem::path cert;
  std::filesystem::path key;
  std::uint32_t timeout_ms = 5000;
};

// [boot]: how disks are attached at boot and on hot-plug.
struct BootConfig {
  // Attach every envcrypt disk that appears, not only those envcrypttab
  // lists, as "envcrypt-<uuid>" (Documentation/admin-guide/boot.rst).
  bool auto_attach = false;
};

struct Config {
  std::string region = "local-1";
  std::string principal;  // default: "host/<hostname>"
  std::string default_cmk = "alias/acs/ecs";
  std::filesystem::path local_dir = "/var/lib/envcrypt/kms";
  std::filesystem::path local_root_key = "/etc/envcrypt/root.key";
  std::map<std::string, KmipEndpoint> kmip_endpoints;  // by name
  BootConfig boot;
  std::filesystem::path source;                        // the file read, empty when defaults only
};

// Reads the configuration: `explicit_path` (from --config) first, else
// $ENVCRYPT_CONFIG, else /etc/envcrypt/envcrypt.conf.  A missing default file
// gives all defaults; a missing explicit file is an error.
Result<Config> load_config(const std::optional<std::filesystem::path>& explicit_path);
Result<Config> parse_config(const std::string& toml_text, const std::filesystem::path& source);

}  // namespace envcrypt
