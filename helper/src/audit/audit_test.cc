#include "audit/audit.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/crypto.h"
#include "util/file_io.h"
#include "util/keystore.h"

namespace envcrypt {
namespace {

constexpr std::int64_t kStart = 1800000000;  // 2027-01-15T08:00:00Z

// HKDF-SHA256 of 32 bytes 0x11 with the two infos, computed independently
// (Python's hmac module), so a change of derivation fails here.
constexpr const char* kChainKeyHex =
    "66ba377e4542b2343de0f833f0e707d8f62cc94fdd6ad3c69aee0a99ae37fafe";
constexpr const char* kHeadKeyHex =
    "b956964e582ddbb903e52cd47377034e7bad24a2e7d4ca3f369b4fff6492f077";

AuditKeys keys_from(std::uint8_t fill) {
  const std::vector<std::uint8_t> root(32, fill);
  return derive_audit_keys(root).value();
}

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "audit_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

std::string joined_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) {
    text += line + "\n";
  }
  return text;
}

void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  ASSERT_TRUE(write_file_durably(path, joined_lines(lines)).ok());
}

std::string mac_of(const std::string& line) {
  return nlohmann::json::parse(line)["mac"].get<std::string>();
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_ = open_log(0x11);
    // Five operations on two keys and two disks, one minute apart.
    const std::vector<std::tuple<std::string, std::string, std::string>> events = {
        {"CreateKey", "key-a", ""},
        {"GenerateDataKey", "key-a", "disk-1"},
        {"Decrypt", "key-a", "disk-1"},
        {"GenerateDataKey", "key-b", "disk-2"},
        {"Decrypt", "key-b", "disk-2"}};
    for (const auto& [operation, key, disk] : events) {
      EncryptionContext context;
      if (!disk.empty()) {
        context["disk_uuid"] = disk;
      }
      append({operation, key, 1, context, "ok", {}});
      now_ += 60;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::optional<AuditLog> open_log(std::uint8_t root_fill) {
    return AuditLog::open(
               path(), "host/test", [this] { return now_; }, keys_from(root_fill))
        .value();
  }
  void append(const AuditEvent& event, const AuditPhase& phase = {}) {
    const Result<std::uint64_t> seq = log_->append(event, phase);
    ASSERT_TRUE(seq.ok()) << seq.error().message();
  }
  AuditVerification verify(const std::optional<AuditAnchor>& anchor = std::nullopt) {
    return log_->verify(anchor).value();
  }
  void expect_problem(const AuditVerification& report, std::uint64_t line,
                      const std::string& problem) {
    EXPECT_FALSE(report.intact);
    EXPECT_EQ(report.first_bad_line, line);
    EXPECT_EQ(report.problem, problem);
  }
  std::filesystem::path path() const { return dir_ / "audit.log"; }
  std::filesystem::path head_path() const { return dir_ / "audit.log.head"; }
  std::string head_text() const { return *read_private_file(head_path()).value(); }

  std::filesystem::path dir_ = make_temp_dir();
  std::int64_t now_ = kStart;
  std::optional<AuditLog> log_;
};

// ----- lines kept for later (a read-only keystore) -----

std::vector<std::filesystem::path> spooled(const std::filesystem::path& spool) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(spool, ec)) {
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST_F(AuditTest, AKeptLineIsWrittenByTheNextAppendWithItsOwnTime) {
  const std::filesystem::path spool = dir_ / "spool";
  log_->defer_to(spool);
  const std::int64_t kept_at = now_;
  ASSERT_TRUE(log_->defer({"Decrypt", "key-a", 1, {{"disk_uuid", "disk-3"}}, "ok", {}},
                          "open audit.log: Read-only file system")
                  .ok());
  ASSERT_EQ(spooled(spool).size(), 1U);
  const std::string id = spooled(spool)[0].filename().string();
  EXPECT_EQ(read_lines(path()).size(), 5U) << "nothing written to the log yet";

  now_ += 300;
  append({"Decrypt", "key-b", 1, {{"disk_uuid", "disk-2"}}, "ok", {}});
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 7U);
  const auto kept = nlohmann::json::parse(lines[5]);
  EXPECT_EQ(kept["seq"], 6);
  EXPECT_EQ(kept["operation"], "Decrypt");
  EXPECT_EQ(kept["disk"], "disk-3");
  // Written now, saying when it happened: nothing is back-dated.
  EXPECT_EQ(kept["time"], format_rfc3339(kStart + 600));
  EXPECT_EQ(kept["details"]["deferred_time"], format_rfc3339(kept_at));
  EXPECT_EQ(kept["details"]["deferred_principal"], "host/test");
  EXPECT_EQ(kept["details"]["deferred_reason"], "open audit.log: Read-only file system");
  EXPECT_EQ(kept["details"]["deferred_id"], id);
  EXPECT_EQ(nlohmann::json::parse(lines[6])["disk"], "disk-2");
  EXPECT_TRUE(spooled(spool).empty());
  EXPECT_TRUE(verify().intact) << verify().problem;
}

