// Block devices and image files: opening with errors that name the path,
// sizes, positional I/O, signature probing with libblkid, and loop devices
// for image files (the kernel maps only block devices).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "result.h"

namespace envcrypt {

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept;
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

enum class OpenMode {
  kRead,
  kReadWrite,
  kExclusive,  // read-write, and O_EXCL on a block device: refuses one in use
};

struct Device {
  std::filesystem::path path;
  UniqueFd fd;
  bool is_block = false;
  std::uint64_t size = 0;  // bytes
};

Result<Device> open_device(const std::filesystem::path& path, OpenMode mode);

// Full-length positional I/O; a short read past the end is reported as such.
Status read_at(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out);
Status write_at(const Device& device, std::uint64_t offset, std::span<const std::uint8_t> in);
// Makes every write so far durable (fsync, which also flushes the device cache).
Status flush(const Device& device);

// What libblkid recognises on the device, e.g. "ext4 filesystem" or "gpt
// partition table"; nothing when it finds no signature.
Result<std::optional<std::string>> find_signature(const std::filesystem::path& path);

// A loop device over an image file, detached automatically when its last
// user (our descriptor, then the device-mapper table) closes it.
struct LoopDevice {
  std::filesystem::path path;  // /dev/loopN
  UniqueFd fd;                 // holds the loop device until the table does
};
Result<LoopDevice> attach_loop(const std::filesystem::path& image, bool readonly);

// "major:minor" of a block device, as device-mapper tables name it.
Result<std::string> device_number(const std::filesystem::path& path);

}  // namespace envcrypt
