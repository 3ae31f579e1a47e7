#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "util/duration.h"
#include "util/file_io.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

constexpr const char* kDefaultConfigPath = "/etc/envcrypt/envcrypt.conf";

// The configuration names the keys and servers to trust: like the local
// KMS root key, it must be owned by root or the running user and be
// writable by nobody else.
Status check_config_owner_and_mode(const std::filesystem::path& path, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kUsage, "config " + path.string() + " is not a regular file");
  }
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return Error(ErrorCode::kDenied, "config " + path.string() + " is owned by uid " +
                                         std::to_string(st.st_uid) +
                                         ", neither root nor the running user (uid " +
                                         std::to_string(::geteuid()) + "): refusing it");
  }
  if ((st.st_mode & 022) != 0) {
    std::array<char, 8> mode{};
    std::snprintf(mode.data(), mode.size(), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error(ErrorCode::kDenied, "config " + path.string() + " has mode " + mode.data() +
                                         ": refusing a configuration that group or others can "
                                         "write (chmod go-w " +
                                         path.string() + ")");
  }
  return OkStatus();
}

// The text of the open config file, once its owner and mode passed.
Result<std::string> read_checked_config(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "config " + path.string(), errno);
  }
  ENVCRYPT_TRY(check_config_owner_and_mode(path, st));
  return read_to_end(fd, "config " + path.string() + ": read failed");
}

std::string_view type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date/time";
  }
}

// Walks one TOML table, handing each key to the caller, who answers whether it
// knows the key.  Errors name the file and the dotted key.
class TableReader {
 public:
  TableReader(const std::filesystem::path& source, std::string prefix)
      : source_(source.string()), prefix_(std::move(prefix)) {}

  [[nodiscard]] std::string key_path(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  [[nodiscard]] Error error(std::string_view key, const std::string& why) const {
    return {ErrorCode::kUsage, "config " + source_ + ": " + key_path(key) + ": " + why};
  }

  [[nodiscard]] Error unknown_key(std::string_view key) const {
    return {ErrorCode::kUsage, "config " + source_ + ": unknown key '" + key_path(key) + "'"};
  }

  Result<std::string> string(std::string_view key, const toml::node& node) const {
    if (const auto* value = node.as_string()) {
      return value->get();
    }
    return error(key, "expected a string, got " + std::string(type_name(node)));
  }

  Result<std::filesystem::path> absolute_path(std::string_view key, const toml::node& node) const {
    ENVCRYPT_ASSIGN_OR_RETURN(std::string text, string(key, node));
    std::filesystem::path path(text);
    if (!path.is_absolute()) {
      return error(key, "expected an absolute path, got '" + text + "'");
    }
    return path;
  }

  // A tpm2-tss TCTI string: device:<absolute path>, swtpm:<options> or
  // mssim:<options>, printable, at most 256 characters.
  Result<std::string> tcti(std::string_view key, const toml::node& node) const {
    ENVCRYPT_ASSIGN_OR_RETURN(std::string text, string(key, node));
    const bool printable_text =
        std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
    const bool known = text.rfind("device:/", 0) == 0 || text.rfind("swtpm:", 0) == 0 ||
                       text.rfind("mssim:", 0) == 0;
    if (!printable_text || !known || text.size() > 256) {
      return error(key, "expected device:<path>, swtpm:<options> or mssim:<options>, got '" +
                            printable(text) + "'");
    }
    return text;
  }

  Result<std::int64_t> integer(std::string_view key, const toml::node& node, std::int64_t min,
                               std::int64_t max) const {
    const auto* value = node.as_integer();
    if (value == nullptr) {
      return error(key, "expected an integer, got " + std::string(type_name(node)));
    }
    if (value->get() < min || value->get() > max) {
      return error(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                            ", got " + std::to_string(value->get()));
    }
    return value->get();
  }

  Result<bool> boolean(std::string_view key, const toml::node& node) const {
    if (const auto* value = node.as_boolean()) {
      return value->get();
    }
    return error(key, "expected true or false, got " + std::string(type_name(node)));
  }

  Result<std::vector<std::string>> strings(std::string_view key, const toml::node& node) const {
    const auto* array = node.as_array();
    if (array == nullptr) {
      return error(key, "expected an array of strings, got " + std::string(type_name(node)));
    }
    std::vector<std::string> values;
    for (const toml::node& element : *array) {
      ENVCRYPT_ASSIGN_OR_RETURN(std::string value, string(key, element));
      values.push_back(std::move(value));
    }
    return values;
  }

  Result<const toml::table*> table(std::string_view key, const toml::node& node) const {
    if (const auto* value = node.as_table()) {
      return value;
    }
    return error(key, "expected a table, got " + std::string(type_name(node)));
  }

 private:
  std::string source_;
  std::string prefix_;
};

// "host", "host:port", "[v6 address]" or "[v6 address]:port"; a bare IPv6
// address has no port.  `port` when none is given.
Result<KmipServer> parse_server(const TableReader& reader, const std::string& text,
                                std::uint16_t port) {
  auto invalid = [&](const std::string& why) {
    return reader.error("servers", "'" + text + "': " + why);
  };
  std::string host = text;
  std::string port_text;
  bool has_port = false;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string::npos || (close + 1 < text.size() && text[close + 1] != ':')) {
      return invalid("expected [address] or [address]:port");
    }
    host = text.substr(1, close - 1);
    has_port = close + 1 < text.size();
    port_text = has_port ? text.substr(close + 2) : "";
  } else if (const auto colon = text.find(':');
             colon != std::string::npos && text.find(':', colon + 1) == std::string::npos) {
    host = text.substr(0, colon);
    has_port = true;
    port_text = text.substr(colon + 1);
  }
  if (host.empty()) {
    return invalid("no host");
  }
  if (has_port) {
    char* end = nullptr;
    const unsigned long value = std::strtoul(port_text.c_str(), &end, 10);
    if (port_text.empty() || *end != '\0' || value < 1 || value > 65535) {
      return invalid("port must be between 1 and 65535");
    }
    port = static_cast<std::uint16_t>(value);
  }
  return KmipServer{host, port};
}

