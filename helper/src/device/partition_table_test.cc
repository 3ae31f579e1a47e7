// The partition table reader on tables built here byte by byte (so every
// checksum and bound can be broken on purpose), and on one sfdisk writes.
#include "device/partition_table.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

namespace envcrypt {
namespace {

using Bytes = std::vector<std::uint8_t>;

void put_le(Bytes& b, std::size_t at, std::uint64_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) {
    b[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

struct Range {
  std::uint64_t first;
  std::uint64_t last;
};

constexpr std::uint64_t kDiskLbas = 1 << 20;  // 512 MiB
constexpr std::uint64_t kDiskSize = kDiskLbas * 512;

// A GPT as sgdisk/sfdisk lay it out: protective MBR, header at LBA 1, 128
// entries of 128 bytes from LBA 2, usable LBAs 34 to disk end - 34.
class GptBuilder {
 public:
  explicit GptBuilder(std::vector<Range> parts) : head_(34 * 512, 0) {
    head_[446 + 4] = 0xee;
    put_le(head_, 446 + 8, 1, 4);
    put_le(head_, 446 + 12, 0xffffffff, 4);
    head_[510] = 0x55;
    head_[511] = 0xaa;
    std::memcpy(&head_[512], "EFI PART", 8);
    put_le(head_, 512 + 8, 0x00010000, 4);
    put_le(head_, 512 + 12, 92, 4);
    put_le(head_, 512 + 24, 1, 8);
    put_le(head_, 512 + 32, kDiskLbas - 1, 8);
    put_le(head_, 512 + 40, 34, 8);
    put_le(head_, 512 + 48, kDiskLbas - 34, 8);
    put_le(head_, 512 + 72, 2, 8);
    put_le(head_, 512 + 80, 128, 4);
    put_le(head_, 512 + 84, 128, 4);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const std::size_t entry = 1024 + i * 128;
      std::memset(&head_[entry], 0x11, 16);  // type GUID: anything but zero
      put_le(head_, entry + 32, parts[i].first, 8);
      put_le(head_, entry + 40, parts[i].last, 8);
    }
    seal();
  }

  // Recomputes both CRCs (after a test edited a field).
  void seal() {
    put_le(head_, 512 + 88, crc32_ieee(std::span(head_).subspan(1024, 128 * 128)), 4);
    put_le(head_, 512 + 16, 0, 4);
    put_le(head_, 512 + 16, crc32_ieee(std::span(head_).subspan(512, 92)), 4);
  }

  Bytes& bytes() { return head_; }

 private:
  Bytes head_;
};

std::string parse_error(const Bytes& head, std::uint64_t size = kDiskSize) {
  auto table = parse_partition_table(head, size);
  return table.ok() ? "parsed" : table.error().message();
}

TEST(PartitionTableTest, Crc32CheckValue) {
  const std::string text = "123456789";
  EXPECT_EQ(crc32_ieee(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), 9)),
            0xcbf43926U);
}

TEST(PartitionTableTest, ValidGpt) {
  GptBuilder gpt({{2048, 206847}, {206848, 1046527}});
  auto table = parse_partition_table(gpt.bytes(), kDiskSize);
  ASSERT_TRUE(table.ok()) << table.error().message();
  EXPECT_EQ(table->kind, PartitionTable::Kind::kGpt);
  ASSERT_EQ(table->partitions.size(), 2U);
  EXPECT_EQ(table->partitions[1].number, 2U);
  EXPECT_EQ(table->partitions[1].start, 206848U * 512);
  EXPECT_EQ(table->partitions[1].size, (1046527U - 206848 + 1) * 512);
  EXPECT_EQ(table->table_end, 1024U + 128 * 128);
  EXPECT_EQ(table->backup_start, (kDiskLbas - 33) * 512);
  EXPECT_EQ(find_partition(*table, 3).error().message(),
            "no partition 3 in the GPT (partitions: 1, 2)");
}

TEST(PartitionTableTest, GptHeaderCrcMismatch) {
  GptBuilder gpt({{2048, 4095}});
  gpt.bytes()[512 + 56] ^= 1;  // disk GUID, covered by the header CRC
  EXPECT_EQ(parse_error(gpt.bytes()), "GPT header checksum mismatch");
}

TEST(PartitionTableTest, GptEntryCrcMismatch) {
  GptBuilder gpt({{2048, 4095}});
  gpt.bytes()[1024 + 32] ^= 1;
  EXPECT_EQ(parse_error(gpt.bytes()), "GPT entry array checksum mismatch");
}

TEST(PartitionTableTest, GptEntryPastLastUsable) {
  GptBuilder gpt({{2048, kDiskLbas - 1}});
  EXPECT_EQ(parse_error(gpt.bytes()),
            "GPT partition 1: LBAs 2048-1048575 are not within the usable 34-1048542");
}

TEST(PartitionTableTest, GptEntryArrayOutsideHead) {
  GptBuilder gpt({{2048, 4095}});
  put_le(gpt.bytes(), 512 + 72, 0x4000000000000000ULL, 8);
  gpt.seal();
  EXPECT_EQ(parse_error(gpt.bytes()),
            "GPT entry array at LBA 4611686018427387904 is not between the header and the "
            "first usable LBA within the first MiB");
}

TEST(PartitionTableTest, GptEntryCountTooLarge) {
  GptBuilder gpt({{2048, 4095}});
  put_le(gpt.bytes(), 512 + 80, 0xffffffff, 4);
  gpt.seal();
  EXPECT_EQ(parse_error(gpt.bytes()), "GPT entry array of 4294967295 entries of 128 bytes");
}

TEST(PartitionTableTest, GptUsableRangeBeyondDisk) {
  GptBuilder gpt({{2048, 4095}});
  EXPECT_EQ(parse_error(gpt.bytes(), 8192 * 512),
            "GPT usable LBAs 34-1048542 are not within the disk's 8192");
}

TEST(PartitionTableTest, GptOverlappingEntries) {
  GptBuilder gpt({{2048, 8191}, {8000, 9000}});
  EXPECT_EQ(parse_error(gpt.bytes()), "partitions 1 and 2 overlap");
}

TEST(PartitionTableTest, ProtectiveMbrWithoutGpt) {
  GptBuilder gpt({{2048, 4095}});
  gpt.bytes()[512] = 'X';
  EXPECT_EQ(parse_error(gpt.bytes()), "protective MBR without a GPT header at LBA 1");
}

Bytes mbr(std::initializer_list<std::array<std::uint32_t, 3>> entries) {
  Bytes b(512, 0);
  std::size_t slot = 0;
  for (const auto& [type, first, count] : entries) {
    b[446 + slot * 16 + 4] = static_cast<std::uint8_t>(type);
    put_le(b, 446 + slot * 16 + 8, first, 4);
    put_le(b, 446 + slot * 16 + 12, count, 4);
    ++slot;
  }
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

TEST(PartitionTableTest, ValidMbrWithExtended) {
  auto table = parse_partition_table(mbr({{0x83, 2048, 4096}, {0x05, 8192, 8192}}), kDiskSize);
  ASSERT_TRUE(table.ok()) << table.error().message();
  EXPECT_EQ(table->kind, PartitionTable::Kind::kMbr);
  ASSERT_EQ(table->partitions.size(), 2U);
  EXPECT_EQ(table->partitions[0].start, 2048U * 512);
  EXPECT_EQ(table->partitions[0].size, 4096U * 512);
  EXPECT_FALSE(table->partitions[0].extended);
  EXPECT_TRUE(table->partitions[1].extended);
  EXPECT_EQ(table->table_end, 512U);
  EXPECT_EQ(table->backup_start, 0U);
}

TEST(PartitionTableTest, MbrEntryPastDiskEnd) {
  EXPECT_EQ(parse_error(mbr({{0x83, 2048, 0xfffffff0}})),
            "MBR partition 1: sectors 2048+4294967280 are not within the disk's 1048576");
}

TEST(PartitionTableTest, MbrBadBootFlag) {
  Bytes b = mbr({{0x83, 2048, 4096}});
  b[446] = 0x12;
  EXPECT_EQ(parse_error(b), "MBR partition 1: boot flag 18 is neither 0 nor 0x80");
}

TEST(PartitionTableTest, NoSignatureIsNotFound) {
  Bytes b(4096, 0);
  auto table = parse_partition_table(b, kDiskSize);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(table.error().message(), "no partition table (no MBR signature)");
  EXPECT_EQ(parse_error(Bytes(100, 0)), "no partition table (no MBR signature)");
}

// What sfdisk writes, when it is installed: the layout the guest test uses.
TEST(PartitionTableTest, SfdiskGpt) {
  if (std::system("command -v sfdisk >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "sfdisk not installed";
  }
  const auto path = std::filesystem::path(::testing::TempDir()) / "envcrypt-sfdisk.img";
  std::ofstream(path).close();
  std::filesystem::resize_file(path, kDiskSize);
  const std::string cmd =
      "printf 'label: gpt\\nsize=100MiB, type=U\\nsize=200MiB\\n' | sfdisk -q " + path.string() +
      " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(path, std::ios::binary);
  Bytes head(kPartitionTableHeadMax);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  std::filesystem::remove(path);
  auto table = parse_partition_table(head, kDiskSize);
  ASSERT_TRUE(table.ok()) << table.error().message();
  ASSERT_EQ(table->partitions.size(), 2U);
  EXPECT_EQ(table->partitions[0].start, 1U << 20);
  EXPECT_EQ(table->partitions[0].size, 100U << 20);
  EXPECT_EQ(table->partitions[1].start, 101U << 20);
  EXPECT_EQ(table->partitions[1].size, 200U << 20);
}

}  // namespace
}  // namespace envcrypt
