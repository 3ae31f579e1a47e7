#include "util/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "util/unique_fd.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

fs::path make_temp_dir() {
  std::string pattern = (fs::temp_directory_path() / "file_io_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void put(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// Every name in the directory: a temp file left behind shows up here.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Sets the umask for one scope.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

// Limits the size of files this process writes to `bytes` for one scope, so
// that a write fails part way (EFBIG) even for root, which a read-only
// directory or a full disk would not reliably do.
class ScopedFileSizeLimit {
 public:
  explicit ScopedFileSizeLimit(rlim_t bytes) {
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &old_), 0);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    const struct rlimit limit = {bytes, old_.rlim_max};
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  }
  ~ScopedFileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }
  ScopedFileSizeLimit(const ScopedFileSizeLimit&) = delete;
  ScopedFileSizeLimit& operator=(const ScopedFileSizeLimit&) = delete;

 private:
  struct rlimit old_ {};
  sighandler_t old_handler_ = SIG_DFL;
};

class FileIoTest : public ::testing::Test {
 protected:
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, ec);
    fs::remove_all(dir_, ec);
  }

  fs::path dir_ = make_temp_dir();
  fs::path file_ = dir_ / "file";
};

// ----- write_file_durably -----

TEST_F(FileIoTest, ModeIsExactUnderARestrictiveUmask) {
  const ScopedUmask mask(077);
  ASSERT_TRUE(write_file_durably(file_, "x", {.mode = 0644}).ok());
  EXPECT_EQ(mode_of(file_), 0644U);
}

TEST_F(FileIoTest, ModeIsExactUnderAnOpenUmask) {
  const ScopedUmask mask(000);
  ASSERT_TRUE(write_file_durably(file_, "x").ok());
  EXPECT_EQ(mode_of(file_), 0600U);
  ASSERT_TRUE(write_file_durably(dir_ / "other", "x", {.mode = 0640}).ok());
  EXPECT_EQ(mode_of(dir_ / "other"), 0640U);
}

TEST_F(FileIoTest, ReplacingGivesTheAskedModeNotTheOldOne) {
  put(file_, "old");
  fs::permissions(file_, fs::perms::all);
  ASSERT_TRUE(write_file_durably(file_, "new", {.mode = 0600}).ok());
  EXPECT_EQ(mode_of(file_), 0600U);
}

TEST_F(FileIoTest, ContentsAreByteExact) {
  std::string bytes;
  for (int round = 0; round < 300; ++round) {
    for (int value = 0; value < 256; ++value) {
      bytes.push_back(static_cast<char>(value));
    }
  }
  ASSERT_TRUE(write_file_durably(file_, bytes).ok());
  EXPECT_EQ(slurp(file_), bytes);
  ASSERT_TRUE(write_file_durably(dir_ / "empty", "").ok());
  EXPECT_EQ(fs::file_size(dir_ / "empty"), 0U);
}

TEST_F(FileIoTest, ReplaceSwapsInANewFileOfExactlyTheNewContents) {
  put(file_, "a much longer old text");
  struct stat before {};
  ASSERT_EQ(::stat(file_.c_str(), &before), 0);
  ASSERT_TRUE(write_file_durably(file_, "short").ok());
  EXPECT_EQ(slurp(file_), "short");
  struct stat after {};
  ASSERT_EQ(::stat(file_.c_str(), &after), 0);
  // A new inode: a reader holding the old file never sees a torn one.
  EXPECT_NE(before.st_ino, after.st_ino);
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, RefuseCreatesAFreeName) {
  ASSERT_TRUE(
      write_file_durably(file_, "new", {.mode = 0640, .if_exists = IfExists::kRefuse}).ok());
  EXPECT_EQ(slurp(file_), "new");
  EXPECT_EQ(mode_of(file_), 0640U);
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, RefuseLeavesAnExistingFileUntouched) {
  put(file_, "keep me");
  fs::permissions(file_, fs::perms::owner_read);
  const Status written = write_file_durably(file_, "new", {.if_exists = IfExists::kRefuse});
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(written.error().message(), file_.string() + " exists: refusing to overwrite it");
  EXPECT_EQ(slurp(file_), "keep me");
  EXPECT_EQ(mode_of(file_), 0400U);
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, RefuseLeavesADanglingSymlinkAndCreatesNothingThroughIt) {
  fs::create_symlink(dir_ / "nowhere", file_);
  const Status written = write_file_durably(file_, "new", {.if_exists = IfExists::kRefuse});
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kConflict);
  EXPECT_FALSE(fs::exists(dir_ / "nowhere"));
  EXPECT_TRUE(fs::is_symlink(file_));
}

