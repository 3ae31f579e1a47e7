#include "kms/kms.h"

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

// A client that offers envelope encryption and no capability.  Its "wrap"
// is the plaintext itself, so decrypting it back gives the data key.
class MinimalBackend : public KmsClient {
 public:
  [[nodiscard]] bool supports(std::string_view /*uri*/) const override { return true; }

 protected:
  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& /*context*/,
                              const CallContext& call) override {
    deadlines.push_back(call.deadline);
    WrappedKey wrapped;
    wrapped.cmk_uri = std::string(keyref);
    wrapped.ciphertext.assign(plaintext.data(), plaintext.data() + plaintext.size());
    return wrapped;
  }
  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& /*context*/,
                                 const CallContext& call) override {
    deadlines.push_back(call.deadline);
    return SecretBytes(wrapped.ciphertext.data(), wrapped.ciphertext.size());
  }

 public:
  // The deadline of each call's context, in call order.
  std::vector<std::optional<SteadyTime>> deadlines;
};

TEST(KmsClientCapabilities, AMissingCapabilityIsReportedForTheOperationAskedFor) {
  MinimalBackend backend;
  EXPECT_EQ(backend.administration(), nullptr);
  EXPECT_EQ(backend.aliases(), nullptr);
  EXPECT_EQ(backend.lifecycle(), nullptr);
  EXPECT_EQ(backend.key_import(), nullptr);
  EXPECT_EQ(backend.grants(), nullptr);
  EXPECT_EQ(backend.audit_trail(), nullptr);
  EXPECT_EQ(backend.keystore_backup(), nullptr);
  const auto created = offered(backend, backend.aliases(), "create-alias");
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(created.error().message(), "create-alias is not supported by this KMS backend");
  EXPECT_FALSE(offered(backend, backend.aliases(), "delete-alias").ok());
  EXPECT_FALSE(offered(backend, backend.aliases(), "list-aliases").ok());
}

TEST(KmsClientCapabilities, TheDefaultReencryptDecryptsAndEncrypts) {
  MinimalBackend backend;
  const DataKey key = backend.envelope().generate("old", {}, 32).value();
  const WrappedKey moved = backend.envelope().rewrap(key.wrapped, {}, "new", {}).value();
  EXPECT_EQ(moved.cmk_uri, "new");
  EXPECT_TRUE(key.plaintext.equals(moved.ciphertext));
}

TEST(KmsClientCapabilities, EveryCallOfAnEnvelopeCarriesItsCallContext) {
  MinimalBackend backend;
  const SteadyTime deadline(std::chrono::seconds(90));
  Envelope bounded = backend.envelope(CallContext{deadline});
  const DataKey key = bounded.generate("old", {}, 32).value();
  ASSERT_TRUE(bounded.rewrap(key.wrapped, {}, "new", {}).ok());
  ASSERT_TRUE(backend.envelope().unwrap(key.wrapped, {}).ok());
  // generate: wrap and the unwrap that verifies it; rewrap: unwrap and
  // wrap; then one unwrap with no deadline.
  EXPECT_EQ(backend.deadlines, (std::vector<std::optional<SteadyTime>>{deadline, deadline, deadline,
                                                                       deadline, std::nullopt}));
}

// ----- the one authorisation decision (authorize) -----

constexpr GrantOperation kEveryOperation[] = {GrantOperation::kGenerate, GrantOperation::kDecrypt,
                                              GrantOperation::kReencrypt, GrantOperation::kDescribe,
                                              GrantOperation::kAdmin};

KeyAccess key_owned_by(const std::string& owner) {
  return {"local://local-1/k1", owner, false, {}};
}

Grant grant_of(const std::string& principal, std::vector<GrantOperation> operations) {
  return {"g1", "k1", principal, std::move(operations), "host/owner", 0};
}

TEST(Authorize, TheOwnerHoldsEveryOperation) {
  for (const GrantOperation operation : kEveryOperation) {
    EXPECT_TRUE(authorize(key_owned_by("host/owner"), "host/owner", operation).ok())
        << to_string(operation);
  }
}

