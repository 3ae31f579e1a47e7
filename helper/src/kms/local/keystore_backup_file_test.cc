// The file rules of kms backup and kms restore, below the CLI.
#include "kms/local/keystore_backup_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

class KeystoreBackupFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "backup_file_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The error open_keystore_backup gives for `from` (the private key is
  // never reached: the file is refused first).
  Error open_error(const fs::path& from) {
    auto opened = open_keystore_backup(from, dir_ / "no-such.key");
    EXPECT_FALSE(opened.ok());
    return opened.ok() ? Error(ErrorCode::kInternal, "opened") : opened.error();
  }

  fs::path dir_;
};

TEST_F(KeystoreBackupFileTest, AMissingFileIsNamed) {
  const Error error = open_error(dir_ / "missing");
  EXPECT_EQ(error.code(), ErrorCode::kNotFound);
  EXPECT_EQ(error.message(),
            "backup " + (dir_ / "missing").string() + ": No such file or directory");
}

TEST_F(KeystoreBackupFileTest, ADirectoryOrAFifoIsNotABackup) {
  EXPECT_EQ(open_error(dir_).message(), "backup " + dir_.string() + ": not a regular file");
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const Error error = open_error(fifo);  // opened without blocking, then refused
  EXPECT_EQ(error.code(), ErrorCode::kUsage);
  EXPECT_EQ(error.message(), "backup " + fifo.string() + ": not a regular file");
}

TEST_F(KeystoreBackupFileTest, AFileLargerThanAnyBackupIsRefusedUnread) {
  const fs::path huge = dir_ / "huge";
  std::ofstream(huge).close();
  fs::resize_file(huge, kBackupHeaderSize + kMaxBackupPayload + 1);  // sparse
  const Error error = open_error(huge);
  EXPECT_EQ(error.code(), ErrorCode::kUsage);
  EXPECT_EQ(error.message(),
            "backup " + huge.string() + ": 524417 bytes: larger than any keystore backup, not one");
}

TEST_F(KeystoreBackupFileTest, AnEmptyFileIsNamedAndRefusedByItsHeader) {
  const fs::path empty = dir_ / "empty";
  std::ofstream(empty).close();
  EXPECT_EQ(open_error(empty).message(),
            "backup " + empty.string() + ": empty file: not a keystore backup");
}

TEST_F(KeystoreBackupFileTest, ATakenNameIsRefusedEvenForADanglingLink) {
  EXPECT_TRUE(check_backup_target(dir_ / "new").ok());
  const fs::path link = dir_ / "link";
  fs::create_symlink(dir_ / "nowhere", link);
  const Status refused = check_backup_target(link);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(refused.error().message(),
            link.string() + " exists: kms backup never overwrites a file");
}

TEST_F(KeystoreBackupFileTest, ARestoreMustMatchTheRegion) {
  KeystoreRecords records;
  records.region = "cn-hangzhou";
  EXPECT_TRUE(check_backup_region(records, "cn-hangzhou").ok());
  const Status refused = check_backup_region(records, "eu-central-1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(),
            "the backup is of region cn-hangzhou; this host's local KMS serves region "
            "eu-central-1 (region in envcrypt.conf)");
}

}  // namespace
}  // namespace envcrypt