// `servers` replaces host: the first is the server CMK URIs name, the
// others are its failover.
Status apply_server_list(const TableReader& reader, const std::vector<std::string>& list,
                         KmipEndpoint& endpoint) {
  if (!endpoint.host.empty()) {
    return reader.error("servers", "give either host (one server) or servers, not both");
  }
  if (list.empty()) {
    return reader.error("servers", "must list at least one server");
  }
  for (const std::string& text : list) {
    ENVCRYPT_ASSIGN_OR_RETURN(KmipServer server, parse_server(reader, text, endpoint.port));
    endpoint.failover.push_back(std::move(server));
  }
  endpoint.host = endpoint.failover.front().host;
  endpoint.port = endpoint.failover.front().port;
  endpoint.failover.erase(endpoint.failover.begin());
  return OkStatus();
}

Status parse_kmip_endpoint(const toml::table& table, const std::filesystem::path& source,
                           const std::string& name, KmipEndpoint& endpoint) {
  TableReader reader(source, "kms.kmip." + name);
  endpoint.name = name;
  std::optional<std::vector<std::string>> server_list;
  for (const auto& [key, node] : table) {
    const std::string_view k = key.str();
    if (k == "servers") {
      ENVCRYPT_ASSIGN_OR_RETURN(server_list, reader.strings(k, node));
    } else if (k == "deadline_ms") {
      ENVCRYPT_ASSIGN_OR_RETURN(
          std::int64_t deadline,
          reader.integer(k, node, 1, std::numeric_limits<std::uint32_t>::max()));
      endpoint.deadline_ms = static_cast<std::uint32_t>(deadline);
    } else if (k == "host") {
      ENVCRYPT_ASSIGN_OR_RETURN(endpoint.host, reader.string(k, node));
    } else if (k == "port") {
      ENVCRYPT_ASSIGN_OR_RETURN(std::int64_t port, reader.integer(k, node, 1, 65535));
      endpoint.port = static_cast<std::uint16_t>(port);
    } else if (k == "ca") {
      ENVCRYPT_ASSIGN_OR_RETURN(endpoint.ca, reader.absolute_path(k, node));
    } else if (k == "cert") {
      ENVCRYPT_ASSIGN_OR_RETURN(endpoint.cert, reader.absolute_path(k, node));
    } else if (k == "key") {
      ENVCRYPT_ASSIGN_OR_RETURN(endpoint.key, reader.absolute_path(k, node));
    } else if (k == "timeout_ms") {
      ENVCRYPT_ASSIGN_OR_RETURN(
          std::int64_t timeout,
          reader.integer(k, node, 1, std::numeric_limits<std::uint32_t>::max()));
      endpoint.timeout_ms = static_cast<std::uint32_t>(timeout);
    } else {
      return reader.unknown_key(k);
    }
  }
  // After the loop, so that port, wherever it stands, is the servers' default.
  if (server_list.has_value()) {
    ENVCRYPT_TRY(apply_server_list(reader, *server_list, endpoint));
  }
  if (endpoint.host.empty()) {
    return reader.error("host", "missing (every KMIP endpoint needs a host or servers)");
  }
  return OkStatus();
}

