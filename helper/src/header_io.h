// Reading and writing the two header copies on a device, image or detached
// header file.  Writers put one copy at a time, secondary first, with a flush
// after each, so a crash or torn write leaves at least one valid copy: the
// old state or the new, never neither (Documentation/format/on-disk.rst).
#pragma once

#include <filesystem>

#include "blockdev.h"
#include "header.h"
#include "result.h"

namespace envcrypt {

// Reads both copies and selects the header.  Never writes.  Errors are
// prefixed with the device's path.
Result<HeaderSelection> read_header(const Device& device);

// Writes `header` to both copies: secondary, flush, primary, flush.
Status write_header(const Device& device, const DiskHeader& header);

// Zeroes [0, bytes) and flushes: removes old signatures and header copies
// before a new header is written, so a crash mid-format leaves no stale copy.
Status erase_header_area(const Device& device, std::uint64_t bytes);

}  // namespace envcrypt
