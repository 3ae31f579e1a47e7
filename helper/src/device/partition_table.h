// Reads the partition table of a raw disk image, for `image encrypt
// --partition N`: a GPT (protective MBR, primary header with its CRC32,
// entry array with its CRC32) or a classic MBR (primary partitions 1-4).
// The bytes come from an image we are given, so every field is checked
// against the bytes we hold and the disk's size before it is used.  No I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/result.h"

namespace envcrypt {

inline constexpr std::uint64_t kLbaSize = 512;  // images with 4 KiB LBAs are not read
// The most of the disk's start parse_partition_table needs: a GPT entry
// array must end within it (every partitioning tool puts it at LBA 2).
inline constexpr std::size_t kPartitionTableHeadMax = 1024 * 1024;

struct Partition {
  std::uint32_t number = 0;  // as Linux numbers it: GPT entry index + 1, MBR slot + 1
  std::uint64_t start = 0;   // bytes from the disk's start
  std::uint64_t size = 0;    // bytes
  bool extended = false;     // an MBR extended partition: a container of logical ones
};

struct PartitionTable {
  enum class Kind { kGpt, kMbr } kind = Kind::kMbr;
  std::vector<Partition> partitions;  // the used entries, in table order
  // Bytes [0, table_end) hold the protective MBR or MBR, and for GPT the
  // primary header and entry array: `image encrypt` writes them last.
  std::uint64_t table_end = kLbaSize;
  // GPT: the backup header's LBA and entry array, which lie at the end of
  // the disk; written last too.  Zero for MBR.
  std::uint64_t backup_start = 0;
};

// Parses the table from `head`, the first bytes of a disk of `disk_size`
// bytes (at least 512, at most kPartitionTableHeadMax are looked at).
// ErrorCode::kNotFound: no table; ErrorCode::kCorrupt: a table whose
// checksum, bounds or entries are wrong (nothing is guessed).
Result<PartitionTable> parse_partition_table(std::span<const std::uint8_t> head,
                                             std::uint64_t disk_size);

// Partition `number`, or ErrorCode::kNotFound naming the ones there are.
Result<Partition> find_partition(const PartitionTable& table, std::uint32_t number);

// CRC-32 (IEEE 802.3, reflected, as UEFI's GPT uses).
std::uint32_t crc32_ieee(std::span<const std::uint8_t> bytes);

}  // namespace envcrypt
