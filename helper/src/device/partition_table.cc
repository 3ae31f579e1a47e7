#include "device/partition_table.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace envcrypt {
namespace {

constexpr std::size_t kMbrEntries = 446;
constexpr std::size_t kMbrEntrySize = 16;
constexpr std::uint8_t kProtectiveType = 0xee;
constexpr std::size_t kGptHeaderMin = 92;
constexpr std::uint32_t kGptEntryMin = 128;

std::uint64_t le(std::span<const std::uint8_t> bytes, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) {
    value |= std::uint64_t{bytes[at + i]} << (8 * i);
  }
  return value;
}

Error corrupt(const std::string& what) { return {ErrorCode::kCorrupt, what}; }

bool is_extended(std::uint8_t type) { return type == 0x05 || type == 0x0f || type == 0x85; }

// Neighbours after sorting by start must not overlap: encrypting one
// partition must leave every other byte of the disk as it was.
Status check_no_overlap(std::vector<Partition> sorted) {
  std::sort(sorted.begin(), sorted.end(),
            [](const Partition& a, const Partition& b) { return a.start < b.start; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i - 1].start + sorted[i - 1].size > sorted[i].start) {
      return corrupt("partitions " + std::to_string(sorted[i - 1].number) + " and " +
                     std::to_string(sorted[i].number) + " overlap");
    }
  }
  return OkStatus();
}

Result<PartitionTable> parse_mbr(std::span<const std::uint8_t> mbr, std::uint64_t disk_size) {
  PartitionTable table;
  table.kind = PartitionTable::Kind::kMbr;
  for (std::uint32_t slot = 0; slot < 4; ++slot) {
    const auto entry = mbr.subspan(kMbrEntries + slot * kMbrEntrySize, kMbrEntrySize);
    const std::string name = "MBR partition " + std::to_string(slot + 1);
    if (entry[0] != 0x00 && entry[0] != 0x80) {
      return corrupt(name + ": boot flag " + std::to_string(entry[0]) + " is neither 0 nor 0x80");
    }
    if (entry[4] == 0) {
      continue;
    }
    const std::uint64_t first = le(entry, 8, 4);
    const std::uint64_t count = le(entry, 12, 4);
    if (first == 0 || count == 0 || (first + count) * kLbaSize > disk_size) {
      return corrupt(name + ": sectors " + std::to_string(first) + "+" + std::to_string(count) +
                     " are not within the disk's " + std::to_string(disk_size / kLbaSize));
    }
    Partition p{slot + 1, first * kLbaSize, count * kLbaSize, is_extended(entry[4])};
    table.partitions.push_back(p);
  }
  ENVCRYPT_TRY(check_no_overlap(table.partitions));
  return table;
}

struct GptHeader {
  std::uint64_t first_usable = 0;
  std::uint64_t last_usable = 0;
  std::uint64_t entries_lba = 0;
  std::uint64_t entry_count = 0;
  std::uint64_t entry_size = 0;
  std::uint32_t entries_crc = 0;
};

Status check_gpt_header_crc(std::span<const std::uint8_t> lba1) {
  const std::uint64_t size = le(lba1, 12, 4);
  if (size < kGptHeaderMin || size > kLbaSize) {
    return corrupt("GPT header size " + std::to_string(size) + " is not within 92-512");
  }
  std::array<std::uint8_t, kLbaSize> copy{};
  std::memcpy(copy.data(), lba1.data(), size);
  std::memset(copy.data() + 16, 0, 4);  // the CRC field counts as zero
  if (crc32_ieee(std::span(copy).first(size)) != le(lba1, 16, 4)) {
    return corrupt("GPT header checksum mismatch");
  }
  return OkStatus();
}

Result<GptHeader> parse_gpt_header(std::span<const std::uint8_t> lba1, std::uint64_t disk_lbas) {
  if (std::memcmp(lba1.data(), "EFI PART", 8) != 0) {
    return corrupt("protective MBR without a GPT header at LBA 1");
  }
  ENVCRYPT_TRY(check_gpt_header_crc(lba1));
  GptHeader h{le(lba1, 40, 8), le(lba1, 48, 8), le(lba1, 72, 8),
              le(lba1, 80, 4), le(lba1, 84, 4), static_cast<std::uint32_t>(le(lba1, 88, 4))};
  if (le(lba1, 24, 8) != 1) {
    return corrupt("GPT header at LBA 1 says it is at LBA " + std::to_string(le(lba1, 24, 8)));
  }
  if (h.first_usable > h.last_usable || h.last_usable >= disk_lbas) {
    return corrupt("GPT usable LBAs " + std::to_string(h.first_usable) + "-" +
                   std::to_string(h.last_usable) + " are not within the disk's " +
                   std::to_string(disk_lbas));
  }
  if (h.entry_size < kGptEntryMin || h.entry_size % 8 != 0 ||
      h.entry_count * h.entry_size > kPartitionTableHeadMax) {
    return corrupt("GPT entry array of " + std::to_string(h.entry_count) + " entries of " +
                   std::to_string(h.entry_size) + " bytes");
  }
  return h;
}

