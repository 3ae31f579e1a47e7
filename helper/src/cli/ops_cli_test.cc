// The operations commands on image files, in process: every preflight
// failure reason that needs no kernel (run_preflight with the module check
// and the list of attached disks replaced), the preflight command itself,
// the attach-failure line and record (header-backup/header-restore:
// header_backup_cli_test.cc), and status --keys.  The guest test
// selftests/envcrypt/test_helper_ops.sh covers what needs device-mapper.
#include "cli/ops_cli.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "boot/preflight.h"
#include "cli/cli.h"
#include "cli/cli_test_support.h"
#include "cli/ops_cli_test_support.h"
#include "config/config.h"
#include "header/header.h"
#include "header/header_io.h"
#include "kms/kms_registry.h"
#include "kms/local/kms_local.h"
#include "util/crypto.h"
#include "volume/diagnostics.h"

namespace envcrypt {
namespace {

using cli_testing::CliRun;

void expect_failure(const DiskCheck& check, const std::string& step, ErrorCode code) {
  const CheckStep* failure = check.first_failure();
  ASSERT_NE(failure, nullptr) << preflight_row(check);
  EXPECT_EQ(failure->step, step) << preflight_row(check);
  EXPECT_EQ(failure->code, code) << preflight_row(check);
}

// ----- preflight -----

TEST_F(OpsTest, PreflightPassesEveryStep) {
  const std::string cmk = format(image_);
  PreflightReport report = preflight("data " + image_.string() + "\n");
  ASSERT_EQ(report.disks.size(), 1U);
  EXPECT_EQ(preflight_row(report.disks[0]), "data: OK" + row_tail(image_, cmk));
  std::string steps;
  for (const CheckStep& step : report.disks[0].steps) {
    steps += step.step + (step.ok ? "+ " : "- ");
  }
  EXPECT_EQ(steps, "device+ header+ module+ kms+ state+ grant+ unwrap+ ");
  EXPECT_EQ(report.summary(), "1 ok, 0 failed");
  EXPECT_EQ(report.first_counted_failure(), nullptr);
}

TEST_F(OpsTest, PreflightMissingDeviceAndNofail) {
  const fs::path gone = dir_ / "gone.img";
  PreflightReport report =
      preflight("gone " + gone.string() + "\nopt " + gone.string() + " nofail\n");
  ASSERT_EQ(report.disks.size(), 2U);
  EXPECT_EQ(preflight_row(report.disks[0]), "gone: FAIL at device: " + gone.string() +
                                                " does not exist (device " + gone.string() + ")");
  EXPECT_EQ(preflight_row(report.disks[1]), "opt: FAIL at device: " + gone.string() +
                                                " does not exist (device " + gone.string() +
                                                ") (nofail: not counted)");
  expect_failure(report.disks[0], "device", ErrorCode::kNotFound);
  EXPECT_EQ(report.summary(), "0 ok, 2 failed (1 nofail)");
  EXPECT_EQ(report.first_counted_failure(), &report.disks[0]);

  PreflightReport only_nofail = preflight("opt " + gone.string() + " nofail\n");
  EXPECT_EQ(only_nofail.first_counted_failure(), nullptr);
}

TEST_F(OpsTest, PreflightCorruptHeaderCopies) {
  const std::string cmk = format(image_);
  corrupt(image_, 200);
  DiskCheck primary = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(primary),
            "data: FAIL at header: primary copy bad checksum: checksum mismatch (attach still "
            "works from the other copy; rewrite it with header-restore from a backup)" +
                row_tail(image_, cmk));
  expect_failure(primary, "header", ErrorCode::kCorrupt);
  EXPECT_TRUE(primary.steps.back().ok) << "the KMS steps still ran: " << primary.steps.back().step;

  const fs::path other = make_image("other.img");
  const std::string other_cmk = format(other);
  corrupt(other, kSecondaryOffset + 200);
  DiskCheck secondary = preflight("data " + other.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(secondary),
            "data: FAIL at header: secondary copy bad checksum: checksum mismatch (attach still "
            "works from the other copy; rewrite it with header-restore from a backup)" +
                row_tail(other, other_cmk));

  corrupt(image_, kSecondaryOffset + 200);
  DiskCheck both = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(both), "data: FAIL at header: " + image_.string() +
                                     ": no valid header copy (primary: checksum mismatch; "
                                     "secondary: checksum mismatch) (device " +
                                     image_.string() + ")");
  expect_failure(both, "header", ErrorCode::kCorrupt);
}

