// header-backup and header-restore on image files, in process, and their
// refusals (Documentation/admin-guide/operations.rst).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/cli.h"
#include "cli/cli_test_support.h"
#include "cli/ops_cli_test_support.h"
#include "header/header.h"
#include "header/header_io.h"

namespace envcrypt {
namespace {

using cli_testing::CliRun;

// ----- header-backup / header-restore -----

TEST_F(OpsTest, HeaderBackupAndRestoreRoundTrip) {
  const std::string cmk = format(image_);
  const std::string uuid = uuid_of(image_);
  const fs::path backup = dir_ / "disk.hdr";
  CliRun saved = run({"header-backup", image_.string(), backup.string()});
  ASSERT_EQ(saved.code, 0) << saved.err;
  EXPECT_EQ(saved.out, "backed up the header of " + image_.string() + " (uuid " + uuid +
                           ", sequence 1) to " + backup.string() + "\n");
  struct stat st {};
  ASSERT_EQ(::stat(backup.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), kHeaderAreaSize);
  const auto device_bytes = read_bytes(image_);
  const auto backup_bytes = read_bytes(backup);
  EXPECT_EQ(backup_bytes, device_bytes);
  EXPECT_EQ(run({"inspect", image_.string(), "--header", backup.string()}).code, 0);

  corrupt(image_, 200);
  corrupt(image_, kSecondaryOffset + 200);
  ASSERT_EQ(run({"verify", image_.string()}).code, static_cast<int>(ErrorCode::kCorrupt));
  CliRun restored = run({"header-restore", image_.string(), backup.string()});
  ASSERT_EQ(restored.code, 0) << restored.err;
  EXPECT_EQ(restored.out, "restored the header of disk " + uuid + " (sequence 1, CMK " + cmk +
                              ") from " + backup.string() + " to " + image_.string() + "\n");
  EXPECT_EQ(read_bytes(image_), device_bytes);
  CliRun verify = run({"verify", image_.string()});
  EXPECT_EQ(verify.code, 0) << verify.err;
  EXPECT_EQ(verify.err, "");
}

TEST_F(OpsTest, HeaderBackupRefusesToOverwrite) {
  format(image_);
  const fs::path backup = dir_ / "disk.hdr";
  std::ofstream(backup) << "keep me";
  CliRun r = run({"header-backup", image_.string(), backup.string()});
  EXPECT_EQ(r.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_EQ(r.err, "envcryptctl: header-backup " + image_.string() + ": " + backup.string() +
                       " exists: refusing to overwrite it\n");
  EXPECT_EQ(std::string(read_bytes(backup).data(), 7), "keep me");
  std::size_t temps = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    temps += entry.path().filename().string().starts_with(".disk.hdr.") ? 1 : 0;
  }
  EXPECT_EQ(temps, 0U);
}

TEST_F(OpsTest, HeaderBackupOfWhatIsNoDisk) {
  CliRun plain = run({"header-backup", image_.string(), (dir_ / "x.hdr").string()});
  EXPECT_EQ(plain.code, static_cast<int>(ErrorCode::kNotFound));
  EXPECT_EQ(plain.err, "envcryptctl: header-backup " + image_.string() +
                           ": not an envcrypt disk (no header magic in either copy)\n");
  EXPECT_FALSE(fs::exists(dir_ / "x.hdr"));
  CliRun absent = run({"header-backup", (dir_ / "absent.img").string(), (dir_ / "y.hdr").string()});
  EXPECT_EQ(absent.code, static_cast<int>(ErrorCode::kNotFound));
}

TEST_F(OpsTest, HeaderRestoreRefusesAnotherDisksHeaderUnlessForced) {
  format(image_);
  const fs::path second = make_image("second.img");
  format(second);
  const std::string first_uuid = uuid_of(image_);
  const std::string second_uuid = uuid_of(second);
  const fs::path backup = dir_ / "first.hdr";
  ASSERT_EQ(run({"header-backup", image_.string(), backup.string()}).code, 0);
  const auto before = read_bytes(second);
  CliRun refused = run({"header-restore", second.string(), backup.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_EQ(refused.err, "envcryptctl: header-restore " + second.string() + ": " + backup.string() +
                             " is the header of disk " + first_uuid + ", " + second.string() +
                             " is disk " + second_uuid + " (use --force to restore it anyway)\n");
  EXPECT_EQ(read_bytes(second), before);
  ASSERT_EQ(run({"header-restore", second.string(), backup.string(), "--force"}).code, 0);
  EXPECT_EQ(uuid_of(second), first_uuid);
}

TEST_F(OpsTest, HeaderRestoreComparesTheUuidOfACorruptHeader) {
  format(image_);
  const std::string uuid = uuid_of(image_);
  const fs::path other = make_image("other.img");
  format(other);
  const fs::path backup = dir_ / "other.hdr";
  ASSERT_EQ(run({"header-backup", other.string(), backup.string()}).code, 0);
  corrupt(image_, 200);
  corrupt(image_, kSecondaryOffset + 200);
  CliRun refused = run({"header-restore", image_.string(), backup.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_NE(refused.err.find(image_.string() + " is disk " + uuid + " "), std::string::npos)
      << refused.err;

  const fs::path blank = make_image("blank.img");
  CliRun unknown = run({"header-restore", blank.string(), backup.string()});
  EXPECT_EQ(unknown.code, static_cast<int>(ErrorCode::kConflict));
  EXPECT_EQ(unknown.err, "envcryptctl: header-restore " + blank.string() + ": " + blank.string() +
                             " carries no envcrypt uuid to compare with the backup's; use --force "
                             "if " +
                             backup.string() + " is this disk's header\n");
  EXPECT_EQ(run({"header-restore", blank.string(), backup.string(), "--force"}).code, 0);
}

TEST_F(OpsTest, HeaderRestoreValidatesTheFileFirst) {
  format(image_);
  const fs::path backup = dir_ / "disk.hdr";
  ASSERT_EQ(run({"header-backup", image_.string(), backup.string()}).code, 0);
  corrupt(backup, 200);
  corrupt(backup, kSecondaryOffset + 200);
  const auto before = read_bytes(image_);
  CliRun bad = run({"header-restore", image_.string(), backup.string()});
  EXPECT_EQ(bad.code, static_cast<int>(ErrorCode::kCorrupt));
  EXPECT_EQ(bad.err, "envcryptctl: header-restore " + image_.string() + ": " + backup.string() +
                         ": no valid header copy (primary: checksum mismatch; secondary: "
                         "checksum mismatch)\n");
  EXPECT_EQ(read_bytes(image_), before);

  CliRun absent = run({"header-restore", image_.string(), (dir_ / "absent.hdr").string()});
  EXPECT_EQ(absent.code, static_cast<int>(ErrorCode::kNotFound));

  const fs::path detached = dir_ / "detached.hdr";
  ASSERT_EQ(run({"format", make_image("d.img").string(), "--header", detached.string()}).code, 0);
  CliRun wrong = run({"header-restore", image_.string(), detached.string(), "--force"});
  EXPECT_EQ(wrong.code, static_cast<int>(ErrorCode::kUsage));
  EXPECT_EQ(wrong.err, "envcryptctl: header-restore " + image_.string() + ": " + detached.string() +
                           " is a detached header (data offset 0): use it with --header, it does "
                           "not belong on a device\n");
  EXPECT_EQ(read_bytes(image_), before);
}

TEST_F(OpsTest, HeaderCommandUsage) {
  EXPECT_EQ(run({"header-backup", image_.string()}).code, static_cast<int>(ErrorCode::kUsage));
  EXPECT_EQ(run({"header-restore"}).code, static_cast<int>(ErrorCode::kUsage));
  EXPECT_EQ(run({"header-restore", "a", "b", "--bogus"}).code, static_cast<int>(ErrorCode::kUsage));
}

}  // namespace
}  // namespace envcrypt
