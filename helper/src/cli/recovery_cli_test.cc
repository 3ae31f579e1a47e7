// The recovery commands on image files: format --recovery-key, recovery
// add|remove|show, upgrade-header and recover, the disasters they are for
// (a lost keystore), each refusal with its own message and nothing written,
// the audit lines, and upgrade-header killed at each step.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "boot/rewrap.h"
#include "cli/cli_test_support.h"
#include "header/header.h"
#include "kms/recovery.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;
using cli_testing::read_text;
using cli_testing::write_text;

class RecoveryCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-recovery");
    config_ = dir_ / "envcrypt.conf";
    write_text(config_, cli_testing::local_kms_config(dir_));
    image_ = dir_ / "disk.img";
    other_ = dir_ / "other.img";
    cli_testing::make_sparse_image(image_, 32 << 20);
    cli_testing::make_sparse_image(other_, 32 << 20);
    write_key_pair("recovery");
    write_key_pair("stranger");
    ok({"kms", "create-key", "--alias", "alias/web"});
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_key_pair(const std::string& name) { cli_testing::write_recovery_key_pair(dir_, name); }
  std::string pub(const std::string& name) { return (dir_ / (name + ".pub")).string(); }
  std::string key(const std::string& name) { return (dir_ / (name + ".key")).string(); }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_.string()});
    return cli_testing::run_envcryptctl(std::move(args));
  }
  std::string ok(std::vector<std::string> args) {
    CliRun r = run(std::move(args));
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  }
  void format_with_recovery(const fs::path& image) {
    ok({"format", image.string(), "--cmk", "alias/web", "--recovery-key", pub("recovery")});
  }
  HeaderSelection header(const fs::path& image) {
    auto bytes = read_text(image);
    auto selection = select_header(
        ByteView(reinterpret_cast<const std::uint8_t*>(bytes.data()), kHeaderSize),
        ByteView(reinterpret_cast<const std::uint8_t*>(bytes.data()) + kSecondaryOffset,
                 kHeaderSize));
    EXPECT_TRUE(selection.ok()) << selection.error().message();
    return selection.ok() ? *selection : HeaderSelection{};
  }
  // Loses the keystore and its root key, then sets up a new one with a new CMK.
  void lose_keystore() {
    fs::remove_all(dir_ / "kms");
    fs::remove(dir_ / "root.key");
    ok({"kms", "create-key", "--alias", "alias/new"});
  }
  // Edits both header copies with `edit` and recomputes their checksums, as
  // someone who can write the disk can.
  template <typename Edit>
  void edit_both_copies(const fs::path& image, Edit edit) {
    std::string bytes = read_text(image);
    for (std::uint64_t offset : {kPrimaryOffset, kSecondaryOffset}) {
      auto* copy = reinterpret_cast<std::uint8_t*>(bytes.data()) + offset;
      edit(copy);
      constexpr std::size_t kChecksum = offsetof(envcrypt_header, checksum);
      const Sha256Digest sum = sha256(ByteView(copy, kChecksum));
      std::memcpy(copy + kChecksum, sum.data(), sum.size());
    }
    write_text(image, bytes);
  }
  std::string audit_log() { return read_text(dir_ / "kms" / "audit.log"); }

  fs::path dir_, config_, image_, other_;
};

constexpr std::size_t kRecoveryBlock = offsetof(envcrypt_header, recovery);

TEST_F(RecoveryCliTest, FormatWithARecoveryKeyWritesVersion2) {
  format_with_recovery(image_);
  const HeaderSelection selection = header(image_);
  EXPECT_EQ(selection.header.version, 2U);
  ASSERT_TRUE(selection.header.recovery.has_value());
  const RecoveryPublicKey recovery_key = read_recovery_public_key(pub("recovery")).value();
  EXPECT_EQ(selection.header.recovery->key_id, recovery_key.id);
  EXPECT_NE(ok({"recovery", "show", image_.string()}).find(to_hex(recovery_key.id)),
            std::string::npos);
  EXPECT_NE(ok({"inspect", image_.string()}).find("envcrypt header version 2"), std::string::npos);
  EXPECT_NE(audit_log().find("\"FormatWithRecoveryWrap\""), std::string::npos);
  ok({"verify", image_.string()});
}

TEST_F(RecoveryCliTest, FormatWithoutARecoveryKeyStaysVersion1) {
  ok({"format", image_.string(), "--cmk", "alias/web"});
  EXPECT_EQ(header(image_).header.version, 1U);
  EXPECT_EQ(ok({"recovery", "show", image_.string()}),
            image_.string() + ": header version 1, recovery wrap none\n");
}

