// The kmip:// backend without a server: URI handling, configuration errors
// and the answers for what KMIP cannot offer.  kmip_live_test.cc covers the
// rest against PyKMIP.
#include "kms/kmip/kms_kmip.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace envcrypt {
namespace {

KmipEndpoint endpoint(const std::string& host = "kms.example") {
  KmipEndpoint result;
  result.name = "vault1";
  result.host = host;
  result.port = 5696;
  result.ca = "/nonexistent/envcrypt-test/ca.pem";
  result.cert = "/nonexistent/envcrypt-test/client.pem";
  result.key = "/nonexistent/envcrypt-test/client.key";
  result.timeout_ms = 500;
  return result;
}

std::unique_ptr<KmsClient> open(const KmipEndpoint& config) {
  auto kms = open_kmip_kms(config);
  EXPECT_TRUE(kms.ok()) << kms.error().message();
  return kms.ok() ? std::move(kms).value() : nullptr;
}

void expect_usage(const Status& status, const std::string& fragment) {
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kUsage) << status.error().message();
  EXPECT_NE(status.error().message().find(fragment), std::string::npos) << status.error().message();
}

template <typename T>
Status as_status(const Result<T>& result) {
  return result.ok() ? OkStatus() : Status(result.error());
}

TEST(KmsKmipTest, SupportsOnlyThisEndpointsUris) {
  auto kms = open(endpoint());
  EXPECT_TRUE(kms->supports("kmip://kms.example:5696/12"));
  EXPECT_TRUE(kms->supports("kmip://vault1/12"));
  EXPECT_FALSE(kms->supports("kmip://kms.example:5697/12"));
  EXPECT_FALSE(kms->supports("kmip://other.example:5696/12"));
  EXPECT_FALSE(kms->supports("kmip://kms.example:5696/"));
  EXPECT_FALSE(kms->supports("kmip://kms.example:5696"));
  EXPECT_FALSE(kms->supports("kmip://kms.example:5696/a/b"));
  EXPECT_FALSE(kms->supports("local://local-1/12"));
  EXPECT_FALSE(kms->supports("alias/acs/ecs"));
}

TEST(KmsKmipTest, Ipv6HostsAreBracketed) {
  auto kms = open(endpoint("::1"));
  EXPECT_TRUE(kms->supports("kmip://[::1]:5696/3"));
  EXPECT_FALSE(kms->supports("kmip://::1:5696/3"));
}

TEST(KmsKmipTest, RefusesIncompleteEndpoints) {
  KmipEndpoint no_host = endpoint("");
  EXPECT_EQ(open_kmip_kms(no_host).error().code(), ErrorCode::kUsage);
  KmipEndpoint no_timeout = endpoint();
  no_timeout.timeout_ms = 0;
  EXPECT_EQ(open_kmip_kms(no_timeout).error().code(), ErrorCode::kUsage);
}

TEST(KmsKmipTest, UnreadableCertificateFilesAreConfigurationErrorsNamingTheFile) {
  auto kms = open(endpoint());
  // The key file is looked at first (its owner and mode, then its PEM).
  expect_usage(as_status(kms->administration()->describe_key("kmip://kms.example:5696/1")),
               "kmip://kms.example:5696: client key /nonexistent/envcrypt-test/client.key: No "
               "such file or directory");
}

TEST(KmsKmipTest, WhatKmipCannotOfferIsAUsageErrorNamingTheServer) {
  auto kms = open(endpoint());
  const std::string server = "not supported by KMIP server kmip://kms.example:5696";
  EXPECT_EQ(kms->aliases(), nullptr);
  expect_usage(as_status(offered(*kms, kms->aliases(), "create-alias")), "create-alias: " + server);
  expect_usage(as_status(offered(*kms, kms->aliases(), "delete-alias")), "delete-alias: " + server);
  expect_usage(as_status(offered(*kms, kms->aliases(), "list-aliases")), "list-aliases: " + server);
  for (const char* operation :
       {"rotate-key", "rotate-due", "purge-due", "get-parameters-for-import", "import-key-material",
        "delete-key-material", "create-grant", "revoke-grant", "list-grants", "audit"}) {
    expect_usage(kms->unsupported(operation), std::string(operation) + ": " + server);
  }
  EXPECT_EQ(kms->lifecycle(), nullptr);
  EXPECT_EQ(kms->key_import(), nullptr);
  EXPECT_EQ(kms->grants(), nullptr);
  EXPECT_EQ(kms->audit_trail(), nullptr);
  EXPECT_EQ(kms->keystore_backup(), nullptr);
  KeyAdministration* admin = kms->administration();
  ASSERT_NE(admin, nullptr);
  expect_usage(admin->cancel_key_deletion("kmip://kms.example:5696/1"), server);
  CreateKeyRequest external;
  external.origin = KeyOrigin::kExternal;
  expect_usage(as_status(admin->create_key(external)), server);
  CreateKeyRequest rotating;
  rotating.rotation_interval_days = 365;
  expect_usage(as_status(admin->create_key(rotating)), server);
}

TEST(KmsKmipTest, KeyReferencesForOtherServersAreRefusedBeforeAnyConnection) {
  auto kms = open(endpoint());
  const EncryptionContext context;
  expect_usage(as_status(kms->envelope().wrap("kmip://elsewhere:5696/1", SecretBytes(64), context)),
               "not a key of KMIP server kmip://kms.example:5696");
  expect_usage(as_status(kms->envelope().wrap("local://local-1/1", SecretBytes(64), context)),
               "not a key reference for KMIP server");
  WrappedKey foreign;
  foreign.cmk_uri = "local://local-1/1";
  expect_usage(as_status(kms->envelope().unwrap(foreign, context)), "not a key of KMIP server");
}

}  // namespace
}  // namespace envcrypt
