// Writing files: the one write loop, and the directory sync that makes a
// created, renamed or removed name last.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "result.h"

namespace envcrypt {

// Writes all of `data` to `fd`, resuming after short writes and EINTR.  An
// error reads "<what>: <strerror>"; a write that makes no progress is
// reported as ENOSPC rather than retried for ever.
Status write_all(int fd, std::string_view data, const std::string& what);

// fsync(2) on a directory, so that a file created, renamed or removed in it
// stays so after a crash.
Status fsync_directory(const std::filesystem::path& dir);

}  // namespace envcrypt
