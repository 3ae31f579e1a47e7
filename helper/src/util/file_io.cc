#include "util/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "util/unique_fd.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

// Names taken by temp files of killed writers are skipped, up to this many.
constexpr int kTempNameAttempts = 100;

fs::path directory_of(const fs::path& path) {
  return path.has_parent_path() ? path.parent_path() : fs::path(".");
}

Error exists_error(const fs::path& path) {
  return {ErrorCode::kConflict, path.string() + " exists: refusing to overwrite it"};
}

// A temp file beside the target, removed when this goes out of scope unless
// it was renamed into place.  Hidden, and not ending in the target's
// extension, so that readers listing the directory skip it.
class TempFile {
 public:
  static Result<TempFile> create_beside(const fs::path& target, const FileWriteOptions& options) {
    return options.writers_hold_a_lock ? create_fixed(target, options.mode)
                                       : create_unique(target, options.mode);
  }

  TempFile(TempFile&& other) noexcept
      : path_(std::exchange(other.path_, fs::path())), fd_(std::move(other.fd_)) {}
  TempFile& operator=(TempFile&&) = delete;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) {
      ::unlink(path_.c_str());
    }
  }

  [[nodiscard]] const fs::path& path() const { return path_; }
  [[nodiscard]] int fd() const { return fd_.get(); }
  // The name now belongs to the target (or was removed): leave it be.
  void release() { path_.clear(); }

 private:
  TempFile(fs::path path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  static int open_exclusive(const fs::path& path, mode_t mode) {
    return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  }

  // No live writer owns the fixed name (the caller holds the lock), so a
  // file there is a killed writer's.
  static Result<TempFile> create_fixed(const fs::path& target, mode_t mode) {
    fs::path path = directory_of(target) / ("." + target.filename().string() + ".tmp");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return error_from_errno(ErrorCode::kIo, "unlink " + path.string(), errno);
    }
    UniqueFd fd(open_exclusive(path, mode));
    if (!fd.valid()) {
      return error_from_errno(ErrorCode::kIo, "create " + path.string(), errno);
    }
    return TempFile(std::move(path), std::move(fd));
  }

  // Unique per process and call; a name a killed writer left is skipped.
  static Result<TempFile> create_unique(const fs::path& target, mode_t mode) {
    static std::atomic<unsigned long> counter{0};
    const std::string prefix =
        "." + target.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-";
    for (int attempt = 0; attempt < kTempNameAttempts; ++attempt) {
      fs::path path = directory_of(target) / (prefix + std::to_string(counter++));
      UniqueFd fd(open_exclusive(path, mode));
      if (fd.valid()) {
        return TempFile(std::move(path), std::move(fd));
      }
      if (errno != EEXIST) {
        return error_from_errno(ErrorCode::kIo, "create " + path.string(), errno);
      }
    }
    return Error(ErrorCode::kIo, "create a temp file for " + target.string() + ": " +
                                     std::to_string(kTempNameAttempts) + " names taken");
  }

  fs::path path_;
  UniqueFd fd_;
};

// A symlink where a file is to be replaced is not ours to replace (rename
// would replace the link itself, not write through it).  A taken name under
// kRefuse is left to renameat2, the one check that no race slips past.
Status refuse_symlink(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? OkStatus()
                           : error_from_errno(ErrorCode::kIo, "stat " + path.string(), errno);
  }
  if (S_ISLNK(st.st_mode)) {
    return Error(ErrorCode::kConflict,
                 path.string() + " is a symbolic link: refusing to replace it");
  }
  return OkStatus();
}

// Mode and owner exactly as asked: the umask trimmed the mode open() used.
Status set_mode_and_owner(const TempFile& temp, const FileWriteOptions& options) {
  if ((options.owner || options.group) &&
      ::fchown(temp.fd(), options.owner.value_or(static_cast<uid_t>(-1)),
               options.group.value_or(static_cast<gid_t>(-1))) != 0) {
    return error_from_errno(ErrorCode::kIo, "chown " + temp.path().string(), errno);
  }
  if (::fchmod(temp.fd(), options.mode) != 0) {
    return error_from_errno(ErrorCode::kIo, "chmod " + temp.path().string(), errno);
  }
  return OkStatus();
}

