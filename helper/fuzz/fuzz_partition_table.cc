// The partition table reader (partition_table.h) on the first bytes of a
// hostile image, as `image encrypt --partition` reads it.  Properties, for
// every table it accepts: each partition lies within the disk, after the
// table's own bytes and before a GPT's backup; no two overlap; numbers are
// 1-based and find_partition returns each.
//
// Input: 8 bytes little-endian disk size, then the disk's first bytes.  When
// the size's top bit is set it is cleared and both GPT CRC32s are
// recomputed over whatever the header says, so mutations get past the
// checksums and reach the header and entry checks behind them.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "device/partition_table.h"
#include "fuzz_check.h"

namespace envcrypt::fuzz {
namespace {

void check_table(const PartitionTable& table, std::uint64_t disk_size, std::size_t head) {
  require(table.table_end <= head && table.table_end <= disk_size, "the table lies in the head");
  for (const Partition& p : table.partitions) {
    require(p.number >= 1, "partition numbers are 1-based");
    require(p.size > 0 && p.start >= table.table_end && p.start + p.size <= disk_size,
            "a partition lies within the disk, after the table");
    require(table.backup_start == 0 || p.start + p.size <= table.backup_start,
            "a GPT partition ends before the backup table");
    auto found = find_partition(table, p.number);
    require(found.ok() && found->start == p.start, "find_partition finds every partition");
    for (const Partition& q : table.partitions) {
      require(&p == &q || p.start + p.size <= q.start || q.start + q.size <= p.start,
              "no two partitions overlap");
    }
  }
}

std::uint64_t le(const std::vector<std::uint8_t>& b, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) {
    value |= std::uint64_t{b[at + i]} << (8 * i);
  }
  return value;
}

void put_crc(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t crc) {
  for (std::size_t i = 0; i < 4; ++i) {
    b[at + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  }
}

// Entry array CRC first (the header CRC covers it), then the header's.
void fix_gpt_crcs(std::vector<std::uint8_t>& head) {
  if (head.size() < 1024) {
    return;
  }
  const std::uint64_t lba = le(head, 512 + 72, 8);
  const std::uint64_t bytes = le(head, 512 + 80, 4) * le(head, 512 + 84, 4);
  if (lba < head.size() / 512 && bytes <= head.size() - lba * 512) {
    put_crc(head, 512 + 88, crc32_ieee(std::span(head).subspan(lba * 512, bytes)));
  }
  const std::uint64_t size = le(head, 512 + 12, 4);
  if (size >= 20 && size <= 512) {
    put_crc(head, 512 + 16, 0);
    put_crc(head, 512 + 16, crc32_ieee(std::span(head).subspan(512, size)));
  }
}

}  // namespace
}  // namespace envcrypt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 8) {
    return 0;
  }
  std::uint64_t disk_size = 0;
  for (int i = 0; i < 8; ++i) {
    disk_size |= std::uint64_t{data[i]} << (8 * i);
  }
  std::vector<std::uint8_t> head(data + 8, data + size);
  if ((disk_size >> 63) != 0) {
    disk_size &= ~(std::uint64_t{1} << 63);
    envcrypt::fuzz::fix_gpt_crcs(head);
  }
  auto table = envcrypt::parse_partition_table(head, disk_size);
  if (table.ok()) {
    envcrypt::fuzz::check_table(*table, disk_size, head.size());
  }
  return 0;
}
