// A directory of small files, each replaced atomically under its own lock:
// the read-modify-write of a file runs while holding flock() on the file's
// lock, and the new contents reach disk as temp file, fsync, rename, fsync
// of the directory.  A writer killed at any instant leaves the old or the new
// contents; writers in different processes never lose each other's updates.
// Every file and the directory itself must be private to the owner (no group
// or world bits); anything else is refused, naming the path and its mode.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "util/file_io.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace envcrypt {

// Refuses a path that is group/world accessible or not owned by this user:
// ErrorCode::kDenied, "<path> has mode 0644; refusing ...".
Status check_private(const std::filesystem::path& path);
// The same check on an open descriptor (fstat), so the file checked is the
// file read; `path` only names it in the message.
Status check_private_fd(int fd, const std::filesystem::path& path);

// Creates `dir` and any missing parents with mode 0700, or checks that an
// existing `dir` is private.
Status ensure_private_directory(const std::filesystem::path& dir);

// Whether `path` is on a file system mounted read-only (a read-only root,
// or one not yet remounted read-write at boot).
bool on_read_only_file_system(const std::filesystem::path& path);

// Reads a private file; std::nullopt when it does not exist.
Result<std::optional<std::string>> read_private_file(const std::filesystem::path& path);

// An exclusive flock() on a lock file, held until destruction.
class FileLock {
 public:
  static Result<FileLock> acquire(const std::filesystem::path& lock_path);

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the flock
};

class Keystore {
 public:
  // Opens `dir`, creating it (0700) when missing.
  static Result<Keystore> open(const std::filesystem::path& dir);

  // Given the current contents (std::nullopt when the file does not exist),
  // returns the new contents, std::nullopt to leave the file as it is, or an
  // error that aborts the update.
  using Updater =
      std::function<Result<std::optional<std::string>>(const std::optional<std::string>& current)>;

  // Runs `updater` under the exclusive lock of `name` and commits its answer.
  Status update(std::string_view name, const Updater& updater) const;
  // Reads `name` under its lock; std::nullopt when it does not exist.
  Result<std::optional<std::string>> read(std::string_view name) const;

  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] std::filesystem::path path_of(std::string_view name) const;
  [[nodiscard]] std::filesystem::path lock_path_of(std::string_view name) const;

 private:
  explicit Keystore(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
};

}  // namespace envcrypt
