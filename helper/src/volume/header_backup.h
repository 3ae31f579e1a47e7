// `envcryptctl header-backup` / `header-restore`, in the spirit of
// cryptsetup's luksHeaderBackup/luksHeaderRestore.  A backup file has the
// layout of a detached header file (both copies at their offsets), so
// `inspect --header FILE` reads it.  Restoring writes the header to both
// copies in the header writer's order (secondary, flush, primary, flush), so
// a crash leaves the old header or the restored one, never neither.
#pragma once

#include <filesystem>

#include "header/header.h"
#include "util/result.h"

namespace envcrypt {

// Writes the current content of DEVICE's two header copies to a new FILE
// (0600; refuses an existing FILE; temp file then a rename that never
// replaces).  Refuses a device without a valid header copy.
Result<HeaderSelection> backup_header(const std::filesystem::path& device,
                                      const std::filesystem::path& file);

// Restores FILE's header onto DEVICE.  Refuses: a FILE without a valid
// header, a detached header (data offset 0) onto a device, a DEVICE that is
// attached (one of our mappings uses it), and, unless `force`, a header
// whose uuid differs from the one DEVICE carries or a DEVICE whose uuid
// cannot be read at all.
Result<DiskHeader> restore_header(const std::filesystem::path& device,
                                  const std::filesystem::path& file, bool force);

}  // namespace envcrypt
