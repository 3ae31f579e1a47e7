#include "audit.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <sstream>

#include "crypto.h"
#include "keystore.h"

namespace envcrypt {
namespace {

constexpr std::int64_t kStart = 1800000000;  // 2027-01-15T08:00:00Z

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

void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) {
    text += line + "\n";
  }
  ASSERT_TRUE(write_file_atomically(path, text).ok());
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_ = AuditLog::open(dir_ / "audit.log", "host/test", [this] { return now_; }).value();
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
      ASSERT_TRUE(log_->append({operation, key, 1, context, "ok", {}}).ok());
      now_ += 60;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  AuditVerification verify() { return log_->verify().value(); }
  std::filesystem::path path() const { return dir_ / "audit.log"; }

  std::filesystem::path dir_ = make_temp_dir();
  std::int64_t now_ = kStart;
  std::optional<AuditLog> log_;
};

TEST_F(AuditTest, LinesAreChainedAndComplete) {
  const std::vector<std::string> lines = read_lines(path());
  ASSERT_EQ(lines.size(), 5U);
  EXPECT_EQ(lines[0],
            R"({"seq":1,"time":"2027-01-15T08:00:00Z","principal":"host/test",)"
            R"("operation":"CreateKey","key_id":"key-a","key_version":1,"disk":"","context":{},)"
            R"("result":"ok","prev":")" +
                std::string(64, '0') + R"("})");
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 5U);
  EXPECT_EQ(report.head_hash, sha256_hex(lines[4]));
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
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 3U);
  EXPECT_EQ(report.problem, "line 3 was altered: line 4 records a different hash for it");
}

TEST_F(AuditTest, DetectsAnAlteredLastLine) {
  std::vector<std::string> lines = read_lines(path());
  lines[4].replace(lines[4].find("key-b"), 5, "key-c");
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 5U);
  EXPECT_EQ(report.problem, "line 5 does not match the hash in the head file (altered)");
}

TEST_F(AuditTest, DetectsARemovedLine) {
  std::vector<std::string> lines = read_lines(path());
  lines.erase(lines.begin() + 1);
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 2U);
  EXPECT_EQ(report.problem, "line 2 has sequence number 3: the line numbered 2 was removed");
}

TEST_F(AuditTest, DetectsReorderedLines) {
  std::vector<std::string> lines = read_lines(path());
  std::swap(lines[1], lines[2]);
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 2U);
  EXPECT_EQ(report.problem, "line 2 has sequence number 3: lines were reordered");
}

TEST_F(AuditTest, DetectsTruncation) {
  std::vector<std::string> lines = read_lines(path());
  lines.pop_back();
  lines.pop_back();
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 4U);
  EXPECT_EQ(report.problem,
            "the log ends at line 3 but 5 lines were written: the last lines were removed");
}

TEST_F(AuditTest, DetectsAForgedLineWithAFixedUpSequence) {
  // An inserted line that keeps the numbering consistent still breaks the
  // chain of the line after it.
  std::vector<std::string> lines = read_lines(path());
  std::string forged = lines[1];
  forged.replace(forged.find("disk-1"), 6, "disk-9");
  lines[1] = forged;
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 2U);
}

TEST_F(AuditTest, DetectsGarbage) {
  std::vector<std::string> lines = read_lines(path());
  lines[0] = "not json";
  write_lines(path(), lines);
  const AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 1U);
  EXPECT_EQ(report.problem, "line 1 is not an audit record (altered or torn)");
}

TEST_F(AuditTest, AHeadLaggingByOneLineIsAnInterruptedAppend) {
  const std::string head = *read_private_file(dir_ / "audit.log.head").value();
  ASSERT_TRUE(log_->append({"Decrypt", "key-b", 1, {}, "ok", {}}).ok());
  ASSERT_TRUE(write_file_atomically(dir_ / "audit.log.head", head).ok());
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 6U);
}

TEST_F(AuditTest, ATornLastLineIsReportedAndTheChainContinues) {
  std::string text = *read_private_file(path()).value();
  text += R"({"seq":6,"time":"2027-01)";
  ASSERT_TRUE(write_file_atomically(path(), text).ok());
  AuditVerification report = verify();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.first_bad_line, 6U);
  ASSERT_TRUE(log_->append({"Decrypt", "key-b", 1, {}, "ok", {}}).ok());
  EXPECT_EQ(read_lines(path()).size(), 7U);
  report = verify();
  EXPECT_EQ(report.first_bad_line, 6U);
}

TEST_F(AuditTest, LinesLongerThanAReadChunkChainCorrectly) {
  const EncryptionContext big = {{"disk_uuid", "disk-3"}, {"note", std::string(20000, 'x')}};
  ASSERT_TRUE(log_->append({"Decrypt", "key-c", 1, big, "ok", {}}).ok());
  ASSERT_TRUE(log_->append({"Decrypt", "key-c", 1, big, "ok", {}}).ok());
  const AuditVerification report = verify();
  EXPECT_TRUE(report.intact) << report.problem;
  EXPECT_EQ(report.lines, 7U);
}

TEST_F(AuditTest, AnUnnumberedLastLineIsCountedAndReported) {
  std::vector<std::string> lines = read_lines(path());
  lines[4] = "{}";
  write_lines(path(), lines);
  ASSERT_TRUE(log_->append({"Decrypt", "key-b", 1, {}, "ok", {}}).ok());
  const std::vector<AuditRecord> records = log_->query({}).value();
  EXPECT_EQ(records.back().seq, 6U);
  EXPECT_EQ(verify().first_bad_line, 5U);
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