Status parse_kms(const toml::table& kms, const std::filesystem::path& source, Config& config) {
  TableReader reader(source, "kms");
  for (const auto& [key, node] : kms) {
    const std::string_view k = key.str();
    if (k == "local") {
      ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* local, reader.table(k, node));
      TableReader local_reader(source, "kms.local");
      for (const auto& [lkey, lnode] : *local) {
        const std::string_view lk = lkey.str();
        if (lk == "dir") {
          ENVCRYPT_ASSIGN_OR_RETURN(config.local_dir, local_reader.absolute_path(lk, lnode));
        } else if (lk == "root_key") {
          ENVCRYPT_ASSIGN_OR_RETURN(config.local_root_key, local_reader.absolute_path(lk, lnode));
        } else if (lk == "tpm_tcti") {
          ENVCRYPT_ASSIGN_OR_RETURN(config.local_tpm_tcti, local_reader.tcti(lk, lnode));
        } else {
          return local_reader.unknown_key(lk);
        }
      }
    } else if (k == "kmip") {
      ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* kmip, reader.table(k, node));
      TableReader kmip_reader(source, "kms.kmip");
      for (const auto& [name, endpoint_node] : *kmip) {
        ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* endpoint_table,
                                  kmip_reader.table(name.str(), endpoint_node));
        KmipEndpoint endpoint;
        ENVCRYPT_TRY(
            parse_kmip_endpoint(*endpoint_table, source, std::string(name.str()), endpoint));
        config.kmip_endpoints.emplace(endpoint.name, std::move(endpoint));
      }
    } else {
      return reader.unknown_key(k);
    }
  }
  return OkStatus();
}

Status parse_boot(const toml::table& boot, const std::filesystem::path& source, Config& config) {
  TableReader reader(source, "boot");
  for (const auto& [key, node] : boot) {
    const std::string_view k = key.str();
    if (k == "auto_attach") {
      ENVCRYPT_ASSIGN_OR_RETURN(config.boot.auto_attach, reader.boolean(k, node));
    } else if (k == "attach_timeout_seconds") {
      // At most an hour: a boot is better failed than waiting longer.
      ENVCRYPT_ASSIGN_OR_RETURN(std::int64_t seconds, reader.integer(k, node, 0, 3600));
      config.boot.attach_timeout = std::chrono::seconds(seconds);
    } else {
      return reader.unknown_key(k);
    }
  }
  return OkStatus();
}

// PCR indexes as TPM 2.0 numbers them (0..23), sorted, each once.
Result<std::vector<std::uint32_t>> pcr_indexes(const TableReader& reader, std::string_view key,
                                               const toml::node& node) {
  const auto* array = node.as_array();
  if (array == nullptr) {
    return reader.error(key,
                        "expected an array of PCR numbers, got " + std::string(type_name(node)));
  }
  std::vector<std::uint32_t> pcrs;
  for (const toml::node& element : *array) {
    ENVCRYPT_ASSIGN_OR_RETURN(std::int64_t pcr, reader.integer(key, element, 0, 23));
    if (std::find(pcrs.begin(), pcrs.end(), pcr) != pcrs.end()) {
      return reader.error(key, "PCR " + std::to_string(pcr) + " is listed twice");
    }
    pcrs.push_back(static_cast<std::uint32_t>(pcr));
  }
  std::sort(pcrs.begin(), pcrs.end());
  return pcrs;
}

// A disk as [outage_cache] disks names it: "*", a disk uuid or an
// envcrypttab name (printable, no '/' or space, as mapping names).
Status check_cache_disk(const TableReader& reader, const std::string& disk) {
  const bool plain =
      !disk.empty() && disk.size() <= 127 &&
      std::all_of(disk.begin(), disk.end(), [](char c) { return c > ' ' && c < 0x7f && c != '/'; });
  if (!plain) {
    return reader.error(
        "disks", "'" + printable(disk) + "' is not \"*\", a disk uuid or an envcrypttab name");
  }
  return OkStatus();
}

