#include "volume/header_backup.h"

#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "device/blockdev.h"
#include "device/devmapper.h"
#include "header/header_io.h"
#include "util/file_io.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

// The raw bytes of both copies, at their offsets, zeros elsewhere.
Result<std::vector<std::uint8_t>> header_area(const Device& device) {
  std::vector<std::uint8_t> area(kHeaderAreaSize, 0);
  for (const std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
    if (device.size > offset) {
      const std::uint64_t length = std::min<std::uint64_t>(kHeaderSize, device.size - offset);
      ENVCRYPT_TRY(read_at(device, offset, std::span(area).subspan(offset, length)));
    }
  }
  return area;
}

// The uuid DEVICE carries: from its header, or else from any copy that still
// has the magic (a copy with a bad checksum usually still names its disk).
Result<std::optional<Uuid>> device_uuid(const Device& device) {
  if (auto selection = read_header(device); selection.ok()) {
    return std::optional<Uuid>(selection->header.uuid);
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto area, header_area(device));
  for (const std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
    const auto copy = std::span(area).subspan(offset, kHeaderSize);
    if (std::memcmp(copy.data(), ENVCRYPT_HDR_MAGIC, ENVCRYPT_HDR_MAGIC_LEN) == 0) {
      Uuid uuid;
      std::memcpy(uuid.data(), copy.data() + offsetof(envcrypt_header, uuid), uuid.size());
      return std::optional<Uuid>(uuid);
    }
  }
  return std::optional<Uuid>();
}

std::string read_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// One of our mappings uses DEVICE: directly, or through a loop device over it.
Status refuse_attached(const fs::path& device) {
  if (!device_mapper_available()) {
    return OkStatus();
  }
  std::error_code ec;
  const bool is_block = fs::is_block_file(device, ec);
  std::string devnum;
  if (is_block) {
    ENVCRYPT_ASSIGN_OR_RETURN(devnum, device_number(device));
  }
  const fs::path canonical = fs::weakly_canonical(device, ec);
  ENVCRYPT_ASSIGN_OR_RETURN(const auto user, mapping_using([&](const std::string& mapped) {
                              return is_block
                                         ? mapped == devnum
                                         : read_line("/sys/dev/block/" + mapped +
                                                     "/loop/backing_file") == canonical.string();
                            }));
  if (user) {
    return Error(ErrorCode::kConflict, device.string() + " is attached as " + user->name +
                                           ": detach it before restoring its header");
  }
  return OkStatus();
}

Status check_uuid(const Device& target, const DiskHeader& header, const fs::path& file) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::optional<Uuid> current, device_uuid(target));
  if (!current) {
    return Error(ErrorCode::kConflict,
                 target.path.string() +
                     " carries no envcrypt uuid to compare with the backup's; use --force if " +
                     file.string() + " is this disk's header");
  }
  if (*current != header.uuid) {
    return Error(ErrorCode::kConflict,
                 file.string() + " is the header of disk " + uuid_to_string(header.uuid) + ", " +
                     target.path.string() + " is disk " + uuid_to_string(*current) +
                     " (use --force to restore it anyway)");
  }
  return OkStatus();
}

}  // namespace

Result<HeaderSelection> backup_header(const fs::path& device, const fs::path& file) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device source, open_device(device, OpenMode::kRead));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection selection, read_header(source));
  ENVCRYPT_ASSIGN_OR_RETURN(auto area, header_area(source));
  // A new root-only file, complete or absent, never replacing one.
  ENVCRYPT_TRY(write_file_durably(
      file, std::string_view(reinterpret_cast<const char*>(area.data()), area.size()),
      {.mode = 0600, .if_exists = IfExists::kRefuse}));
  return selection;
}

Result<DiskHeader> restore_header(const fs::path& device, const fs::path& file, bool force) {
  ENVCRYPT_ASSIGN_OR_RETURN(Device backup, open_device(file, OpenMode::kRead));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection from_file, read_header(backup));
  const DiskHeader& header = from_file.header;
  if (header.geometry.data_offset == 0) {
    return Error(ErrorCode::kUsage, file.string() +
                                        " is a detached header (data offset 0): use it with "
                                        "--header, it does not belong on a device");
  }
  ENVCRYPT_TRY(refuse_attached(device));
  ENVCRYPT_ASSIGN_OR_RETURN(Device target, open_device(device, OpenMode::kExclusive));
  if (target.size <= header.geometry.data_offset) {
    return Error(ErrorCode::kUsage, device.string() + ": " + std::to_string(target.size) +
                                        " bytes, the header's data area starts at " +
                                        std::to_string(header.geometry.data_offset));
  }
  ENVCRYPT_TRY(refuse_newer_copies(target));
  if (!force) {
    ENVCRYPT_TRY(check_uuid(target, header, file));
  }
  ENVCRYPT_TRY(write_header(target, header));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection written, read_header(target));
  if (written.degraded() || written.header.uuid != header.uuid) {
    return Error(ErrorCode::kIo, device.string() + ": the restored header does not read back");
  }
  return header;
}

}  // namespace envcrypt
