#include "boot/auto_attach.h"

#include <algorithm>

#include "util/uuid.h"

namespace envcrypt {
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
