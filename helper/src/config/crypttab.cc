#include "config/crypttab.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string_view>

#include "device/mapping_name.h"
#include "util/file_io.h"
#include "util/printable.h"
#include "util/uuid.h"

namespace envcrypt {
namespace {

// crypttab(5) options that make no sense for an envcrypt disk: the header
// holds the cipher and geometry, the KMS holds the key.
constexpr std::array kCryptsetupOnlyOptions = {
    "luks",           "plain",        "bitlk",        "tcrypt",     "cipher",
    "hash",           "size",         "sector-size",  "offset",     "skip",
    "keyfile-offset", "keyfile-size", "tries",        "keyslot",    "key-slot",
    "password-echo",  "tpm2-device",  "fido2-device", "pkcs11-uri", "veracrypt",
    "swap",           "tmp"};

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) {
      ++i;
    }
    const std::size_t start = i;
    while (i < line.size() && !is_blank(line[i])) {
      ++i;
    }
    if (i > start) {
      fields.push_back(line.substr(start, i - start));
    }
  }
  return fields;
}

Result<std::string> canonical_uuid(std::string_view text) {
  if (const auto uuid = parse_uuid(text)) {
    return uuid_to_string(*uuid);
  }
  return Error(ErrorCode::kUsage,
               "'" + printable(text) + "' is not a uuid (8-4-4-4-12 hexadecimal digits)");
}

// Paths end up in unit files (RequiresMountsFor=) and logs: printable ASCII
// only, so each can be escaped for both and stays one word.
Status check_path_bytes(const char* what, std::string_view path) {
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) {
      return Error(ErrorCode::kUsage, std::string(what) + " '" + printable(path) + "' contains '" +
                                          escaped_byte(c) + "' (printable ASCII only)");
    }
  }
  return OkStatus();
}

Status parse_device(std::string_view spec, TabEntry& entry) {
  const auto eq = spec.find('=');
  if (eq != std::string_view::npos) {
    std::string tag(spec.substr(0, eq));
    std::transform(tag.begin(), tag.end(), tag.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (tag != "UUID") {
      return Error(ErrorCode::kUsage, "device '" + printable(spec) +
                                          "': only UUID=<envcrypt header uuid> or a path "
                                          "(/dev/..., /dev/disk/by-id/...) name a disk");
    }
    ENVCRYPT_ASSIGN_OR_RETURN(entry.uuid, canonical_uuid(spec.substr(eq + 1)));
    return OkStatus();
  }
  if (spec.front() != '/') {
    return Error(ErrorCode::kUsage,
                 "device '" + printable(spec) + "' is not an absolute path or UUID=<uuid>");
  }
  ENVCRYPT_TRY(check_path_bytes("device", spec));
  entry.device_path = std::filesystem::path(spec).lexically_normal();
  return OkStatus();
}

Status parse_option(std::string_view option, TabEntry& entry) {
  const auto eq = option.find('=');
  const std::string_view key = option.substr(0, eq);
  const std::string_view value = eq == std::string_view::npos ? "" : option.substr(eq + 1);
  const bool has_value = eq != std::string_view::npos;
  auto flag = [&](bool& target) -> Status {
    if (has_value) {
      return Error(ErrorCode::kUsage, "option '" + printable(key) + "' takes no value");
    }
    target = true;
    return OkStatus();
  };

  if (key == "readonly" || key == "read-only") {
    return flag(entry.read_only);
  }
  if (key == "discard") {
    return flag(entry.discard);
  }
  if (key == "nofail") {
    return flag(entry.nofail);
  }
  if (key == "noauto") {
    return flag(entry.noauto);
  }
  if (key == "initramfs") {
    return flag(entry.initramfs);
  }
  // crypttab(5)'s _netdev is about the device (iSCSI, NBD).  That the key
  // server is remote is said apart, by remote-kms; netdev, which meant that
  // before _netdev was the device's, keeps meaning it.
  if (key == "_netdev") {
    return flag(entry.remote_device);
  }
  if (key == "remote-kms" || key == "netdev") {
    return flag(entry.remote_kms);
  }
  if (key == "auto" || key == "fail") {  // the defaults, accepted as in crypttab(5)
    bool ignored = false;
    return flag(ignored);
  }
  if (key == "header") {
    if (value.empty() || value.front() != '/') {
      return Error(ErrorCode::kUsage, "option header= needs an absolute file path");
    }
    ENVCRYPT_TRY(check_path_bytes("header", value));
    entry.header_file = std::filesystem::path(value).lexically_normal();
    return OkStatus();
  }
  if (key == "x-systemd.device-timeout" || key == "device-timeout") {
    if (!has_value) {
      return Error(ErrorCode::kUsage, "option " + printable(key) + "= needs a duration");
    }
    ENVCRYPT_ASSIGN_OR_RETURN(entry.device_timeout, parse_duration(value, kMaxDeviceTimeout));
    return OkStatus();
  }
  if (std::find(kCryptsetupOnlyOptions.begin(), kCryptsetupOnlyOptions.end(), key) !=
      kCryptsetupOnlyOptions.end()) {
    return Error(ErrorCode::kUsage,
                 "option '" + printable(key) +
                     "' is a cryptsetup option that does not apply: the envcrypt header holds "
                     "the cipher and geometry, the KMS the key");
  }
  return Error(ErrorCode::kUsage, "unknown option '" + printable(option) + "'");
}

Status parse_options(std::string_view text, TabEntry& entry) {
  if (text == "-" || text == "none" || text == "defaults") {
    return OkStatus();
  }
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view option = text.substr(start, comma - start);
    if (option.empty()) {
      return Error(ErrorCode::kUsage, "empty option in '" + printable(text) + "'");
    }
    ENVCRYPT_TRY(parse_option(option, entry));
    start = comma + 1;
  }
  return OkStatus();
}

