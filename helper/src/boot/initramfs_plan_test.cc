// The initramfs plan: which envcrypttab lines the initramfs-tools hook puts
// in the initramfs (the option `initramfs`, the disks of / and /usr in
// fstab), the files their KMS needs, and the refusal of a plaintext local
// root key; plan_initramfs() with fakes, then `envcryptctl initramfs-plan`
// in process on image files.
#include "boot/initramfs_plan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;

std::vector<TabEntry> table_of(const std::string& text) {
  Envcrypttab tab = parse_envcrypttab(text, "/etc/envcrypttab");
  EXPECT_TRUE(tab.skipped.empty()) << tab.skipped.front().message();
  return tab.entries;
}

const std::string kPlaintextRefusal =
    ": a plaintext local root key in the initramfs would lie next to the disk it opens; seal it "
    "with envcryptctl kms seal-root-key or use a KMIP CMK";

TEST(InitramfsOption, ParsedAsAFlagThatTakesNoValue) {
  auto tab = parse_envcrypttab(
      "root UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 initramfs\n"
      "data /dev/vdb discard\n"
      "bad /dev/vdc initramfs=yes\n",
      "/etc/envcrypttab");
  ASSERT_EQ(tab.entries.size(), 2U);
  EXPECT_TRUE(tab.entries[0].initramfs);
  EXPECT_FALSE(tab.entries[1].initramfs);
  ASSERT_EQ(tab.skipped.size(), 1U);
  EXPECT_EQ(tab.skipped[0].message(), "/etc/envcrypttab:3: option 'initramfs' takes no value");
}

TEST(InitramfsPlanFstab, RootAndUsrLastLineWinsCommentsIgnored) {
  EXPECT_EQ(fstab_system_specs("# /dev/mapper/old / ext4\n"
                               "/dev/mapper/first / ext4 defaults 0 1\n"
                               "UUID=ab12 /boot ext4 defaults 0 2\n"
                               "\n"
                               "/dev/mapper/root\t/\text4\tdefaults\t0\t1\n"
                               "LABEL=usr /usr ext4 ro 0 2\n"),
            (std::vector<std::string>{"/dev/mapper/root", "LABEL=usr"}));
  EXPECT_EQ(fstab_system_specs(""), (std::vector<std::string>{"", ""}));
}

TEST(InitramfsPlanTabLine, OptionsKeptNoautoDroppedDeviceTimeoutDefaulted) {
  auto table = table_of(
      "root UUID=4F0C6D8E-0D1A-4C55-9D0E-2B8F1A6C3E11 readonly,discard,noauto,initramfs\n"
      "usr /dev/vdb none nofail,_netdev,remote-kms,header=/etc/envcrypt/usr.hdr,"
      "x-systemd.device-timeout=2min\n");
  ASSERT_EQ(table.size(), 2U);
  EXPECT_EQ(initramfs_tab_line(table[0], kInitramfsDeviceTimeout),
            "root UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 "
            "readonly,discard,x-systemd.device-timeout=90000ms");
  EXPECT_EQ(initramfs_tab_line(table[1], kInitramfsDeviceTimeout),
            "usr /dev/vdb nofail,_netdev,remote-kms,header=/etc/envcrypt/usr.hdr,"
            "x-systemd.device-timeout=120000ms");
  // What the initramfs reads back is what the line said.
  auto reread = table_of(initramfs_tab_line(table[1], kInitramfsDeviceTimeout) + "\n");
  ASSERT_EQ(reread.size(), 1U);
  EXPECT_TRUE(reread[0].nofail && reread[0].remote_device && reread[0].remote_kms);
  EXPECT_EQ(reread[0].device_timeout, std::chrono::minutes(2));
}

