// The in-place checks of `image encrypt` on a sysfs tree built here: the
// same file, the same disk, a partition of the disk the other is, disjoint
// partitions, a loop device over the other's file, a device-mapper device
// over the other.
#include "device/storage_overlap.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

class StorageOverlapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("envcrypt-overlap-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    sys_ = root_ / "sys";
    fs::create_directories(sys_ / "dev/block");
    // sda (8:0) with sda1 at sectors 2048+2048 and sda2 at 4096+4096.
    disk("devices/sda", "8:0");
    partition("devices/sda/sda1", "8:1", 2048, 2048);
    partition("devices/sda/sda2", "8:2", 4096, 4096);
    image_ = root_ / "image.raw";
    std::ofstream(image_) << "x";
  }
  void TearDown() override { fs::remove_all(root_); }

  void write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text << '\n';
  }
  void disk(const std::string& dir, const std::string& number) {
    write(sys_ / dir / "dev", number);
    fs::create_directory_symlink(sys_ / dir, sys_ / "dev/block" / number);
  }
  void partition(const std::string& dir, const std::string& number, int start, int size) {
    disk(dir, number);
    write(sys_ / dir / "partition", "1");
    write(sys_ / dir / "start", std::to_string(start));
    write(sys_ / dir / "size", std::to_string(size));
  }

  static Device block(unsigned major_number, unsigned minor_number, const std::string& path) {
    Device d;
    d.path = path;
    d.is_block = true;
    d.rdev = makedev(major_number, minor_number);
    return d;
  }
  Device file() const {
    struct stat st {};
    EXPECT_EQ(::stat(image_.c_str(), &st), 0);
    Device d;
    d.path = image_;
    d.st_dev = st.st_dev;
    d.st_ino = st.st_ino;
    return d;
  }
  std::string refusal(const Device& src, const Device& dst) {
    Status s = refuse_shared_storage(src, dst, sys_);
    if (s.ok()) {
      return "allowed";
    }
    EXPECT_EQ(s.error().code(), ErrorCode::kUsage);
    return s.error().message();
  }

  fs::path root_;
  fs::path sys_;
  fs::path image_;
};

TEST_F(StorageOverlapTest, SameFile) {
  const Device f = file();
  struct stat st {};
  ASSERT_EQ(::stat(image_.c_str(), &st), 0);
  EXPECT_EQ(refusal(f, f),
            "refusing to encrypt in place: SRC " + image_.string() + " and DST " + image_.string() +
                " are both file inode " + std::to_string(st.st_ino) + " on " +
                std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)));
}

TEST_F(StorageOverlapTest, SameDisk) {
  EXPECT_EQ(
      refusal(block(8, 0, "/dev/sda"), block(8, 0, "/dev/sda")),
      "refusing to encrypt in place: SRC /dev/sda and DST /dev/sda are both block device 8:0");
}

TEST_F(StorageOverlapTest, PartitionOfTheSourceDisk) {
  EXPECT_EQ(refusal(block(8, 0, "/dev/sda"), block(8, 2, "/dev/sda2")),
            "refusing to encrypt in place: SRC /dev/sda and DST /dev/sda2 overlap on bytes "
            "2097152-4194303 of block device 8:0");
  EXPECT_NE(refusal(block(8, 1, "/dev/sda1"), block(8, 0, "/dev/sda")), "allowed");
}

TEST_F(StorageOverlapTest, DisjointPartitionsAreAllowed) {
  EXPECT_EQ(refusal(block(8, 1, "/dev/sda1"), block(8, 2, "/dev/sda2")), "allowed");
}

TEST_F(StorageOverlapTest, LoopDeviceOverTheSourceFile) {
  disk("devices/virtual/block/loop0", "7:0");
  write(sys_ / "devices/virtual/block/loop0/loop/backing_file", image_.string());
  const std::string message = refusal(file(), block(7, 0, "/dev/loop0"));
  EXPECT_NE(message.find("refusing to encrypt in place: SRC " + image_.string() +
                         " and DST /dev/loop0 are both file inode "),
            std::string::npos)
      << message;
  // A partition of that loop device: the file again, through its disk.
  partition("devices/virtual/block/loop0/loop0p1", "259:0", 2048, 2048);
  EXPECT_NE(refusal(block(259, 0, "/dev/loop0p1"), file()), "allowed");
}

TEST_F(StorageOverlapTest, MappedDeviceOverThePartition) {
  disk("devices/virtual/block/dm-0", "253:0");
  fs::create_directories(sys_ / "devices/virtual/block/dm-0/slaves");
  fs::create_directory_symlink(sys_ / "devices/sda/sda2",
                               sys_ / "devices/virtual/block/dm-0/slaves/sda2");
  EXPECT_EQ(refusal(block(253, 0, "/dev/dm-0"), block(8, 2, "/dev/sda2")),
            "refusing to encrypt in place: SRC /dev/dm-0 and DST /dev/sda2 are both bytes "
            "2097152-4194303 of block device 8:0");
  EXPECT_EQ(refusal(block(253, 0, "/dev/dm-0"), block(8, 1, "/dev/sda1")), "allowed");
}

TEST_F(StorageOverlapTest, DeviceMissingFromSysfsCountsWhole) {
  EXPECT_EQ(refusal(block(9, 9, "/dev/x"), block(9, 9, "/dev/y")),
            "refusing to encrypt in place: SRC /dev/x and DST /dev/y are both block device 9:9");
  EXPECT_EQ(refusal(block(9, 9, "/dev/x"), block(9, 8, "/dev/z")), "allowed");
}

}  // namespace
}  // namespace envcrypt
