// The in-use guard of disable-key / schedule-key-deletion and the
// --destroy-now refusal, for a backend that is not the local KMS: a fake
// KMIP backend serves a kmip:// CMK, an image is formatted under it, and
// the attached disks are injected (listing real mappings needs a kernel;
// tests/host/test_kmip.sh runs the same against PyKMIP through the table).
#include "boot/key_guard.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"
#include "cli/lifecycle_cli.h"
#include "header/header.h"
#include "kms/kms_registry.h"
#include "util/crypto.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kCmk = "kmip://kms.example:5696/42";

// A KMIP-like backend: wraps are the plaintext itself (enough for format's
// decrypt-back), deletion is immediate, and every call is counted so a
// refusal can be shown to have reached no key operation.
class FakeKmip final : public KmsClient, public KeyAdministration {
 public:
  [[nodiscard]] bool supports(std::string_view uri) const override { return uri == kCmk; }
  KeyAdministration* administration() override { return this; }
  Result<WrappedKey> wrap_key(std::string_view /*keyref*/, const SecretBytes& plaintext,
                              const EncryptionContext& /*context*/,
                              const CallContext& /*call*/) override {
    WrappedKey wrapped;
    wrapped.cmk_uri = std::string(kCmk);
    wrapped.cmk_version = 1;
    wrapped.nonce.assign(kGcmNonceSize, 0);
    wrapped.tag.assign(kGcmTagSize, 0);
    wrapped.ciphertext.assign(plaintext.data(), plaintext.data() + plaintext.size());
    return wrapped;
  }
  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& /*context*/,
                                 const CallContext& /*call*/) override {
    return SecretBytes(wrapped.ciphertext.data(), wrapped.ciphertext.size());
  }
  Result<KeyInfo> create_key(const CreateKeyRequest& /*request*/) override {
    return unsupported("create-key");
  }
  Result<KeyInfo> describe_key(std::string_view /*keyref*/) override {
    KeyInfo info;
    info.key_id = "42";
    info.uri = std::string(kCmk);
    info.state = KeyState::kDisabled;
    return info;
  }
  Result<KeyDetails> describe_key_details(std::string_view keyref) override {
    ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo info, describe_key(keyref));
    return KeyDetails{std::move(info), "", std::nullopt, 0, {}, std::nullopt};
  }
  Result<std::vector<KeyInfo>> list_keys() override { return unsupported("list-keys"); }
  Status enable_key(std::string_view /*keyref*/) override { return unsupported("enable-key"); }
  Status disable_key(std::string_view /*keyref*/) override { return unsupported("disable-key"); }
  Result<KeyInfo> schedule_key_deletion(std::string_view keyref, std::uint32_t /*days*/) override {
    ++destroyed;
    return describe_key(keyref);
  }
  Status cancel_key_deletion(std::string_view /*keyref*/) override {
    return unsupported("cancel-key-deletion");
  }
  [[nodiscard]] std::optional<std::string> immediate_deletion() const override {
    return "KMIP server kmip://kms.example:5696 has no pending-deletion window";
  }

  int destroyed = 0;
};

class KeyGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-key-guard");
    image_ = dir_ / "disk.img";
    cli_testing::make_sparse_image(image_, 32 << 20);
    Config config;
    KmipEndpoint endpoint;
    endpoint.name = "kms";
    endpoint.host = "kms.example";
    config.kmip_endpoints["kms"] = endpoint;
    KmsRegistry registry(config);
    registry.adopt("kmip:kms", std::make_unique<FakeKmip>());
    FormatOptions options;
    options.device = image_;
    options.cmk = std::string(kCmk);
    auto header = format_volume(registry, options, {});
    ASSERT_TRUE(header.ok()) << header.error().message();
    uuid_ = uuid_to_string(header->uuid);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Nothing in the table; the image attached as "data".
  PreflightEnvironment attached_image() {
    PreflightEnvironment env;
    env.resolve = [](const TabEntry&) -> Result<fs::path> {
      return Error(ErrorCode::kNotFound, "no table");
    };
    env.attached = [this]() -> Result<std::vector<AttachedDisk>> {
      return std::vector<AttachedDisk>{{"data", uuid_, image_}};
    };
    env.module_available = [] { return OkStatus(); };
    return env;
  }

  fs::path dir_;
  fs::path image_;
  std::string uuid_;
  FakeKmip kms_;
};

TEST_F(KeyGuardTest, AKmipKeyWrappingAnAttachedDiskIsRefused) {
  PreflightEnvironment env = attached_image();
  const Status refused = refuse_if_key_in_use(kms_, kCmk, false, {}, env);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kConflict);
  EXPECT_EQ(refused.error().message(),
            "key kmip://kms.example:5696/42 still wraps 1 disk this host knows: data (" +
                image_.string() + "); rewrap them under another key first, or use --force");
  EXPECT_TRUE(refuse_if_key_in_use(kms_, kCmk, true, {}, env).ok());
}

TEST_F(KeyGuardTest, AKmipKeyNoDiskUsesIsNotRefused) {
  PreflightEnvironment env = attached_image();
  env.attached = []() -> Result<std::vector<AttachedDisk>> { return std::vector<AttachedDisk>{}; };
  EXPECT_TRUE(refuse_if_key_in_use(kms_, kCmk, false, {}, env).ok());
}

TEST_F(KeyGuardTest, ImmediateDeletionNeedsDestroyNow) {
  auto refused = schedule_key_deletion(kms_, kCmk, 30, true, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(),
            "KMIP server kmip://kms.example:5696 has no pending-deletion window: nothing would "
            "wait the pending window; add --destroy-now to destroy the key at once");
  EXPECT_EQ(kms_.destroyed, 0);
  auto destroyed = schedule_key_deletion(kms_, kCmk, 30, true, true);
  ASSERT_TRUE(destroyed.ok()) << destroyed.error().message();
  EXPECT_EQ(kms_.destroyed, 1);
}

}  // namespace
}  // namespace envcrypt