class InitramfsPlanTest : public testing::Test {
 protected:
  InitramfsPlanTest() {
    inputs_.config.local_root_key = "/etc/envcrypt/root.key";
    inputs_.config.local_dir = "/var/lib/envcrypt/kms";
    inputs_.config.source = "/etc/envcrypt/envcrypt.conf";
    KmipEndpoint endpoint;
    endpoint.name = "main";
    endpoint.host = "kms1.example";
    endpoint.failover = {{"kms2.example", 5697}};
    endpoint.ca = "/etc/envcrypt/ca.pem";
    endpoint.cert = "/etc/envcrypt/client.pem";
    endpoint.key = "/etc/envcrypt/client.key";
    inputs_.config.kmip_endpoints["main"] = endpoint;
    inputs_.cmk_of = [this](const TabEntry& entry) -> Result<std::string> {
      auto it = cmks_.find(entry.name);
      if (it == cmks_.end()) {
        return Error(ErrorCode::kNotFound, entry.device_spec() + " does not exist");
      }
      return it->second;
    };
    inputs_.mapping_names = [this](const std::string& spec) {
      auto it = mappings_.find(spec);
      return it == mappings_.end() ? std::vector<std::string>() : it->second;
    };
    inputs_.exists = [this](const fs::path& path) { return existing_.count(path) > 0; };
  }

  InitramfsPlanInputs inputs_;
  std::map<std::string, std::string> cmks_;
  std::map<std::string, std::vector<std::string>> mappings_;
  std::set<fs::path> existing_;
};

TEST_F(InitramfsPlanTest, NothingNeededWithoutOptionOrSystemDisk) {
  inputs_.table = table_of("data /dev/vdb\n");
  inputs_.fstab_text = "/dev/vda1 / ext4 defaults 0 1\n/dev/mapper/data /srv ext4 defaults 0 2\n";
  mappings_["/dev/vda1"] = {};
  auto plan = plan_initramfs(inputs_);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(initramfs_plan_output(*plan),
            "NEEDED=no\nNETWORK=no\nTPM=no\nCONFIG=/etc/envcrypt/envcrypt.conf\n");
}

TEST_F(InitramfsPlanTest, RootFromFstabOnKmipUsrByTheMappingUnderItsFileSystem) {
  inputs_.table = table_of(
      "data /dev/vdd\n"
      "root UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 remote-kms\n"
      "usr /dev/vdc header=/etc/envcrypt/usr.hdr\n"
      "logs /dev/vde initramfs,nofail\n");
  inputs_.fstab_text =
      "/dev/mapper/root / ext4 defaults 0 1\n"
      "UUID=0bd1 /usr ext4 defaults 0 2\n";
  mappings_["/dev/mapper/root"] = {"root"};
  mappings_["UUID=0bd1"] = {"vg-usr", "usr"};  // LVM on the envcrypt disk
  cmks_["root"] = "kmip://kms2.example:5697/0123";
  cmks_["usr"] = "kmip://main/4567";
  cmks_["logs"] = "local://local-1/89ab";
  existing_ = {"/etc/envcrypt/root.key.tpm", "/etc/envcrypt/root.key"};
  auto plan = plan_initramfs(inputs_);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(initramfs_plan_output(*plan),
            "NEEDED=yes\nNETWORK=yes\nTPM=yes\nCONFIG=/etc/envcrypt/envcrypt.conf\n"
            "DISK=root\nDISK_WHY=fstab /\nDISK_CMK=kmip://kms2.example:5697/0123\n"
            "DISK_CMK_FROM=header\nDISK_KMS=kmip:main\n"
            "TAB_LINE=root UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 "
            "remote-kms,x-systemd.device-timeout=90000ms\n"
            "DISK=usr\nDISK_WHY=fstab /usr\nDISK_CMK=kmip://main/4567\nDISK_CMK_FROM=header\n"
            "DISK_KMS=kmip:main\n"
            "TAB_LINE=usr /dev/vdc header=/etc/envcrypt/usr.hdr,"
            "x-systemd.device-timeout=90000ms\n"
            "DISK=logs\nDISK_WHY=option initramfs\nDISK_CMK=local://local-1/89ab\n"
            "DISK_CMK_FROM=header\nDISK_KMS=local\n"
            "TAB_LINE=logs /dev/vde nofail,x-systemd.device-timeout=90000ms\n"
            "FILE=/etc/envcrypt/ca.pem\nFILE=/etc/envcrypt/client.pem\n"
            "FILE=/etc/envcrypt/client.key\nFILE=/etc/envcrypt/usr.hdr\n"
            "FILE=/etc/envcrypt/root.key.tpm\nDIR=/var/lib/envcrypt/kms\n");
}

