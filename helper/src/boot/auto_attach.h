// Auto-attach ([boot] auto_attach = true in envcrypt.conf): every envcrypt
// disk that appears is attached, not only those envcrypttab lists.  A disk
// that no line names gets an implicit entry "envcrypt-<uuid>" that finds the
// disk by its header uuid, so the udev rules, the attach unit
// (envcrypt-attach@envcrypt-<uuid>.service) and attach-all/detach-all
// --name all work for it unchanged.  Documentation/admin-guide/boot.rst.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/crypttab.h"

namespace envcrypt {

inline constexpr std::string_view kAutoNamePrefix = "envcrypt-";

// "envcrypt-<uuid>"
std::string auto_entry_name(std::string_view uuid);

// The uuid in an auto entry's name, if `name` is one ("envcrypt-" followed
// by a canonical lower-case uuid).
std::optional<std::string> uuid_of_auto_name(std::string_view name);

// The implicit entry for the disk with this uuid.  A disk whose CMK lives on
// a KMIP server needs the network, like a netdev line.
TabEntry auto_entry(const std::string& uuid, std::string_view cmk_uri);

// Adds an implicit entry for every name in `names` that is an auto name no
// entry of `table` already uses.
void add_auto_entries(std::vector<TabEntry>& table, const std::vector<std::string>& names);

}  // namespace envcrypt