TEST(Authorize, TheServiceKeyServesEveryPrincipal) {
  KeyAccess service = key_owned_by("");
  service.service_key = true;
  for (const GrantOperation operation : kEveryOperation) {
    EXPECT_TRUE(authorize(service, "host/anyone", operation).ok()) << to_string(operation);
  }
}

TEST(Authorize, AStrangerWithoutAGrantIsDeniedEveryOperationNamingIt) {
  for (const GrantOperation operation : kEveryOperation) {
    const Status denied = authorize(key_owned_by("host/owner"), "host/other", operation);
    ASSERT_FALSE(denied.ok());
    EXPECT_EQ(denied.error().code(), ErrorCode::kDenied);
    EXPECT_EQ(denied.error().message(), "principal host/other holds no " +
                                            std::string(to_string(operation)) +
                                            " grant on key local://local-1/k1");
  }
}

TEST(Authorize, AGrantAllowsExactlyItsOperations) {
  for (const GrantOperation granted : kEveryOperation) {
    KeyAccess key = key_owned_by("host/owner");
    key.grants.push_back(grant_of("host/other", {granted}));
    for (const GrantOperation wanted : kEveryOperation) {
      const bool admin_covers_describe =
          granted == GrantOperation::kAdmin && wanted == GrantOperation::kDescribe;
      EXPECT_EQ(authorize(key, "host/other", wanted).ok(),
                wanted == granted || admin_covers_describe)
          << "granted " << to_string(granted) << ", wanted " << to_string(wanted);
    }
  }
}

TEST(Authorize, AGrantServesOnlyItsPrincipal) {
  KeyAccess key = key_owned_by("host/owner");
  key.grants.push_back(grant_of("host/other", {GrantOperation::kDecrypt}));
  EXPECT_TRUE(authorize(key, "host/other", GrantOperation::kDecrypt).ok());
  EXPECT_EQ(authorize(key, "host/third", GrantOperation::kDecrypt).error().code(),
            ErrorCode::kDenied);
  EXPECT_EQ(authorize(key, "host/Other", GrantOperation::kDecrypt).error().code(),
            ErrorCode::kDenied);
}

TEST(GenerateDataKey, WrapsAFreshKeyOfTheRequestedSize) {
  MinimalBackend backend;
  const DataKey first = backend.envelope().generate("key", {}, 64).value();
  const DataKey second = backend.envelope().generate("key", {}, 64).value();
  EXPECT_EQ(first.plaintext.size(), 64U);
  EXPECT_TRUE(first.plaintext.equals(first.wrapped.ciphertext));
  EXPECT_FALSE(first.plaintext.equals(second.plaintext.span()));
}

// Its wraps decrypt, but to other bytes than the data key it was given.
class ForgetfulBackend final : public MinimalBackend {
 protected:
  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& context, const CallContext& call) override {
    auto wrapped = MinimalBackend::wrap_key(keyref, plaintext, context, call);
    wrapped->ciphertext.back() ^= 0x80;
    return wrapped;
  }
};

// And this one's wraps do not decrypt at all.
class UnopenableBackend final : public MinimalBackend {
 protected:
  Result<SecretBytes> unwrap_key(const WrappedKey& /*wrapped*/,
                                 const EncryptionContext& /*context*/,
                                 const CallContext& /*call*/) override {
    return Error(ErrorCode::kDenied, "no Decrypt permission");
  }
};

TEST(GenerateDataKey, RefusesAWrapThatDecryptsBackToOtherBytes) {
  ForgetfulBackend backend;
  auto key = backend.envelope().generate("kmip://kms:5696/7", {}, 64);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(key.error().message(),
            "kmip://kms:5696/7: the new wrap of the data key does not decrypt back to it (the "
            "KMS returned other bytes); nothing was written");
}

TEST(GenerateDataKey, RefusesAWrapThatDoesNotDecrypt) {
  UnopenableBackend backend;
  auto key = backend.envelope().generate("kmip://kms:5696/7", {}, 64);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(key.error().message(),
            "kmip://kms:5696/7: the new wrap of the data key does not decrypt back to it (no "
            "Decrypt permission); nothing was written");
}

}  // namespace
}  // namespace envcrypt