TEST_F(InitramfsPlanTest, PlaintextLocalRootKeyIsRefusedNamingLineDiskAndCmk) {
  inputs_.table = table_of("# system\nroot /dev/vda2\n");
  inputs_.fstab_text = "/dev/mapper/root / ext4 defaults 0 1\n";
  mappings_["/dev/mapper/root"] = {"root"};
  cmks_["root"] = "local://local-1/cafe";
  existing_ = {"/etc/envcrypt/root.key"};
  auto plan = plan_initramfs(inputs_);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(plan.error().message(),
            "/etc/envcrypttab:2: disk root (fstab /), CMK "
            "local://local-1/cafe" +
                kPlaintextRefusal);
}

// An image built before `image encrypt` encrypts its root: no header yet.
// The disk is planned for default_cmk, with one warning; the refusal still
// applies to that CMK.
TEST_F(InitramfsPlanTest, UnreadableHeaderIsPlannedForDefaultCmkWithAWarning) {
  inputs_.table = table_of("root /dev/vda2\n");
  inputs_.fstab_text = "/dev/mapper/root / ext4 defaults 0 1\n";
  mappings_["/dev/mapper/root"] = {"root"};
  inputs_.config.default_cmk = "kmip://kms1.example:5696/77";
  auto plan = plan_initramfs(inputs_);
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->warnings,
            std::vector<std::string>{
                "/etc/envcrypttab:1: disk root (fstab /): cannot read its CMK from the header "
                "(/dev/vda2 does not exist): planned for default_cmk "
                "kmip://kms1.example:5696/77"});
  EXPECT_EQ(initramfs_plan_output(*plan),
            "NEEDED=yes\nNETWORK=yes\nTPM=no\nCONFIG=/etc/envcrypt/envcrypt.conf\n"
            "DISK=root\nDISK_WHY=fstab /\nDISK_CMK=kmip://kms1.example:5696/77\n"
            "DISK_CMK_FROM=default_cmk\nDISK_KMS=kmip:main\n"
            "TAB_LINE=root /dev/vda2 x-systemd.device-timeout=90000ms\n"
            "FILE=/etc/envcrypt/ca.pem\nFILE=/etc/envcrypt/client.pem\n"
            "FILE=/etc/envcrypt/client.key\n");

  inputs_.config.default_cmk = "alias/acs/ecs";
  existing_ = {"/etc/envcrypt/root.key"};
  auto refused = plan_initramfs(inputs_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(refused.error().message(),
            "/etc/envcrypttab:1: disk root (fstab /), CMK alias/acs/ecs" + kPlaintextRefusal);
}

TEST_F(InitramfsPlanTest, EveryOtherFailureNamesTheLine) {
  inputs_.table = table_of("k /dev/vdb initramfs\n");
  cmks_["k"] = "kmip://elsewhere:5696/1";
  auto unknown = plan_initramfs(inputs_);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message(),
            "/etc/envcrypttab:1: disk k (option initramfs), CMK kmip://elsewhere:5696/1: no KMIP "
            "endpoint of the configuration serves it");

  cmks_["k"] = "alias/acs/ecs";  // local, and no root key at all
  auto missing = plan_initramfs(inputs_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(),
            "/etc/envcrypttab:1: disk k (option initramfs), CMK alias/acs/ecs: the local root "
            "key /etc/envcrypt/root.key is missing, sealed (.tpm) or not");
}

