// open_device(): what its modes open, as udev's watch sees it.
#include "device/blockdev.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

// The close events inotify reported for `path` while `body` ran, as
// "write" (IN_CLOSE_WRITE: what udev's watch turns into a change event)
// and "nowrite", in order.
template <typename Body>
std::vector<std::string> closes_during(const fs::path& path, Body body) {
  std::vector<std::string> closes;
  const UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  EXPECT_TRUE(watch.valid());
  EXPECT_GE(::inotify_add_watch(watch.get(), path.c_str(), IN_CLOSE_WRITE | IN_CLOSE_NOWRITE), 0);
  body();
  alignas(inotify_event) std::array<char, 4096> buffer{};
  const ssize_t n = ::read(watch.get(), buffer.data(), buffer.size());
  for (ssize_t at = 0; at < n;) {
    inotify_event event{};
    std::memcpy(&event, buffer.data() + at, sizeof event);
    closes.emplace_back((event.mask & IN_CLOSE_WRITE) != 0 ? "write" : "nowrite");
    at += static_cast<ssize_t>(sizeof(inotify_event) + event.len);
  }
  return closes;
}

int access_mode(const Device& device) { return ::fcntl(device.fd.get(), F_GETFL) & O_ACCMODE; }

class OpenDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("blockdev-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    ::setenv("ENVCRYPT_RUN_DIR", (dir_ / "run").c_str(), 1);
    image_ = dir_ / "disk.img";
    cli_testing::make_sparse_image(image_, 8 << 20);
  }
  void TearDown() override {
    ::unsetenv("ENVCRYPT_RUN_DIR");
    fs::remove_all(dir_);
  }

  fs::path dir_;
  fs::path image_;
};

// An image file is attached through a loop device, which needs it writable.
TEST_F(OpenDeviceTest, AttachOpensAnImageFileReadWriteAndLocked) {
  auto device = open_device(image_, OpenMode::kAttach);
  ASSERT_TRUE(device.ok()) << device.error().message();
  EXPECT_FALSE(device->is_block);
  EXPECT_EQ(access_mode(*device), O_RDWR);
  EXPECT_TRUE(device->lock.valid());
  EXPECT_EQ(device->size, 8U << 20);
}

// Issue 18: every attach attempt of a disk whose key server was down opened
// the block device read-write; udev's watch made a change event of each
// close, and systemd started the failed attach unit again on it.  An attach
// only reads a block device: no IN_CLOSE_WRITE, so no change event.
TEST_F(OpenDeviceTest, AttachOpensABlockDeviceReadOnlySoItsCloseIsNoChangeEvent) {
  if (::geteuid() != 0 || !fs::exists("/dev/loop-control")) {
    GTEST_SKIP() << "needs root and loop devices";
  }
  auto image = open_device(image_, OpenMode::kReadWrite);
  ASSERT_TRUE(image.ok()) << image.error().message();
  auto loop = attach_loop(*image, false);
  ASSERT_TRUE(loop.ok()) << loop.error().message();
  const fs::path node = loop->path;

  bool opened = false;
  int mode = -1;
  bool locked = false;
  EXPECT_EQ(closes_during(node,
                          [&] {
                            auto device = open_device(node, OpenMode::kAttach);
                            opened = device.ok() && device->is_block;
                            mode = device.ok() ? access_mode(*device) : -1;
                            locked = device.ok() && device->lock.valid();
                          }),
            std::vector<std::string>{"nowrite"});
  EXPECT_TRUE(opened);
  EXPECT_EQ(mode, O_RDONLY);
  EXPECT_TRUE(locked);
  // What the attach did before: a read-write open, closed as a write.
  EXPECT_EQ(closes_during(node,
                          [&] {
                            auto device = open_device(node, OpenMode::kReadWrite);
                            opened = device.ok();
                          }),
            std::vector<std::string>{"write"});
  EXPECT_TRUE(opened);
}

}  // namespace
}  // namespace envcrypt
