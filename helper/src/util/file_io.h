// Reading and writing files: the one read loop, the one write loop, the one
// positioned write loop, the one way to create or replace a whole file
// durably, and the directory sync that makes a created, renamed or removed
// name last.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/result.h"

namespace envcrypt {

// Reads `fd` from where it stands to its end, resuming after short reads
// and EINTR.  An error reads "<what>: <strerror>"; more than `max_bytes`
// is ErrorCode::kUsage, "<what>: more than <max_bytes> bytes", found
// without reading further, so an endless or growing file cannot exhaust
// memory.
Result<std::string> read_to_end(int fd, const std::string& what,
                                std::size_t max_bytes = std::numeric_limits<std::size_t>::max());

// The whole of the file at `path`, which may hold at most `max_bytes`: the
// bound for a file a user names (a table, a token, wrapped material), so
// that /dev/zero or a huge file is refused instead of read into memory.
// Errors name the file: "<path>: <strerror>" (ErrorCode::kNotFound when it
// does not exist, else kIo), "<path>: more than <max_bytes> bytes"
// (kUsage), "<path>: a pipe or socket, not a file" (kUsage: reading one
// could wait for ever).
Result<std::string> read_file_at_most(const std::filesystem::path& path, std::size_t max_bytes);

// Writes all of `data` to `fd`, resuming after short writes and EINTR.  An
// error reads "<what>: <strerror>"; a write that makes no progress is
// reported as ENOSPC rather than retried for ever.
Status write_all(int fd, std::string_view data, const std::string& what);

// Writes all of `data` at `offset` of `fd`, resuming after short writes and
// EINTR.  An error reads "<what> at <offset of the failed write>:
// <strerror>"; a write that makes no progress is reported as ENOSPC.
Status pwrite_all(int fd, std::span<const std::uint8_t> data, std::uint64_t offset,
                  const std::string& what);

// fsync(2) on a directory, so that a file created, renamed or removed in it
// stays so after a crash.
Status fsync_directory(const std::filesystem::path& dir);

// What write_file_durably does when the name is taken.
enum class IfExists {
  kReplace,  // replace a regular file (never one a symlink points to)
  kRefuse,   // leave whatever is there, even if it appeared meanwhile
};

struct FileWriteOptions {
  mode_t mode = 0600;  // exactly this: the umask does not apply
  // Unset: whatever a new file gets (the writer's uid, its or the
  // directory's gid).
  std::optional<uid_t> owner = std::nullopt;
  std::optional<gid_t> group = std::nullopt;
  IfExists if_exists = IfExists::kReplace;
  // The caller holds a lock that every writer of `path` takes.  The temp file
  // then has one fixed name, and one left by a killed writer is removed
  // first instead of staying for ever beside the file (a keystore's would
  // keep key records the keystore may since have dropped).
  bool writers_hold_a_lock = false;
};

// Makes `path` hold exactly `contents`, so that after a crash it holds the
// old contents or the new, never a part.  The bytes go to a hidden temp file
// beside it (created O_EXCL|O_NOFOLLOW: ".<name>.tmp-<pid>-<n>", or
// ".<name>.tmp" under writers_hold_a_lock), which gets the mode and owner, is
// synced, and is renamed over `path`; then the directory is synced.  With
// kRefuse the rename is renameat2(RENAME_NOREPLACE) (link(2) where the file
// system lacks it), so a name that appeared meanwhile is not clobbered.
// Errors, each naming the file:
//   kConflict  `path` exists and kRefuse was asked ("<path> exists:
//              refusing to overwrite it"), or `path` is a symbolic link
//              (never replaced, never written through);
//   kIo        any system call failed ("<step> <file>: <strerror>").
// The temp file is gone after every failure.
Status write_file_durably(const std::filesystem::path& path, std::string_view contents,
                          const FileWriteOptions& options = {});

}  // namespace envcrypt