Result<TabEntry> parse_line(std::string_view line) {
  const std::vector<std::string_view> fields = split_fields(line);
  if (fields.size() < 2) {
    return Error(ErrorCode::kUsage, "expected 'name device [options]', found " +
                                        std::to_string(fields.size()) + " field");
  }
  if (fields.size() > 4) {
    return Error(ErrorCode::kUsage, "expected 'name device [options]', found " +
                                        std::to_string(fields.size()) + " fields");
  }
  TabEntry entry;
  ENVCRYPT_TRY(check_mapping_name(fields[0]));
  entry.name = fields[0];
  ENVCRYPT_TRY(parse_device(fields[1], entry));
  const std::string_view options = fields.size() >= 3 ? fields.back() : "-";
  if (fields.size() == 4 && fields[2] != "none" && fields[2] != "-") {
    return Error(ErrorCode::kUsage,
                 "key file '" + printable(fields[2]) +
                     "': envcrypt disks take their key from the KMS; write 'none' or omit it");
  }
  ENVCRYPT_TRY(parse_options(options, entry));
  return entry;
}

}  // namespace

std::string TabEntry::device_spec() const {
  return uuid.empty() ? device_path.string() : "UUID=" + uuid;
}

Envcrypttab parse_envcrypttab(const std::string& text, const std::filesystem::path& file) {
  Envcrypttab tab;
  std::map<std::string, unsigned> name_lines;
  std::istringstream in(text);
  std::string line;
  unsigned number = 0;
  while (std::getline(in, line)) {
    ++number;
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') {
      continue;
    }
    const std::string where = printable(file.string()) + ":" + std::to_string(number);
    auto entry = parse_line(line);
    if (!entry.ok()) {
      tab.skipped.push_back(entry.error().with_context(where));
      continue;
    }
    if (auto [it, inserted] = name_lines.emplace(entry->name, number); !inserted) {
      tab.skipped.emplace_back(ErrorCode::kUsage, where + ": name '" + entry->name +
                                                      "' is already used on line " +
                                                      std::to_string(it->second));
      continue;
    }
    entry->source = where;
    entry->line = number;
    tab.entries.push_back(std::move(entry).value());
  }
  return tab;
}

std::filesystem::path envcrypttab_path(const std::optional<std::filesystem::path>& explicit_path) {
  if (explicit_path) {
    return *explicit_path;
  }
  if (const char* env = std::getenv("ENVCRYPT_TAB"); env != nullptr && *env != '\0') {
    return env;
  }
  return kDefaultTabPath;
}

Result<Envcrypttab> load_envcrypttab(const std::filesystem::path& path, bool missing_ok) {
  auto text = read_file_at_most(path, kMaxTableFile);
  if (!text.ok()) {
    if (text.error().code() != ErrorCode::kNotFound) {
      return text.error();
    }
    if (missing_ok) {
      return Envcrypttab{};
    }
    return Error(ErrorCode::kNotFound, path.string() + ": no such file");
  }
  return parse_envcrypttab(*text, path);
}

Result<Envcrypttab> read_envcrypttab(const std::string& tab_option) {
  const std::filesystem::path path = envcrypttab_path(
      tab_option.empty() ? std::nullopt : std::optional<std::filesystem::path>(tab_option));
  return load_envcrypttab(path, path == kDefaultTabPath);
}

void log_skipped_lines(const Envcrypttab& tab, std::ostream& err) {
  for (const Error& line : tab.skipped) {
    err << "envcryptctl: warning: " << line.message() << " (line skipped)\n";
  }
}

Result<std::vector<TabEntry>> read_envcrypttab_entries(const std::string& tab_option,
                                                       std::ostream& err) {
  ENVCRYPT_ASSIGN_OR_RETURN(Envcrypttab tab, read_envcrypttab(tab_option));
  log_skipped_lines(tab, err);
  return std::move(tab.entries);
}

}  // namespace envcrypt
