// Crash safety of rewrap at process level: a child process runs
// `envcryptctl rewrap` and is SIGKILLed at each step (ENVCRYPT_FAULT), and
// the disk must then unwrap (verify: KMS Decrypt + key check value) with
// the old wrap or the new one, the right one for that step.  Also a header
// with one bad copy (the good one must be written last), torn writes of
// either copy, the pause mode the VM test uses, and detached headers.
// tests/host/test_rewrap_vm_crash.sh does the same with the whole guest killed.
#include "boot/rewrap.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cli/cli.h"
#include "cli/cli_test_support.h"
#include "header/header.h"
#include "kms/kms_test_support.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

using cli_testing::read_text;

void overwrite(const fs::path& path, std::uint64_t offset, const std::string& bytes) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

int run(const fs::path& config, std::vector<std::string> args) {
  args.insert(args.begin(), {"--config", config.string()});
  const cli_testing::CliRun result = cli_testing::run_envcryptctl(std::move(args));
  EXPECT_EQ(result.code, 0) << result.err;
  return result.code;
}

class RewrapCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-rewrap");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_, cli_testing::local_kms_config(dir_));
    image_ = dir_ / "disk.img";
    cli_testing::make_sparse_image(image_, 32 << 20);
    run(config_, {"kms", "create-key", "--alias", "alias/web"});
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Formats under version 1 and rotates: rewrap then moves 1 -> 2.
  void format_and_rotate(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"format", image_.string(), "--cmk", "alias/web"};
    args.insert(args.end(), extra.begin(), extra.end());
    run(config_, args);
    run(config_, {"kms", "rotate-key", "alias/web"});
  }

  // Starts rewrap in a child with ENVCRYPT_FAULT=`fault`.
  pid_t spawn_rewrap(const std::string& fault, const std::vector<std::string>& extra = {},
                     int stderr_fd = -1) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("ENVCRYPT_FAULT", fault.c_str(), 1);
      if (stderr_fd >= 0) {
        ::dup2(stderr_fd, STDERR_FILENO);
      }
      std::vector<std::string> args = {"rewrap", image_.string()};
      args.insert(args.end(), extra.begin(), extra.end());
      ::_exit(run(config_, args) == 0 ? 0 : 99);
    }
    return pid;
  }

  // Runs it to its end; returns the wait status.
  int rewrap_child(const std::string& fault, const std::vector<std::string>& extra = {}) {
    const pid_t pid = spawn_rewrap(fault, extra);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  }

  HeaderSelection header(const fs::path& path) {
    auto selection = read_volume_header(path, std::nullopt);
    EXPECT_TRUE(selection.ok()) << selection.error().message();
    return std::move(selection).value();
  }

  // The disk unwraps (KMS Decrypt with its context, key check value) under
  // the wrap its header holds now, which is CMK version `version`.
  void expect_attachable_with(std::uint32_t version, const fs::path& path) {
    auto config = load_config(config_);
    ASSERT_TRUE(config.ok());
    KmsRegistry registry(std::move(config).value());
    const HeaderSelection selection = header(path);
    EXPECT_EQ(selection.header.wrapped.cmk_version, version);
    auto key = unlock(registry, selection.header);
    EXPECT_TRUE(key.ok()) << key.error().message();
  }

  fs::path dir_;
  fs::path config_;
  fs::path image_;
};

class RewrapKilledAtStep : public RewrapCrashTest,
                           public ::testing::WithParamInterface<std::string_view> {};

TEST_P(RewrapKilledAtStep, DiskAttachesWithOldOrNewWrap) {
  format_and_rotate();
  const std::string data_before = read_text(image_).substr(kDefaultDataOffset);
  const int status = rewrap_child("rewrap:" + std::string(GetParam()));
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  // The first copy's write is in force as soon as it reaches the file.
  expect_attachable_with(GetParam() == "reencrypted" ? 1 : 2, image_);
  EXPECT_TRUE(read_text(image_).substr(kDefaultDataOffset) == data_before);

  // Running rewrap again finishes the job: both copies current.
  run(config_, {"rewrap", image_.string()});
  const HeaderSelection after = header(image_);
  EXPECT_FALSE(after.degraded());
  expect_attachable_with(2, image_);
}

INSTANTIATE_TEST_SUITE_P(EveryStep, RewrapKilledAtStep, ::testing::ValuesIn(kRewrapSteps),
                         [](const auto& param_info) {
                           std::string name(param_info.param);
                           std::erase(name, '-');
                           return name;
                         });

TEST_F(RewrapCrashTest, OnlyValidCopyIsWrittenLast) {
  std::uint32_t primary_version = 1;
  for (const std::uint64_t bad : {kPrimaryOffset, kSecondaryOffset}) {
    SCOPED_TRACE(bad);
    ++primary_version;
    format_and_rotate({"--force"});
    overwrite(image_, bad + 200, "garbage");
    ASSERT_EQ(WTERMSIG(rewrap_child("rewrap:first-copy-written")), SIGKILL);
    const HeaderSelection selection = header(image_);
    const CopyReport& rewritten = bad == kPrimaryOffset ? selection.primary : selection.secondary;
    const CopyReport& untouched = bad == kPrimaryOffset ? selection.secondary : selection.primary;
    EXPECT_EQ(rewritten.state, CopyState::kValid);
    EXPECT_EQ(rewritten.sequence, 2U);
    EXPECT_EQ(untouched.state, CopyState::kStale);
    EXPECT_EQ(untouched.sequence, 1U);
    expect_attachable_with(primary_version, image_);
  }
}

