// Rotation, ReEncrypt, BYOK and grants in the local KMS.  The fixture:
// kms_local_test_support.h.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "kms/local/kms_local.h"
#include "kms/local/kms_local_test_support.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

using kms_local_testing::kContext;
using kms_local_testing::kDay;
using kms_local_testing::kStart;
using kms_local_testing::LocalKmsTest;
using kms_local_testing::make_temp_dir;
using kms_local_testing::mode_of;
using kms_local_testing::slurp;

// ----- rotation (issue 5) -----

TEST_F(LocalKmsTest, RotationAddsAPrimaryVersionAndKeepsOldOnesForDecrypt) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  const DataKey before = kms->envelope().generate(key.uri, kContext, 64).value();
  const KeyInfo rotated = kms->rotate_key(key.uri).value();
  EXPECT_EQ(rotated.primary_version, 2U);
  EXPECT_EQ(rotated.version_count, 2U);
  const DataKey after = kms->envelope().generate(key.uri, kContext, 64).value();
  EXPECT_EQ(before.wrapped.cmk_version, 1U);
  EXPECT_EQ(after.wrapped.cmk_version, 2U);
  EXPECT_TRUE(
      kms->envelope().unwrap(before.wrapped, kContext).value().equals(before.plaintext.span()));
  EXPECT_TRUE(
      kms->envelope().unwrap(after.wrapped, kContext).value().equals(after.plaintext.span()));
  const KeyDetails details = kms->describe_key_details(key.uri).value();
  ASSERT_EQ(details.versions.size(), 2U);
  EXPECT_EQ(details.owner, "host/test");

  ASSERT_TRUE(kms->disable_key(key.uri).ok());
  expect_error(kms->rotate_key(key.uri), ErrorCode::kDenied,
               "key " + key.uri + " is Disabled; only an Enabled key can be rotated");
}

TEST_F(LocalKmsTest, RotationIntervalRotatesOnUseAndByRotateDue) {
  auto kms = open();
  const KeyInfo on_use = create(*kms, {"", std::nullopt, KeyOrigin::kKms, 30});
  const KeyInfo by_timer = create(*kms, {"", std::nullopt, KeyOrigin::kKms, 30});
  const KeyInfo manual = create(*kms);
  expect_error(kms->create_key({"", std::nullopt, KeyOrigin::kKms, 0}), ErrorCode::kUsage,
               "rotation interval must be 1-3650 days, got 0");

  advance_days(29);
  EXPECT_EQ(kms->envelope().generate(on_use.uri, kContext, 64).value().wrapped.cmk_version, 1U);
  EXPECT_TRUE(kms->rotate_due().value().empty());
  advance_days(1);
  EXPECT_EQ(kms->envelope().generate(on_use.uri, kContext, 64).value().wrapped.cmk_version, 2U);
  const std::vector<KeyInfo> rotated = kms->rotate_due().value();
  ASSERT_EQ(rotated.size(), 1U);
  EXPECT_EQ(rotated[0].key_id, by_timer.key_id);
  EXPECT_EQ(rotated[0].primary_version, 2U);
  EXPECT_EQ(kms->describe_key(manual.uri).value().primary_version, 1U);
  EXPECT_TRUE(kms->rotate_due().value().empty());

  const auto audited =
      kms->audit_log().query({on_use.key_id, std::nullopt, std::nullopt, std::nullopt}).value();
  EXPECT_TRUE(std::any_of(audited.begin(), audited.end(), [](const AuditRecord& record) {
    return record.operation == "RotateKey" && record.key_version == 2U &&
           record.line.find("on use") != std::string::npos;
  }));
}

// ----- ReEncrypt (rewrap) -----

