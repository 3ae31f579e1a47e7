// envcryptctl end to end on image files, in process: everything that needs
// no kernel module (format, inspect, verify, probe, kms commands), and the
// in-process check that the data key never reaches a file.
#include "cli/cli.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cli/cli_test_support.h"
#include "config/config.h"
#include "header/header.h"
#include "header/header_io.h"
#include "kms/kms_registry.h"
#include "util/crypto.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

using cli_testing::CliRun;

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::vector<std::uint8_t>& haystack, std::span<const std::uint8_t> needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-cli");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_, cli_testing::local_kms_config(dir_));
    image_ = dir_ / "disk.img";
    make_image(image_, 32 << 20);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void make_image(const fs::path& path, std::uintmax_t size) {
    cli_testing::make_sparse_image(path, size);
  }

  CliRun run(std::vector<std::string> args) {
    if (std::find(args.begin(), args.end(), "--config") == args.end()) {
      args.insert(args.begin(), {"--config", config_.string()});
    }
    return cli_testing::run_envcryptctl(std::move(args));
  }

  // The header and DK as envcryptctl would see them at attach time.
  SecretBytes data_key_of(const fs::path& image) {
    auto config = load_config(config_);
    EXPECT_TRUE(config.ok());
    KmsRegistry registry(std::move(config).value());
    auto selection = read_volume_header(image, std::nullopt);
    EXPECT_TRUE(selection.ok());
    auto dk = unlock(registry, selection->header);
    EXPECT_TRUE(dk.ok()) << dk.error().message();
    return std::move(dk).value();
  }

  void corrupt(const fs::path& path, std::uint64_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put('\x5a');
  }

  fs::path dir_;
  fs::path config_;
  fs::path image_;
};

TEST_F(CliTest, FormatInspectVerifyProbe) {
  CliRun format = run({"format", image_.string(), "--label", "db"});
  ASSERT_EQ(format.code, 0) << format.err;
  EXPECT_NE(format.out.find("local://local-1/"), std::string::npos);

  CliRun inspect = run({"inspect", image_.string()});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("label:         db"), std::string::npos) << inspect.out;
  EXPECT_NE(inspect.out.find("primary:       valid"), std::string::npos);

  CliRun json = run({"--json", "inspect", image_.string()});
  ASSERT_EQ(json.code, 0);
  EXPECT_NE(json.out.find("\"data_offset\": 16777216"), std::string::npos) << json.out;
  CliRun json_after = run({"inspect", image_.string(), "--json"});
  EXPECT_EQ(json_after.out, json.out);

  CliRun verify = run({"verify", image_.string()});
  EXPECT_EQ(verify.code, 0) << verify.err;
  EXPECT_TRUE(verify.err.empty());

  CliRun probe = run({"probe", image_.string()});
  EXPECT_EQ(probe.code, 0);
  EXPECT_NE(probe.out.find("ID_FS_TYPE=envcrypt\n"), std::string::npos);
  EXPECT_NE(probe.out.find("ID_FS_USAGE=crypto\n"), std::string::npos);
  EXPECT_NE(probe.out.find("ID_FS_LABEL=db\n"), std::string::npos);
}

TEST_F(CliTest, DataKeyReachesNoFile) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  ASSERT_EQ(run({"verify", image_.string()}).code, 0);
  const SecretBytes dk = data_key_of(image_);
  ASSERT_EQ(dk.size(), kDataKeySize);
  const std::string hex = to_hex(dk.span());
  std::vector<fs::path> files = {image_};
  for (const auto& entry : fs::recursive_directory_iterator(dir_ / "kms")) {
    files.push_back(entry.path());
  }
  for (const auto& file : files) {
    const auto bytes = read_file(file);
    SCOPED_TRACE(file.string());
    EXPECT_FALSE(contains(bytes, dk.span().first(32)));  // K1
    EXPECT_FALSE(contains(bytes, dk.span().last(32)));   // K2
    EXPECT_FALSE(contains(bytes, std::span(reinterpret_cast<const std::uint8_t*>(hex.data()), 32)));
  }
}

