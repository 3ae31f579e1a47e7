// Block devices and image files: opening with errors that name the path,
// sizes, positional I/O, signature probing with libblkid, and loop devices
// for image files (the kernel maps only block devices).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace envcrypt {

enum class OpenMode {
  kRead,       // no lock: inspecting only
  kReadWrite,  // takes the device's lock (lock_device)
  kExclusive,  // read-write, locked, and O_EXCL on a block device: refuses one in use
  // Locked; read-write for an image file (its loop device), read-only for a
  // block device, which an attach only reads (the kernel opens it for the
  // table): udev's watch makes a change event of every close of a block
  // device opened for writing, and systemd starts a failed attach unit
  // again on each change event of its device (boot.rst).
  kAttach,
};

// One open device or image: every operation on it (size, device number,
// signatures, loop set-up, header I/O) goes through `fd`, never through the
// path again, so a path that is made to point elsewhere midway changes
// nothing.  On a block device, I/O in whole 4 KiB blocks bypasses the page
// cache (O_DIRECT), so a header is read as the disk holds it.
struct Device {
  std::filesystem::path path;  // as given, for messages
  UniqueFd fd;
  bool is_block = false;
  std::uint64_t size = 0;  // bytes
  dev_t rdev = 0;          // block devices: the device number
  dev_t st_dev = 0;        // image files: the file's identity
  ino_t st_ino = 0;
  UniqueFd lock;  // held while valid (lock_device)
};

Result<Device> open_device(const std::filesystem::path& path, OpenMode mode);

// Gives up O_EXCL on a block device (so a device-mapper table can claim
// it), keeping the same device open: a new descriptor of the same open
// device, never a new lookup of the path.
Status drop_exclusive(Device& device);

// How long lock_device waits for another envcryptctl to finish with the
// same device before giving up.
inline constexpr std::chrono::milliseconds kLockWait{30000};

// Takes the device's exclusive lock, $ENVCRYPT_RUN_DIR/locks/<id> (flock),
// where <id> names the block device number or the image file's inode: every
// header writer and attach holds it, so two of them never interleave on one
// disk (cryptsetup's per-device locks do the same).  Waits at most `wait`.
Status lock_device(Device& device, std::chrono::milliseconds wait = kLockWait);

// Full-length positional I/O; a short read past the end is reported as such.
Status read_at(const Device& device, std::uint64_t offset, std::span<std::uint8_t> out);
Status write_at(const Device& device, std::uint64_t offset, std::span<const std::uint8_t> in);
// Makes every write so far durable (fsync, which also flushes the device cache).
Status flush(const Device& device);

// What libblkid recognises on the device, e.g. "ext4 filesystem" or "gpt
// partition table"; nothing when it finds no signature.
Result<std::optional<std::string>> find_signature(const Device& device);

// Erases every signature libblkid finds (as wipefs -a does: file systems,
// RAID members at the end of the device, partition tables and their backup
// copies) and flushes; returns what was erased, e.g. "isw_raid_member".
Result<std::vector<std::string>> wipe_signatures(const Device& device);

// A loop device over an image file, detached automatically when its last
// user (our descriptor, then the device-mapper table) closes it.
struct LoopDevice {
  std::filesystem::path path;  // /dev/loopN
  UniqueFd fd;                 // holds the loop device until the table does
};
// Over the image already open as `image` (its descriptor, not its path).
Result<LoopDevice> attach_loop(const Device& image, bool readonly);

// The loop device an image file backs, if any (matched by inode).
Result<std::optional<std::filesystem::path>> loop_backed_by(const Device& image);

// "major:minor", as device-mapper tables name a device.
std::string device_number(dev_t rdev);
// Of the open block device, from its descriptor.
Result<std::string> device_number(const Device& device);
Result<std::string> device_number(const LoopDevice& loop);
// Of a path, for lookups that only compare (boot-time identification).
Result<std::string> device_number(const std::filesystem::path& path);

}  // namespace envcrypt
