// The partition table reader (partition_table.h) on the first bytes of a
// hostile image, as `image encrypt --partition` reads it.  Properties, for
// every table it accepts: each partition lies within the disk, after the
// table's own bytes and before a GPT's backup; no two overlap; numbers are
// 1-based and find_partition returns each.
//
// Input: 8 bytes little-endian disk size, then the disk's first bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.h"
#include "partition_table.h"

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
  const std::span<const std::uint8_t> head(data + 8, size - 8);
  auto table = envcrypt::parse_partition_table(head, disk_size);
  if (table.ok()) {
    envcrypt::fuzz::check_table(*table, disk_size, head.size());
  }
  return 0;
}
