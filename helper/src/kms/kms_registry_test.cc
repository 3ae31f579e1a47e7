#include "kms/kms_registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace envcrypt {
namespace {

Config test_config() {
  Config config;
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("envcrypt-registry-" + std::to_string(::getpid()));
  config.local_dir = dir / "kms";
  config.local_root_key = dir / "root.key";
  config.principal = "host/test";
  KmipEndpoint endpoint;
  endpoint.name = "hsm";
  endpoint.host = "127.0.0.1";
  endpoint.port = 5696;
  config.kmip_endpoints.emplace("hsm", endpoint);
  return config;
}

TEST(KmsRegistry, KeyIdsAliasesAndLocalUrisGoToTheLocalKms) {
  KmsRegistry registry(test_config());
  auto by_alias = registry.for_key("alias/acs/ecs");
  ASSERT_TRUE(by_alias.ok()) << by_alias.error().message();
  auto by_uri = registry.for_key("local://local-1/1234");
  ASSERT_TRUE(by_uri.ok());
  EXPECT_EQ(*by_alias, *by_uri);  // one backend per region, opened once
  auto other_region = registry.for_key("local://eu-2/1234");
  ASSERT_TRUE(other_region.ok());
  EXPECT_NE(*other_region, *by_alias);
  EXPECT_EQ(*registry.for_selector(std::nullopt), *by_alias);
}

TEST(KmsRegistry, KmipUrisFindTheirEndpoint) {
  KmsRegistry registry(test_config());
  auto by_address = registry.for_key("kmip://127.0.0.1:5696/abc");
  ASSERT_TRUE(by_address.ok()) << by_address.error().message();
  auto by_name = registry.for_selector("kmip://hsm");
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(*by_address, *by_name);
  EXPECT_TRUE((*by_name)->supports("kmip://127.0.0.1:5696/abc"));
}

TEST(KmsRegistry, AUriNamingAnyServerOfAClusterFindsItsEndpoint) {
  Config config = test_config();
  config.kmip_endpoints.at("hsm").failover = {{"127.0.0.2", 5697}};
  KmsRegistry registry(config);
  auto first = registry.for_key("kmip://127.0.0.1:5696/abc");
  auto second = registry.for_key("kmip://127.0.0.2:5697/abc");
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(*first, *second);
  EXPECT_TRUE((*first)->supports("kmip://127.0.0.2:5697/abc"));
  EXPECT_FALSE((*first)->supports("kmip://127.0.0.2:5696/abc"));
}

TEST(KmsRegistry, UnknownEndpointsAndSchemesAreUsageErrors) {
  KmsRegistry registry(test_config());
  auto unknown = registry.for_key("kmip://10.9.9.9:5696/abc");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kUsage);
  EXPECT_NE(unknown.error().message().find("kmip://10.9.9.9:5696"), std::string::npos);
  auto scheme = registry.for_key("aws-kms://key");
  ASSERT_FALSE(scheme.ok());
  EXPECT_EQ(scheme.error().code(), ErrorCode::kUsage);
  EXPECT_FALSE(registry.for_key("local:///1234").ok());
}

}  // namespace
}  // namespace envcrypt