TEST_F(AuditTest, KeptLinesAreWrittenInTheOrderTheyWereKept) {
  const std::filesystem::path spool = dir_ / "spool";
  log_->defer_to(spool);
  for (const char* disk : {"disk-7", "disk-8", "disk-9"}) {
    ASSERT_TRUE(log_->defer({"Decrypt", "key-a", 1, {{"disk_uuid", disk}}, "ok", {}}, "ro").ok());
  }
  append({"ListKeys", "", std::nullopt, {}, "ok", {}});
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 9U);
  EXPECT_EQ(nlohmann::json::parse(lines[5])["disk"], "disk-7");
  EXPECT_EQ(nlohmann::json::parse(lines[6])["disk"], "disk-8");
  EXPECT_EQ(nlohmann::json::parse(lines[7])["disk"], "disk-9");
  EXPECT_EQ(nlohmann::json::parse(lines[8])["operation"], "ListKeys");
  EXPECT_TRUE(verify().intact) << verify().problem;
}

TEST_F(AuditTest, AKeptLineThatWasAlteredIsNotWrittenAsWhatItClaims) {
  const std::filesystem::path spool = dir_ / "spool";
  log_->defer_to(spool);
  ASSERT_TRUE(log_->defer({"Decrypt", "key-a", 1, {{"disk_uuid", "disk-3"}}, "ok", {}}, "ro").ok());
  const std::filesystem::path file = spooled(spool).at(0);
  std::string text = *read_private_file(file).value();
  text.replace(text.find("disk-3"), 6, "disk-4");
  ASSERT_TRUE(write_file_durably(file, text).ok());

  append({"ListKeys", "", std::nullopt, {}, "ok", {}});
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 7U);
  const auto rejected = nlohmann::json::parse(lines[5]);
  EXPECT_EQ(rejected["operation"], "DeferredAuditRejected");
  EXPECT_EQ(rejected["disk"], "");
  EXPECT_EQ(rejected["result"],
            "the kept audit line fails its MAC: not written as the event it claims");
  EXPECT_EQ(rejected["details"]["deferred_id"], file.filename().string());
  EXPECT_TRUE(spooled(spool).empty());
}