TEST_F(CliTest, RefusesSignaturesWithoutForce) {
  if (std::system("command -v mkfs.ext4 >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "mkfs.ext4 not installed";
  }
  ASSERT_EQ(std::system(("mkfs.ext4 -q -F " + image_.string() + " >/dev/null 2>&1").c_str()), 0);
  const auto before = read_file(image_);
  CliRun refused = run({"format", image_.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_NE(refused.err.find("ext4"), std::string::npos) << refused.err;
  EXPECT_EQ(read_file(image_), before);
  EXPECT_EQ(run({"format", image_.string(), "--force"}).code, 0);
  EXPECT_EQ(run({"format", image_.string()}).code, static_cast<int>(ErrorCode::kConflict));
}

TEST_F(CliTest, OneBadCopyIsRecoveredWithAWarning) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  corrupt(image_, 200);
  CliRun verify = run({"verify", image_.string()});
  EXPECT_EQ(verify.code, 0) << verify.err;
  EXPECT_NE(verify.err.find("primary: bad checksum"), std::string::npos) << verify.err;
}

TEST_F(CliTest, BothCopiesBadIsExitFiveAndNothingWritten) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  corrupt(image_, 200);
  corrupt(image_, kSecondaryOffset + 200);
  const auto before = read_file(image_);
  for (const char* command : {"verify", "inspect", "probe"}) {
    CliRun r = run({command, image_.string()});
    EXPECT_EQ(r.code, static_cast<int>(ErrorCode::kCorrupt)) << command;
    EXPECT_NE(r.err.find("no valid header copy"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_EQ(read_file(image_), before);
}

TEST_F(CliTest, EditedGeometryFailsToUnwrap) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  {
    auto device = open_device(image_, OpenMode::kReadWrite);
    ASSERT_TRUE(device.ok());
    auto selection = read_header(*device);
    ASSERT_TRUE(selection.ok());
    DiskHeader edited = selection->header;
    edited.geometry.data_offset += kDataAlign;  // checksums recomputed by the encoder
    ASSERT_TRUE(write_header(*device, edited).ok());
  }
  ASSERT_EQ(run({"inspect", image_.string()}).code, 0);
  CliRun verify = run({"verify", image_.string()});
  EXPECT_EQ(verify.code, static_cast<int>(ErrorCode::kCorrupt)) << verify.err;
}

TEST_F(CliTest, TruncatedImage) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  fs::resize_file(image_, 100 * 1024);  // the secondary copy is gone
  CliRun inspect = run({"inspect", image_.string()});
  EXPECT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("secondary:     absent"), std::string::npos) << inspect.out;
  fs::resize_file(image_, 1000);
  EXPECT_EQ(run({"verify", image_.string()}).code, static_cast<int>(ErrorCode::kNotFound));
  make_image(dir_ / "tiny.img", 8 << 20);
  CliRun tiny = run({"format", (dir_ / "tiny.img").string()});
  EXPECT_EQ(tiny.code, static_cast<int>(ErrorCode::kUsage)) << tiny.err;
}

TEST_F(CliTest, DisabledAndPendingDeletionKeysRefuseUnwrap) {
  CliRun created = run({"kms", "create-key", "--alias", "test/disk"});
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string uri = created.out.substr(created.out.rfind("local://"));
  ASSERT_EQ(run({"format", image_.string(), "--cmk", "alias/test/disk"}).code, 0);
  ASSERT_EQ(run({"kms", "disable-key", "alias/test/disk"}).code, 0);
  CliRun disabled = run({"verify", image_.string()});
  EXPECT_EQ(disabled.code, static_cast<int>(ErrorCode::kDenied)) << disabled.err;
  EXPECT_NE(disabled.err.find("Disabled"), std::string::npos) << disabled.err;

  ASSERT_EQ(run({"kms", "enable-key", "alias/test/disk"}).code, 0);
  EXPECT_EQ(run({"verify", image_.string()}).code, 0);
  ASSERT_EQ(
      run({"kms", "schedule-key-deletion", "alias/test/disk", "--pending-window-days", "7"}).code,
      0);
  CliRun pending = run({"verify", image_.string()});
  EXPECT_EQ(pending.code, static_cast<int>(ErrorCode::kDenied)) << pending.err;
  EXPECT_NE(pending.err.find("PendingDeletion"), std::string::npos) << pending.err;
}

TEST_F(CliTest, ServiceKeyRefusesDisable) {
  ASSERT_EQ(run({"format", image_.string()}).code, 0);
  CliRun r = run({"kms", "disable-key", "alias/acs/ecs"});
  EXPECT_EQ(r.code, static_cast<int>(ErrorCode::kDenied)) << r.err;
}

TEST_F(CliTest, KmsCommandsPrintTheUriLastAndJson) {
  CliRun created = run({"kms", "create-key", "--description", "app"});
  ASSERT_EQ(created.code, 0);
  std::string last = created.out.substr(0, created.out.size() - 1);
  last = last.substr(last.rfind('\n') + 1);
  EXPECT_EQ(last.rfind("local://local-1/", 0), 0u) << created.out;
  CliRun list = run({"--json", "kms", "list-keys"});
  ASSERT_EQ(list.code, 0);
  EXPECT_NE(list.out.find(last), std::string::npos);
  ASSERT_EQ(run({"kms", "create-alias", "alias/app", last}).code, 0);
  CliRun aliases = run({"kms", "list-aliases"});
  EXPECT_NE(aliases.out.find("alias/app"), std::string::npos) << aliases.out;
  CliRun describe = run({"kms", "describe-key", "alias/app", "--json"});
  EXPECT_NE(describe.out.find("\"state\": \"Enabled\""), std::string::npos) << describe.out;
  EXPECT_EQ(run({"kms", "describe-key", "alias/nope"}).code,
            static_cast<int>(ErrorCode::kNotFound));
}

TEST_F(CliTest, DetachedHeaderLeavesTheDeviceUntouched) {
  const fs::path header = dir_ / "disk.hdr";
  ASSERT_EQ(run({"format", image_.string(), "--header", header.string()}).code, 0);
  const auto device = read_file(image_);
  EXPECT_TRUE(std::all_of(device.begin(), device.end(), [](std::uint8_t b) { return b == 0; }));
  EXPECT_EQ(run({"probe", image_.string()}).code, static_cast<int>(ErrorCode::kNotFound));
  CliRun inspect = run({"inspect", image_.string(), "--header", header.string(), "--json"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("\"data_offset\": 0"), std::string::npos);
  EXPECT_EQ(run({"verify", image_.string(), "--header", header.string()}).code, 0);
  EXPECT_EQ(run({"format", image_.string(), "--header", header.string()}).code,
            static_cast<int>(ErrorCode::kConflict));
}

// A link planted where the header is to go must not make format truncate
// its target, not even with --force.
TEST_F(CliTest, ADetachedHeaderIsNeverWrittenThroughASymlink) {
  const fs::path victim = dir_ / "victim";
  cli_testing::write_text(victim, "precious");
  const fs::path link = dir_ / "disk.hdr";
  fs::create_symlink(victim, link);
  const CliRun refused = run({"format", image_.string(), "--header", link.string(), "--force"});
  EXPECT_EQ(refused.code, 2);
  EXPECT_EQ(refused.err, "envcryptctl: format " + image_.string() + ": header file " +
                             link.string() + " is a symbolic link: never written through one\n");
  EXPECT_EQ(cli_testing::read_text(victim), "precious");
  EXPECT_TRUE(fs::is_symlink(link));
}

TEST_F(CliTest, UsageErrors) {
  EXPECT_EQ(run({}).code, 2);
  EXPECT_EQ(run({"format"}).code, 2);
  EXPECT_EQ(run({"format", image_.string(), "--sector-size", "1024"}).code, 2);
  EXPECT_EQ(run({"kms", "schedule-key-deletion", "k", "--pending-window-days", "3"}).code, 2);
  CliRun missing = run({"--config", "/nonexistent.conf", "verify", image_.string()});
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("/nonexistent.conf"), std::string::npos);
  CliRun nodev = run({"inspect", (dir_ / "absent.img").string()});
  EXPECT_EQ(nodev.code, static_cast<int>(ErrorCode::kNotFound));
  EXPECT_EQ(nodev.err.rfind("envcryptctl: inspect ", 0), 0u) << nodev.err;
}

}  // namespace
}  // namespace envcrypt
