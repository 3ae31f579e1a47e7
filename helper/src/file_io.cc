#include "file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "unique_fd.h"

namespace envcrypt {

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

}  // namespace envcrypt
