#include "tpm/tpm_seal.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "kms/local/root_key.h"
#include "tpm/tpm_test_support.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

using tpm_testing::kSwtpm;
using tpm_testing::Swtpm;

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "tpm_seal_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

SecretBytes secret_of(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

class TpmSealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kSwtpm, X_OK) != 0) {
      GTEST_SKIP() << kSwtpm << " is not installed (make deps installs swtpm)";
    }
    // The readiness probes fail until swtpm listens; tpm2-tss need not say so.
    (void)::setenv("TSS2_LOG", "all+NONE", 0);
    dir_ = make_temp_dir();
    tpm_ = std::make_unique<Swtpm>(dir_ / "tpm");
  }
  void TearDown() override {
    tpm_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  std::unique_ptr<Swtpm> tpm_;
};

TEST(PcrList, ParsesSortsAndRefuses) {
  ASSERT_TRUE(parse_pcr_list("7").ok());
  EXPECT_EQ(*parse_pcr_list("7"), (std::vector<std::uint32_t>{7}));
  EXPECT_EQ(*parse_pcr_list("7,0,23"), (std::vector<std::uint32_t>{0, 7, 23}));
  for (const char* bad : {"", "24", "7,7", "a", "1,,2", "7,", "-1", "007"}) {
    const auto parsed = parse_pcr_list(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kUsage) << bad;
  }
  EXPECT_EQ(parse_pcr_list("7,7").error().message(), "PCR list '7,7': 7 appears twice");
  EXPECT_EQ(parse_pcr_list("24").error().message(), "PCR list '24': 24 is above 23");
}

TEST_F(TpmSealTest, RoundTripWithoutPolicy) {
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  const auto blob = tpm_seal(tpm_->tcti(), secret, {}, {});
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  const auto decoded = decode_sealed_blob(encode_sealed_blob(*blob));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  const auto unsealed = tpm_unseal(tpm_->tcti(), *decoded, {});
  ASSERT_TRUE(unsealed.ok()) << unsealed.error().message();
  EXPECT_TRUE(unsealed->equals(secret.span()));
  // The blob never holds the secret in the clear.
  const std::string text = encode_sealed_blob(*blob);
  EXPECT_EQ(text.find(to_hex(secret.span())), std::string::npos);
}