TEST_F(RewrapCrashTest, TornWriteOfEitherCopy) {
  format_and_rotate();
  const std::string old_copies = read_text(image_).substr(0, kHeaderAreaSize);
  run(config_, {"rewrap", image_.string()});
  const std::string new_copies = read_text(image_).substr(0, kHeaderAreaSize);
  const std::size_t half = kHeaderSize / 2;
  auto restore_old = [&] { overwrite(image_, 0, old_copies); };

  // Both copies were valid, so the secondary goes first.  Torn there: old wrap.
  restore_old();
  overwrite(image_, kSecondaryOffset, new_copies.substr(kSecondaryOffset, half));
  EXPECT_EQ(header(image_).secondary.state, CopyState::kBadChecksum);
  expect_attachable_with(1, image_);

  // Secondary complete, primary torn: new wrap.
  restore_old();
  overwrite(image_, kSecondaryOffset, new_copies.substr(kSecondaryOffset, kHeaderSize));
  overwrite(image_, kPrimaryOffset, new_copies.substr(kPrimaryOffset, half));
  EXPECT_EQ(header(image_).primary.state, CopyState::kBadChecksum);
  expect_attachable_with(2, image_);
}

TEST_F(RewrapCrashTest, PauseWaitsToBeKilled) {
  format_and_rotate();
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = spawn_rewrap("rewrap:first-copy-flushed:pause", {}, pipe_fds[1]);
  ::close(pipe_fds[1]);
  std::string line;
  char c = 0;
  while (::read(pipe_fds[0], &c, 1) == 1 && c != '\n') {
    line += c;
  }
  ::close(pipe_fds[0]);
  EXPECT_EQ(line, "envcryptctl: fault injection: paused at rewrap:first-copy-flushed");
  // Still paused: not reaped by a non-blocking wait.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0);
  expect_attachable_with(2, image_);
  EXPECT_EQ(header(image_).primary.state, CopyState::kStale);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(RewrapCrashTest, DetachedHeaderIsRewrittenDeviceUntouched) {
  const fs::path header_file = dir_ / "disk.hdr";
  format_and_rotate({"--header", header_file.string()});
  const std::string device_before = read_text(image_);
  ASSERT_EQ(
      WTERMSIG(rewrap_child("rewrap:second-copy-written", {"--header", header_file.string()})),
      SIGKILL);
  expect_attachable_with(2, header_file);
  EXPECT_TRUE(read_text(image_) == device_before);
}

// A KMS that wraps through a real one and then flips a bit of every wrap
// it returns, as a server ignoring our nonce or a faulty HSM would: the
// wrap is accepted by nobody, not even the KMS that made it.
class CorruptingKms final : public kms_testing::DelegatingKms {
 public:
  using DelegatingKms::DelegatingKms;

 protected:
  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& context, const CallContext& call) override {
    return corrupted(inner().envelope(call).wrap(keyref, plaintext, context));
  }
  Result<WrappedKey> rewrap_key(const WrappedKey& wrapped, const EncryptionContext& source_context,
                                std::string_view destination_keyref,
                                const EncryptionContext& destination_context,
                                const CallContext& call) override {
    return corrupted(inner().envelope(call).rewrap(wrapped, source_context, destination_keyref,
                                                   destination_context));
  }

 private:
  static Result<WrappedKey> corrupted(Result<WrappedKey> wrapped) {
    if (wrapped.ok()) {
      wrapped->ciphertext.at(0) ^= 0x01;
    }
    return wrapped;
  }
};

// Every new wrap is decrypted back before a header commits it.
class NewWrapVerifyTest : public RewrapCrashTest {
 protected:
  void SetUp() override {
    RewrapCrashTest::SetUp();
    config_value_ = load_config(config_).value();
    real_ = std::make_unique<KmsRegistry>(config_value_);
    faulty_ = std::make_unique<KmsRegistry>(config_value_);
    KmsClient* local = real_->for_key("alias/web").value();
    faulty_->adopt("local:" + config_value_.region, std::make_unique<CorruptingKms>(*local));
    key_uri_ = local->administration()->describe_key("alias/web").value().uri;
  }

  Config config_value_;
  std::unique_ptr<KmsRegistry> real_;
  std::unique_ptr<KmsRegistry> faulty_;
  std::string key_uri_;
};

TEST_F(NewWrapVerifyTest, FormatRefusesAWrapThatDoesNotDecryptBackAndWritesNothing) {
  const std::string before = read_text(image_);
  FormatOptions options;
  options.device = image_;
  options.cmk = "alias/web";
  auto formatted = format_volume(*faulty_, options, {});
  ASSERT_FALSE(formatted.ok());
  EXPECT_EQ(formatted.error().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(formatted.error().message(),
            key_uri_ +
                ": the new wrap of the data key does not decrypt back to it (unwrap failed: "
                "encryption context or blob does not match); nothing was written");
  EXPECT_TRUE(read_text(image_) == before);
}

TEST_F(NewWrapVerifyTest, RewrapRefusesAWrapThatDoesNotDecryptBackAndWritesNothing) {
  format_and_rotate();
  const std::string before = read_text(image_);
  auto rewrapped = rewrap_volume(*faulty_, {image_, std::nullopt, std::nullopt});
  ASSERT_FALSE(rewrapped.ok());
  EXPECT_EQ(rewrapped.error().code(), ErrorCode::kCorrupt);
  EXPECT_EQ(rewrapped.error().message(),
            key_uri_ +
                ": the new wrap does not decrypt back to this disk's data key (unwrap failed: "
                "encryption context or blob does not match); the header was not changed");
  EXPECT_TRUE(read_text(image_) == before);
  expect_attachable_with(1, image_);
}

}  // namespace
}  // namespace envcrypt