TEST_F(AuditTest, AKeptLineAlreadyWrittenBeforeACrashIsNotWrittenTwice) {
  const std::filesystem::path spool = dir_ / "spool";
  log_->defer_to(spool);
  ASSERT_TRUE(log_->defer({"Decrypt", "key-a", 1, {{"disk_uuid", "disk-3"}}, "ok", {}}, "ro").ok());
  const std::filesystem::path file = spooled(spool).at(0);
  const std::string text = *read_private_file(file).value();
  append({"ListKeys", "", std::nullopt, {}, "ok", {}});
  // A run stopped after writing the kept line, before removing its file.
  ASSERT_TRUE(write_file_durably(file, text).ok());
  std::vector<std::string> lines = read_lines(path());
  lines.pop_back();  // the ListKeys line: the kept line is the last again
  write_lines(path(), lines);
  ASSERT_TRUE(write_file_durably(head_path(), "").ok());
  append({"ListAliases", "", std::nullopt, {}, "ok", {}});
  lines = read_lines(path());
  ASSERT_EQ(lines.size(), 7U);
  EXPECT_EQ(nlohmann::json::parse(lines[5])["details"]["deferred_id"], file.filename().string());
  EXPECT_EQ(nlohmann::json::parse(lines[6])["operation"], "ListAliases");
  EXPECT_TRUE(spooled(spool).empty());
}

TEST_F(AuditTest, DeferWithoutASpoolIsRefused) {
  EXPECT_FALSE(log_->defer({"Decrypt", "key-a", 1, {}, "ok", {}}, "ro").ok());
}

TEST(AuditKeys, DerivedWithHkdfSha256FromTheRootKey) {
  const AuditKeys keys = keys_from(0x11);
  EXPECT_EQ(to_hex(keys.chain.span()), kChainKeyHex);
  EXPECT_EQ(to_hex(keys.head.span()), kHeadKeyHex);
}

TEST_F(AuditTest, LinesAreMacChainedAndTheHeadIsSealed) {
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 5U);
  // HMAC-SHA256(chain key, 64 zeros || line up to ,"mac"), computed
  // independently.
  EXPECT_EQ(
      lines[0],
      R"({"seq":1,"time":"2027-01-15T08:00:00Z","principal":"host/test",)"
      R"("operation":"CreateKey","key_id":"key-a","key_version":1,"disk":"","context":{},)"
      R"("result":"ok","mac":"8bb6b33ee19dec74f9af95ebfd1bf57ea95008e8409465a68b70ace2a7178e4c"})");
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 5U);
  EXPECT_EQ(format_audit_anchor(report.head), "audit-v1:5:" + mac_of(lines[4]));
  const nlohmann::json head = nlohmann::json::parse(head_text());
  EXPECT_EQ(head["version"], 2);
  EXPECT_EQ(head["seq"], 5);
  EXPECT_EQ(head["mac"], mac_of(lines[4]));
  EXPECT_EQ(head["seal"].get<std::string>().size(), 64U);
}

TEST_F(AuditTest, QueryFiltersByKeyDiskAndTime) {
  EXPECT_EQ(log_->query({}).value().size(), 5U);
  EXPECT_EQ(log_->query({"key-b", std::nullopt, std::nullopt, std::nullopt}).value().size(), 2U);
  const auto disk1 = log_->query({std::nullopt, "disk-1", std::nullopt, std::nullopt}).value();
  ASSERT_EQ(disk1.size(), 2U);
  EXPECT_EQ(disk1[0].operation, "GenerateDataKey");
  EXPECT_EQ(disk1[1].operation, "Decrypt");
  const auto window = log_->query({std::nullopt, std::nullopt, kStart + 60, kStart + 180}).value();
  ASSERT_EQ(window.size(), 3U);
  EXPECT_EQ(window.front().seq, 2U);
  EXPECT_EQ(window.back().seq, 4U);
}

TEST_F(AuditTest, DetectsAnAlteredLine) {
  std::vector<std::string> lines = read_lines(path());
  const std::size_t at = lines[2].find("\"result\":\"ok\"");
  lines[2].replace(at, 13, "\"result\":\"no\"");
  write_lines(path(), lines);
  expect_problem(verify(), 3, "line 3 was altered: its MAC does not verify under this root key");
}

