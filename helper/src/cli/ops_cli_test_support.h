// The fixture of the operations commands' tests (ops_cli_test.cc,
// header_backup_cli_test.cc): a private directory with a local-KMS
// configuration, one image file and an envcrypttab path.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "boot/preflight.h"
#include "cli/cli_test_support.h"
#include "config/config.h"
#include "header/header.h"
#include "kms/kms_registry.h"
#include "kms/local/kms_local.h"
#include "volume/diagnostics.h"

namespace envcrypt {

namespace fs = std::filesystem;

// The header area (all these commands may touch) of a file.
inline std::vector<char> read_bytes(const fs::path& path) {
  std::vector<char> bytes(kHeaderAreaSize);
  std::ifstream in(path, std::ios::binary);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  return bytes;
}

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-ops");
    kms_dir_ = dir_ / "kms";
    config_ = write_config("host/ops-test", kms_dir_);
    image_ = make_image("disk.img");
    tab_ = dir_ / "envcrypttab";
    ::setenv("ENVCRYPT_RUN_DIR", (dir_ / "run").c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("ENVCRYPT_RUN_DIR");
    fs::remove_all(dir_);
  }

  fs::path write_config(const std::string& principal, const fs::path& kms_dir,
                        const std::string& extra = "") {
    const fs::path path = dir_ / (principal.substr(principal.find('/') + 1) + ".conf");
    cli_testing::write_text(
        path, cli_testing::local_kms_config(dir_, "principal = \"" + principal + "\"\n" + extra,
                                            kms_dir));
    return path;
  }

  fs::path make_image(const std::string& name) {
    const fs::path path = dir_ / name;
    cli_testing::make_sparse_image(path, 17 << 20);  // 1 MiB of data after the 16 MiB offset
    return path;
  }

  cli_testing::CliRun run(std::vector<std::string> args, const fs::path& config = {}) {
    args.insert(args.begin(), {"--config", (config.empty() ? config_ : config)});
    return cli_testing::run_envcryptctl(std::move(args));
  }

  // Formats `image` under `cmk` (default: the service key); its CMK URI.
  std::string format(const fs::path& image, const std::string& cmk = "") {
    std::vector<std::string> args = {"--json", "format", image.string()};
    if (!cmk.empty()) {
      args.insert(args.end(), {"--cmk", cmk});
    }
    cli_testing::CliRun r = run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out).value("cmk", "");
  }

  std::string create_key(const std::string& alias) {
    cli_testing::CliRun r = run({"--json", "kms", "create-key", "--alias", alias});
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out).value("uri", "");
  }

  std::string uuid_of(const fs::path& image) {
    cli_testing::CliRun r = run({"--json", "inspect", image.string()});
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out).value("uuid", "");
  }

  void corrupt(const fs::path& path, std::uint64_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put('\x5a');
  }

  std::unique_ptr<LocalKms> local_kms(const std::string& principal) {
    LocalKmsOptions options;
    options.dir = kms_dir_;
    options.root_key = dir_ / "root.key";
    options.region = "local-1";
    options.principal = principal;
    return LocalKms::open(options).value();
  }

  // preflight over `table_text` with dm-envcrypt available (unless
  // `module` fails) and `attached` as the attached disks.
  PreflightReport preflight(const std::string& table_text, const fs::path& config = {},
                            Status module = OkStatus(), std::vector<AttachedDisk> attached = {}) {
    std::ofstream(tab_) << table_text;
    auto table = load_envcrypttab(tab_, false);
    EXPECT_TRUE(table.ok()) << table.error().message();
    EXPECT_TRUE(table->skipped.empty()) << table->skipped.front().message();
    KmsRegistry registry(load_config(config.empty() ? config_ : config).value());
    PreflightEnvironment env = system_preflight_environment();
    env.module_available = [module] { return module; };
    env.attached = [attached]() -> Result<std::vector<AttachedDisk>> { return attached; };
    auto report = run_preflight(table->entries, registry, env);
    EXPECT_TRUE(report.ok()) << report.error().message();
    return std::move(report).value();
  }

  std::string endpoint() const { return "local keystore " + kms_dir_.string(); }

  // The row of a disk that passed the device and header checks.
  std::string row_tail(const fs::path& image, const std::string& cmk) const {
    return " (device " + image.string() + ", CMK " + cmk + ", endpoint " + endpoint() + ")";
  }

  fs::path dir_;
  fs::path kms_dir_;
  fs::path config_;
  fs::path image_;
  fs::path tab_;
};

}  // namespace envcrypt