TEST_F(OpsTest, PreflightDisabledAndPendingDeletion) {
  const std::string cmk = create_key("alias/ops/a");
  format(image_, "alias/ops/a");
  ASSERT_EQ(run({"kms", "disable-key", "alias/ops/a"}).code, 0);
  DiskCheck disabled = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(disabled),
            "data: FAIL at state: CMK " + cmk + " is Disabled" + row_tail(image_, cmk));
  expect_failure(disabled, "state", ErrorCode::kDenied);

  ASSERT_EQ(run({"kms", "enable-key", "alias/ops/a"}).code, 0);
  ASSERT_EQ(run({"kms", "schedule-key-deletion", "alias/ops/a", "--pending-window-days", "7"}).code,
            0);
  DiskCheck pending = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(pending),
            "data: FAIL at state: CMK " + cmk + " is PendingDeletion" + row_tail(image_, cmk));
}

TEST_F(OpsTest, PreflightPendingImport) {
  auto kms = local_kms("host/ops-test");
  CreateKeyRequest request;
  request.origin = KeyOrigin::kExternal;
  const KeyInfo key = kms->create_key(request).value();
  const SecretBytes material = random_secret(32).value();
  const ImportParameters parameters = kms->get_parameters_for_import(key.uri).value();
  const Bytes wrapped = rsa_oaep_sha256_encrypt(parameters.public_key_pem, material.span()).value();
  ASSERT_TRUE(kms->import_key_material(key.uri, {wrapped, parameters.import_token, {}}).ok());
  format(image_, key.uri);
  ASSERT_TRUE(kms->delete_key_material(key.uri).ok());
  DiskCheck check = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(check), "data: FAIL at state: CMK " + key.uri + " is PendingImport" +
                                      row_tail(image_, key.uri));
}

TEST_F(OpsTest, PreflightNotGranted) {
  const std::string cmk = create_key("alias/ops/g");
  format(image_, "alias/ops/g");
  const fs::path other = write_config("host/other", kms_dir_);
  // No grant at all: the KMS refuses the describe and then the unwrap.
  DiskCheck none = preflight("data " + image_.string() + "\n", other).disks.at(0);
  EXPECT_EQ(preflight_row(none),
            "data: FAIL at grant: principal host/other holds no decrypt "
            "grant on key " +
                cmk + row_tail(image_, cmk));
  expect_failure(none, "grant", ErrorCode::kDenied);

  // Allowed to look, not to decrypt: the grants say so before any unwrap.
  ASSERT_TRUE(local_kms("host/ops-test")
                  ->create_grant(cmk, "host/other", {GrantOperation::kDescribe})
                  .ok());
  DiskCheck describe_only = preflight("data " + image_.string() + "\n", other).disks.at(0);
  EXPECT_EQ(preflight_row(describe_only),
            "data: FAIL at grant: principal host/other holds no decrypt grant on " + cmk +
                row_tail(image_, cmk));
  EXPECT_EQ(describe_only.steps.back().step, "grant");

  ASSERT_TRUE(
      local_kms("host/ops-test")->create_grant(cmk, "host/other", {GrantOperation::kDecrypt}).ok());
  DiskCheck granted = preflight("data " + image_.string() + "\n", other).disks.at(0);
  EXPECT_EQ(preflight_row(granted), "data: OK" + row_tail(image_, cmk));
}

TEST_F(OpsTest, PreflightUnknownKey) {
  const std::string cmk = create_key("alias/ops/u");
  format(image_, "alias/ops/u");
  const fs::path elsewhere = write_config("host/elsewhere", dir_ / "kms-elsewhere");
  DiskCheck check = preflight("data " + image_.string() + "\n", elsewhere).disks.at(0);
  EXPECT_EQ(preflight_row(check),
            "data: FAIL at kms: key " + cmk + " not found (device " + image_.string() + ", CMK " +
                cmk + ", endpoint local keystore " + (dir_ / "kms-elsewhere").string() + ")");
  expect_failure(check, "kms", ErrorCode::kNotFound);
}

TEST_F(OpsTest, PreflightKmsUnreachable) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "openssl not installed";
  }
  const fs::path cert = dir_ / "cert.pem";
  const fs::path key = dir_ / "key.pem";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                         "-nodes -subj /CN=envcrypt-test -days 1 -keyout " +
                         key.string() + " -out " + cert.string() + " >/dev/null 2>&1")
                            .c_str()),
            0);
  const fs::path config = write_config(
      "host/kmip", kms_dir_,
      "[kms.kmip.dead]\nhost = \"127.0.0.1\"\nport = 1\ntimeout_ms = 300\nca = \"" + cert.string() +
          "\"\ncert = \"" + cert.string() + "\"\nkey = \"" + key.string() + "\"\n");
  format(image_);
  {
    auto device = open_device(image_, OpenMode::kReadWrite).value();
    DiskHeader header = read_header(device).value().header;
    header.wrapped.cmk_uri = "kmip://127.0.0.1:1/envcrypt-test-uid";
    ASSERT_TRUE(write_header(device, header).ok());
  }
  DiskCheck check = preflight("data " + image_.string() + "\n", config).disks.at(0);
  expect_failure(check, "kms", ErrorCode::kKmsUnreachable);
  EXPECT_NE(check.first_failure()->detail.find("127.0.0.1"), std::string::npos)
      << check.first_failure()->detail;
  EXPECT_EQ(check.endpoint, "kmip 127.0.0.1:1");
}