// The attack the unkeyed chain of envcryptctl 0.1 let through: alter a line,
// then recompute every hash after it and the head without any key.
TEST_F(AuditTest, DetectsARewrittenLineWithARecomputedUnkeyedChain) {
  std::vector<std::string> lines = read_lines(path());
  lines[2].replace(lines[2].find("disk-1"), 6, "disk-9");
  std::string prev = mac_of(lines[1]);
  for (std::size_t index = 2; index < lines.size(); ++index) {
    std::string& line = lines[index];
    const std::size_t mac_at = line.rfind(",\"mac\":\"");
    line =
        line.substr(0, mac_at) + ",\"mac\":\"" + sha256_hex(prev + line.substr(0, mac_at)) + "\"}";
    prev = mac_of(line);
  }
  write_lines(path(), lines);
  const std::string head =
      R"({"version":2,"seq":5,"mac":")" + prev + R"(","seal":")" + sha256_hex("5" + prev) + "\"}\n";
  ASSERT_TRUE(write_file_durably(head_path(), head).ok());
  expect_problem(verify(), 3, "line 3 was altered: its MAC does not verify under this root key");
}

TEST_F(AuditTest, AnotherRootKeyVerifiesNothing) {
  log_ = open_log(0x22);
  expect_problem(verify(), 1, "line 1 was altered: its MAC does not verify under this root key");
}

TEST_F(AuditTest, DetectsARemovedLine) {
  std::vector<std::string> lines = read_lines(path());
  lines.erase(lines.begin() + 1);
  write_lines(path(), lines);
  expect_problem(verify(), 2, "line 2 has sequence number 3: the line numbered 2 was removed");
}

TEST_F(AuditTest, DetectsReorderedLines) {
  std::vector<std::string> lines = read_lines(path());
  std::swap(lines[1], lines[2]);
  write_lines(path(), lines);
  expect_problem(verify(), 2, "line 2 has sequence number 3: lines were reordered");
}

TEST_F(AuditTest, DetectsTruncation) {
  std::vector<std::string> lines = read_lines(path());
  lines.resize(3);
  write_lines(path(), lines);
  expect_problem(verify(), 4,
                 "the log ends at line 3 but 5 lines were written: the last lines were removed");
}

TEST_F(AuditTest, DetectsAReplacedHead) {
  std::vector<std::string> lines = read_lines(path());
  lines.resize(3);
  write_lines(path(), lines);
  // The MAC of line 3 is in the log; the seal needs the head key.
  const std::string forged = R"({"version":2,"seq":3,"mac":")" + mac_of(lines[2]) +
                             R"(","seal":")" + std::string(64, 'a') + "\"}\n";
  ASSERT_TRUE(write_file_durably(head_path(), forged).ok());
  expect_problem(verify(), 3, "the head file is not sealed under this root key (replaced)");

  const std::string unkeyed = R"({"seq":3,"hash":")" + sha256_hex(lines[2]) + "\"}\n";
  ASSERT_TRUE(write_file_durably(head_path(), unkeyed).ok());
  expect_problem(verify(), 3, "the head file is damaged or unsealed");

  ASSERT_TRUE(std::filesystem::remove(head_path()));
  expect_problem(verify(), 3, "the head file is missing");
}

TEST_F(AuditTest, DetectsAHeadOfAnotherLog) {
  // A sealed head of another log (same root key) names a MAC this log lacks.
  const std::filesystem::path other = dir_ / "other";
  ASSERT_TRUE(ensure_private_directory(other).ok());
  AuditLog second = AuditLog::open(
                        other / "audit.log", "host/test", [this] { return now_; }, keys_from(0x11))
                        .value();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(second.append({"ListKeys", "", std::nullopt, {}, "ok", {}}).ok());
  }
  ASSERT_TRUE(
      write_file_durably(head_path(), *read_private_file(other / "audit.log.head").value()).ok());
  expect_problem(verify(), 5, "line 5 does not match the MAC in the head file (altered)");
}