TEST_F(RecoveryCliTest, RecoversAfterTheKeystoreIsLost) {
  format_with_recovery(image_);
  lose_keystore();
  CliRun lost = run({"verify", image_.string()});
  EXPECT_NE(lost.code, 0);
  const std::string out = ok({"recover", image_.string(), "--recovery-private-key", key("recovery"),
                              "--cmk", "alias/new"});
  EXPECT_NE(out.find("recovered with recovery key"), std::string::npos) << out;
  ok({"verify", image_.string()});
  const HeaderSelection after = header(image_);
  EXPECT_TRUE(after.header.recovery.has_value());  // the recovery wrap stays
  EXPECT_EQ(after.header.sequence, 2U);
  const std::string log = audit_log();
  EXPECT_NE(log.find("\"Recover\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"pending\""), std::string::npos) << log;
}

TEST_F(RecoveryCliTest, WrongRecoveryKeyIsRefusedAndNothingWritten) {
  format_with_recovery(image_);
  lose_keystore();
  const std::string before = read_text(image_);
  CliRun refused = run({"recover", image_.string(), "--recovery-private-key", key("stranger"),
                        "--cmk", "alias/new"});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kDenied)) << refused.err;
  EXPECT_NE(refused.err.find("wrong recovery key: the recovery wrap is for key"), std::string::npos)
      << refused.err;
  EXPECT_EQ(read_text(image_), before);
  // The refused attempt is audited too.
  EXPECT_NE(audit_log().find("wrong recovery key"), std::string::npos);
}

TEST_F(RecoveryCliTest, TamperedRecoveryWrapIsRefusedAndNothingWritten) {
  format_with_recovery(image_);
  edit_both_copies(image_, [](std::uint8_t* copy) {
    copy[kRecoveryBlock + offsetof(envcrypt_recovery, wrapped_key) + 3] ^= 0x01;
  });
  lose_keystore();
  const std::string before = read_text(image_);
  CliRun refused = run({"recover", image_.string(), "--recovery-private-key", key("recovery"),
                        "--cmk", "alias/new"});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kCorrupt)) << refused.err;
  EXPECT_NE(refused.err.find("the recovery wrap failed authentication"), std::string::npos)
      << refused.err;
  EXPECT_EQ(read_text(image_), before);
}

TEST_F(RecoveryCliTest, RecoveryWrapMovedToAnotherDiskIsRefusedAndNothingWritten) {
  format_with_recovery(image_);
  format_with_recovery(other_);
  // The other disk's recovery block, pasted into this disk's header.
  const std::string donor = read_text(other_);
  edit_both_copies(image_, [&donor](std::uint8_t* copy) {
    std::memcpy(copy + kRecoveryBlock, donor.data() + kRecoveryBlock, sizeof(envcrypt_recovery));
  });
  lose_keystore();
  const std::string before = read_text(image_);
  CliRun refused = run({"recover", image_.string(), "--recovery-private-key", key("recovery"),
                        "--cmk", "alias/new"});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kCorrupt)) << refused.err;
  EXPECT_NE(refused.err.find("the recovery wrap was made for another disk"), std::string::npos)
      << refused.err;
  EXPECT_EQ(read_text(image_), before);
}

TEST_F(RecoveryCliTest, Version1NeedsAnExplicitUpgrade) {
  ok({"format", image_.string(), "--cmk", "alias/web"});
  const std::string before = read_text(image_);
  CliRun refused = run({"recovery", "add", image_.string(), "--recovery-key", pub("recovery")});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kUsage)) << refused.err;
  EXPECT_NE(refused.err.find("header version 1 cannot carry a recovery wrap; run `envcryptctl "
                             "upgrade-header " +
                             image_.string() + "` first"),
            std::string::npos)
      << refused.err;
  EXPECT_EQ(read_text(image_), before);

  EXPECT_NE(ok({"upgrade-header", image_.string()}).find("upgraded to header version 2"),
            std::string::npos);
  EXPECT_EQ(header(image_).header.version, 2U);
  ok({"verify", image_.string()});  // the CMK wrap still opens: its context did not change
  EXPECT_NE(ok({"upgrade-header", image_.string()}).find("nothing written"), std::string::npos);

  ok({"recovery", "add", image_.string(), "--recovery-key", pub("recovery")});
  lose_keystore();
  ok({"recover", image_.string(), "--recovery-private-key", key("recovery"), "--cmk", "alias/new"});
  ok({"verify", image_.string()});
}