TEST_F(OpsTest, PreflightUnwrapFailure) {
  const std::string cmk = format(image_);
  {
    auto device = open_device(image_, OpenMode::kReadWrite).value();
    DiskHeader header = read_header(device).value().header;
    header.geometry.data_offset += kDataAlign;  // the encryption context no longer matches
    ASSERT_TRUE(write_header(device, header).ok());
  }
  DiskCheck check = preflight("data " + image_.string() + "\n").disks.at(0);
  EXPECT_EQ(preflight_row(check),
            "data: FAIL at unwrap: unwrap failed: encryption context or blob does not match" +
                row_tail(image_, cmk));
  expect_failure(check, "unwrap", ErrorCode::kCorrupt);
}

TEST_F(OpsTest, PreflightModuleMissingStillChecksTheKey) {
  const std::string cmk = format(image_);
  DiskCheck check = preflight("data " + image_.string() + "\n", {},
                              Error(ErrorCode::kNotFound, "dm-envcrypt is not loaded"))
                        .disks.at(0);
  EXPECT_EQ(preflight_row(check),
            "data: FAIL at module: dm-envcrypt is not loaded" + row_tail(image_, cmk));
  EXPECT_EQ(check.steps.back().step, "unwrap");
  EXPECT_TRUE(check.steps.back().ok);
}

TEST_F(OpsTest, PreflightIncludesAttachedDisks) {
  const std::string cmk = format(image_);
  const fs::path adhoc = make_image("adhoc.img");
  const std::string adhoc_cmk = format(adhoc);
  PreflightReport report = preflight("data " + image_.string() + "\n", {}, OkStatus(),
                                     {{"data", uuid_of(image_), image_}, {"adhoc", "", adhoc}});
  ASSERT_EQ(report.disks.size(), 2U);
  EXPECT_EQ(preflight_row(report.disks[0]), "data: OK (device " + image_.string() +
                                                ", attached as data, CMK " + cmk + ", endpoint " +
                                                endpoint() + ")");
  EXPECT_EQ(preflight_row(report.disks[1]), "adhoc: OK (device " + adhoc.string() +
                                                ", attached as adhoc, CMK " + adhoc_cmk +
                                                ", endpoint " + endpoint() + ")");
  EXPECT_FALSE(report.disks[1].disk.in_table);
}

TEST_F(OpsTest, PreflightCommandOnThisHost) {
  if (fs::exists("/sys/module/dm_envcrypt") ||
      PreflightEnvironment(system_preflight_environment()).module_available().ok()) {
    GTEST_SKIP() << "dm-envcrypt is available on this host";
  }
  const std::string cmk = format(image_);
  std::ofstream(tab_) << "data " << image_.string() << "\n";
  CliRun r = run({"preflight", "--tab", tab_.string()});
  EXPECT_EQ(r.code, static_cast<int>(ErrorCode::kNotFound)) << r.err;
  const std::string reason =
      PreflightEnvironment(system_preflight_environment()).module_available().error().message();
  EXPECT_EQ(r.out, "data: FAIL at module: " + reason + row_tail(image_, cmk) +
                       "\npreflight: 0 ok, 1 failed\n");
  EXPECT_EQ(r.err, "envcryptctl: preflight: 1 of 1 disks would not attach, first data at module: " +
                       reason + "\n");

  CliRun json = run({"--json", "preflight", "--tab", tab_.string()});
  EXPECT_EQ(json.code, static_cast<int>(ErrorCode::kNotFound));
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["summary"], "0 ok, 1 failed");
  EXPECT_EQ(j["disks"][0]["result"], "FAIL");
  EXPECT_EQ(j["disks"][0]["step"], "module");
  EXPECT_EQ(j["disks"][0]["cmk"], cmk);
  EXPECT_EQ(j["disks"][0]["exit_code"], 3);
  EXPECT_EQ(j["disks"][0]["checks"].size(), 7U);

  std::ofstream(tab_) << "opt " << image_.string() << " nofail\n";
  EXPECT_EQ(run({"preflight", "--tab", tab_.string()}).code, 0);
}