TEST_F(LocalKmsTest, ReEncryptMovesADataKeyToAnotherKeyOrVersion) {
  auto kms = open();
  const KeyInfo source = create(*kms);
  const KeyInfo destination = create(*kms);
  const DataKey data_key = kms->envelope().generate(source.uri, kContext, 64).value();

  const WrappedKey moved =
      kms->envelope().rewrap(data_key.wrapped, kContext, destination.uri, kContext).value();
  EXPECT_EQ(moved.cmk_uri, destination.uri);
  EXPECT_TRUE(kms->envelope().unwrap(moved, kContext).value().equals(data_key.plaintext.span()));

  ASSERT_TRUE(kms->rotate_key(source.uri).ok());
  const WrappedKey refreshed =
      kms->envelope().rewrap(data_key.wrapped, kContext, source.uri, kContext).value();
  EXPECT_EQ(refreshed.cmk_version, 2U);
  EXPECT_TRUE(
      kms->envelope().unwrap(refreshed, kContext).value().equals(data_key.plaintext.span()));

  EncryptionContext wrong = kContext;
  wrong["disk_uuid"] = "another";
  expect_error(kms->envelope().rewrap(data_key.wrapped, wrong, destination.uri, kContext),
               ErrorCode::kCorrupt, "unwrap failed: encryption context or blob does not match");
  ASSERT_TRUE(kms->disable_key(destination.uri).ok());
  expect_error(kms->envelope().rewrap(data_key.wrapped, kContext, destination.uri, kContext),
               ErrorCode::kDenied, "key " + destination.uri + " is Disabled");
}

// ----- BYOK -----

class ByokTest : public LocalKmsTest {
 protected:
  void SetUp() override {
    kms_ = open();
    key_ = create(*kms_, {"imported", std::nullopt, KeyOrigin::kExternal, std::nullopt});
    material_ = random_secret(32).value();
  }

  Bytes wrap(const ImportParameters& parameters, const SecretBytes& material) {
    return rsa_oaep_sha256_encrypt(parameters.public_key_pem, material.span()).value();
  }

  Result<KeyInfo> import(const SecretBytes& material) {
    const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
    return kms_->import_key_material(key_.uri,
                                     {wrap(parameters, material), parameters.import_token, {}});
  }

  std::unique_ptr<LocalKms> kms_;
  KeyInfo key_;
  SecretBytes material_;
};