// A copy of an older log and its sealed head passes on its own (documented:
// only the anchor kept off the host finds it); against the anchor it fails.
TEST_F(AuditTest, ARollbackIsFoundOnlyAgainstTheAnchor) {
  const std::string old_log = *read_private_file(path()).value();
  const std::string old_head = head_text();
  append({"DisableKey", "key-a", 1, {}, "ok", {}});
  const AuditAnchor anchor = verify().head;
  EXPECT_EQ(anchor.seq, 6U);
  EXPECT_TRUE(verify(anchor).intact);

  ASSERT_TRUE(write_file_durably(path(), old_log).ok());
  ASSERT_TRUE(write_file_durably(head_path(), old_head).ok());
  EXPECT_TRUE(verify().intact);
  expect_problem(verify(anchor), 6,
                 "the log ends at line 5 but the anchor records line 6: the log was truncated "
                 "or rolled back");
  AuditAnchor wrong = anchor;
  wrong.seq = 5;
  expect_problem(verify(wrong), 5,
                 "line 5 does not match the anchor: the log was rewritten after the anchor was "
                 "taken");
}

TEST(AuditAnchor, FormatAndParse) {
  const std::string mac(64, 'b');
  const AuditAnchor anchor = parse_audit_anchor("audit-v1:42:" + mac).value();
  EXPECT_EQ(anchor.seq, 42U);
  EXPECT_EQ(anchor.mac, mac);
  EXPECT_EQ(format_audit_anchor(anchor), "audit-v1:42:" + mac);
  for (const std::string& bad :
       {std::string(""), std::string("audit-v1:42"), "audit-v1::" + mac, "audit-v1:0:" + mac,
        "audit-v1:042:" + mac, "audit-v1:4x:" + mac, "audit-v2:42:" + mac,
        "audit-v1:42:" + mac + "0", "audit-v1:42:" + std::string(64, 'B'),
        "audit-v1:99999999999999999999:" + mac}) {
    const Result<AuditAnchor> parsed = parse_audit_anchor(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kUsage);
    EXPECT_EQ(parsed.error().message(),
              "the anchor is not of the form audit-v1:<sequence>:<64 hex digits> (as kms audit "
              "--anchor prints it)");
  }
}

TEST_F(AuditTest, DetectsGarbage) {
  std::vector<std::string> lines = read_lines(path());
  lines[0] = "not json";
  write_lines(path(), lines);
  expect_problem(verify(), 1, "line 1 is not an audit record (altered or torn)");
}

TEST_F(AuditTest, AHeadLaggingByOneLineIsAnInterruptedAppend) {
  const std::string head = head_text();
  append({"Decrypt", "key-b", 1, {}, "ok", {}});
  ASSERT_TRUE(write_file_durably(head_path(), head).ok());
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 6U);
}

TEST_F(AuditTest, ATornLastLineIsReportedAndTheChainContinues) {
  std::string text = *read_private_file(path()).value();
  text += R"({"seq":6,"time":"2027-01)";
  ASSERT_TRUE(write_file_durably(path(), text).ok());
  expect_problem(verify(), 6, "line 6 is not an audit record (altered or torn)");
  append({"Decrypt", "key-b", 1, {}, "ok", {}});
  EXPECT_EQ(read_lines(path()).size(), 7U);
  EXPECT_EQ(verify().first_bad_line, 6U);
}

TEST_F(AuditTest, LinesLongerThanAReadChunkChainCorrectly) {
  const EncryptionContext big = {{"disk_uuid", "disk-3"}, {"note", std::string(20000, 'x')}};
  append({"Decrypt", "key-c", 1, big, "ok", {}});
  append({"Decrypt", "key-c", 1, big, "ok", {}});
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 7U);
}

TEST_F(AuditTest, AnUnnumberedLastLineIsCountedAndReported) {
  std::vector<std::string> lines = read_lines(path());
  lines[4] = "{}";
  write_lines(path(), lines);
  append({"Decrypt", "key-b", 1, {}, "ok", {}});
  const std::vector<AuditRecord> records = log_->query({}).value();
  EXPECT_EQ(records.back().seq, 6U);
  EXPECT_EQ(verify().first_bad_line, 5U);
}

