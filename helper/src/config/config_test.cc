#include "config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace envcrypt {
namespace {

Result<Config> parse(const std::string& text) { return parse_config(text, "/test.conf"); }

void expect_usage_error(const std::string& text, const std::string& needle) {
  auto config = parse(text);
  ASSERT_FALSE(config.ok()) << text;
  EXPECT_EQ(config.error().code(), ErrorCode::kUsage);
  EXPECT_NE(config.error().message().find(needle), std::string::npos)
      << "message '" << config.error().message() << "' lacks '" << needle << "'";
  EXPECT_NE(config.error().message().find("/test.conf"), std::string::npos);
}

TEST(Config, EmptyTextGivesDefaults) {
  auto config = parse("");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->region, "local-1");
  EXPECT_EQ(config->default_cmk, "alias/acs/ecs");
  EXPECT_EQ(config->local_dir, "/var/lib/envcrypt/kms");
  EXPECT_EQ(config->local_root_key, "/etc/envcrypt/root.key");
  EXPECT_EQ(config->principal.rfind("host/", 0), 0u);
  EXPECT_TRUE(config->kmip_endpoints.empty());
  EXPECT_FALSE(config->boot.auto_attach);
}

TEST(Config, BootAutoAttach) {
  auto config = parse("[boot]\nauto_attach = true\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_TRUE(config->boot.auto_attach);
  expect_usage_error("[boot]\nauto_attach = 1\n",
                     "boot.auto_attach: expected true or false, got an integer");
  expect_usage_error("[boot]\nautoattach = true\n", "unknown key 'boot.autoattach'");
  expect_usage_error("boot = 3\n", "boot: expected a table, got an integer");
}

TEST(Config, FullSchema) {
  auto config = parse(R"(
region = "eu-2"
principal = "host/db1"
default_cmk = "alias/db"
[kms.local]
dir = "/tmp/kms"
root_key = "/tmp/root.key"
[kms.kmip.hsm]
host = "kms.example"
ca = "/etc/ca.pem"
cert = "/etc/c.pem"
key = "/etc/c.key"
timeout_ms = 250
[kms.kmip.other]
host = "10.0.0.1"
port = 15696
)");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->region, "eu-2");
  EXPECT_EQ(config->principal, "host/db1");
  EXPECT_EQ(config->default_cmk, "alias/db");
  EXPECT_EQ(config->local_dir, "/tmp/kms");
  EXPECT_EQ(config->local_root_key, "/tmp/root.key");
  ASSERT_EQ(config->kmip_endpoints.size(), 2u);
  const auto& hsm = config->kmip_endpoints.at("hsm");
  EXPECT_EQ(hsm.name, "hsm");
  EXPECT_EQ(hsm.port, 5696);
  EXPECT_EQ(hsm.timeout_ms, 250u);
  EXPECT_EQ(hsm.cert, "/etc/c.pem");
  EXPECT_EQ(config->kmip_endpoints.at("other").port, 15696);
}

TEST(Config, UnknownKeysAreNamed) {
  expect_usage_error("regoin = \"x\"\n", "unknown key 'regoin'");
  expect_usage_error("[kms.local]\ndirr = \"/x\"\n", "unknown key 'kms.local.dirr'");
  expect_usage_error("[kms.kmip.a]\nhost = \"h\"\nprot = 1\n", "unknown key 'kms.kmip.a.prot'");
  expect_usage_error("[kms.aws]\n", "unknown key 'kms.aws'");
}

TEST(Config, WrongTypesAreNamed) {
  expect_usage_error("region = 5\n", "region: expected a string, got an integer");
  expect_usage_error("kms = \"local\"\n", "kms: expected a table, got a string");
  expect_usage_error("[kms.kmip.a]\nhost = \"h\"\nport = \"5696\"\n",
                     "kms.kmip.a.port: expected an integer, got a string");
  expect_usage_error("[kms.kmip.a]\nhost = \"h\"\nport = 70000\n",
                     "kms.kmip.a.port: must be between 1 and 65535");
  expect_usage_error("[kms.local]\ndir = \"relative/kms\"\n",
                     "kms.local.dir: expected an absolute path");
}

TEST(Config, TpmTctiIsCheckedWhereItIsRead) {
  auto config = parse("");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->local_tpm_tcti, "device:/dev/tpmrm0");
  config = parse("[kms.local]\ntpm_tcti = \"swtpm:host=127.0.0.1,port=2321\"\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->local_tpm_tcti, "swtpm:host=127.0.0.1,port=2321");
  const std::string expected =
      "kms.local.tpm_tcti: expected device:<path>, swtpm:<options> or mssim:<options>, got ";
  expect_usage_error("[kms.local]\ntpm_tcti = \"libtpms\"\n", expected + "'libtpms'");
  expect_usage_error("[kms.local]\ntpm_tcti = \"device:relative\"\n",
                     expected + "'device:relative'");
  expect_usage_error("[kms.local]\ntpm_tcti = \"swtpm:a\\nb\"\n", expected + "'swtpm:a\\x0ab'");
  expect_usage_error("[kms.local]\ntpm_tcti = \"swtpm:" + std::string(260, 'x') + "\"\n",
                     expected + "'swtpm:");
}

TEST(Config, KmipEndpointNeedsHost) {
  expect_usage_error("[kms.kmip.a]\nport = 5696\n", "kms.kmip.a.host: missing");
}

TEST(Config, KmipServersListTheFailoverOrder) {
  auto config = parse(R"(
[kms.kmip.cluster]
servers = ["kms1.example", "10.0.0.2:15696", "[fd00::3]", "[fd00::4]:7000", "fd00::5"]
port = 5697
timeout_ms = 1000
)");
  ASSERT_TRUE(config.ok()) << config.error().message();
  const KmipEndpoint& cluster = config->kmip_endpoints.at("cluster");
  EXPECT_EQ(cluster.host, "kms1.example");
  EXPECT_EQ(cluster.port, 5697);
  const auto servers = cluster.servers();
  ASSERT_EQ(servers.size(), 5U);
  EXPECT_EQ(servers[1].host, "10.0.0.2");
  EXPECT_EQ(servers[1].port, 15696);
  EXPECT_EQ(servers[2].host, "fd00::3");
  EXPECT_EQ(servers[2].port, 5697);
  EXPECT_EQ(servers[3].host, "fd00::4");
  EXPECT_EQ(servers[3].port, 7000);
  EXPECT_EQ(servers[4].host, "fd00::5");
  // Without deadline_ms, each server gets its whole timeout_ms.
  EXPECT_EQ(cluster.call_deadline(), std::chrono::milliseconds(5000));
}

TEST(Config, KmipSingleHostKeepsItsMeaning) {
  auto config = parse("[kms.kmip.a]\nhost = \"kms\"\ndeadline_ms = 1234\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  const KmipEndpoint& a = config->kmip_endpoints.at("a");
  EXPECT_EQ(a.servers().size(), 1U);
  EXPECT_EQ(a.call_deadline(), std::chrono::milliseconds(1234));
  KmipEndpoint defaults;
  defaults.host = "kms";
  EXPECT_EQ(defaults.call_deadline(), std::chrono::milliseconds(5000));
}

TEST(Config, KmipServerListErrorsAreNamed) {
  expect_usage_error("[kms.kmip.a]\nhost = \"x\"\nservers = [\"y\"]\n",
                     "kms.kmip.a.servers: give either host (one server) or servers, not both");
  expect_usage_error("[kms.kmip.a]\nservers = []\n",
                     "kms.kmip.a.servers: must list at least one server");
  expect_usage_error("[kms.kmip.a]\nservers = [\"x:0\"]\n",
                     "kms.kmip.a.servers: 'x:0': port must be between 1 and 65535");
  expect_usage_error("[kms.kmip.a]\nservers = [\"x:\"]\n", "'x:': port must be between");
  expect_usage_error("[kms.kmip.a]\nservers = [\"[::1\"]\n",
                     "'[::1': expected [address] or [address]:port");
  expect_usage_error("[kms.kmip.a]\nservers = [\":80\"]\n", "':80': no host");
  expect_usage_error("[kms.kmip.a]\nservers = \"x\"\n",
                     "kms.kmip.a.servers: expected an array of strings, got a string");
  expect_usage_error("[kms.kmip.a]\nservers = [1]\n",
                     "kms.kmip.a.servers: expected a string, got an integer");
  expect_usage_error("[kms.kmip.a]\nhost = \"x\"\ndeadline_ms = 0\n",
                     "kms.kmip.a.deadline_ms: must be between 1 and");
}

TEST(Config, BootAttachTimeout) {
  auto defaults = parse("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->boot.attach_timeout, std::chrono::seconds(90));
  auto config = parse("[boot]\nattach_timeout_seconds = 30\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->boot.attach_timeout, std::chrono::seconds(30));
  expect_usage_error("[boot]\nattach_timeout_seconds = 3601\n",
                     "boot.attach_timeout_seconds: must be between 0 and 3600, got 3601");
}

TEST(Config, SyntaxErrorsGiveLine) { expect_usage_error("region = \n", "/test.conf:1:"); }

TEST(Config, MissingExplicitFileIsAnError) {
  auto config = load_config(std::filesystem::path("/nonexistent/envcrypt.conf"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().code(), ErrorCode::kUsage);
  EXPECT_NE(config.error().message().find("/nonexistent/envcrypt.conf"), std::string::npos);
}

TEST(Config, EnvironmentVariableNamesTheFile) {
  const std::string path = ::testing::TempDir() + "/envcrypt-config-test.conf";
  { std::ofstream(path) << "region = \"env-1\"\n"; }
  ::setenv("ENVCRYPT_CONFIG", path.c_str(), 1);
  auto config = load_config(std::nullopt);
  ::unsetenv("ENVCRYPT_CONFIG");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->region, "env-1");
  EXPECT_EQ(config->source, path);

  ::setenv("ENVCRYPT_CONFIG", "/nonexistent/env.conf", 1);
  auto missing = load_config(std::nullopt);
  ::unsetenv("ENVCRYPT_CONFIG");
  EXPECT_FALSE(missing.ok());
}

// Like the local KMS root key: a config others could write (or that
// belongs to another user) is refused with one line naming file and mode.
TEST(Config, FileOthersCanWriteIsRefused) {
  const std::string path = ::testing::TempDir() + "/envcrypt-config-mode.conf";
  { std::ofstream(path) << "region = \"mode-1\"\n"; }
  for (const mode_t mode : {0664, 0646, 0666}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    auto config = load_config(std::filesystem::path(path));
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.error().code(), ErrorCode::kDenied);
    char octal[8];
    std::snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(config.error().message(), "config " + path + " has mode " + octal +
                                            ": refusing a configuration that group or others "
                                            "can write (chmod go-w " +
                                            path + ")");
  }
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto readable = load_config(std::filesystem::path(path));
  ASSERT_TRUE(readable.ok()) << readable.error().message();
  EXPECT_EQ(readable->region, "mode-1");
  std::filesystem::remove(path);
}

TEST(Config, FileOfAnotherUserIsRefused) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "giving the config to another owner needs root";
  }
  const std::string path = ::testing::TempDir() + "/envcrypt-config-owner.conf";
  { std::ofstream(path) << "region = \"owner-1\"\n"; }
  ASSERT_EQ(::chown(path.c_str(), 4242, 4242), 0);
  auto config = load_config(std::filesystem::path(path));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(config.error().message(),
            "config " + path +
                " is owned by uid 4242, neither root nor the running user (uid 0): refusing it");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace envcrypt
