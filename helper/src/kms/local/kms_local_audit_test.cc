// The local KMS's audit trail and the atomicity of its keystore across
// processes.  The fixture: kms_local_test_support.h.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

// ----- audit -----

TEST_F(LocalKmsTest, EveryOperationIsAuditedWithItsResult) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  const DataKey data_key = kms->envelope().generate(key.uri, kContext, 64).value();
  ASSERT_TRUE(kms->disable_key(key.uri).ok());
  ASSERT_FALSE(kms->envelope().unwrap(data_key.wrapped, kContext).ok());

  const std::vector<AuditRecord> records = kms->audit_log().query({}).value();
  // Envelope::generate decrypts its new wrap back (Envelope::verify).
  ASSERT_EQ(records.size(), 5U);
  EXPECT_EQ(records[0].operation, "CreateKey");
  EXPECT_EQ(records[1].operation, "GenerateDataKey");
  EXPECT_EQ(records[2].operation, "Decrypt");
  EXPECT_EQ(records[3].operation, "DisableKey");
  EXPECT_EQ(records[4].operation, "Decrypt");
  for (const AuditRecord& record : records) {
    EXPECT_EQ(record.principal, "host/test");
    EXPECT_EQ(record.key_id, key.key_id);
    EXPECT_EQ(record.time, "2027-01-15T08:00:00Z");
  }
  EXPECT_EQ(records[1].result, "ok");
  EXPECT_EQ(records[1].key_version, 1U);
  EXPECT_EQ(records[1].disk, kContext.at("disk_uuid"));
  EXPECT_EQ(records[2].result, "ok");
  EXPECT_EQ(records[4].result, "key " + key.uri + " is Disabled");
  EXPECT_EQ(records[4].disk, kContext.at("disk_uuid"));

  const nlohmann::json line = nlohmann::json::parse(records[1].line);
  EXPECT_EQ(line["context"]["disk_uuid"], kContext.at("disk_uuid"));
  EXPECT_EQ(line["context"]["sector_size"], "4096");
  EXPECT_EQ(line["operation"], "GenerateDataKey");
  EXPECT_EQ(line["key_version"], 1);
  EXPECT_EQ(line["mac"].get<std::string>().size(), 64U);

  // CreateKey and DisableKey changed the keystore: each has an intent line.
  const AuditVerification verified = kms->audit_log().verify().value();
  EXPECT_TRUE(verified.intact) << verified.problem;
  EXPECT_EQ(verified.lines, 7U);
}

std::vector<nlohmann::json> audit_lines(const std::filesystem::path& log) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(slurp(log));
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

// The intent line is durable before the keystore changes; a commit that
// fails is recorded as the intent's outcome, and nothing changed.
TEST_F(LocalKmsTest, AChangeIsAuditedAheadOfItsCommit) {
  const std::filesystem::path log = root_ / "var" / "kms" / "audit.log";
  const std::filesystem::path store = root_ / "var" / "kms" / "local-1.keystore.json";
  LocalKmsOptions opts = options();
  std::size_t keys_at_intent = 0;
  bool armed = false;
  opts.before_commit = [&]() -> Status {
    if (!armed) {
      return OkStatus();
    }
    const std::vector<nlohmann::json> lines = audit_lines(log);
    EXPECT_EQ(lines.back()["phase"], "intent");
    EXPECT_EQ(lines.back()["operation"], "CreateKey");
    EXPECT_EQ(lines.back()["result"], "pending");
    EXPECT_EQ(lines.back()["details"]["store"], "local-1.keystore.json");
    keys_at_intent = nlohmann::json::parse(slurp(store))["keys"].size();
    return Error(ErrorCode::kIo, "write local-1.keystore.json: No space left on device");
  };
  auto kms = LocalKms::open(opts).value();
  ASSERT_TRUE(kms->list_keys().ok());  // creates the keystore with the service key
  armed = true;
  expect_error(kms->create_key({}), ErrorCode::kIo,
               "write local-1.keystore.json: No space left on device");
  EXPECT_EQ(keys_at_intent, 1U);
  armed = false;
  EXPECT_EQ(kms->list_keys().value().size(), 1U);

  const std::vector<nlohmann::json> lines = audit_lines(log);
  ASSERT_EQ(lines.size(), 5U);  // ListKeys intent + line, CreateKey intent + line, ListKeys
  EXPECT_EQ(lines[3]["operation"], "CreateKey");
  EXPECT_EQ(lines[3]["intent"], 3);
  EXPECT_EQ(lines[3]["result"], "write local-1.keystore.json: No space left on device");
  const AuditVerification verified = kms->audit_log().verify().value();
  EXPECT_TRUE(verified.intact) << verified.problem;
}

