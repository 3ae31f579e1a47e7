// Device-mapper through libdevmapper: create a mapping from one table line,
// remove it, and read back its table, status and identity.  Synchronises
// with udev when udevd runs; otherwise libdevmapper creates the /dev/mapper
// nodes itself.  libdevmapper's own log lines are captured into the errors
// returned here instead of being printed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace envcrypt {

struct DmTarget {
  std::uint64_t start = 0;   // 512-byte sectors
  std::uint64_t length = 0;  // 512-byte sectors
  std::string type;
  std::string params;
};

struct DmDevice {
  std::string name;
  std::string uuid;  // device-mapper uuid, may be empty
  std::uint32_t major = 0;
  std::uint32_t minor = 0;
  std::int32_t open_count = 0;
  bool read_only = false;
  bool suspended = false;
};

// Creates, loads and resumes `name` with one target.  The table load runs in
// the calling thread, so a key in this thread's keyring is found.
// /dev/mapper/control opens: the kernel has device-mapper, so mappings may exist.
bool device_mapper_available();

Status create_mapping(const std::string& name, const std::string& uuid, const DmTarget& target,
                      bool read_only);
// Removes `name` (retrying while udev briefly holds it open).
Status remove_mapping(const std::string& name);
// kNotFound when there is no such mapping.
Result<DmDevice> mapping_info(const std::string& name);
Result<std::vector<DmDevice>> list_mappings();
// The live table's first target; `status` selects STATUSTYPE_INFO instead of TABLE.
Result<DmTarget> mapping_target(const std::string& name, bool status);

}  // namespace envcrypt
