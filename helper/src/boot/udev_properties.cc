#include "boot/udev_properties.h"

#include <cctype>

namespace envcrypt {
namespace {

bool is_allowed(unsigned char c) {
  return std::isalnum(c) != 0 ||
         std::string_view("._:/@+-").find(static_cast<char>(c)) != std::string_view::npos;
}

std::string line(std::string_view key, std::string_view value) {
  return std::string(key) + "=" + udev_safe(value) + "\n";
}

// A unit name is systemd-escaped (letters, digits, ':', '_', '.', '@' and
// \xNN), so its backslashes stay; anything else becomes '_'.
std::string unit_line(std::string_view unit) {
  std::string out;
  for (const char c : unit) {
    out += c == '\\' || is_allowed(static_cast<unsigned char>(c)) ? c : '_';
  }
  return "ENVCRYPT_UNIT=" + out + "\n";
}

}  // namespace

std::string udev_safe(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    out += is_allowed(static_cast<unsigned char>(c)) ? c : '_';
  }
  return out;
}

std::string probe_output(const HeaderSelection& selection) {
  const DiskHeader& h = selection.header;
  const std::string uuid = uuid_to_string(h.uuid);
  std::string out = line("ID_FS_TYPE", "envcrypt") + line("ID_FS_USAGE", "crypto") +
                    line("ID_FS_VERSION", std::to_string(h.version)) + line("ID_FS_UUID", uuid) +
                    line("ID_FS_UUID_ENC", uuid);
  if (!h.label.empty()) {
    out += line("ID_FS_LABEL", h.label);
  }
  return out + line("ENVCRYPT_UUID", uuid) + line("ENVCRYPT_CMK", h.wrapped.cmk_uri);
}

std::string tab_match_output(const TabMatch& match) {
  const bool found = !match.name.empty();
  return line("ENVCRYPT_NAME", match.name) + unit_line(found ? match.unit : "") +
         line("ENVCRYPT_NETDEV", found ? (match.netdev ? "1" : "0") : "") +
         line("ENVCRYPT_NOAUTO", found ? (match.noauto ? "1" : "0") : "");
}

}  // namespace envcrypt
