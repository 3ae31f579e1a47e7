// The fixture of the local KMS's unit tests (kms_local_test.cc,
// kms_local_audit_test.cc, kms_local_lifecycle_test.cc): a keystore and root
// key in a temporary directory and a clock the tests move.  In a named
// namespace: gtest requires one fixture type per test suite across files.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "kms/local/kms_local.h"

namespace envcrypt::kms_local_testing {

inline constexpr std::int64_t kDay = 86400;
inline constexpr std::int64_t kStart = 1800000000;  // 2027-01-15

inline std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "kms_local_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline mode_t mode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

inline const EncryptionContext kContext = {{"disk_uuid", "0f2d7c1e-5d7a-4a51-9a1b-3c9e2f7d8a10"},
                                           {"sector_size", "4096"}};

class LocalKmsTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(root_); }

  LocalKmsOptions options(const std::string& principal = "host/test") {
    LocalKmsOptions opts;
    opts.dir = root_ / "var" / "kms";
    opts.root_key = root_ / "etc" / "root.key";
    opts.region = "local-1";
    opts.principal = principal;
    opts.clock = [now = now_] { return *now; };
    return opts;
  }

  std::unique_ptr<LocalKms> open(const std::string& principal = "host/test") {
    Result<std::unique_ptr<LocalKms>> kms = LocalKms::open(options(principal));
    EXPECT_TRUE(kms.ok()) << kms.error().message();
    return std::move(kms).value();
  }

  KeyInfo create(LocalKms& kms, CreateKeyRequest request = {}) {
    Result<KeyInfo> info = kms.create_key(request);
    EXPECT_TRUE(info.ok()) << info.error().message();
    return info.value();
  }

  void advance_days(std::int64_t days) { *now_ += days * kDay; }

  static void expect_error(const Error& error, ErrorCode code, const std::string& message) {
    EXPECT_EQ(error.code(), code) << error.message();
    EXPECT_EQ(error.message(), message);
  }

  template <typename T>
  static void expect_error(const Result<T>& result, ErrorCode code, const std::string& message) {
    ASSERT_FALSE(result.ok()) << "expected: " << message;
    expect_error(result.error(), code, message);
  }

  std::filesystem::path root_ = make_temp_dir();
  std::shared_ptr<std::int64_t> now_ = std::make_shared<std::int64_t>(kStart);
};

}  // namespace envcrypt::kms_local_testing