TEST_F(ByokTest, ExternalKeyWaitsForItsMaterial) {
  EXPECT_EQ(key_.state, KeyState::kPendingImport);
  EXPECT_EQ(key_.origin, KeyOrigin::kExternal);
  EXPECT_EQ(key_.version_count, 0U);
  expect_error(kms_->envelope().generate(key_.uri, kContext, 64), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");
  expect_error(kms_->enable_key(key_.uri), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport: import its material first");
  expect_error(
      kms_->rotate_key(key_.uri), ErrorCode::kUsage,
      "key " + key_.uri + " has imported material (origin EXTERNAL) and cannot be rotated");
  const KeyInfo native = create(*kms_);
  expect_error(kms_->get_parameters_for_import(native.uri), ErrorCode::kUsage,
               "key " + native.uri +
                   " has origin KMS; only keys created with origin EXTERNAL "
                   "take imported material");
}

TEST_F(ByokTest, ImportWithOpensslPkeyutlAsAUserWould) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  EXPECT_EQ(parameters.wrapping_algorithm, "RSAES_OAEP_SHA_256");
  EXPECT_EQ(parameters.expires_at, kStart + kDay);
  const std::filesystem::path pub = root_ / "import.pub.pem";
  const std::filesystem::path plain = root_ / "material.bin";
  const std::filesystem::path wrapped = root_ / "material.wrapped";
  std::ofstream(pub) << parameters.public_key_pem;
  std::ofstream(plain, std::ios::binary).write(reinterpret_cast<const char*>(material_.data()), 32);
  const std::string command = "openssl pkeyutl -encrypt -pubin -inkey " + pub.string() + " -in " +
                              plain.string() + " -out " + wrapped.string() +
                              " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::string blob = slurp(wrapped);
  const KeyInfo imported =
      kms_->import_key_material(key_.uri,
                                {Bytes(blob.begin(), blob.end()), parameters.import_token, {}})
          .value();
  EXPECT_EQ(imported.state, KeyState::kEnabled);
  EXPECT_EQ(imported.primary_version, 1U);
  const DataKey data_key = kms_->envelope().generate(key_.uri, kContext, 64).value();
  EXPECT_TRUE(kms_->envelope()
                  .unwrap(data_key.wrapped, kContext)
                  .value()
                  .equals(data_key.plaintext.span()));
}

TEST_F(ByokTest, BadTokensAndBadMaterialAreRefused) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  const Bytes good = wrap(parameters, material_);

  expect_error(
      kms_->import_key_material(key_.uri, {good, "00" + parameters.import_token.substr(2), {}}),
      ErrorCode::kDenied,
      "import token does not match the parameters last issued for key " + key_.uri);

  const SecretBytes short_material = random_secret(16).value();
  expect_error(kms_->import_key_material(
                   key_.uri, {wrap(parameters, short_material), parameters.import_token, {}}),
               ErrorCode::kUsage, "key material must be 32 bytes, got 16");

  const RsaKeyPair stranger = generate_rsa2048().value();
  expect_error(
      kms_->import_key_material(
          key_.uri, {rsa_oaep_sha256_encrypt(stranger.public_key_pem, material_.span()).value(),
                     parameters.import_token,
                     {}}),
      ErrorCode::kUsage,
      "cannot unwrap the key material for " + key_.uri +
          ": it is not wrapped with RSAES_OAEP_SHA_256 under this import public key");

  advance_days(1);
  expect_error(kms_->import_key_material(key_.uri, {good, parameters.import_token, {}}),
               ErrorCode::kDenied,
               "import token for key " + key_.uri +
                   " expired at 2027-01-16T08:00:00Z: get new import parameters");
  EXPECT_EQ(kms_->describe_key(key_.uri).value().state, KeyState::kPendingImport);
}