TEST_F(FileIoTest, ReplaceRefusesASymlinkAndLeavesItsTargetUntouched) {
  const fs::path target = dir_ / "target";
  put(target, "target text");
  fs::create_symlink(target, file_);
  const Status written = write_file_durably(file_, "new");
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(written.error().message(),
            file_.string() + " is a symbolic link: refusing to replace it");
  EXPECT_EQ(slurp(target), "target text");
  EXPECT_TRUE(fs::is_symlink(file_));
  EXPECT_EQ(fs::read_symlink(file_), target);
  EXPECT_EQ(names_in(dir_), (std::vector<std::string>{"file", "target"}));
}

TEST_F(FileIoTest, AMissingDirectoryIsAnErrorNamingThePath) {
  const fs::path path = dir_ / "missing" / "file";
  const Status written = write_file_durably(path, "x");
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kIo);
  EXPECT_TRUE(written.error().message().starts_with("create " + (dir_ / "missing").string() +
                                                    "/.file.tmp-"))
      << written.error().message();
  EXPECT_TRUE(written.error().message().ends_with(": No such file or directory"))
      << written.error().message();
}

TEST_F(FileIoTest, AnUnwritableDirectoryLeavesNoTempFile) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "root writes into a mode 0500 directory";
  }
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  const Status written = write_file_durably(file_, "x");
  ASSERT_FALSE(written.ok());
  EXPECT_TRUE(written.error().message().ends_with(": Permission denied"))
      << written.error().message();
  fs::permissions(dir_, fs::perms::owner_all);
  EXPECT_TRUE(names_in(dir_).empty());
}

TEST_F(FileIoTest, AFailedWriteRemovesTheTempFileAndKeepsTheOldContents) {
  put(file_, "old");
  Status written = OkStatus();
  {
    const ScopedFileSizeLimit limit(4096);
    written = write_file_durably(file_, std::string(8192, 'n'));
  }
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kIo);
  EXPECT_TRUE(written.error().message().ends_with(": File too large")) << written.error().message();
  EXPECT_EQ(slurp(file_), "old");
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, AFailedRenameRemovesTheTempFile) {
  // rename(2) of a file over a directory fails (EISDIR), after the temp
  // file was written and synced.
  fs::create_directory(file_);
  const Status written = write_file_durably(file_, "x");
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kIo);
  EXPECT_EQ(written.error().message(), "replace " + file_.string() + ": Is a directory");
  EXPECT_TRUE(fs::is_directory(file_));
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, ANameWithoutADirectoryIsInTheCurrentOne) {
  const fs::path old_cwd = fs::current_path();
  fs::current_path(dir_);
  const Status written = write_file_durably("plain", "x", {.if_exists = IfExists::kRefuse});
  const Status replaced = write_file_durably("plain", "y");
  fs::current_path(old_cwd);
  ASSERT_TRUE(written.ok()) << written.error().message();
  ASSERT_TRUE(replaced.ok()) << replaced.error().message();
  EXPECT_EQ(slurp(dir_ / "plain"), "y");
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"plain"});
}