TEST_F(OpsTest, PreflightUsageErrors) {
  CliRun missing = run({"preflight", "--tab", (dir_ / "absent.tab").string()});
  EXPECT_EQ(missing.code, static_cast<int>(ErrorCode::kNotFound)) << missing.err;
  std::ofstream(tab_) << "bad /dev/vdb discard,bogus\n";
  CliRun bad = run({"preflight", "--tab", tab_.string()});
  EXPECT_EQ(bad.code, static_cast<int>(ErrorCode::kUsage));
  // The bad line is skipped (logged), and a preflight that skipped a line fails.
  EXPECT_EQ(bad.err, "envcryptctl: warning: " + tab_.string() +
                         ":1: unknown option 'bogus' (line skipped)\n"
                         "envcryptctl: preflight: 1 envcrypttab line skipped, first " +
                         tab_.string() + ":1: unknown option 'bogus'\n");
  EXPECT_EQ(run({"preflight", "extra"}).code, static_cast<int>(ErrorCode::kUsage));
}

// ----- diagnostics -----

TEST_F(OpsTest, FailureLineAndRecord) {
  AttachFailure failure{
      "data",   "/dev/vdb",         "local://local-1/k",     "local keystore /x y",
      "unwrap", ErrorCode::kDenied, "key \"k\" is Disabled", 1700000000};
  EXPECT_EQ(failure_fields(failure),
            "disk=data device=/dev/vdb cmk=local://local-1/k endpoint=\"local keystore /x y\" "
            "step=unwrap code=4 reason=\"key \\\"k\\\" is Disabled\"");
  std::ostringstream err;
  report_attach_failure(failure, err);
  EXPECT_EQ(err.str(), "envcryptctl: attach failed: " + failure_fields(failure) + "\n");
  const fs::path record = dir_ / "run" / "attach-errors" / "data";
  struct stat st {};
  ASSERT_EQ(::stat(record.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  auto last = last_attach_error("data");
  ASSERT_TRUE(last.ok() && *last);
  EXPECT_EQ(failure_fields(**last), failure_fields(failure));
  EXPECT_EQ((*last)->time, 1700000000);
  EXPECT_FALSE(*last_attach_error("other"));

  std::ofstream(tab_) << "data /dev/vdb\nother /dev/vdc\n";
  std::ostringstream status;
  ASSERT_TRUE(print_attach_errors(tab_.string(), status).ok());
  EXPECT_EQ(status.str(),
            "data: last attach failed 2023-11-14T22:13:20Z: " + failure_fields(failure) + "\n");
}

TEST_F(OpsTest, KmsEndpointNames) {
  Config config;
  config.local_dir = "/var/lib/envcrypt/kms";
  KmipEndpoint corp;
  corp.name = "corp";
  corp.host = "kms.example";
  config.kmip_endpoints["corp"] = corp;
  EXPECT_EQ(kms_endpoint(config, "local://local-1/k"), "local keystore /var/lib/envcrypt/kms");
  EXPECT_EQ(kms_endpoint(config, "kmip://corp/uid"), "kmip kms.example:5696");
  EXPECT_EQ(kms_endpoint(config, "kmip://10.0.0.1:5696/uid"), "kmip 10.0.0.1:5696");
  EXPECT_EQ(kms_endpoint(config, ""), "");
}

// ----- status --keys -----

TEST_F(OpsTest, StatusKeysReportsStaleWraps) {
  const std::string cmk = create_key("alias/ops/r");
  format(image_, "alias/ops/r");
  ASSERT_TRUE(local_kms("host/ops-test")->rotate_key(cmk).ok());
  const fs::path fresh = make_image("fresh.img");
  format(fresh, "alias/ops/r");
  const fs::path gone = dir_ / "gone.img";
  std::ofstream(tab_) << "old " << image_.string() << "\nnew " << fresh.string() << "\ngone "
                      << gone.string() << " nofail\n";
  CliRun r = run({"status", "--keys", "--tab", tab_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "old: CMK " + cmk + ", wrapped by version 1, primary version 2: stale\n" +
                       "new: CMK " + cmk + ", wrapped by version 2, primary version 2: current\n" +
                       "gone: CMK -, wrapped by version -, primary version -: unknown (" +
                       gone.string() + " does not exist)\n");
  CliRun json = run({"--json", "status", "--keys", "--tab", tab_.string()});
  ASSERT_EQ(json.code, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j[0]["wrap"], "stale");
  EXPECT_EQ(j[0]["wrapped_version"], 1);
  EXPECT_EQ(j[0]["primary_version"], 2);
  EXPECT_EQ(j[1]["wrap"], "current");
  EXPECT_EQ(j[2]["wrap"], "unknown");
  EXPECT_TRUE(j[2]["wrapped_version"].is_null());
}

}  // namespace
}  // namespace envcrypt
