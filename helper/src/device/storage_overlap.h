// Where a device or image file keeps its bytes, resolved down to what holds
// them (a partition to its whole disk and range, a device-mapper or md device
// to the devices under it, a loop device to its backing file), so `image
// encrypt` can refuse a SRC and DST that share storage: the same file, the
// same disk, a partition of the disk the other is, a loop device over the
// other.  Read from sysfs; the root is a parameter for the tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "device/blockdev.h"
#include "util/result.h"

namespace envcrypt {

// A byte range of one file (by inode) or one whole block device (by number).
struct StorageExtent {
  bool is_file = false;
  dev_t dev = 0;  // file: st_dev; block: the whole disk's number
  ino_t ino = 0;  // file only
  std::uint64_t start = 0;
  std::uint64_t size = UINT64_MAX;  // to the end, when not known
  [[nodiscard]] std::string describe() const;
};

// The extents `device` occupies.  Devices under a device-mapper or md device
// count whole (its table is not read): erring towards refusing.
Result<std::vector<StorageExtent>> storage_extents(const Device& device,
                                                   const std::filesystem::path& sysfs = "/sys");

// ErrorCode::kUsage, "refusing to encrypt in place: ...", when SRC and DST
// share a byte of storage.
Status refuse_shared_storage(const Device& src, const Device& dst,
                             const std::filesystem::path& sysfs = "/sys");

}  // namespace envcrypt