// The command, in process, on an image file formatted under the local KMS.
class InitramfsPlanCli : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("initramfs-plan");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_, cli_testing::local_kms_config(dir_));
    image_ = dir_ / "root.img";
    cli_testing::make_sparse_image(image_, 32U << 20U);
    tab_ = dir_ / "envcrypttab";
    fstab_ = dir_ / "fstab";
    cli_testing::write_text(tab_, "other /dev/null\nsys " + image_.string() + " initramfs\n");
    cli_testing::write_text(fstab_, "/dev/mapper/none / ext4 defaults 0 1\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  CliRun run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_.string()});
    return cli_testing::run_envcryptctl(std::move(args));
  }

  fs::path dir_;
  fs::path config_;
  fs::path image_;
  fs::path tab_;
  fs::path fstab_;
};

TEST_F(InitramfsPlanCli, NoLineNeedsItConfigurationNotRead) {
  cli_testing::write_text(tab_, "other /dev/null\n");
  cli_testing::write_text(config_, "[kms.local]\nno_such_key = 1\n");
  CliRun plan = run({"initramfs-plan", "--tab", tab_.string(), "--fstab", fstab_.string()});
  EXPECT_EQ(plan.code, 0) << plan.err;
  EXPECT_EQ(plan.err, "");
  EXPECT_EQ(plan.out, "NEEDED=no\nNETWORK=no\nTPM=no\nCONFIG=\n");
  // The same configuration fails the plan once a line needs it.
  cli_testing::write_text(tab_, "other /dev/null initramfs\n");
  CliRun needed = run({"initramfs-plan", "--tab", tab_.string(), "--fstab", fstab_.string()});
  EXPECT_EQ(needed.code, static_cast<int>(ErrorCode::kUsage)) << needed.err;
  EXPECT_EQ(needed.out, "");
}

TEST_F(InitramfsPlanCli, RefusesPlaintextRootKeyAcceptsTheSealedForm) {
  CliRun format = run({"format", image_.string()});
  ASSERT_EQ(format.code, 0) << format.err;
  const auto cmk_at = format.out.find("local://");
  ASSERT_NE(cmk_at, std::string::npos) << format.out;
  const std::string cmk =
      format.out.substr(cmk_at, format.out.find_first_of(" \n)", cmk_at) - cmk_at);

  CliRun refused = run({"initramfs-plan", "--tab", tab_.string(), "--fstab", fstab_.string()});
  EXPECT_EQ(refused.code, static_cast<int>(ErrorCode::kDenied));
  EXPECT_EQ(refused.out, "");
  EXPECT_EQ(refused.err, "envcryptctl: initramfs-plan: " + tab_.string() +
                             ":2: disk sys (option initramfs), CMK " + cmk + kPlaintextRefusal +
                             "\n");

  // The plan only asks which form the key is in; it never unseals it.
  fs::rename(dir_ / "root.key", dir_ / "root.key.tpm");
  CliRun accepted = run({"initramfs-plan", "--tab", tab_.string(), "--fstab", fstab_.string()});
  EXPECT_EQ(accepted.code, 0) << accepted.err;
  EXPECT_EQ(accepted.err, "");
  EXPECT_EQ(accepted.out,
            "NEEDED=yes\nNETWORK=no\nTPM=yes\nCONFIG=" + config_.string() +
                "\nDISK=sys\nDISK_WHY=option initramfs\nDISK_CMK=" + cmk +
                "\nDISK_CMK_FROM=header\nDISK_KMS=local\nTAB_LINE=sys " + image_.string() +
                " x-systemd.device-timeout=90000ms\nFILE=" + (dir_ / "root.key.tpm").string() +
                "\nDIR=" + (dir_ / "kms").string() + "\n");
}

}  // namespace
}  // namespace envcrypt
