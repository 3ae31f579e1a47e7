#include "device/storage_overlap.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <sstream>

namespace envcrypt {
namespace {

// Bounds the walk down stacked devices: a loop in sysfs must not hang us.
constexpr int kMaxDepth = 16;
constexpr std::uint64_t kSysfsSector = 512;

std::string read_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

Result<dev_t> parse_devnum(const std::string& text, const std::filesystem::path& from) {
  unsigned major_number = 0;
  unsigned minor_number = 0;
  char colon = 0;
  std::istringstream in(text);
  if (!(in >> major_number >> colon >> minor_number) || colon != ':') {
    return Error(ErrorCode::kIo, from.string() + ": not a device number: '" + text + "'");
  }
  return makedev(major_number, minor_number);
}

Result<std::uint64_t> read_number(const std::filesystem::path& path) {
  const std::string text = read_line(path);
  try {
    std::size_t used = 0;
    const std::uint64_t value = std::stoull(text, &used);
    if (used == text.size()) {
      return value;
    }
  } catch (const std::exception&) {
  }
  return Error(ErrorCode::kIo, path.string() + ": not a number: '" + text + "'");
}

Status add_block_extents(dev_t rdev, const std::filesystem::path& sysfs, int depth,
                         std::vector<StorageExtent>& out);

Status add_file_extent(const std::filesystem::path& file, std::vector<StorageExtent>& out) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    // A loop device whose file was deleted: nothing of ours can be it.
    return OkStatus();
  }
  out.push_back(StorageExtent{true, st.st_dev, st.st_ino, 0, UINT64_MAX});
  return OkStatus();
}

// Each device under `dir` (slaves/*) counts whole.
Status add_slaves(const std::filesystem::path& dir, const std::filesystem::path& sysfs, int depth,
                  std::vector<StorageExtent>& out, bool& any) {
  std::error_code ec;
  for (const auto& slave : std::filesystem::directory_iterator(dir / "slaves", ec)) {
    ENVCRYPT_ASSIGN_OR_RETURN(dev_t slave_dev,
                              parse_devnum(read_line(slave.path() / "dev"), slave.path()));
    ENVCRYPT_TRY(add_block_extents(slave_dev, sysfs, depth + 1, out));
    any = true;
  }
  return OkStatus();
}

Status add_block_extents(dev_t rdev, const std::filesystem::path& sysfs, int depth,
                         std::vector<StorageExtent>& out) {
  const std::string number = std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
  if (depth > kMaxDepth) {
    return Error(ErrorCode::kIo, "block device " + number + ": stacked more than " +
                                     std::to_string(kMaxDepth) + " deep in sysfs");
  }
  std::error_code ec;
  const auto dir = std::filesystem::canonical(sysfs / "dev/block" / number, ec);
  if (ec) {
    // Not in sysfs (no sysfs mounted): the device itself, whole.
    out.push_back(StorageExtent{false, rdev, 0, 0, UINT64_MAX});
    return OkStatus();
  }
  if (std::filesystem::exists(dir / "loop/backing_file")) {
    return add_file_extent(read_line(dir / "loop/backing_file"), out);
  }
  bool stacked = false;
  ENVCRYPT_TRY(add_slaves(dir, sysfs, depth, out, stacked));
  if (stacked) {
    return OkStatus();
  }
  if (std::filesystem::exists(dir / "partition")) {
    ENVCRYPT_ASSIGN_OR_RETURN(
        dev_t disk, parse_devnum(read_line(dir.parent_path() / "dev"), dir.parent_path()));
    ENVCRYPT_ASSIGN_OR_RETURN(std::uint64_t start, read_number(dir / "start"));
    ENVCRYPT_ASSIGN_OR_RETURN(std::uint64_t size, read_number(dir / "size"));
    // The whole disk may itself be a loop device or stacked: resolve it,
    // keeping the range only when it is a plain disk.
    std::vector<StorageExtent> below;
    ENVCRYPT_TRY(add_block_extents(disk, sysfs, depth + 1, below));
    for (StorageExtent& e : below) {
      if (!e.is_file && e.dev == disk) {
        e.start = start * kSysfsSector;
        e.size = size * kSysfsSector;
      }
      out.push_back(e);
    }
    return OkStatus();
  }
  out.push_back(StorageExtent{false, rdev, 0, 0, UINT64_MAX});
  return OkStatus();
}

bool overlap(const StorageExtent& a, const StorageExtent& b) {
  if (a.is_file != b.is_file || a.dev != b.dev || (a.is_file && a.ino != b.ino)) {
    return false;
  }
  const auto end = [](const StorageExtent& e) {
    return e.size > UINT64_MAX - e.start ? UINT64_MAX : e.start + e.size;
  };
  return a.start < end(b) && b.start < end(a);
}

}  // namespace

std::string StorageExtent::describe() const {
  const std::string number = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  if (is_file) {
    return "file inode " + std::to_string(ino) + " on " + number;
  }
  if (start == 0 && size == UINT64_MAX) {
    return "block device " + number;
  }
  return "bytes " + std::to_string(start) + "-" + std::to_string(start + size - 1) +
         " of block device " + number;
}

Result<std::vector<StorageExtent>> storage_extents(const Device& device,
                                                   const std::filesystem::path& sysfs) {
  std::vector<StorageExtent> out;
  if (!device.is_block) {
    out.push_back(StorageExtent{true, device.st_dev, device.st_ino, 0, UINT64_MAX});
    return out;
  }
  ENVCRYPT_TRY(add_block_extents(device.rdev, sysfs, 0, out));
  return out;
}

Status refuse_shared_storage(const Device& src, const Device& dst,
                             const std::filesystem::path& sysfs) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto src_extents, storage_extents(src, sysfs));
  ENVCRYPT_ASSIGN_OR_RETURN(auto dst_extents, storage_extents(dst, sysfs));
  for (const StorageExtent& s : src_extents) {
    for (const StorageExtent& d : dst_extents) {
      if (overlap(s, d)) {
        const bool same = s.start == d.start && s.size == d.size;
        return Error(ErrorCode::kUsage, "refusing to encrypt in place: SRC " + src.path.string() +
                                            " and DST " + dst.path.string() +
                                            (same ? " are both " : " overlap on ") +
                                            (same ? s.describe() : d.describe()));
      }
    }
  }
  return OkStatus();
}

}  // namespace envcrypt
