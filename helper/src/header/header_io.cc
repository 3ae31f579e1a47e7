#include "header/header_io.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace envcrypt {
namespace {

// The bytes of one copy that the device holds; fewer than a whole copy when
// the device is truncated, which decoding reports.
Result<std::vector<std::uint8_t>> read_copy(const Device& device, std::uint64_t offset) {
  if (device.size <= offset) {
    return std::vector<std::uint8_t>{};
  }
  std::vector<std::uint8_t> bytes(std::min<std::uint64_t>(kHeaderSize, device.size - offset));
  ENVCRYPT_TRY(read_at(device, offset, bytes));
  return bytes;
}

// Whether the copy a report describes holds the header `selection` chose.
bool holds_selected(const CopyReport& copy, const HeaderSelection& selection) {
  return copy.state == CopyState::kValid && copy.sequence == selection.header.sequence;
}

Status write_copy(const Device& device, std::uint64_t offset, const DiskHeader& header) {
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderBytes bytes, encode_header(header, offset));
  return write_at(device, offset, bytes);
}

bool same_header(const DiskHeader& a, const DiskHeader& b) {
  auto as_bytes = [](const DiskHeader& header) { return encode_header(header, kPrimaryOffset); };
  auto left = as_bytes(a);
  auto right = as_bytes(b);
  return left.ok() && right.ok() && *left == *right;
}

}  // namespace

Status refuse_newer_copies(const Device& device, const HeaderSelection& selection) {
  for (const CopyReport* copy : {&selection.primary, &selection.secondary}) {
    if (copy->state == CopyState::kUnsupportedVersion) {
      return Error(ErrorCode::kConflict, device.path.string() + ": a header copy has " +
                                             copy->detail + "; refusing to overwrite it");
    }
  }
  return OkStatus();
}

Result<HeaderSelection> read_header(const Device& device) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto primary, read_copy(device, kPrimaryOffset));
  ENVCRYPT_ASSIGN_OR_RETURN(auto secondary, read_copy(device, kSecondaryOffset));
  auto selection = select_header(primary, secondary);
  if (!selection.ok()) {
    return selection.error().with_context(device.path.string());
  }
  return selection;
}

Status write_header(const Device& device, const DiskHeader& header) {
  if (device.size < kHeaderAreaSize) {
    return Error(ErrorCode::kUsage, device.path.string() + ": " + std::to_string(device.size) +
                                        " bytes is too small for the header copies");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderBytes secondary, encode_header(header, kSecondaryOffset));
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderBytes primary, encode_header(header, kPrimaryOffset));
  ENVCRYPT_TRY(write_at(device, kSecondaryOffset, secondary));
  ENVCRYPT_TRY(flush(device));
  ENVCRYPT_TRY(write_at(device, kPrimaryOffset, primary));
  return flush(device);
}

Status update_header(const Device& device, const HeaderSelection& current, DiskHeader next,
                     const UpdateStepHook& on_step) {
  ENVCRYPT_ASSIGN_OR_RETURN(HeaderSelection now, read_header(device));
  if (!same_header(now.header, current.header)) {
    return Error(ErrorCode::kConflict, device.path.string() +
                                           ": the header changed meanwhile (sequence " +
                                           std::to_string(current.header.sequence) + " -> " +
                                           std::to_string(now.header.sequence) + "); run again");
  }
  ENVCRYPT_TRY(refuse_newer_copies(device, now));
  if (current.header.sequence >= kMaxSequence) {
    return Error(ErrorCode::kCorrupt,
                 device.path.string() + ": header sequence number " +
                     std::to_string(current.header.sequence) +
                     " cannot grow any further; restore a header backup or reformat");
  }
  next.sequence = current.header.sequence + 1;
  const bool primary_last = holds_selected(now.primary, now);
  const std::uint64_t first = primary_last ? kSecondaryOffset : kPrimaryOffset;
  const std::uint64_t second = primary_last ? kPrimaryOffset : kSecondaryOffset;
  auto step = [&on_step](std::string_view name) {
    if (on_step) {
      on_step(name);
    }
  };
  ENVCRYPT_TRY(write_copy(device, first, next));
  step("first-copy-written");
  ENVCRYPT_TRY(flush(device));
  step("first-copy-flushed");
  ENVCRYPT_TRY(write_copy(device, second, next));
  step("second-copy-written");
  ENVCRYPT_TRY(flush(device));
  step("second-copy-flushed");
  return OkStatus();
}

Status erase_header_area(const Device& device, std::uint64_t bytes) {
  const std::vector<std::uint8_t> zeros(1 << 20, 0);
  for (std::uint64_t offset = 0; offset < bytes;) {
    const std::uint64_t chunk = std::min<std::uint64_t>(zeros.size(), bytes - offset);
    ENVCRYPT_TRY(write_at(device, offset, std::span(zeros).first(chunk)));
    offset += chunk;
  }
  return flush(device);
}

Status refuse_newer_copies(const Device& device) {
  ENVCRYPT_ASSIGN_OR_RETURN(auto primary, read_copy(device, kPrimaryOffset));
  ENVCRYPT_ASSIGN_OR_RETURN(auto secondary, read_copy(device, kSecondaryOffset));
  HeaderSelection found;
  (void)decode_header(primary, kPrimaryOffset, &found.primary);
  (void)decode_header(secondary, kSecondaryOffset, &found.secondary);
  return refuse_newer_copies(device, found);
}

Result<bool> has_header_magic(const Device& device) {
  for (const std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
    ENVCRYPT_ASSIGN_OR_RETURN(auto copy, read_copy(device, offset));
    if (copy.size() >= ENVCRYPT_HDR_MAGIC_LEN &&
        std::memcmp(copy.data(), ENVCRYPT_HDR_MAGIC, ENVCRYPT_HDR_MAGIC_LEN) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace envcrypt
