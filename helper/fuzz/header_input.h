// How the header fuzz targets read their input as the two header copies of
// a disk: one flags byte, then the primary copy (4096 bytes), then the
// secondary copy (the rest).  Flag bits 0 and 1 make the harness write a
// correct checksum into the primary or secondary copy, so the fuzzer gets
// past the SHA-256 to the fields behind it, as a disk's attacker can.  Flag
// bit 2 makes both copies header version 2 first (before the checksums), so
// the recovery block behind the version check is reached from version 1
// seeds too.
#pragma once

#include <linux/dm-envcrypt.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "header/header.h"
#include "util/crypto.h"

namespace envcrypt::fuzz {

struct HeaderCopies {
  std::vector<std::uint8_t> primary;
  std::vector<std::uint8_t> secondary;
};

inline void fix_checksum(std::vector<std::uint8_t>& copy) {
  constexpr std::size_t kChecksumOffset = offsetof(envcrypt_header, checksum);
  if (copy.size() < kHeaderSize) {
    return;
  }
  const Sha256Digest sum = sha256(std::span<const std::uint8_t>(copy).first(kChecksumOffset));
  std::copy(sum.begin(), sum.end(), copy.begin() + kChecksumOffset);
}

inline void set_version_2(std::vector<std::uint8_t>& copy) {
  constexpr std::size_t kVersionOffset = offsetof(envcrypt_header, version);
  if (copy.size() < kVersionOffset + 4) {
    return;
  }
  copy[kVersionOffset] = ENVCRYPT_HDR_VERSION_RECOVERY;
  std::fill_n(copy.begin() + kVersionOffset + 1, 3, 0);
}

inline HeaderCopies header_copies(std::span<const std::uint8_t> input) {
  constexpr std::uint8_t kFixPrimaryChecksum = 0x01;
  constexpr std::uint8_t kFixSecondaryChecksum = 0x02;
  constexpr std::uint8_t kMakeVersion2 = 0x04;
  HeaderCopies copies;
  if (input.empty()) {
    return copies;
  }
  const std::uint8_t flags = input[0];
  const std::span<const std::uint8_t> rest = input.subspan(1);
  const std::size_t primary_size = std::min(rest.size(), kHeaderSize);
  copies.primary.assign(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(primary_size));
  copies.secondary.assign(rest.begin() + static_cast<std::ptrdiff_t>(primary_size), rest.end());
  if ((flags & kMakeVersion2) != 0) {
    set_version_2(copies.primary);
    set_version_2(copies.secondary);
  }
  if ((flags & kFixPrimaryChecksum) != 0) {
    fix_checksum(copies.primary);
  }
  if ((flags & kFixSecondaryChecksum) != 0) {
    fix_checksum(copies.secondary);
  }
  return copies;
}

}  // namespace envcrypt::fuzz