// Gives the temp file the target's name without replacing anything there.
Status move_into_free_name(TempFile& temp, const fs::path& path) {
  if (::renameat2(AT_FDCWD, temp.path().c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
    temp.release();
    return OkStatus();
  }
  // A file system without RENAME_NOREPLACE (NFS, for one) still has link(),
  // which also fails on a taken name; the temp name then goes with `temp`.
  if (errno == EINVAL && ::link(temp.path().c_str(), path.c_str()) == 0) {
    return OkStatus();
  }
  return errno == EEXIST ? exists_error(path)
                         : error_from_errno(ErrorCode::kIo, "create " + path.string(), errno);
}

Status move_into_place(TempFile& temp, const fs::path& path, IfExists if_exists) {
  if (if_exists == IfExists::kRefuse) {
    return move_into_free_name(temp, path);
  }
  if (::rename(temp.path().c_str(), path.c_str()) != 0) {
    return error_from_errno(ErrorCode::kIo, "replace " + path.string(), errno);
  }
  temp.release();
  return OkStatus();
}

}  // namespace

Result<std::string> read_to_end(int fd, const std::string& what, std::size_t max_bytes) {
  std::string contents;
  std::array<char, 65536> buffer{};
  for (;;) {
    // One byte past the limit tells a file of exactly max_bytes from a
    // longer one.
    const std::size_t room = max_bytes - contents.size();
    const std::size_t want = room < buffer.size() ? room + 1 : buffer.size();
    const ssize_t got = ::read(fd, buffer.data(), want);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      return error_from_errno(ErrorCode::kIo, what, errno);
    }
    if (got == 0) {
      return contents;
    }
    if (static_cast<std::size_t>(got) > room) {
      return Error(ErrorCode::kUsage, what + ": more than " + std::to_string(max_bytes) + " bytes");
    }
    contents.append(buffer.data(), static_cast<std::size_t>(got));
  }
}

Result<std::string> read_file_at_most(const std::filesystem::path& path, std::size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO without a writer would wait for ever.
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    const int err = errno;
    return error_from_errno(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo, path.string(),
                            err);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return error_from_errno(ErrorCode::kIo, path.string(), errno);
  }
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": a pipe or socket, not a file");
  }
  return read_to_end(fd.get(), path.string(), max_bytes);
}

Status write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written <= 0) {
      return error_from_errno(ErrorCode::kIo, what, written < 0 ? errno : ENOSPC);
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
  return OkStatus();
}

Status pwrite_all(int fd, std::span<const std::uint8_t> data, std::uint64_t offset,
                  const std::string& what) {
  while (!data.empty()) {
    const ssize_t written = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written <= 0) {
      return error_from_errno(ErrorCode::kIo, what + " at " + std::to_string(offset),
                              written < 0 ? errno : ENOSPC);
    }
    data = data.subspan(static_cast<std::size_t>(written));
    offset += static_cast<std::uint64_t>(written);
  }
  return OkStatus();
}

Status fsync_directory(const std::filesystem::path& dir) {
  const UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return error_from_errno(ErrorCode::kIo, "open directory " + dir.string(), errno);
  }
  if (::fsync(fd.get()) != 0) {
    return error_from_errno(ErrorCode::kIo, "fsync directory " + dir.string(), errno);
  }
  return OkStatus();
}

Status write_file_durably(const std::filesystem::path& path, std::string_view contents,
                          const FileWriteOptions& options) {
  if (options.if_exists == IfExists::kReplace) {
    ENVCRYPT_TRY(refuse_symlink(path));
  }
  ENVCRYPT_ASSIGN_OR_RETURN(TempFile temp, TempFile::create_beside(path, options));
  ENVCRYPT_TRY(set_mode_and_owner(temp, options));
  ENVCRYPT_TRY(write_all(temp.fd(), contents, "write " + temp.path().string()));
  if (::fsync(temp.fd()) != 0) {
    return error_from_errno(ErrorCode::kIo, "fsync " + temp.path().string(), errno);
  }
  ENVCRYPT_TRY(move_into_place(temp, path, options.if_exists));
  return fsync_directory(directory_of(path));
}

}  // namespace envcrypt
