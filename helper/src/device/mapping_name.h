// The one rule for device-mapper names of envcrypt disks, used by
// envcrypttab, attach, detach, status and the files named after a disk under
// the run directory: letters, digits and . _ + -, not starting with '-', not
// "." or "..", and short enough that the mapping's dm uuid fits.
#pragma once

#include <cstddef>
#include <string_view>

#include "util/result.h"

namespace envcrypt {

// The dm uuid is "ENVCRYPT-" + 32 hex digits of the disk uuid + "-" + name,
// and must fit DM_UUID_LEN (129 bytes with the NUL): 128 - 42 = 86.
inline constexpr std::size_t kMaxMappingName = 86;

// ErrorCode::kUsage naming the first offending character, printed escaped.
Status check_mapping_name(std::string_view name);

}  // namespace envcrypt
