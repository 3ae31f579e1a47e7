// Reading and writing the two header copies on a device, image or detached
// header file.  Writers put one copy at a time, secondary first, with a flush
// after each, so a crash or torn write leaves at least one valid copy: the
// old state or the new, never neither (Documentation/format/on-disk.rst).
#pragma once

#include <filesystem>
#include <functional>
#include <string_view>

#include "device/blockdev.h"
#include "header/header.h"
#include "util/result.h"

namespace envcrypt {

// Reads both copies and selects the header.  Never writes.  Errors are
// prefixed with the device's path.
Result<HeaderSelection> read_header(const Device& device);

// Writes `header` to both copies: secondary, flush, primary, flush.
Status write_header(const Device& device, const DiskHeader& header);

// The steps of update_header, in order, as its hook sees them:
//   first-copy-written   the copy not holding the current header has the new one
//   first-copy-flushed   ... and it is durable: the new header is now in force
//   second-copy-written  the other copy has it too
//   second-copy-flushed  both copies durable
using UpdateStepHook = std::function<void(std::string_view step)>;

// Replaces the header `current` (as read_header found it on `device`) by
// `next`, with the sequence number one above the current one.  The copy
// that does not hold the current header is written and flushed first, so
// at every instant one valid copy holds either the current header or the
// new one: a crash or torn write before the first flush leaves the current
// header in force, any later one the new header.  (Writing the secondary
// first regardless would lose the disk if the primary were the only valid
// copy and the write tore.)  Refuses with ErrorCode::kConflict when the
// device no longer holds `current` (another writer got there first).
Status update_header(const Device& device, const HeaderSelection& current, DiskHeader next,
                     const UpdateStepHook& on_step = {});

// Refuses (ErrorCode::kConflict) when a copy on `device`, or in `selection`,
// was written by a newer envcryptctl: this version never replaces such a
// copy, since that would lose whatever the newer format holds.
Status refuse_newer_copies(const Device& device, const HeaderSelection& selection);
Status refuse_newer_copies(const Device& device);

// Whether either copy carries the envcrypt magic, valid or not: a disk that
// must not be formatted over without --force, even when nothing reads it.
Result<bool> has_header_magic(const Device& device);

// Zeroes [0, bytes) and flushes: removes old signatures and header copies
// before a new header is written, so a crash mid-format leaves no stale copy.
Status erase_header_area(const Device& device, std::uint64_t bytes);

}  // namespace envcrypt