// An intent line without its outcome is a change whose commit may or may
// not have happened: reported, also once later lines follow.
TEST_F(AuditTest, AnIntentWithoutOutcomeIsReported) {
  append({"DisableKey", "key-a", 1, {}, "pending", {}}, {true, std::nullopt});
  const std::string problem =
      "line 6 is the intent of DisableKey on key key-a with no outcome: the KMS stopped between "
      "this line and its keystore commit, so that change may or may not be committed";
  expect_problem(verify(), 6, problem);
  append({"Decrypt", "key-b", 1, {}, "ok", {}});
  expect_problem(verify(), 6, problem);
  EXPECT_EQ(log_->query({}).value().size(), 6U);  // intents are not operations

  const AuditEvent outcome{"DisableKey", "key-a", 1, {}, "ok", {}};
  append(outcome, {false, 6});
  EXPECT_TRUE(verify().intact) << verify().problem;
  append(outcome, {false, 2});
  expect_problem(verify(), 9, "line 9 resolves line 2, which is not an open intent");
}

TEST_F(AuditTest, ValuesFromTheLogAreShownPrintable) {
  append({"Disable\x1b]0;x\aKey", "key\n-a", 1, {}, "pending", {}}, {true, std::nullopt});
  expect_problem(verify(), 6,
                 "line 6 is the intent of Disable?]0;x?Key on key key?-a with no outcome: the KMS "
                 "stopped between this line and its keystore commit, so that change may or may "
                 "not be committed");
}

// ----- logs of envcryptctl 0.1 (unkeyed SHA-256 chain) -----

class LegacyAuditTest : public AuditTest {
 protected:
  // Three lines as envcryptctl 0.1 wrote them, and its head.
  static std::vector<std::string> legacy_lines() {
    std::vector<std::string> lines;
    std::string prev(64, '0');
    for (int seq = 1; seq <= 3; ++seq) {
      lines.push_back(R"({"seq":)" + std::to_string(seq) +
                      R"(,"time":"2026-11-28T08:00:00Z","principal":"host/old",)"
                      R"("operation":"Decrypt","key_id":"key-a","key_version":1,"disk":"d",)"
                      R"("context":{"disk_uuid":"d"},"result":"ok","prev":")" +
                      prev + "\"}");
      prev = sha256_hex(lines.back());
    }
    return lines;
  }
  void write_legacy(const std::vector<std::string>& lines) {
    write_lines(path(), lines);
    ASSERT_TRUE(
        write_file_durably(head_path(), R"({"seq":3,"hash":")" + sha256_hex(lines.back()) + "\"}\n")
            .ok());
  }
};

TEST_F(LegacyAuditTest, AnUnsealedLegacyLogIsNotAccepted) {
  write_legacy(legacy_lines());
  expect_problem(verify(), 3,
                 "lines 1..3 are in the unkeyed format of envcryptctl 0.1 and not sealed: "
                 "anyone who can write the file could have rewritten them; the next kms "
                 "operation seals them");
}

TEST_F(LegacyAuditTest, TheFirstAppendSealsTheLegacyLines) {
  const std::vector<std::string> legacy = legacy_lines();
  write_legacy(legacy);
  append({"ListKeys", "", std::nullopt, {}, "ok", {}});
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 5U);
  const nlohmann::json seal = nlohmann::json::parse(lines[3]);
  EXPECT_EQ(seal["seq"], 4);
  EXPECT_EQ(seal["operation"], "AuditChainKeyed");
  EXPECT_EQ(seal["details"]["legacy_lines"], "3");
  EXPECT_EQ(seal["details"]["legacy_sha256"], sha256_hex(legacy[2]));
  EXPECT_EQ(nlohmann::json::parse(lines[4])["seq"], 5);
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.head.seq, 5U);
}