// A KMS killed between the intent line and the commit: --verify says so,
// and keeps saying so after later operations.
TEST_F(LocalKmsTest, AStopBetweenTheIntentAndTheCommitIsReported) {
  auto kms = open();
  create(*kms);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    LocalKmsOptions opts = options();
    opts.before_commit = []() -> Status { std::_Exit(0); };
    Result<std::unique_ptr<LocalKms>> killed = LocalKms::open(opts);
    if (killed.ok()) {
      (void)(*killed)->create_key({});
    }
    std::_Exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  const std::vector<nlohmann::json> lines = audit_lines(root_ / "var" / "kms" / "audit.log");
  ASSERT_EQ(lines.size(), 3U);
  const std::string problem = "line 3 is the intent of CreateKey on key " +
                              lines[2]["key_id"].get<std::string>() +
                              " with no outcome: the KMS stopped between this line and its "
                              "keystore commit, so that change may or may not be committed";
  AuditVerification verified = kms->audit_log().verify().value();
  EXPECT_FALSE(verified.intact);
  EXPECT_EQ(verified.first_bad_line, 3U);
  EXPECT_EQ(verified.problem, problem);
  EXPECT_EQ(kms->list_keys().value().size(), 2U);  // the commit never happened
  verified = kms->audit_log().verify().value();
  EXPECT_EQ(verified.problem, problem);
}

// ----- atomicity across processes -----

// Two processes each creating N keys end with 2N customer keys, and a
// consistent audit chain.
TEST_F(LocalKmsTest, ConcurrentCreatorsNeverLoseAKey) {
  open();  // root key and keystore exist before the race
  constexpr int kPerProcess = 15;
  std::vector<pid_t> children;
  for (int writer = 0; writer < 2; ++writer) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      Result<std::unique_ptr<LocalKms>> kms = LocalKms::open(options());
      for (int i = 0; kms.ok() && i < kPerProcess; ++i) {
        if (!(*kms)
                 ->create_key(
                     {"k" + std::to_string(i), std::nullopt, KeyOrigin::kKms, std::nullopt})
                 .ok()) {
          std::_Exit(1);
        }
      }
      std::_Exit(kms.ok() ? 0 : 2);
    }
    children.push_back(child);
  }
  for (const pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  auto kms = open();
  EXPECT_EQ(kms->list_keys().value().size(), 2U * kPerProcess + 1);
  const AuditVerification verified = kms->audit_log().verify().value();
  EXPECT_TRUE(verified.intact) << verified.problem;
}

// A KMS process killed at random instants leaves a keystore that opens,
// lists and unwraps.
TEST_F(LocalKmsTest, SigkillDuringKeyCreationLeavesAUsableKeystore) {
  auto kms = open();
  const DataKey data_key = kms->envelope().generate("alias/acs/ecs", kContext, 64).value();
  std::mt19937 random(4242);
  // Kill delays scale with how long a writer takes to open the keystore
  // and create one key on this machine; a round in which the writer
  // created nothing doubles the range (a loaded host, a sanitizer build),
  // so rounds go on until the writers have made progress.
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(LocalKms::open(options()).ok());
  ASSERT_TRUE(kms->create_key({}).ok());
  const auto open_and_create = std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now() - started)
                                   .count();
  constexpr useconds_t kMaxDelay = 2'000'000;
  useconds_t max_delay =
      std::min<useconds_t>(kMaxDelay, static_cast<useconds_t>(20000 + 6 * open_and_create));
  std::size_t last_count = 2;
  for (int round = 0; round < 200 && (round < 15 || last_count <= 6); ++round) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      Result<std::unique_ptr<LocalKms>> writer = LocalKms::open(options());
      for (;;) {
        if (!writer.ok() || !(*writer)->create_key({}).ok()) {
          std::_Exit(1);
        }
      }
    }
    ::usleep(std::uniform_int_distribution<useconds_t>(0, max_delay)(random));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status));
    const Result<std::vector<KeyInfo>> keys = kms->list_keys();
    ASSERT_TRUE(keys.ok()) << keys.error().message();
    EXPECT_GE(keys->size(), last_count);
    if (keys->size() == last_count) {
      max_delay = std::min(kMaxDelay, 2 * max_delay);
    }
    last_count = keys->size();
    EXPECT_TRUE(kms->envelope().unwrap(data_key.wrapped, kContext).ok());
  }
  EXPECT_GT(last_count, 6U) << "the writers made too little progress to test anything";
}

}  // namespace
}  // namespace envcrypt
