#include "util/keystore.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

namespace envcrypt {
namespace {

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keystore_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

mode_t mode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class KeystoreTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::filesystem::path root_ = make_temp_dir();
};

// A document whose every byte depends on its counter, so a torn or mixed
// file cannot pass for a whole one.
std::string document(int counter) {
  return std::to_string(counter) + ":" + std::string(65536, static_cast<char>('a' + counter % 26)) +
         ":end";
}

int counter_of(const std::string& text) {
  const int counter = std::stoi(text.substr(0, text.find(':')));
  EXPECT_EQ(text, document(counter)) << "torn document for counter " << counter;
  return counter;
}

Keystore::Updater increment() {
  return [](const std::optional<std::string>& current) -> Result<std::optional<std::string>> {
    return std::optional<std::string>(document(current ? counter_of(*current) + 1 : 1));
  };
}

TEST_F(KeystoreTest, CreatesMissingDirectoriesPrivate) {
  const std::filesystem::path dir = root_ / "var" / "lib" / "kms";
  ASSERT_TRUE(Keystore::open(dir).ok());
  EXPECT_EQ(mode_of(dir), 0700U);
  EXPECT_EQ(mode_of(root_ / "var"), 0700U);
}

TEST_F(KeystoreTest, RefusesGroupOrWorldAccessibleDirectory) {
  const std::filesystem::path dir = root_ / "kms";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  const Result<Keystore> opened = Keystore::open(dir);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), ErrorCode::kDenied);
  EXPECT_NE(opened.error().message().find(dir.string() + " has mode 0755"), std::string::npos)
      << opened.error().message();
}

TEST_F(KeystoreTest, RefusesGroupReadableFile) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  ASSERT_TRUE(store.update("doc", increment()).ok());
  EXPECT_EQ(mode_of(store.path_of("doc")), 0600U);
  ASSERT_EQ(::chmod(store.path_of("doc").c_str(), 0640), 0);
  const Status refused = store.update("doc", increment());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_NE(refused.error().message().find(store.path_of("doc").string() + " has mode 0640"),
            std::string::npos)
      << refused.error().message();
  EXPECT_FALSE(store.read("doc").ok());
}

TEST_F(KeystoreTest, UpdateReadAndNoChange) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  EXPECT_FALSE(store.read("doc").value().has_value());
  ASSERT_TRUE(
      store
          .update("doc",
                  [](const std::optional<std::string>&) -> Result<std::optional<std::string>> {
                    return std::optional<std::string>();
                  })
          .ok());
  EXPECT_FALSE(std::filesystem::exists(store.path_of("doc")));
  ASSERT_TRUE(store.update("doc", increment()).ok());
  ASSERT_TRUE(store.update("doc", increment()).ok());
  EXPECT_EQ(counter_of(store.read("doc").value().value()), 2);
}

TEST_F(KeystoreTest, FailedUpdaterLeavesTheOldContents) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  ASSERT_TRUE(store.update("doc", increment()).ok());
  const Status failed = store.update(
      "doc", [](const std::optional<std::string>&) -> Result<std::optional<std::string>> {
        return Error(ErrorCode::kDenied, "no");
      });
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(counter_of(store.read("doc").value().value()), 1);
}

TEST_F(KeystoreTest, RefusesBadNames) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  EXPECT_FALSE(store.read("../escape").ok());
  EXPECT_FALSE(store.read(".hidden").ok());
  EXPECT_FALSE(store.read("").ok());
}

// A writer killed with SIGKILL at random instants leaves the old or the new
// document, never a torn one, and the next writer carries on from it.
TEST_F(KeystoreTest, SigkillMidUpdateLeavesOldOrNewState) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  std::mt19937 random(12345);
  int last_seen = 0;
  // At least 30 kills, and more until the writers have made real progress:
  // a loaded machine slows them down but does not fail the test.
  for (int round = 0; round < 300 && (round < 30 || last_seen < 10); ++round) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (;;) {
        if (!store.update("doc", increment()).ok()) {
          std::_Exit(1);
        }
      }
    }
    ::usleep(std::uniform_int_distribution<useconds_t>(0, 50000)(random));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer failed instead of being killed";
    const std::optional<std::string> contents = store.read("doc").value();
    if (contents) {
      const int counter = counter_of(*contents);
      EXPECT_GE(counter, last_seen);
      last_seen = counter;
    }
  }
  EXPECT_GE(last_seen, 10) << "the writers made too little progress to test anything";
  ASSERT_TRUE(store.update("doc", increment()).ok());
  EXPECT_EQ(counter_of(store.read("doc").value().value()), last_seen + 1);
}

// Two processes incrementing the same counter never lose an increment.
TEST_F(KeystoreTest, ConcurrentWritersNeverLoseAnUpdate) {
  const Keystore store = Keystore::open(root_ / "kms").value();
  constexpr int kPerWriter = 50;
  std::vector<pid_t> children;
  for (int writer = 0; writer < 2; ++writer) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (int i = 0; i < kPerWriter; ++i) {
        if (!store.update("doc", increment()).ok()) {
          std::_Exit(1);
        }
      }
      std::_Exit(0);
    }
    children.push_back(child);
  }
  for (const pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(counter_of(store.read("doc").value().value()), 2 * kPerWriter);
}

}  // namespace
}  // namespace envcrypt
