#include "util/keystore.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "util/file_io.h"

namespace envcrypt {
namespace {

std::string octal_mode(mode_t mode) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return text.data();
}

Status check_private_stat(const std::filesystem::path& path, const struct stat& st) {
  if ((st.st_mode & 077) != 0) {
    return Error(ErrorCode::kDenied, path.string() + " has mode " + octal_mode(st.st_mode) +
                                         ": refusing a key file or directory that group or "
                                         "others can access (chmod go-rwx " +
                                         path.string() + ")");
  }
  if (st.st_uid != geteuid()) {
    return Error(ErrorCode::kDenied, path.string() + " is owned by uid " +
                                         std::to_string(st.st_uid) + ", not by uid " +
                                         std::to_string(geteuid()) + ": refusing it");
  }
  return OkStatus();
}

Status check_name(std::string_view name) {
  const bool valid = !name.empty() && name.front() != '.' &&
                     name.find_first_not_of(
                         "abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == std::string_view::npos;
  if (!valid) {
    return Error(ErrorCode::kInternal, "invalid keystore file name '" + std::string(name) + "'");
  }
  return OkStatus();
}

}  // namespace

Status check_private(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  return check_private_stat(path, st);
}

Status check_private_fd(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  return check_private_stat(path, st);
}

Status ensure_private_directory(const std::filesystem::path& dir) {
  if (dir.empty()) {
    return Error(ErrorCode::kUsage, "keystore directory is not set");
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Error(ErrorCode::kIo, dir.string() + " is not a directory");
    }
    return check_private_stat(dir, st);
  }
  if (errno != ENOENT) {
    return error_from_errno(ErrorCode::kIo, "stat " + dir.string(), errno);
  }
  const std::filesystem::path parent = dir.parent_path();
  if (!parent.empty() && parent != dir && ::access(parent.c_str(), F_OK) != 0) {
    ENVCRYPT_TRY(ensure_private_directory(parent));
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return error_from_errno(ErrorCode::kIo, "mkdir " + dir.string(), errno);
  }
  if (!parent.empty()) {
    ENVCRYPT_TRY(fsync_directory(parent));
  }
  return check_private(dir);
}

Result<std::optional<std::string>> read_private_file(const std::filesystem::path& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      return std::optional<std::string>();
    }
    return error_from_errno(ErrorCode::kIo, "open " + path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kIo, path.string() + " is not a regular file");
  }
  ENVCRYPT_TRY(check_private_stat(path, st));
  ENVCRYPT_ASSIGN_OR_RETURN(std::string contents, read_to_end(fd.get(), "read " + path.string()));
  return std::optional<std::string>(std::move(contents));
}

Result<FileLock> FileLock::acquire(const std::filesystem::path& lock_path) {
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return error_from_errno(ErrorCode::kIo, "open lock " + lock_path.string(), errno);
  }
  FileLock lock{UniqueFd(fd)};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return error_from_errno(ErrorCode::kIo, "stat " + lock_path.string(), errno);
  }
  ENVCRYPT_TRY(check_private_stat(lock_path, st));
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      return error_from_errno(ErrorCode::kIo, "flock " + lock_path.string(), errno);
    }
  }
  return lock;
}

Result<Keystore> Keystore::open(const std::filesystem::path& dir) {
  ENVCRYPT_TRY(ensure_private_directory(dir));
  return Keystore(dir);
}

std::filesystem::path Keystore::path_of(std::string_view name) const { return dir_ / name; }

std::filesystem::path Keystore::lock_path_of(std::string_view name) const {
  return dir_ / ("." + std::string(name) + ".lock");
}

bool on_read_only_file_system(const std::filesystem::path& path) {
  struct statvfs st {};
  return ::statvfs(path.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY) != 0;
}

Status Keystore::update(std::string_view name, const Updater& updater) const {
  ENVCRYPT_TRY(check_name(name));
  Result<FileLock> lock = FileLock::acquire(lock_path_of(name));
  // On a read-only file system no lock file can be made, and no writer can
  // change the file either: reading without the lock is safe, and an update
  // that changes nothing (an unwrap) still works.
  if (!lock.ok() && !on_read_only_file_system(dir_)) {
    return lock.error();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> current,
                            read_private_file(path_of(name)));
  ENVCRYPT_ASSIGN_OR_RETURN(const std::optional<std::string> next, updater(current));
  if (next && next != current) {
    if (!lock.ok()) {
      return Error(ErrorCode::kIo, dir_.string() +
                                       " is on a read-only file system: the keystore cannot "
                                       "change now (" +
                                       lock.error().message() + ")");
    }
    ENVCRYPT_TRY(write_file_durably(path_of(name), *next, {.writers_hold_a_lock = true}));
  }
  return OkStatus();
}

Result<std::optional<std::string>> Keystore::read(std::string_view name) const {
  ENVCRYPT_TRY(check_name(name));
  // The rename makes every read see a whole file, so readers need no lock.
  return read_private_file(path_of(name));
}

}  // namespace envcrypt
