#include "device/blockdev.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include "util/file_io.h"
#include "util/run_dir.h"

namespace envcrypt {
namespace {

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

namespace {

Status set_size(Device& device, const struct stat& st) {
  if (!device.is_block) {
    device.size = static_cast<std::uint64_t>(st.st_size);
    return OkStatus();
  }
  std::uint64_t bytes = 0;
  if (::ioctl(device.fd.get(), BLKGETSIZE64, &bytes) != 0) {
    return error_from_errno(ErrorCode::kIo, device.path.string() + ": BLKGETSIZE64", errno);
  }
  device.size = bytes;
  return OkStatus();
}

constexpr std::size_t kDirectAlign = 4096;

bool direct_io_fits(const Device& device, std::uint64_t offset, std::size_t size) {
  return device.is_block && offset % kDirectAlign == 0 && size % kDirectAlign == 0 && size > 0;
}

// O_DIRECT for one transfer on a block device: on the descriptor, not a new
// open of the path, and off again afterwards (libblkid reads unaligned).
class DirectIo {
 public:
  explicit DirectIo(int fd) : fd_(fd), flags_(::fcntl(fd, F_GETFL)) {
    ok_ = flags_ >= 0 && ::fcntl(fd, F_SETFL, flags_ | O_DIRECT) == 0;
  }
  ~DirectIo() {
    if (ok_) {
      ::fcntl(fd_, F_SETFL, flags_);
    }
  }
  DirectIo(const DirectIo&) = delete;
  DirectIo& operator=(const DirectIo&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  int fd_;
  int flags_;
  bool ok_ = false;
};

struct AlignedFree {
  void operator()(std::uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::uint8_t, AlignedFree>;

AlignedBuffer aligned_buffer(std::size_t size) {
  return AlignedBuffer(static_cast<std::uint8_t*>(std::aligned_alloc(kDirectAlign, size)));
}

Status pread_all(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(device.fd.get(), out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return error_from_errno(ErrorCode::kIo,
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

std::filesystem::path lock_path(const Device& device) {
  const std::string id =
      device.is_block
          ? "b" + std::to_string(major(device.rdev)) + "_" + std::to_string(minor(device.rdev))
          : "f" + std::to_string(device.st_dev) + "_" + std::to_string(device.st_ino);
  return run_dir() / "locks" / id;
}

Status make_lock_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Error(ErrorCode::kIo, dir.string() + ": " + ec.message());
  }
  ::chmod(dir.parent_path().c_str(), 0700);
  ::chmod(dir.c_str(), 0700);
  return OkStatus();
}

}  // namespace

Result<Device> open_device(const std::filesystem::path& path, OpenMode mode) {
  // kAttach opens read-only first: only an image file is reopened
  // read-write, once fstat has told them apart.
  int flags =
      O_CLOEXEC | (mode == OpenMode::kRead || mode == OpenMode::kAttach ? O_RDONLY : O_RDWR);
  // O_EXCL only means something for block devices; checked after fstat.
  Device device;
  device.path = path;
  device.fd = UniqueFd(::open(path.c_str(), flags | O_NONBLOCK));
  if (!device.fd.valid()) {
    const int err = errno;
    return error_from_errno(open_error_code(err), path.string(), err);
  }
  struct stat st {};
  if (::fstat(device.fd.get(), &st) != 0) {
    return error_from_errno(ErrorCode::kIo, path.string() + ": fstat", errno);
  }
  device.is_block = S_ISBLK(st.st_mode);
  if (!device.is_block && !S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": not a block device or image file");
  }
  device.rdev = device.is_block ? st.st_rdev : 0;
  device.st_dev = st.st_dev;
  device.st_ino = st.st_ino;
  if (mode == OpenMode::kAttach && !device.is_block) {
    // The same image file, read-write for its loop device.
    const std::string self = "/proc/self/fd/" + std::to_string(device.fd.get());
    UniqueFd writable(::open(self.c_str(), O_CLOEXEC | O_RDWR | O_NONBLOCK));
    if (!writable.valid()) {
      const int err = errno;
      return error_from_errno(open_error_code(err), path.string(), err);
    }
    device.fd = std::move(writable);
  }
  if (mode == OpenMode::kExclusive && device.is_block) {
    // Reopen the same block device through our descriptor with O_EXCL.
    const std::string self = "/proc/self/fd/" + std::to_string(device.fd.get());
    UniqueFd exclusive(::open(self.c_str(), O_CLOEXEC | O_RDWR | O_EXCL));
    if (!exclusive.valid()) {
      const int err = errno;
      if (err == EBUSY) {
        return Error(ErrorCode::kConflict, path.string() + ": in use (mounted or mapped)");
      }
      return error_from_errno(open_error_code(err), path.string(), err);
    }
    device.fd = std::move(exclusive);
  }
  if (::fcntl(device.fd.get(), F_SETFL, ::fcntl(device.fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) {
    return error_from_errno(ErrorCode::kIo, path.string() + ": fcntl", errno);
  }
  ENVCRYPT_TRY(set_size(device, st));
  if (mode != OpenMode::kRead) {
    ENVCRYPT_TRY(lock_device(device));
  }
  return device;
}

Status drop_exclusive(Device& device) {
  if (!device.is_block) {
    return OkStatus();
  }
  const std::string self = "/proc/self/fd/" + std::to_string(device.fd.get());
  UniqueFd shared(::open(self.c_str(), O_CLOEXEC | O_RDWR));
  if (!shared.valid()) {
    return error_from_errno(ErrorCode::kIo, device.path.string() + ": reopen", errno);
  }
  device.fd = std::move(shared);
  return OkStatus();
}

Status lock_device(Device& device, std::chrono::milliseconds wait) {
  if (device.lock.valid()) {
    return OkStatus();
  }
  const std::filesystem::path path = lock_path(device);
  ENVCRYPT_TRY(make_lock_dir(path.parent_path()));
  UniqueFd lock(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid()) {
    return error_from_errno(ErrorCode::kIo, path.string(), errno);
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return error_from_errno(ErrorCode::kIo, path.string() + ": flock", errno);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error(ErrorCode::kConflict,
                   device.path.string() + ": another envcryptctl has held its lock (" +
                       path.string() + ") for more than " + std::to_string(wait.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  device.lock = std::move(lock);
  return OkStatus();
}

Status read_at(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out) {
  if (!direct_io_fits(device, offset, out.size())) {
    return pread_all(device, offset, out);
  }
  DirectIo direct(device.fd.get());
  AlignedBuffer buffer = aligned_buffer(out.size());
  if (!direct.ok() || !buffer) {
    return error_from_errno(ErrorCode::kIo, device.path.string() + ": O_DIRECT", errno);
  }
  ENVCRYPT_TRY(pread_all(device, offset, std::span(buffer.get(), out.size())));
  std::memcpy(out.data(), buffer.get(), out.size());
  return OkStatus();
}

Status write_at(const Device& device, std::uint64_t offset, std::span<const std::uint8_t> in) {
  if (!direct_io_fits(device, offset, in.size())) {
    return pwrite_all(device.fd.get(), in, offset, device.path.string() + ": write");
  }
  DirectIo direct(device.fd.get());
  AlignedBuffer buffer = aligned_buffer(in.size());
  if (!direct.ok() || !buffer) {
    return error_from_errno(ErrorCode::kIo, device.path.string() + ": O_DIRECT", errno);
  }
  std::memcpy(buffer.get(), in.data(), in.size());
  return pwrite_all(device.fd.get(), std::span<const std::uint8_t>(buffer.get(), in.size()), offset,
                    device.path.string() + ": write");
}

Status flush(const Device& device) {
  if (::fsync(device.fd.get()) != 0) {
    return error_from_errno(ErrorCode::kIo, device.path.string() + ": fsync", errno);
  }
  return OkStatus();
}

namespace {

struct ProbeFree {
  void operator()(blkid_struct_probe* probe) const { blkid_free_probe(probe); }
};
using Probe = std::unique_ptr<blkid_struct_probe, ProbeFree>;

// A libblkid probe over the device's descriptor, looking for every
// superblock and partition table signature, as wipefs does.
Result<Probe> signature_probe(const Device& device) {
  Probe probe(blkid_new_probe());
  if (!probe || blkid_probe_set_device(probe.get(), device.fd.get(), 0, 0) != 0) {
    return Error(ErrorCode::kIo, device.path.string() + ": blkid probe");
  }
  blkid_probe_enable_superblocks(probe.get(), 1);
  blkid_probe_set_superblocks_flags(probe.get(),
                                    BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
  blkid_probe_enable_partitions(probe.get(), 1);
  blkid_probe_set_partitions_flags(probe.get(), BLKID_PARTS_MAGIC);
  return probe;
}

// "ext4 filesystem", "isw_raid_member raid signature", "gpt partition table".
std::optional<std::string> describe_signature(blkid_probe probe) {
  const char* value = nullptr;
  if (blkid_probe_lookup_value(probe, "TYPE", &value, nullptr) == 0) {
    const char* usage = nullptr;
    blkid_probe_lookup_value(probe, "USAGE", &usage, nullptr);
    const std::string kind = usage != nullptr && std::strcmp(usage, "filesystem") != 0
                                 ? std::string(usage) + " signature"
                                 : std::string("filesystem");
    return std::string(value) + " " + kind;
  }
  if (blkid_probe_lookup_value(probe, "PTTYPE", &value, nullptr) == 0) {
    return std::string(value) + " partition table";
  }
  return std::nullopt;
}

}  // namespace

Result<std::optional<std::string>> find_signature(const Device& device) {
  ENVCRYPT_ASSIGN_OR_RETURN(Probe probe, signature_probe(device));
  // blkid_do_probe walks every signature, as wipefs does, so a filesystem
  // hiding behind another signature is found too.
  int rc = 0;
  while ((rc = blkid_do_probe(probe.get())) == 0) {
    if (auto found = describe_signature(probe.get())) {
      return found;
    }
  }
  if (rc < 0) {
    return Error(ErrorCode::kIo, device.path.string() + ": blkid probe failed");
  }
  return std::optional<std::string>();
}

Result<std::vector<std::string>> wipe_signatures(const Device& device) {
  ENVCRYPT_ASSIGN_OR_RETURN(Probe probe, signature_probe(device));
  std::vector<std::string> wiped;
  int rc = 0;
  while ((rc = blkid_do_probe(probe.get())) == 0) {
    const std::string what = describe_signature(probe.get()).value_or("signature");
    if (blkid_do_wipe(probe.get(), 0) != 0) {
      return error_from_errno(ErrorCode::kIo, device.path.string() + ": erasing " + what, errno);
    }
    wiped.push_back(what);
  }
  if (rc < 0) {
    return Error(ErrorCode::kIo, device.path.string() + ": blkid probe failed");
  }
  ENVCRYPT_TRY(flush(device));
  return wiped;
}

Result<LoopDevice> attach_loop(const Device& image, bool readonly) {
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control.valid()) {
    return error_from_errno(ErrorCode::kIo, "/dev/loop-control", errno);
  }
  // Another process may take the free device between the two calls: retry.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) {
      return error_from_errno(ErrorCode::kIo, "/dev/loop-control: no free loop device", errno);
    }
    LoopDevice loop;
    loop.path = "/dev/loop" + std::to_string(number);
    loop.fd = UniqueFd(::open(loop.path.c_str(), O_CLOEXEC | (readonly ? O_RDONLY : O_RDWR)));
    if (!loop.fd.valid()) {
      return error_from_errno(ErrorCode::kIo, loop.path.string(), errno);
    }
    loop_config config{};
    config.fd = static_cast<__u32>(image.fd.get());
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), image.path.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(loop.fd.get(), LOOP_CONFIGURE, &config) == 0) {
      return loop;
    }
    if (errno != EBUSY) {
      return error_from_errno(ErrorCode::kIo, loop.path.string() + ": LOOP_CONFIGURE", errno);
    }
  }
  return Error(ErrorCode::kConflict, image.path.string() + ": no loop device could be claimed");
}

Result<std::optional<std::filesystem::path>> loop_backed_by(const Device& image) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("loop")) {
      continue;
    }
    const std::filesystem::path node = "/dev/" + name;
    UniqueFd loop(::open(node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    loop_info64 info{};
    if (!loop.valid() || ::ioctl(loop.get(), LOOP_GET_STATUS64, &info) != 0) {
      continue;  // gone, or not bound to a file (ENXIO)
    }
    if (info.lo_device == image.st_dev && info.lo_inode == image.st_ino) {
      return std::optional<std::filesystem::path>(node);
    }
  }
  return std::optional<std::filesystem::path>();
}

std::string device_number(dev_t rdev) {
  return std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
}

Result<std::string> device_number(const Device& device) {
  if (!device.is_block) {
    return Error(ErrorCode::kUsage, device.path.string() + ": not a block device");
  }
  return device_number(device.rdev);
}

Result<std::string> device_number(const LoopDevice& loop) {
  struct stat st {};
  if (::fstat(loop.fd.get(), &st) != 0 || !S_ISBLK(st.st_mode)) {
    return error_from_errno(ErrorCode::kIo, loop.path.string() + ": fstat", errno);
  }
  return device_number(st.st_rdev);
}

Result<std::string> device_number(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return error_from_errno(open_error_code(err), path.string(), err);
  }
  if (!S_ISBLK(st.st_mode)) {
    return Error(ErrorCode::kUsage, path.string() + ": not a block device");
  }
  return device_number(st.st_rdev);
}

}  // namespace envcrypt
