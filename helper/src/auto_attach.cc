#include "auto_attach.h"

#include <algorithm>
#include <cctype>

namespace envcrypt {
namespace {

bool is_canonical_uuid(std::string_view text) {
  constexpr std::size_t kLength = 36;
  if (text.size() != kLength) {
    return false;
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    const char c = text[i];
    if (dash_position ? c != '-'
                      : !(std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string auto_entry_name(std::string_view uuid) {
  return std::string(kAutoNamePrefix) + std::string(uuid);
}

std::optional<std::string> uuid_of_auto_name(std::string_view name) {
  if (!name.starts_with(kAutoNamePrefix)) {
    return std::nullopt;
  }
  name.remove_prefix(kAutoNamePrefix.size());
  if (!is_canonical_uuid(name)) {
    return std::nullopt;
  }
  return std::string(name);
}

TabEntry auto_entry(const std::string& uuid, std::string_view cmk_uri) {
  TabEntry entry;
  entry.name = auto_entry_name(uuid);
  entry.uuid = uuid;
  entry.remote_kms = cmk_uri.starts_with("kmip://");
  entry.source = "[boot] auto_attach";
  return entry;
}

void add_auto_entries(std::vector<TabEntry>& table, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    const auto uuid = uuid_of_auto_name(name);
    const bool listed = std::any_of(table.begin(), table.end(),
                                    [&name](const TabEntry& entry) { return entry.name == name; });
    if (uuid && !listed) {
      table.push_back(auto_entry(*uuid, ""));
    }
  }
}

}  // namespace envcrypt
