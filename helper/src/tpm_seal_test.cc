#include "tpm_seal.h"

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

#include "crypto.h"
#include "root_key.h"

namespace envcrypt {
namespace {

constexpr const char* kSwtpm = "/usr/bin/swtpm";

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "tpm_seal_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

// Binds a loopback TCP socket to `port` (0: any) as swtpm binds its own,
// without SO_REUSEADDR, so a port in TIME_WAIT counts as taken; -1 if not.
int bind_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in address{};
  socklen_t size = sizeof(address);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size), 0);
  return ntohs(address.sin_port);
}

// A TCP port P such that P and P + 1 are both free now (swtpm's TCTI
// finds the control channel at P + 1).  The sockets of rejected ports stay
// bound until the end, so that the kernel offers another each time.
int free_port_pair() {
  std::vector<int> held;
  int found = 0;
  for (int attempt = 0; attempt < 50 && found == 0; ++attempt) {
    const int fd = bind_loopback(0);
    if (fd < 0) {
      break;
    }
    held.push_back(fd);
    const int port = port_of(fd);
    const int next = port < 65535 ? bind_loopback(port + 1) : -1;
    if (next >= 0) {
      ::close(next);
      found = port;
    }
  }
  for (const int fd : held) {
    ::close(fd);
  }
  return found;
}

// A real software TPM (swtpm) with its own state, for one test, on
// 127.0.0.1 (its commands on a free port, its control channel on the next).
class Swtpm {
 public:
  explicit Swtpm(const std::filesystem::path& state) : state_(state) {
    std::filesystem::create_directories(state_);
    // Another process may take a port between our look and swtpm's bind:
    // a start that does not answer on both ports is tried on new ones.
    for (int attempt = 0; attempt < 5 && !start(); ++attempt) {
      stop();
    }
  }
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;
  ~Swtpm() { stop(); }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // Starts swtpm on a free port and the next one (tpm2-tss's swtpm TCTI
  // finds the control channel at port + 1); true once both accept.
  bool start() {
    port_ = free_port_pair();
    const int ctrl = port_ + 1;
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string server = "type=tcp,port=" + std::to_string(port_);
      const std::string control = "type=tcp,port=" + std::to_string(ctrl);
      const std::string dir = "dir=" + state_.string();
      ::execl(kSwtpm, kSwtpm, "socket", "--tpm2", "--server", server.c_str(), "--ctrl",
              control.c_str(), "--tpmstate", dir.c_str(), "--flags", "not-need-init,startup-clear",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // it exited: a port was taken
        return false;
      }
      if (tcti_answers()) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Ready means what the code under test needs: the TCTI connects.
  [[nodiscard]] bool tcti_answers() const {
    TSS2_TCTI_CONTEXT* context = nullptr;
    if (Tss2_TctiLdr_Initialize(tcti().c_str(), &context) != TSS2_RC_SUCCESS) {
      return false;
    }
    Tss2_TctiLdr_Finalize(&context);
    return true;
  }

  [[nodiscard]] std::string tcti() const {
    return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
  }

  // Extends PCR `pcr` of the SHA-256 bank, as a measured boot would.
  void extend(std::uint32_t pcr) const {
    TSS2_TCTI_CONTEXT* tcti_context = nullptr;
    ASSERT_EQ(Tss2_TctiLdr_Initialize(tcti().c_str(), &tcti_context), TSS2_RC_SUCCESS);
    ESYS_CONTEXT* esys = nullptr;
    ASSERT_EQ(Esys_Initialize(&esys, tcti_context, nullptr), TSS2_RC_SUCCESS);
    TPML_DIGEST_VALUES digests{};
    digests.count = 1;
    digests.digests[0].hashAlg = TPM2_ALG_SHA256;
    digests.digests[0].digest.sha256[31] = 1;
    EXPECT_EQ(Esys_PCR_Extend(esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &digests),
              TSS2_RC_SUCCESS);
    Esys_Finalize(&esys);
    Tss2_TctiLdr_Finalize(&tcti_context);
  }

 private:
  std::filesystem::path state_;
  int port_ = 0;
  pid_t pid_ = -1;
};

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
  EXPECT_EQ(refused.error().code(), ErrorCode::kCorruptHeader);
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
    EXPECT_EQ(decoded.error().code(), ErrorCode::kCorruptHeader) << c.text.substr(0, 80);
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