TEST_F(FileIoTest, OwnerAndGroupAreSetWhenRoot) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "only root gives a file away";
  }
  ASSERT_TRUE(write_file_durably(file_, "x", {.mode = 0640, .owner = 1234, .group = 5678}).ok());
  struct stat st {};
  ASSERT_EQ(::stat(file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234U);
  EXPECT_EQ(st.st_gid, 5678U);
  EXPECT_EQ(st.st_mode & 07777, 0640U);
  ASSERT_TRUE(write_file_durably(dir_ / "group-only", "x", {.group = 4321}).ok());
  ASSERT_EQ(::stat((dir_ / "group-only").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0U);
  EXPECT_EQ(st.st_gid, 4321U);
}

TEST_F(FileIoTest, UnderALockAKilledWritersTempFileIsReplaced) {
  put(file_, "old");
  put(dir_ / ".file.tmp", "a killed writer's half");
  ASSERT_TRUE(write_file_durably(file_, "new", {.writers_hold_a_lock = true}).ok());
  EXPECT_EQ(slurp(file_), "new");
  EXPECT_EQ(names_in(dir_), std::vector<std::string>{"file"});
}

TEST_F(FileIoTest, UnderALockASymlinkAtTheTempNameIsRemovedNotFollowed) {
  const fs::path target = dir_ / "target";
  put(target, "target text");
  fs::create_symlink(target, dir_ / ".file.tmp");
  ASSERT_TRUE(write_file_durably(file_, "new", {.writers_hold_a_lock = true}).ok());
  EXPECT_EQ(slurp(file_), "new");
  EXPECT_EQ(slurp(target), "target text");
  EXPECT_EQ(names_in(dir_), (std::vector<std::string>{"file", "target"}));
}

TEST_F(FileIoTest, WithoutALockTheLockedWritersTempFileIsLeftAlone) {
  put(dir_ / ".file.tmp", "a live writer's");
  ASSERT_TRUE(write_file_durably(file_, "new").ok());
  EXPECT_EQ(slurp(file_), "new");
  EXPECT_EQ(slurp(dir_ / ".file.tmp"), "a live writer's");
  EXPECT_EQ(names_in(dir_), (std::vector<std::string>{".file.tmp", "file"}));
}

// ----- pwrite_all -----

TEST_F(FileIoTest, PwriteAllWritesAtTheOffset) {
  put(file_, "0123456789");
  const UniqueFd fd(::open(file_.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  const std::vector<std::uint8_t> data = {'a', 'b', 'c'};
  ASSERT_TRUE(pwrite_all(fd.get(), data, 4, "write file").ok());
  EXPECT_EQ(slurp(file_), "0123abc789");
}

TEST_F(FileIoTest, PwriteAllResumesAfterAShortWriteAndNamesTheFailedOffset) {
  const UniqueFd fd(::open(file_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid());
  const std::vector<std::uint8_t> data(8192, 'p');
  Status written = OkStatus();
  {
    // The first pwrite stops short at 5000; the resumed one fails there.
    const ScopedFileSizeLimit limit(5000);
    written = pwrite_all(fd.get(), data, 1000, "write file");
  }
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().code(), ErrorCode::kIo);
  EXPECT_EQ(written.error().message(), "write file at 5000: File too large");
  EXPECT_EQ(fs::file_size(file_), 5000U);
}

TEST_F(FileIoTest, PwriteAllReportsTheErrno) {
  const std::vector<std::uint8_t> data = {'x'};
  const Status written = pwrite_all(-1, data, 7, "write nothing");
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().message(), "write nothing at 7: Bad file descriptor");
}

// ----- read_to_end -----

TEST_F(FileIoTest, ReadToEndReadsEveryByteFromWhereTheFileStands) {
  const std::string text = std::string(200000, 'a') + "tail";  // several reads
  put(file_, text);
  const UniqueFd fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(::lseek(fd.get(), 3, SEEK_SET), 3);
  const auto read = read_to_end(fd.get(), "read file");
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(*read, text.substr(3));
}

TEST_F(FileIoTest, ReadToEndTakesExactlyTheLimitAndRefusesOneByteMore) {
  put(file_, "0123456789");
  const UniqueFd exact(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(read_to_end(exact.get(), "read file", 10).value(), "0123456789");
  const UniqueFd over(::open(file_.c_str(), O_RDONLY | O_CLOEXEC));
  const auto refused = read_to_end(over.get(), "read file", 9);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(), "read file: more than 9 bytes");
}

TEST_F(FileIoTest, ReadToEndStopsAnEndlessFileAtTheLimit) {
  const UniqueFd zero(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  const auto refused = read_to_end(zero.get(), "read /dev/zero", 100000);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(), "read /dev/zero: more than 100000 bytes");
}

TEST_F(FileIoTest, ReadToEndNamesWhatFailed) {
  const UniqueFd directory(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const auto failed = read_to_end(directory.get(), "read " + dir_.string());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kIo);
  EXPECT_EQ(failed.error().message(), "read " + dir_.string() + ": Is a directory");
}

// ----- read_file_at_most -----

TEST_F(FileIoTest, ReadFileAtMostReadsASmallFileAndNamesAMissingOne) {
  put(file_, "token\n");
  EXPECT_EQ(read_file_at_most(file_, 6).value(), "token\n");
  const auto missing = read_file_at_most(dir_ / "missing", 6);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), (dir_ / "missing").string() + ": No such file or directory");
}

TEST_F(FileIoTest, ReadFileAtMostRefusesAFifoInsteadOfWaitingForAWriter) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto refused = read_file_at_most(fifo, 65536);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(), fifo.string() + ": a pipe or socket, not a file");
}

TEST_F(FileIoTest, ReadFileAtMostRefusesDevZeroInsteadOfFillingMemory) {
  const auto refused = read_file_at_most("/dev/zero", 65536);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(), "/dev/zero: more than 65536 bytes");
}

}  // namespace
}  // namespace envcrypt
