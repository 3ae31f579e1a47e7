#include "blockdev.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace envcrypt {
namespace {

Error errno_error(ErrorCode code, const std::string& what, int err) {
  return {code, what + ": " + std::strerror(err)};
}

// ENOENT is "not found"; EBUSY from O_EXCL means someone holds the device.
ErrorCode open_error_code(int err) {
  switch (err) {
    case ENOENT:
    case ENXIO:
    case ENOTDIR:
      return ErrorCode::kNotFound;
    case EBUSY:
      return ErrorCode::kConflict;
    case EACCES:
    case EPERM:
    case EROFS:
      return ErrorCode::kDenied;
    default:
      return ErrorCode::kIo;
  }
}

}  // namespace

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

UniqueFd::UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Result<Device> open_device(const std::filesystem::path& path, OpenMode mode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return errno_error(open_error_code(err), path.string(), err);
  }
  const bool is_block = S_ISBLK(st.st_mode);
  if (!is_block && !S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": not a block device or image file");
  }
  int flags = O_CLOEXEC | (mode == OpenMode::kRead ? O_RDONLY : O_RDWR);
  if (mode == OpenMode::kExclusive && is_block) {
    flags |= O_EXCL;
  }
  Device device;
  device.path = path;
  device.is_block = is_block;
  device.fd = UniqueFd(::open(path.c_str(), flags));
  if (!device.fd.valid()) {
    const int err = errno;
    if (err == EBUSY) {
      return Error(ErrorCode::kConflict, path.string() + ": in use (mounted or mapped)");
    }
    return errno_error(open_error_code(err), path.string(), err);
  }
  if (is_block) {
    std::uint64_t bytes = 0;
    if (::ioctl(device.fd.get(), BLKGETSIZE64, &bytes) != 0) {
      return errno_error(ErrorCode::kIo, path.string() + ": BLKGETSIZE64", errno);
    }
    device.size = bytes;
  } else {
    device.size = static_cast<std::uint64_t>(st.st_size);
  }
  return device;
}

Status read_at(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(device.fd.get(), out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return errno_error(ErrorCode::kIo,
                         device.path.string() + ": read at " + std::to_string(offset + done),
                         errno);
    }
    if (n == 0) {
      return Error(ErrorCode::kIo, device.path.string() + ": short read at " +
                                       std::to_string(offset + done) + " (device ends at " +
                                       std::to_string(device.size) + ")");
    }
    done += static_cast<std::size_t>(n);
  }
  return OkStatus();
}

Status write_at(const Device& device, std::uint64_t offset, std::span<const std::uint8_t> in) {
  std::size_t done = 0;
  while (done < in.size()) {
    const ssize_t n = ::pwrite(device.fd.get(), in.data() + done, in.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return errno_error(ErrorCode::kIo,
                         device.path.string() + ": write at " + std::to_string(offset + done),
                         n < 0 ? errno : ENOSPC);
    }
    done += static_cast<std::size_t>(n);
  }
  return OkStatus();
}

Status flush(const Device& device) {
  if (::fsync(device.fd.get()) != 0) {
    return errno_error(ErrorCode::kIo, device.path.string() + ": fsync", errno);
  }
  return OkStatus();
}

Result<std::optional<std::string>> find_signature(const std::filesystem::path& path) {
  blkid_probe probe = blkid_new_probe_from_filename(path.c_str());
  if (probe == nullptr) {
    const int err = errno;
    return errno_error(open_error_code(err), path.string() + ": blkid probe", err);
  }
  blkid_probe_enable_superblocks(probe, 1);
  blkid_probe_set_superblocks_flags(probe, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
  blkid_probe_enable_partitions(probe, 1);
  blkid_probe_set_partitions_flags(probe, BLKID_PARTS_MAGIC);

  // blkid_do_probe walks every signature, as wipefs does, so a filesystem
  // hiding behind another signature is found too.
  std::optional<std::string> found;
  int rc = 0;
  while ((rc = blkid_do_probe(probe)) == 0) {
    const char* value = nullptr;
    if (blkid_probe_lookup_value(probe, "TYPE", &value, nullptr) == 0) {
      const char* usage = nullptr;
      blkid_probe_lookup_value(probe, "USAGE", &usage, nullptr);
      const std::string kind = usage != nullptr && std::strcmp(usage, "filesystem") != 0
                                   ? std::string(usage) + " signature"
                                   : std::string("filesystem");
      found = std::string(value) + " " + kind;
      break;
    }
    if (blkid_probe_lookup_value(probe, "PTTYPE", &value, nullptr) == 0) {
      found = std::string(value) + " partition table";
      break;
    }
  }
  blkid_free_probe(probe);
  if (rc < 0) {
    return Error(ErrorCode::kIo, path.string() + ": blkid probe failed");
  }
  return found;
}

Result<LoopDevice> attach_loop(const std::filesystem::path& image, bool readonly) {
  UniqueFd backing(::open(image.c_str(), O_CLOEXEC | (readonly ? O_RDONLY : O_RDWR)));
  if (!backing.valid()) {
    const int err = errno;
    return errno_error(open_error_code(err), image.string(), err);
  }
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control.valid()) {
    return errno_error(ErrorCode::kIo, "/dev/loop-control", errno);
  }
  // Another process may take the free device between the two calls: retry.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) {
      return errno_error(ErrorCode::kIo, "/dev/loop-control: no free loop device", errno);
    }
    LoopDevice loop;
    loop.path = "/dev/loop" + std::to_string(number);
    loop.fd = UniqueFd(::open(loop.path.c_str(), O_CLOEXEC | (readonly ? O_RDONLY : O_RDWR)));
    if (!loop.fd.valid()) {
      return errno_error(ErrorCode::kIo, loop.path.string(), errno);
    }
    loop_config config{};
    config.fd = static_cast<__u32>(backing.get());
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), image.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(loop.fd.get(), LOOP_CONFIGURE, &config) == 0) {
      return loop;
    }
    if (errno != EBUSY) {
      return errno_error(ErrorCode::kIo, loop.path.string() + ": LOOP_CONFIGURE", errno);
    }
  }
  return Error(ErrorCode::kConflict, image.string() + ": no loop device could be claimed");
}

Result<std::string> device_number(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return errno_error(open_error_code(err), path.string(), err);
  }
  if (!S_ISBLK(st.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": not a block device");
  }
  return std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
}

}  // namespace envcrypt
