// One schema per --json record (Documentation/admin-guide/json-output.rst):
// the key record has the same fields, in the same order, whichever command
// prints it, and the header record is the same for inspect and verify.
#include "cli/json_records.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;

const std::vector<std::string> kKeyFields = {
    "key_id",          "uri",           "aliases",    "state",      "origin", "description",
    "primary_version", "version_count", "created_at", "service_key"};

std::vector<std::string> field_names(const nlohmann::ordered_json& record) {
  std::vector<std::string> names;
  for (const auto& [name, value] : record.items()) {
    names.push_back(name);
  }
  return names;
}

class JsonRecordsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-json");
    config_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_, cli_testing::local_kms_config(dir_));
    tab_ = dir_ / "envcrypttab";
    cli_testing::write_text(tab_, "");
    ::setenv("ENVCRYPT_TAB", tab_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("ENVCRYPT_TAB");
    fs::remove_all(dir_);
  }

  // `envcryptctl --config C --json ARGS...`, which must succeed.
  nlohmann::ordered_json json_of(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_.string(), "--json"});
    const CliRun run = cli_testing::run_envcryptctl(args);
    EXPECT_EQ(run.code, 0) << run.err;
    return nlohmann::ordered_json::parse(run.out, nullptr, false);
  }

  fs::path dir_;
  fs::path config_;
  fs::path tab_;
};

TEST_F(JsonRecordsTest, TheKeyRecordIsTheSameWhicheverCommandPrintsIt) {
  const auto created = json_of({"kms", "create-key", "--alias", "alias/json/one"});
  ASSERT_TRUE(created.is_object());
  const std::string uri = created["uri"];
  EXPECT_EQ(field_names(created), kKeyFields) << "create-key";
  EXPECT_EQ(field_names(json_of({"kms", "describe-key", uri})), kKeyFields) << "describe-key";
  const auto listed = json_of({"kms", "list-keys"});
  ASSERT_TRUE(listed.is_array());
  for (const auto& key : listed) {
    EXPECT_EQ(field_names(key), kKeyFields) << "list-keys: " << key.dump();
  }
  const auto rotated = json_of({"kms", "rotate-key", uri});
  EXPECT_EQ(field_names(rotated), kKeyFields) << "rotate-key";
  EXPECT_EQ(rotated["primary_version"], 2);
  EXPECT_EQ(rotated["aliases"], nlohmann::ordered_json::array({"alias/json/one"}));

  std::vector<std::string> pending = kKeyFields;
  pending.emplace_back("deletion_date");
  const auto scheduled = json_of({"kms", "schedule-key-deletion", uri});
  EXPECT_EQ(field_names(scheduled), pending) << "schedule-key-deletion";
  EXPECT_EQ(scheduled["state"], "PendingDeletion");
}

TEST_F(JsonRecordsTest, VerifyPrintsInspectsHeaderRecordAndVerified) {
  const fs::path image = dir_ / "disk.img";
  cli_testing::make_sparse_image(image, 32 << 20);
  json_of({"format", image.string()});
  const auto inspected = json_of({"inspect", image.string()});
  auto verified = json_of({"verify", image.string()});
  ASSERT_TRUE(verified.is_object());
  EXPECT_EQ(verified["verified"], true);
  verified.erase("verified");
  EXPECT_EQ(verified, inspected);
  EXPECT_EQ(field_names(inspected),
            (std::vector<std::string>{"device", "version", "uuid", "label", "sequence", "cipher",
                                      "sector_size", "key_bits", "data_offset", "data_size", "cmk",
                                      "cmk_version", "wrap_algorithm", "kcv_algorithm",
                                      "recovery_key_id", "copies"}));
}

}  // namespace
}  // namespace envcrypt