Status parse_outage_cache(const toml::table& table, const std::filesystem::path& source,
                          Config& config) {
  TableReader reader(source, "outage_cache");
  OutageCacheConfig& cache = config.outage_cache;
  for (const auto& [key, node] : table) {
    const std::string_view k = key.str();
    if (k == "disks") {
      ENVCRYPT_ASSIGN_OR_RETURN(cache.disks, reader.strings(k, node));
      for (const std::string& disk : cache.disks) {
        ENVCRYPT_TRY(check_cache_disk(reader, disk));
      }
    } else if (k == "max_age") {
      ENVCRYPT_ASSIGN_OR_RETURN(std::string text, reader.string(k, node));
      auto age = parse_duration(text, kMaxOutageCacheAge);
      if (!age.ok()) {
        return reader.error(k, age.error().message());
      }
      if (age->count() == 0) {
        return reader.error(k, "must be longer than 0");
      }
      cache.max_age = *age;
    } else if (k == "dir") {
      ENVCRYPT_ASSIGN_OR_RETURN(cache.dir, reader.absolute_path(k, node));
    } else if (k == "pcrs") {
      ENVCRYPT_ASSIGN_OR_RETURN(cache.pcrs, pcr_indexes(reader, k, node));
    } else {
      return reader.unknown_key(k);
    }
  }
  return OkStatus();
}

std::string default_principal() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    return "host/localhost";
  }
  return std::string("host/") + host;
}

}  // namespace

bool OutageCacheConfig::enabled_for(const std::string& name, const std::string& disk_uuid) const {
  return std::any_of(disks.begin(), disks.end(), [&](const std::string& disk) {
    return disk == "*" || disk == name || (!disk_uuid.empty() && disk == disk_uuid);
  });
}

std::vector<KmipServer> KmipEndpoint::servers() const {
  std::vector<KmipServer> all{{host, port}};
  all.insert(all.end(), failover.begin(), failover.end());
  return all;
}

std::chrono::milliseconds KmipEndpoint::call_deadline() const {
  if (deadline_ms != 0) {
    return std::chrono::milliseconds(deadline_ms);
  }
  return std::chrono::milliseconds(timeout_ms) * static_cast<long>(1 + failover.size());
}

Result<Config> parse_config(const std::string& toml_text, const std::filesystem::path& source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source.string());
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Error(ErrorCode::kUsage, "config " + source.string() + ":" + std::to_string(where.line) +
                                        ":" + std::to_string(where.column) + ": " +
                                        std::string(e.description()));
  }

  Config config;
  config.source = source;
  TableReader reader(source, "");
  for (const auto& [key, node] : root) {
    const std::string_view k = key.str();
    if (k == "region") {
      ENVCRYPT_ASSIGN_OR_RETURN(config.region, reader.string(k, node));
      if (config.region.empty() || config.region.find('/') != std::string::npos) {
        return reader.error(k, "must be a non-empty name without '/'");
      }
    } else if (k == "principal") {
      ENVCRYPT_ASSIGN_OR_RETURN(config.principal, reader.string(k, node));
    } else if (k == "default_cmk") {
      ENVCRYPT_ASSIGN_OR_RETURN(config.default_cmk, reader.string(k, node));
    } else if (k == "kms") {
      ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* kms, reader.table(k, node));
      ENVCRYPT_TRY(parse_kms(*kms, source, config));
    } else if (k == "boot") {
      ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* boot, reader.table(k, node));
      ENVCRYPT_TRY(parse_boot(*boot, source, config));
    } else if (k == "outage_cache") {
      ENVCRYPT_ASSIGN_OR_RETURN(const toml::table* cache, reader.table(k, node));
      ENVCRYPT_TRY(parse_outage_cache(*cache, source, config));
    } else {
      return reader.unknown_key(k);
    }
  }
  if (config.principal.empty()) {
    config.principal = default_principal();
  }
  return config;
}

Result<Config> load_config(const std::optional<std::filesystem::path>& explicit_path) {
  std::filesystem::path path = kDefaultConfigPath;
  bool must_exist = false;
  if (explicit_path) {
    path = *explicit_path;
    must_exist = true;
  } else if (const char* env = std::getenv("ENVCRYPT_CONFIG"); env != nullptr && *env != '\0') {
    path = env;
    must_exist = true;
  }

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT && !must_exist) {
      Config defaults;
      defaults.principal = default_principal();
      return defaults;
    }
    return error_from_errno(ErrorCode::kUsage, "config " + path.string(), err);
  }
  auto text = read_checked_config(fd, path);
  ::close(fd);
  if (!text.ok()) {
    return text.error();
  }
  return parse_config(*text, path);
}

}  // namespace envcrypt