TEST_F(LegacyAuditTest, ALegacyLineRewrittenAfterSealingIsFound) {
  write_legacy(legacy_lines());
  append({"ListKeys", "", std::nullopt, {}, "ok", {}});
  std::vector<std::string> lines = read_lines(path());
  // Rewrite line 2 and recompute the unkeyed chain, as 0.1 allowed.
  lines[1].replace(lines[1].find("host/old"), 8, "host/new");
  lines[2].replace(lines[2].find("\"prev\":\"") + 8, 64, sha256_hex(lines[1]));
  write_lines(path(), lines);
  expect_problem(verify(), 4,
                 "line 4 does not seal the 3 unkeyed lines before it: they were altered after "
                 "the KMS sealed them, or lines were inserted");
  // A broken unkeyed chain is reported as 0.1 reported it.
  lines[2].replace(lines[2].find("\"prev\":\"") + 8, 64, std::string(64, 'f'));
  write_lines(path(), lines);
  expect_problem(verify(), 2, "line 2 was altered: line 3 records a different hash for it");
}

TEST_F(LegacyAuditTest, ANumberThatDoesNotFitIsRefusedNotConverted) {
  // Found by fuzz-audit (corpus/audit/key-version-float.log): a key_version
  // of 2.2e89 was converted to an unsigned int, which is undefined.
  for (const char* version : {"1e30", "2.5", "-1", "4294967296"}) {
    std::string line = legacy_lines()[0];
    line.replace(line.find("\"key_version\":1") + 14, 1, version);
    write_lines(path(), {line});
    expect_problem(verify(), 1, "line 1 lacks audit fields (altered)");
  }
}

TEST_F(LegacyAuditTest, AnUnkeyedLineInsideTheKeyedChainIsFound) {
  std::vector<std::string> lines = read_lines(path());
  lines.insert(lines.begin() + 2, legacy_lines()[0]);
  write_lines(path(), lines);
  expect_problem(verify(), 3,
                 "line 3 is an unkeyed line inside the keyed chain (inserted or altered)");
}

// ----- the in-memory entry point (the fuzzer's) -----

TEST(AuditVerifyText, WorksOnBytesAlone) {
  const AuditKeys keys = keys_from(0x11);
  AuditVerification empty = verify_audit_text("", std::nullopt, keys);
  EXPECT_TRUE(empty.intact);
  EXPECT_EQ(empty.lines, 0U);
  const AuditVerification headless =
      verify_audit_text(R"({"seq":1,"mac":")" + std::string(64, '0') + "\"}\n", std::nullopt, keys);
  EXPECT_FALSE(headless.intact);
  EXPECT_EQ(headless.problem, "line 1 was altered: its MAC does not verify under this root key");
  for (const std::string& hostile :
       {std::string("\n\n\n"), std::string("{\"seq\":18446744073709551615}\n"),
        std::string(1, '\0'), std::string("[1,2]\n{\"seq\":-1,\"prev\":1}")}) {
    const AuditVerification report = verify_audit_text(hostile, "{\"version\":2}", keys);
    EXPECT_FALSE(report.intact) << hostile;
    EXPECT_EQ(report.first_bad_line, 1U) << hostile;
  }
}

TEST(AuditTime, Rfc3339RoundTripAndRefusals) {
  EXPECT_EQ(format_rfc3339(kStart), "2027-01-15T08:00:00Z");
  EXPECT_EQ(parse_rfc3339("2027-01-15T08:00:00Z").value(), kStart);
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z").value(), 0);
  for (const char* bad : {"2027-01-15", "2027-01-15T08:00:00", "2027-13-01T00:00:00Z",
                          "2027-01-15T08:00:00Zjunk", ""}) {
    const Result<std::int64_t> parsed = parse_rfc3339(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kUsage);
  }
}

TEST(AuditContext, DiskComesFromTheDiskUuidEntry) {
  EXPECT_EQ(disk_from_context({{"disk_uuid", "u"}, {"cipher", "aes-xts-plain64"}}), "u");
  EXPECT_EQ(disk_from_context({{"cipher", "aes-xts-plain64"}}), "");
}

}  // namespace
}  // namespace envcrypt