TEST_F(TpmSealTest, ChangedPcrIsNamedAndRefused) {
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  TpmSealPolicy policy;
  policy.pcrs = {7, 8};
  const auto blob = tpm_seal(tpm_->tcti(), secret, policy, {});
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  ASSERT_TRUE(tpm_unseal(tpm_->tcti(), *blob, {}).ok());
  tpm_->extend(8);
  const auto refused = tpm_unseal(tpm_->tcti(), *blob, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(refused.error().message(),
            "PCR 8 (sha256) changed since the key was sealed: the TPM refuses to unseal it");
}

TEST_F(TpmSealTest, PcrPolicyIsEnforcedByTheTpmNotOnlyByTheFile) {
  // A blob whose recorded values were edited to match the changed PCR
  // passes our own comparison; the TPM's policy check must still refuse.
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  TpmSealPolicy policy;
  policy.pcrs = {9};
  auto blob = tpm_seal(tpm_->tcti(), secret, policy, {});
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  tpm_->extend(9);
  TpmSealedBlob forged = *blob;
  forged.pcr_values.clear();
  const auto unsealed_policy = tpm_seal(tpm_->tcti(), secret, policy, {});
  ASSERT_TRUE(unsealed_policy.ok());
  forged.pcr_values = unsealed_policy->pcr_values;  // today's values
  const auto refused = tpm_unseal(tpm_->tcti(), forged, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_NE(refused.error().message().find("unseal: the TPM policy (PCRs or PIN) is not met"),
            std::string::npos)
      << refused.error().message();
}

TEST_F(TpmSealTest, PinIsRequiredAndChecked) {
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  TpmSealPolicy policy;
  policy.pcrs = {7};
  policy.pin = true;
  const auto blob = tpm_seal(tpm_->tcti(), secret, policy, secret_of("correct horse"));
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  const auto good = tpm_unseal(tpm_->tcti(), *blob, secret_of("correct horse"));
  ASSERT_TRUE(good.ok()) << good.error().message();
  EXPECT_TRUE(good->equals(secret.span()));
  const auto wrong = tpm_unseal(tpm_->tcti(), *blob, secret_of("battery staple"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kDenied);
  EXPECT_NE(wrong.error().message().find(": unseal: wrong PIN: "), std::string::npos)
      << wrong.error().message();
}

TEST_F(TpmSealTest, AbsentTpmIsNamed) {
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  const auto blob = tpm_seal(tpm_->tcti(), secret, {}, {});
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  const auto no_device = tpm_unseal("device:/nonexistent/tpmrm0", *blob, {});
  ASSERT_FALSE(no_device.ok());
  EXPECT_EQ(no_device.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(no_device.error().message(), "no TPM: /nonexistent/tpmrm0 does not exist");
  const std::string tcti = tpm_->tcti();
  tpm_->stop();
  const auto stopped = tpm_unseal(tcti, *blob, {});
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(stopped.error().message().rfind("no TPM at " + tcti + ": ", 0), 0U)
      << stopped.error().message();
}

TEST_F(TpmSealTest, BlobOfAnotherTpmDoesNotLoad) {
  const SecretBytes secret = secret_of("0123456789abcdef0123456789abcdef");
  const auto blob = tpm_seal(tpm_->tcti(), secret, {}, {});
  ASSERT_TRUE(blob.ok()) << blob.error().message();
  const Swtpm other(dir_ / "other-tpm");
  const auto refused = tpm_unseal(other.tcti(), *blob, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kCorrupt);
  EXPECT_NE(refused.error().message().find("the sealed key does not load (sealed on another "
                                           "TPM, the TPM was cleared, or the file is damaged)"),
            std::string::npos)
      << refused.error().message();
}

TEST(SealedBlobFile, HostileTextIsRefusedWithItsReason) {
  struct Case {
    std::string text;
    std::string reason;
  };
  const std::string base =
      R"("format": "envcrypt-tpm-sealed", "version": 1, "pcr_bank": "sha256", "pin": false)";
  const std::vector<Case> cases = {
      {"not json", "sealed key file: not a JSON object"},
      {"[]", "sealed key file: not a JSON object"},
      {"{" + base + R"(, "extra": 1})", "sealed key file: unknown field \"extra\""},
      {R"({"format": "other"})", "sealed key file: \"format\" is not \"envcrypt-tpm-sealed\""},
      {"{" + base + R"(, "pcrs": [7, 7], "pcr_values": {}, "public": "", "private": ""})",
       "sealed key file: \"pcrs\" is not in ascending order without repeats"},
      {"{" + base + R"(, "pcrs": [24], "pcr_values": {}, "public": "", "private": ""})",
       "sealed key file: \"pcrs\" holds something other than a PCR number 0 to 23"},
      {"{" + base + R"(, "pcrs": [7], "pcr_values": {}, "public": "", "private": ""})",
       "sealed key file: \"pcr_values\" must hold one value for each PCR of \"pcrs\""},
      {"{" + base + R"(, "pcrs": [7], "pcr_values": {"7": "00"}, "public": "", "private": ""})",
       "sealed key file: the value of PCR 7 is not 32 bytes"},
      {"{" + base + R"(, "pcrs": [], "pcr_values": {}, "public": "zz", "private": ""})",
       "sealed key file: \"public\" is not hex"},
      {"{" + base + R"(, "pcrs": [], "pcr_values": {}, "public": "000100", "private": ""})",
       "the sealed public area is malformed"},
      {std::string(70 * 1024, ' '), "sealed key file: larger than 64 KiB"},
  };
  for (const Case& c : cases) {
    const auto decoded = decode_sealed_blob(c.text);
    ASSERT_FALSE(decoded.ok()) << c.text.substr(0, 80);
    EXPECT_EQ(decoded.error().code(), ErrorCode::kCorrupt) << c.text.substr(0, 80);
    EXPECT_EQ(decoded.error().message().rfind(c.reason, 0), 0U)
        << c.text.substr(0, 80) << " -> " << decoded.error().message();
  }
}

// ---- the root key file -----------------------------------------------------

class RootKeyTest : public TpmSealTest {
 protected:
  void SetUp() override {
    TpmSealTest::SetUp();
    if (IsSkipped()) {
      return;
    }
    std::filesystem::create_directories(dir_ / "etc");
    std::filesystem::permissions(dir_ / "etc", std::filesystem::perms::owner_all);
    root_key_ = dir_ / "etc" / "root.key";
    tpm_config_.tcti = tpm_->tcti();
  }

  std::filesystem::path root_key_;
  RootKeyTpm tpm_config_;
};

TEST_F(RootKeyTest, SealWipesThePlaintextAndUsesTheTpmFromThenOn) {
  const auto created = load_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(created.ok()) << created.error().message();
  // A second name for the plaintext file's inode shows what became of its
  // bytes after the key's own name is gone.
  const std::filesystem::path witness = dir_ / "etc" / "witness";
  std::filesystem::create_hard_link(root_key_, witness);
  TpmSealPolicy policy;
  policy.pcrs = {7};
  const auto outcome = seal_root_key(root_key_, tpm_config_, policy, {});
  ASSERT_TRUE(outcome.ok()) << outcome.error().message();
  EXPECT_EQ(outcome->sealed, sealed_root_key_path(root_key_));
  EXPECT_FALSE(std::filesystem::exists(root_key_));
  EXPECT_EQ(slurp(witness), std::string(32, '\0'));
  EXPECT_EQ(std::filesystem::status(outcome->sealed).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto loaded = load_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_TRUE(loaded->equals(created->span()));
  // No plaintext key is created beside the sealed one, even when the TPM
  // refuses.
  tpm_->extend(7);
  const auto refused = load_root_key(root_key_, tpm_config_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "root key " + outcome->sealed.string() +
                ": PCR 7 (sha256) changed since the key was sealed: the TPM refuses to unseal it");
  EXPECT_FALSE(std::filesystem::exists(root_key_));
}

TEST_F(RootKeyTest, UnsealRestoresTheSameKey) {
  const auto created = load_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(created.ok());
  ASSERT_TRUE(seal_root_key(root_key_, tpm_config_, {}, {}).ok());
  const auto written = unseal_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(written.ok()) << written.error().message();
  EXPECT_FALSE(std::filesystem::exists(sealed_root_key_path(root_key_)));
  const auto loaded = load_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->equals(created->span()));
}

TEST_F(RootKeyTest, InterruptedSealIsFinishedOnlyForTheSameKey) {
  const auto created = load_root_key(root_key_, tpm_config_);
  ASSERT_TRUE(created.ok());
  const std::string plaintext = slurp(root_key_);
  ASSERT_TRUE(seal_root_key(root_key_, tpm_config_, {}, {}).ok());
  // As if the run had stopped before the wipe: the plaintext is back.
  {
    std::ofstream out(root_key_, std::ios::binary);
    out << plaintext;
  }
  std::filesystem::permissions(
      root_key_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto finished = seal_root_key(root_key_, tpm_config_, {}, {});
  ASSERT_TRUE(finished.ok()) << finished.error().message();
  EXPECT_FALSE(std::filesystem::exists(root_key_));
  // A different plaintext key beside the sealed one: refused, both kept.
  {
    std::ofstream out(root_key_, std::ios::binary);
    out << std::string(32, 'x');
  }
  std::filesystem::permissions(
      root_key_, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto conflict = seal_root_key(root_key_, tpm_config_, {}, {});
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.error().code(), ErrorCode::kConflict);
  EXPECT_TRUE(std::filesystem::exists(root_key_));
  EXPECT_TRUE(std::filesystem::exists(sealed_root_key_path(root_key_)));
}

TEST_F(RootKeyTest, PinlessCallerCannotOpenAPinKey) {
  ASSERT_TRUE(load_root_key(root_key_, tpm_config_).ok());
  TpmSealPolicy policy;
  policy.pin = true;
  ASSERT_TRUE(seal_root_key(root_key_, tpm_config_, policy, secret_of("1234")).ok());
  const auto refused = load_root_key(root_key_, tpm_config_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(refused.error().message(), "root key " + sealed_root_key_path(root_key_).string() +
                                           " needs its TPM PIN and nothing can ask for it");
  RootKeyTpm with_pin = tpm_config_;
  with_pin.pin = [] { return Result<SecretBytes>(secret_of("1234")); };
  EXPECT_TRUE(load_root_key(root_key_, with_pin).ok());
}

}  // namespace
}  // namespace envcrypt
