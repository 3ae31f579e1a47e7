// The boot commands in process, where they need no kernel: what a bad
// envcrypttab line does to generate-units, attach-all, preflight and
// tab-match, and the kernel command line's off switch.
#include "cli/boot_cli.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;

class BootCli : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("boot-cli");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(
        config_, cli_testing::local_kms_config(dir_) + "[boot]\nattach_timeout_seconds = 30\n");
    tab_ = dir_ / "envcrypttab";
    cmdline_ = dir_ / "cmdline";
    cli_testing::write_text(cmdline_, "root=/dev/vda1 ro\n");
    ::setenv("ENVCRYPT_CMDLINE", cmdline_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("ENVCRYPT_CMDLINE");
    fs::remove_all(dir_);
  }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_.string()});
    return cli_testing::run_envcryptctl(std::move(args));
  }

  std::string skipped_warning(unsigned line, const std::string& problem) const {
    return "envcryptctl: warning: " + tab_.string() + ":" + std::to_string(line) + ": " + problem +
           " (line skipped)\n";
  }

  fs::path dir_;
  fs::path config_;
  fs::path tab_;
  fs::path cmdline_;
};

TEST_F(BootCli, GenerateUnitsSkipsABadLineAndWritesTheOthers) {
  cli_testing::write_text(tab_, "data /dev/vdb\ntypo /dev/vdc nofaill\n");
  const fs::path out = dir_ / "gen";
  CliRun r = run({"generate-units", "--tab", tab_.string(), out.string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, skipped_warning(2, "unknown option 'nofaill'"));
  const std::string dropin =
      cli_testing::read_text(out / "envcrypt-attach@data.service.d/50-envcrypttab.conf");
  // The keystore and root key of envcrypt.conf, its attach timeout (30 + 90 s).
  EXPECT_NE(dropin.find("\nRequiresMountsFor=" + (dir_ / "kms").string() +
                        "\nRequiresMountsFor=" + (dir_ / "root.key").string() + "\n"),
            std::string::npos)
      << dropin;
  EXPECT_NE(dropin.find("\nTimeoutStartSec=120\n"), std::string::npos) << dropin;
  EXPECT_FALSE(fs::exists(out / "envcrypt-attach@typo.service.d"));
}

TEST_F(BootCli, EnvcryptNoGeneratesNothingAndMatchesNothing) {
  cli_testing::write_text(tab_, "data /dev/vdb\n");
  cli_testing::write_text(cmdline_, "root=/dev/vda1 envcrypt=no\n");
  const fs::path out = dir_ / "gen";
  CliRun generated = run({"generate-units", "--tab", tab_.string(), out.string()});
  EXPECT_EQ(generated.code, 0) << generated.err;
  EXPECT_FALSE(fs::exists(out)) << "units written with envcrypt=no";

  CliRun match = run({"tab-match", "--tab", tab_.string(), "/dev/vdb"});
  EXPECT_EQ(match.code, 0) << match.err;
  EXPECT_EQ(match.out, "ENVCRYPT_NAME=\nENVCRYPT_UNIT=\nENVCRYPT_NETDEV=\nENVCRYPT_NOAUTO=\n");
}

TEST_F(BootCli, TabMatchSaysNetdevForEitherKindOfRemote) {
  cli_testing::write_text(tab_, "kms /dev/vdb remote-kms\nnbd /dev/nbd0 _netdev\n");
  CliRun match = run({"tab-match", "--tab", tab_.string(), "/dev/nbd0"});
  EXPECT_EQ(match.code, 0) << match.err;
  EXPECT_EQ(match.out,
            "ENVCRYPT_NAME=nbd\nENVCRYPT_UNIT=envcrypt-attach@nbd.service\nENVCRYPT_NETDEV=1\n"
            "ENVCRYPT_NOAUTO=0\n");
}

TEST_F(BootCli, AttachAllOverTheWholeTableFailsWithExit2WhenALineWasSkipped) {
  cli_testing::write_text(tab_, "typo /dev/vdc nofaill\n");
  CliRun r = run({"attach-all", "--tab", tab_.string()});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.out, "attach-all: no disks\n");
  EXPECT_EQ(r.err, skipped_warning(1, "unknown option 'nofaill'") +
                       "envcryptctl: attach-all: 1 envcrypttab line skipped, first " +
                       tab_.string() + ":1: unknown option 'nofaill'\n");
}

TEST_F(BootCli, PreflightFailsWithExit2WhenALineWasSkipped) {
  cli_testing::write_text(tab_, "lonely\n");
  CliRun r = run({"preflight", "--tab", tab_.string()});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err, skipped_warning(1, "expected 'name device [options]', found 1 field") +
                       "envcryptctl: preflight: 1 envcrypttab line skipped, first " +
                       tab_.string() + ":1: expected 'name device [options]', found 1 field\n");
}

// systemd and whoever inspects the units read them: 0644 even when the
// generator runs under a tight umask.
TEST_F(BootCli, GeneratedUnitsAreWorldReadableWhateverTheUmask) {
  cli_testing::write_text(tab_, "data /dev/vdb\n");
  const fs::path out = dir_ / "gen";
  const mode_t old_mask = ::umask(077);
  CliRun r = run({"generate-units", "--tab", tab_.string(), out.string()});
  ::umask(old_mask);
  EXPECT_EQ(r.code, 0) << r.err;
  const fs::path dropin = out / "envcrypt-attach@data.service.d/50-envcrypttab.conf";
  struct stat st {};
  ASSERT_EQ(::stat(dropin.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644U);
}

}  // namespace
}  // namespace envcrypt