TEST_F(RecoveryCliTest, AddRemoveAndReplace) {
  format_with_recovery(image_);
  CliRun twice = run({"recovery", "add", image_.string(), "--recovery-key", pub("stranger")});
  EXPECT_EQ(twice.code, static_cast<int>(ErrorCode::kConflict)) << twice.err;
  ok({"recovery", "add", image_.string(), "--recovery-key", pub("stranger"), "--replace"});
  const RecoveryPublicKey stranger = read_recovery_public_key(pub("stranger")).value();
  EXPECT_EQ(header(image_).header.recovery->key_id, stranger.id);

  ok({"recovery", "remove", image_.string()});
  const HeaderSelection removed = header(image_);
  EXPECT_EQ(removed.header.version, 2U);
  EXPECT_FALSE(removed.header.recovery.has_value());
  CliRun again = run({"recovery", "remove", image_.string()});
  EXPECT_EQ(again.code, static_cast<int>(ErrorCode::kNotFound)) << again.err;
  CliRun nothing = run({"recover", image_.string(), "--recovery-private-key", key("recovery")});
  EXPECT_EQ(nothing.code, static_cast<int>(ErrorCode::kNotFound)) << nothing.err;
  EXPECT_NE(nothing.err.find("the disk has no recovery wrap"), std::string::npos);
  const std::string log = audit_log();
  EXPECT_NE(log.find("\"AddRecoveryWrap\""), std::string::npos);
  EXPECT_NE(log.find("\"RemoveRecoveryWrap\""), std::string::npos);
}

TEST_F(RecoveryCliTest, KeyFilesOfTheWrongKindAreRefused) {
  CliRun wrong = run({"format", image_.string(), "--recovery-key", key("recovery")});
  EXPECT_EQ(wrong.code, static_cast<int>(ErrorCode::kUsage)) << wrong.err;
  EXPECT_NE(wrong.err.find("not a recovery public key"), std::string::npos) << wrong.err;
  EXPECT_EQ(read_text(image_), std::string(32 << 20, '\0'));
}

// upgrade-header killed at each step leaves a disk whose CMK wrap opens.
TEST_F(RecoveryCliTest, UpgradeKilledAtEachStepLeavesADiskThatOpens) {
  for (const std::string_view step : {std::string_view("prepared"), kRewrapSteps[1],
                                      kRewrapSteps[2], kRewrapSteps[3], kRewrapSteps[4]}) {
    ok({"format", image_.string(), "--cmk", "alias/web", "--force"});
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("ENVCRYPT_FAULT", ("recovery:" + std::string(step)).c_str(), 1);
      ::_exit(run({"upgrade-header", image_.string()}).code == 0 ? 0 : 99);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << step;
    const std::uint32_t version = header(image_).header.version;
    // The first copy's write is in force as soon as it reaches the file.
    EXPECT_EQ(version, step == "prepared" ? 1U : 2U) << step;
    ok({"verify", image_.string()});
    ok({"upgrade-header", image_.string()});  // finishes the work
    const HeaderSelection after = header(image_);
    EXPECT_EQ(after.header.version, 2U) << step;
    EXPECT_FALSE(after.degraded()) << step;
  }
}

// recovery add killed at each step: the disk verifies, with no recovery
// wrap or the new one, and running it again finishes the work.
TEST_F(RecoveryCliTest, AddKilledAtEachStepLeavesADiskThatOpens) {
  for (const std::string_view step : {std::string_view("prepared"), kRewrapSteps[1],
                                      kRewrapSteps[2], kRewrapSteps[3], kRewrapSteps[4]}) {
    ok({"format", image_.string(), "--cmk", "alias/web", "--force"});
    ok({"upgrade-header", image_.string()});
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("ENVCRYPT_FAULT", ("recovery:" + std::string(step)).c_str(), 1);
      ::_exit(run({"recovery", "add", image_.string(), "--recovery-key", pub("recovery")}).code == 0
                  ? 0
                  : 99);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << step;
    EXPECT_EQ(header(image_).header.recovery.has_value(), step != "prepared") << step;
    ok({"verify", image_.string()});
    ok({"recovery", "add", image_.string(), "--recovery-key", pub("recovery"), "--replace"});
    const HeaderSelection after = header(image_);
    EXPECT_FALSE(after.degraded()) << step;
    ASSERT_TRUE(after.header.recovery.has_value()) << step;
  }
  lose_keystore();
  ok({"recover", image_.string(), "--recovery-private-key", key("recovery"), "--cmk", "alias/new"});
  ok({"verify", image_.string()});
}

// A version 2 header goes through header-backup and header-restore whole.
TEST_F(RecoveryCliTest, HeaderBackupKeepsTheRecoveryWrap) {
  format_with_recovery(image_);
  const fs::path backup = dir_ / "header.bak";
  ok({"header-backup", image_.string(), backup.string()});
  ok({"recovery", "remove", image_.string()});
  ok({"header-restore", image_.string(), backup.string()});
  const HeaderSelection restored = header(image_);
  EXPECT_EQ(restored.header.version, 2U);
  EXPECT_TRUE(restored.header.recovery.has_value());
  lose_keystore();
  ok({"recover", image_.string(), "--recovery-private-key", key("recovery"), "--cmk", "alias/new"});
}

}  // namespace
}  // namespace envcrypt
