#include "kms.h"

#include <gtest/gtest.h>

namespace envcrypt {
namespace {

TEST(CanonicalContext, IsLengthPrefixedAndSorted) {
  const EncryptionContext context = {{"b", "2"}, {"a", "1"}};
  const std::vector<std::uint8_t> expected = {0, 0, 0, 2,                        // two pairs
                                              0, 0, 0, 1, 'a', 0, 0, 0, 1, '1',  //
                                              0, 0, 0, 1, 'b', 0, 0, 0, 1, '2'};
  EXPECT_EQ(canonical_context(context), expected);
}

TEST(CanonicalContext, DistinguishesShiftedBoundaries) {
  EXPECT_NE(canonical_context({{"a", "bc"}}), canonical_context({{"ab", "c"}}));
  EXPECT_NE(canonical_context({}), canonical_context({{"", ""}}));
}

TEST(KmsStrings, StatesAndOrigins) {
  EXPECT_EQ(to_string(KeyState::kEnabled), "Enabled");
  EXPECT_EQ(to_string(KeyState::kDisabled), "Disabled");
  EXPECT_EQ(to_string(KeyState::kPendingDeletion), "PendingDeletion");
  EXPECT_EQ(to_string(KeyState::kPendingImport), "PendingImport");
  EXPECT_EQ(to_string(KeyOrigin::kKms), "KMS");
  EXPECT_EQ(to_string(KeyOrigin::kExternal), "EXTERNAL");
}

// A backend that implements only the mandatory operations: aliases fall
// back to the base class, which reports them unsupported.  Its "wrap" is
// the plaintext itself, so decrypting it back gives the data key.
class MinimalBackend : public KmsBackend {
 public:
  [[nodiscard]] bool supports(std::string_view /*uri*/) const override { return true; }
  Result<WrappedKey> encrypt(std::string_view keyref, const SecretBytes& plaintext,
                             const EncryptionContext& /*context*/) override {
    WrappedKey wrapped;
    wrapped.cmk_uri = std::string(keyref);
    wrapped.ciphertext.assign(plaintext.data(), plaintext.data() + plaintext.size());
    return wrapped;
  }
  Result<SecretBytes> decrypt(const WrappedKey& wrapped,
                              const EncryptionContext& /*context*/) override {
    return SecretBytes(wrapped.ciphertext.data(), wrapped.ciphertext.size());
  }
  Result<KeyInfo> create_key(const CreateKeyRequest& /*request*/) override {
    return unsupported("create-key");
  }
  Result<KeyInfo> describe_key(std::string_view /*keyref*/) override {
    return unsupported("describe-key");
  }
  Result<std::vector<KeyInfo>> list_keys() override { return unsupported("list-keys"); }
  Status enable_key(std::string_view /*keyref*/) override { return unsupported("enable-key"); }
  Status disable_key(std::string_view /*keyref*/) override { return unsupported("disable-key"); }
  Result<KeyInfo> schedule_key_deletion(std::string_view /*keyref*/,
                                        std::uint32_t /*days*/) override {
    return unsupported("schedule-key-deletion");
  }
  Status cancel_key_deletion(std::string_view /*keyref*/) override {
    return unsupported("cancel-key-deletion");
  }
};

TEST(KmsBackendDefaults, AliasesAreUnsupported) {
  MinimalBackend backend;
  const Status created = backend.create_alias("alias/x", "key");
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(created.error().message(), "create-alias is not supported by this KMS backend");
  EXPECT_FALSE(backend.delete_alias("alias/x").ok());
  EXPECT_FALSE(backend.list_aliases().ok());
}

TEST(GenerateDataKey, WrapsAFreshKeyOfTheRequestedSize) {
  MinimalBackend backend;
  const DataKey first = generate_data_key(backend, "key", {}, 64).value();
  const DataKey second = generate_data_key(backend, "key", {}, 64).value();
  EXPECT_EQ(first.plaintext.size(), 64U);
  EXPECT_TRUE(first.plaintext.equals(first.wrapped.ciphertext));
  EXPECT_FALSE(first.plaintext.equals(second.plaintext.span()));
}

// Its wraps decrypt, but to other bytes than the data key it was given.
class ForgetfulBackend final : public MinimalBackend {
 public:
  Result<WrappedKey> encrypt(std::string_view keyref, const SecretBytes& plaintext,
                             const EncryptionContext& context) override {
    auto wrapped = MinimalBackend::encrypt(keyref, plaintext, context);
    wrapped->ciphertext.back() ^= 0x80;
    return wrapped;
  }
};

// And this one's wraps do not decrypt at all.
class UnopenableBackend final : public MinimalBackend {
 public:
  Result<SecretBytes> decrypt(const WrappedKey& /*wrapped*/,
                              const EncryptionContext& /*context*/) override {
    return Error(ErrorCode::kDenied, "no Decrypt permission");
  }
};

TEST(GenerateDataKey, RefusesAWrapThatDecryptsBackToOtherBytes) {
  ForgetfulBackend backend;
  auto key = generate_data_key(backend, "kmip://kms:5696/7", {}, 64);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(key.error().message(),
            "kmip://kms:5696/7: the new wrap of the data key does not decrypt back to it (the "
            "KMS returned other bytes); nothing was written");
}

TEST(GenerateDataKey, RefusesAWrapThatDoesNotDecrypt) {
  UnopenableBackend backend;
  auto key = generate_data_key(backend, "kmip://kms:5696/7", {}, 64);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(key.error().message(),
            "kmip://kms:5696/7: the new wrap of the data key does not decrypt back to it (no "
            "Decrypt permission); nothing was written");
}

}  // namespace
}  // namespace envcrypt
