// Shared by the envcryptctl command-line tests (cli_test, lifecycle_cli_test,
// ops_cli_test, rewrap_test): a fresh private directory per test, a local-KMS
// configuration in it, image files, and run_cli with its output captured.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "kms/recovery.h"

namespace envcrypt::cli_testing {

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

// envcryptctl ARGS..., as main() would run it.
inline CliRun run_envcryptctl(std::vector<std::string> args) {
  args.insert(args.begin(), "envcryptctl");
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& arg : args) {
    argv.push_back(arg.c_str());
  }
  std::ostringstream out;
  std::ostringstream err;
  const int code = run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

// A new, empty directory named after the running test: <tmp>/<prefix>-<pid>-<test>.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      (prefix + "-" + std::to_string(::getpid()) + "-" +
       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// envcrypt.conf text for a local KMS under `dir` (keystore dir/kms unless
// `kms_dir` is given, root key dir/root.key); `before_tables` goes first
// (top-level keys such as principal).
inline std::string local_kms_config(const std::filesystem::path& dir,
                                    const std::string& before_tables = "",
                                    const std::filesystem::path& kms_dir = {}) {
  return before_tables + "[kms.local]\ndir = \"" +
         (kms_dir.empty() ? dir / "kms" : kms_dir).string() + "\"\nroot_key = \"" +
         (dir / "root.key").string() + "\"\n";
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A sparse image file of `size` bytes.
inline void make_sparse_image(const std::filesystem::path& path, std::uintmax_t size) {
  std::ofstream(path).close();
  std::filesystem::resize_file(path, size);
}

// A fresh recovery key pair as DIR/NAME.pub and DIR/NAME.key (PEM), as an
// operator would make it with openssl.
inline void write_recovery_key_pair(const std::filesystem::path& dir, const std::string& name) {
  const RecoveryKeyPair pair = generate_recovery_key_pair().value();
  write_text(dir / (name + ".pub"), pair.public_pem);
  write_text(
      dir / (name + ".key"),
      std::string(reinterpret_cast<const char*>(pair.private_pem.data()), pair.private_pem.size()));
}

}  // namespace envcrypt::cli_testing