TEST_F(ByokTest, DeleteMaterialMakesDisksUnusableUntilTheSameMaterialReturns) {
  ASSERT_TRUE(import(material_).ok());
  const DataKey data_key = kms_->envelope().generate(key_.uri, kContext, 64).value();

  const KeyInfo deleted = kms_->delete_key_material(key_.uri).value();
  EXPECT_EQ(deleted.state, KeyState::kPendingImport);
  EXPECT_EQ(deleted.version_count, 0U);
  expect_error(kms_->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");

  const SecretBytes other = random_secret(32).value();
  expect_error(import(other), ErrorCode::kConflict,
               "key material differs from the material imported before into key " + key_.uri +
                   ": only the same material can be re-imported");

  ASSERT_TRUE(import(material_).ok());
  EXPECT_TRUE(kms_->envelope()
                  .unwrap(data_key.wrapped, kContext)
                  .value()
                  .equals(data_key.plaintext.span()));
}

TEST_F(ByokTest, MaterialExpiryDeletesTheMaterial) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  ASSERT_TRUE(kms_->import_key_material(key_.uri, {wrap(parameters, material_),
                                                   parameters.import_token, kStart + 3600})
                  .ok());
  const DataKey data_key = kms_->envelope().generate(key_.uri, kContext, 64).value();
  *now_ += 3600;
  expect_error(kms_->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");
  // A token serves one import.
  expect_error(
      kms_->import_key_material(key_.uri,
                                {wrap(parameters, material_), parameters.import_token, {}}),
      ErrorCode::kUsage,
      "no import parameters for key " + key_.uri + ": run get-parameters-for-import first");
}

// ----- grants -----

TEST_F(LocalKmsTest, GrantsGovernOtherPrincipals) {
  auto owner = open("host/owner");
  auto other = open("host/other");
  const KeyInfo key = create(*owner);
  const DataKey data_key = owner->envelope().generate(key.uri, kContext, 64).value();

  expect_error(other->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "principal host/other holds no decrypt grant on key " + key.uri);
  expect_error(other->describe_key(key.uri), ErrorCode::kDenied,
               "principal host/other holds no describe grant on key " + key.uri);
  expect_error(other->create_grant(key.uri, "host/other", {GrantOperation::kAdmin}),
               ErrorCode::kDenied, "principal host/other holds no admin grant on key " + key.uri);

  const Grant grant = owner
                          ->create_grant(key.uri, "host/other",
                                         {GrantOperation::kDecrypt, GrantOperation::kDescribe})
                          .value();
  EXPECT_TRUE(other->envelope()
                  .unwrap(data_key.wrapped, kContext)
                  .value()
                  .equals(data_key.plaintext.span()));
  EXPECT_TRUE(other->describe_key(key.uri).ok());
  expect_error(other->envelope().generate(key.uri, kContext, 64), ErrorCode::kDenied,
               "principal host/other holds no generate grant on key " + key.uri);
  expect_error(other->disable_key(key.uri), ErrorCode::kDenied,
               "principal host/other holds no admin grant on key " + key.uri);
  const std::vector<Grant> grants = owner->list_grants(key.uri).value();
  ASSERT_EQ(grants.size(), 1U);
  EXPECT_EQ(grants[0].principal, "host/other");
  EXPECT_EQ(grants[0].created_by, "host/owner");
  EXPECT_EQ(grants[0].operations,
            (std::vector<GrantOperation>{GrantOperation::kDecrypt, GrantOperation::kDescribe}));

  ASSERT_TRUE(owner->revoke_grant(key.uri, grant.grant_id).ok());
  expect_error(other->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "principal host/other holds no decrypt grant on key " + key.uri);
  expect_error(owner->revoke_grant(key.uri, grant.grant_id), ErrorCode::kNotFound,
               "grant " + grant.grant_id + " not found on key " + key.uri);

  // Denials are audited under the denied principal.
  const auto denied =
      other->audit_log().query({key.key_id, std::nullopt, std::nullopt, std::nullopt}).value();
  EXPECT_TRUE(std::any_of(denied.begin(), denied.end(), [](const AuditRecord& record) {
    return record.principal == "host/other" && record.operation == "Decrypt" &&
           record.result.find("holds no decrypt grant") != std::string::npos;
  }));
}

TEST_F(LocalKmsTest, GrantRefusals) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  for (const char* principal : {"bob", "group/admins", "host/", "host/a b"}) {
    expect_error(kms->create_grant(key.uri, principal, {GrantOperation::kDecrypt}),
                 ErrorCode::kUsage,
                 std::string("unknown principal '") + principal +
                     "': use host/<hostname>, user/<name> or service/<name>");
  }
  expect_error(kms->create_grant(key.uri, "user/alice", {}), ErrorCode::kUsage,
               "a grant needs at least one operation");
  const std::string service = kms->describe_key("alias/acs/ecs").value().uri;
  expect_error(kms->create_grant("alias/acs/ecs", "host/x", {GrantOperation::kDecrypt}),
               ErrorCode::kUsage,
               "the service key " + service +
                   " serves every principal of region local-1 and "
                   "takes no grants");
  EXPECT_EQ(parse_grant_operation("reencrypt").value(), GrantOperation::kReencrypt);
  expect_error(
      parse_grant_operation("encrypt"), ErrorCode::kUsage,
      "unknown grant operation 'encrypt': use generate, decrypt, reencrypt, describe or admin");
}

TEST_F(LocalKmsTest, ServiceKeyServesEveryPrincipalOfItsRegion) {
  auto first = open("host/a");
  auto second = open("host/b");
  const DataKey data_key = first->envelope().generate("alias/acs/ecs", kContext, 64).value();
  EXPECT_TRUE(second->envelope()
                  .unwrap(data_key.wrapped, kContext)
                  .value()
                  .equals(data_key.plaintext.span()));
}

}  // namespace
}  // namespace envcrypt