Result<std::span<const std::uint8_t>> gpt_entries(std::span<const std::uint8_t> head,
                                                  const GptHeader& h) {
  const std::uint64_t bytes = h.entry_count * h.entry_size;
  // entries_lba is checked before it is multiplied: it comes from the image.
  if (h.entries_lba < 2 || h.entries_lba >= h.first_usable ||
      h.entries_lba * kLbaSize + bytes >
          std::min<std::uint64_t>(head.size(), h.first_usable * kLbaSize)) {
    return corrupt("GPT entry array at LBA " + std::to_string(h.entries_lba) +
                   " is not between the header and the first usable LBA within the first MiB");
  }
  const auto entries = head.subspan(h.entries_lba * kLbaSize, bytes);
  if (crc32_ieee(entries) != h.entries_crc) {
    return corrupt("GPT entry array checksum mismatch");
  }
  return entries;
}

Result<PartitionTable> parse_gpt(std::span<const std::uint8_t> head, std::uint64_t disk_size) {
  const std::uint64_t disk_lbas = disk_size / kLbaSize;
  if (head.size() < 2 * kLbaSize || disk_lbas < 3) {
    return corrupt("protective MBR on a disk too small for a GPT");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(GptHeader h,
                            parse_gpt_header(head.subspan(kLbaSize, kLbaSize), disk_lbas));
  ENVCRYPT_ASSIGN_OR_RETURN(auto entries, gpt_entries(head, h));
  PartitionTable table;
  table.kind = PartitionTable::Kind::kGpt;
  table.table_end = h.entries_lba * kLbaSize + entries.size();
  table.backup_start = (h.last_usable + 1) * kLbaSize;
  static constexpr std::array<std::uint8_t, 16> kUnused{};
  for (std::uint64_t i = 0; i < h.entry_count; ++i) {
    const auto entry = entries.subspan(i * h.entry_size, h.entry_size);
    if (std::memcmp(entry.data(), kUnused.data(), kUnused.size()) == 0) {
      continue;
    }
    const std::uint64_t first = le(entry, 32, 8);
    const std::uint64_t last = le(entry, 40, 8);
    if (first < h.first_usable || last < first || last > h.last_usable) {
      return corrupt("GPT partition " + std::to_string(i + 1) + ": LBAs " + std::to_string(first) +
                     "-" + std::to_string(last) + " are not within the usable " +
                     std::to_string(h.first_usable) + "-" + std::to_string(h.last_usable));
    }
    table.partitions.push_back(Partition{static_cast<std::uint32_t>(i + 1), first * kLbaSize,
                                         (last - first + 1) * kLbaSize, false});
  }
  ENVCRYPT_TRY(check_no_overlap(table.partitions));
  return table;
}

}  // namespace

std::uint32_t crc32_ieee(std::span<const std::uint8_t> bytes) {
  static const auto kTable = [] {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) {
        c = (c & 1) != 0 ? 0xedb88320U ^ (c >> 1) : c >> 1;
      }
      table[i] = c;
    }
    return table;
  }();
  std::uint32_t crc = 0xffffffffU;
  for (const std::uint8_t b : bytes) {
    crc = kTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  }
  return crc ^ 0xffffffffU;
}

Result<PartitionTable> parse_partition_table(std::span<const std::uint8_t> head,
                                             std::uint64_t disk_size) {
  head = head.first(std::min<std::size_t>(
      {head.size(), kPartitionTableHeadMax,
       static_cast<std::size_t>(std::min<std::uint64_t>(disk_size, kPartitionTableHeadMax))}));
  if (head.size() < kLbaSize || head[510] != 0x55 || head[511] != 0xaa) {
    return Error(ErrorCode::kNotFound, "no partition table (no MBR signature)");
  }
  for (std::size_t slot = 0; slot < 4; ++slot) {
    if (head[kMbrEntries + slot * kMbrEntrySize + 4] == kProtectiveType) {
      return parse_gpt(head, disk_size);
    }
  }
  return parse_mbr(head.first(kLbaSize), disk_size);
}

Result<Partition> find_partition(const PartitionTable& table, std::uint32_t number) {
  std::string numbers;
  for (const Partition& p : table.partitions) {
    if (p.number == number) {
      return p;
    }
    numbers += (numbers.empty() ? "" : ", ") + std::to_string(p.number);
  }
  return Error(ErrorCode::kNotFound,
               "no partition " + std::to_string(number) + " in the " +
                   (table.kind == PartitionTable::Kind::kGpt ? "GPT" : "MBR") +
                   " (partitions: " + (numbers.empty() ? "none" : numbers) + ")");
}

}  // namespace envcrypt
