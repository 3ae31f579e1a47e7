#include "config/crypttab.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace envcrypt {
namespace {

// The entries of a table that must have no bad line.
Result<std::vector<TabEntry>> parse(const std::string& text) {
  Envcrypttab tab = parse_envcrypttab(text, "/etc/envcrypttab");
  if (!tab.skipped.empty()) {
    return tab.skipped.front();
  }
  return std::move(tab.entries);
}

TEST(Crypttab, ParsesEveryDeviceFormAndOption) {
  auto table = parse(
      "# name  device  options\n"
      "\n"
      "   # an indented comment\n"
      "data  UUID=4F0C6D8E-0D1A-4C55-9D0E-2B8F1A6C3E11  discard\n"
      "logs\t/dev/disk/by-id/virtio-logs\treadonly,nofail\n"
      "arch /dev/vdc none _netdev,header=/etc/envcrypt/vdc.hdr,x-systemd.device-timeout=2min\n"
      "bare /dev/vdd\n"
      "img  /srv/disks//img.raw  -  noauto,read-only\n");
  ASSERT_TRUE(table.ok()) << table.error().message();
  ASSERT_EQ(table->size(), 5U);

  const TabEntry& data = (*table)[0];
  EXPECT_EQ(data.name, "data");
  EXPECT_EQ(data.uuid, "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11");
  EXPECT_TRUE(data.device_path.empty());
  EXPECT_EQ(data.device_spec(), "UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11");
  EXPECT_TRUE(data.discard);
  EXPECT_FALSE(data.read_only || data.nofail || data.needs_network() || data.noauto);
  EXPECT_EQ(data.source, "/etc/envcrypttab:4");
  EXPECT_EQ(data.line, 4U);

  const TabEntry& logs = (*table)[1];
  EXPECT_EQ(logs.device_path, "/dev/disk/by-id/virtio-logs");
  EXPECT_TRUE(logs.read_only);
  EXPECT_TRUE(logs.nofail);

  const TabEntry& arch = (*table)[2];
  EXPECT_TRUE(arch.remote_device);
  EXPECT_FALSE(arch.remote_kms);
  EXPECT_EQ(arch.header_file, std::filesystem::path("/etc/envcrypt/vdc.hdr"));
  EXPECT_EQ(arch.device_timeout, std::chrono::seconds(120));

  const TabEntry& bare = (*table)[3];
  EXPECT_EQ(bare.device_path, "/dev/vdd");
  EXPECT_EQ(bare.device_timeout, std::chrono::seconds(0));

  const TabEntry& img = (*table)[4];
  EXPECT_EQ(img.device_path, "/srv/disks/img.raw");
  EXPECT_TRUE(img.noauto);
  EXPECT_TRUE(img.read_only);
}

TEST(Crypttab, EmptyTableAndPlaceholderOptions) {
  auto empty = parse("# nothing yet\n\n");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  auto table = parse("a /dev/vda defaults\nb /dev/vdb none\nc /dev/vdc auto,fail\n");
  ASSERT_TRUE(table.ok()) << table.error().message();
  EXPECT_EQ(table->size(), 3U);
}

struct BadLine {
  std::string text;
  std::string message;  // the whole error message
};

class CrypttabErrors : public testing::TestWithParam<BadLine> {};

// A bad line is skipped with its file, line and problem; the lines around
// it still count.
TEST_P(CrypttabErrors, SkippedWithFileLineAndProblem) {
  Envcrypttab tab = parse_envcrypttab(
      "# header comment\ngood /dev/vda\n" + GetParam().text + "\nafter /dev/vdz\n",
      "/etc/envcrypttab");
  ASSERT_EQ(tab.skipped.size(), 1U) << GetParam().text;
  EXPECT_EQ(tab.skipped[0].code(), ErrorCode::kUsage);
  EXPECT_EQ(tab.skipped[0].message(), GetParam().message);
  ASSERT_EQ(tab.entries.size(), 2U);
  EXPECT_EQ(tab.entries[0].name, "good");
  EXPECT_EQ(tab.entries[1].name, "after");
  EXPECT_EQ(tab.entries[1].line, 4U);
}

INSTANTIATE_TEST_SUITE_P(
    Messages, CrypttabErrors,
    testing::Values(
        BadLine{"lonely", "/etc/envcrypttab:3: expected 'name device [options]', found 1 field"},
        BadLine{"a /dev/vdb none discard extra",
                "/etc/envcrypttab:3: expected 'name device [options]', found 5 fields"},
        BadLine{"good /dev/vdb", "/etc/envcrypttab:3: name 'good' is already used on line 2"},
        BadLine{"bad/name /dev/vdb",
                "/etc/envcrypttab:3: name 'bad/name' contains '/' (use letters, digits and . _ + "
                "-)"},
        BadLine{".. /dev/vdb", "/etc/envcrypttab:3: name '..' is not allowed"},
        BadLine{"-x /dev/vdb", "/etc/envcrypttab:3: name '-x' is not allowed"},
        BadLine{
            std::string(87, 'n') + " /dev/vdb",
            "/etc/envcrypttab:3: name '" + std::string(87, 'n') + "' is longer than 86 characters"},
        BadLine{"a vdb", "/etc/envcrypttab:3: device 'vdb' is not an absolute path or UUID=<uuid>"},
        BadLine{"a LABEL=data",
                "/etc/envcrypttab:3: device 'LABEL=data': only UUID=<envcrypt header uuid> or a "
                "path (/dev/..., /dev/disk/by-id/...) name a disk"},
        BadLine{"a UUID=1234",
                "/etc/envcrypttab:3: '1234' is not a uuid (8-4-4-4-12 hexadecimal digits)"},
        BadLine{"a UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1g",
                "/etc/envcrypttab:3: '4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e1g' is not a uuid "
                "(8-4-4-4-12 hexadecimal digits)"},
        BadLine{"a /dev/vdb /etc/keys/a.key discard",
                "/etc/envcrypttab:3: key file '/etc/keys/a.key': envcrypt disks take their key "
                "from the KMS; write 'none' or omit it"},
        BadLine{"a /dev/vdb discard,bogus", "/etc/envcrypttab:3: unknown option 'bogus'"},
        BadLine{"a /dev/vdb discard,,nofail",
                "/etc/envcrypttab:3: empty option in 'discard,,nofail'"},
        BadLine{"a /dev/vdb nofail=yes", "/etc/envcrypttab:3: option 'nofail' takes no value"},
        BadLine{"a /dev/vdb header=relative.hdr",
                "/etc/envcrypttab:3: option header= needs an absolute file path"},
        BadLine{"a /dev/vdb header",
                "/etc/envcrypttab:3: option header= needs an absolute file path"},
        BadLine{"a /dev/vdb x-systemd.device-timeout",
                "/etc/envcrypttab:3: option x-systemd.device-timeout= needs a duration"},
        BadLine{"a /dev/vdb x-systemd.device-timeout=soon",
                "/etc/envcrypttab:3: 'soon' is not a duration (a number of ms, s, min or h; a "
                "bare number is seconds)"},
        BadLine{"a /dev/vdb device-timeout=25h",
                "/etc/envcrypttab:3: '25h' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=86400min",
                "/etc/envcrypttab:3: '86400min' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=1441min",
                "/etc/envcrypttab:3: '1441min' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=86400001ms",
                "/etc/envcrypttab:3: '86400001ms' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=23h61min",
                "/etc/envcrypttab:3: '23h61min' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=99999999999999999999999s",
                "/etc/envcrypttab:3: '99999999999999999999999s' is longer than a day (24h)"},
        BadLine{"a /dev/vdb device-timeout=1.5s",
                "/etc/envcrypttab:3: '1.5s' is not a duration (a number of ms, s, min or h; a "
                "bare number is seconds)"},
        BadLine{"a /dev/vdb device-timeout=-5",
                "/etc/envcrypttab:3: '-5' is not a duration (a number of ms, s, min or h; a "
                "bare number is seconds)"},
        BadLine{"a /dev/vdb device-timeout=1h30",
                "/etc/envcrypttab:3: '1h30' is not a duration (a number of ms, s, min or h; a "
                "bare number is seconds)"},
        BadLine{"a /dev/vdb device-timeout=",
                "/etc/envcrypttab:3: '' is not a duration (a number of ms, s, min or h; a bare "
                "number is seconds)"},
        BadLine{"a /dev/vdb device-timeout=5d",
                "/etc/envcrypttab:3: '5d' is not a duration (a number of ms, s, min or h; a "
                "bare number is seconds)"},
        BadLine{"a /dev/vdb nofail,\x01\x1b[31m",
                "/etc/envcrypttab:3: unknown option '\\x01\\x1b[31m'"},
        BadLine{"a /dev/vdb x-\\x41", "/etc/envcrypttab:3: unknown option 'x-\\x5cx41'"},
        BadLine{"a /dev/caf\xc3\xa9",
                "/etc/envcrypttab:3: device '/dev/caf\\xc3\\xa9' contains '\\xc3' (printable "
                "ASCII only)"},
        BadLine{"a /dev/vdb header=/etc/\x7f.hdr",
                "/etc/envcrypttab:3: header '/etc/\\x7f.hdr' contains '\\x7f' (printable "
                "ASCII only)"},
        BadLine{"a\xc3\xa9 /dev/vdb",
                "/etc/envcrypttab:3: name 'a\\xc3\\xa9' contains '\\xc3' (use letters, digits "
                "and . _ + -)"},
        BadLine{"a /dev/vdb luks,discard",
                "/etc/envcrypttab:3: option 'luks' is a cryptsetup option that does not apply: the "
                "envcrypt header holds the cipher and geometry, the KMS the key"},
        BadLine{"a /dev/vdb cipher=aes-xts-plain64",
                "/etc/envcrypttab:3: option 'cipher' is a cryptsetup option that does not apply: "
                "the envcrypt header holds the cipher and geometry, the KMS the key"}));

class CrypttabFiles : public testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/envcrypttab-test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(CrypttabFiles, LoadsAFileAndNamesItInSkippedLines) {
  const auto path = dir_ / "tab";
  std::ofstream(path) << "a /dev/vda\nb /dev/vdb nofaill\nc /dev/vdc\n";
  auto table = load_envcrypttab(path, false);
  ASSERT_TRUE(table.ok()) << table.error().message();
  ASSERT_EQ(table->entries.size(), 2U);
  EXPECT_EQ(table->entries[1].name, "c");
  ASSERT_EQ(table->skipped.size(), 1U);
  EXPECT_EQ(table->skipped[0].message(), path.string() + ":2: unknown option 'nofaill'");

  std::ostringstream err;
  log_skipped_lines(*table, err);
  EXPECT_EQ(err.str(), "envcryptctl: warning: " + path.string() +
                           ":2: unknown option 'nofaill' (line skipped)\n");
}

TEST_F(CrypttabFiles, EntriesOnlyLogsTheSkippedLines) {
  const auto path = dir_ / "tab";
  std::ofstream(path) << "a /dev/vda\na /dev/vdb\n";
  std::ostringstream err;
  auto entries = read_envcrypttab_entries(path.string(), err);
  ASSERT_TRUE(entries.ok()) << entries.error().message();
  ASSERT_EQ(entries->size(), 1U);
  EXPECT_EQ((*entries)[0].device_path, "/dev/vda");
  EXPECT_EQ(err.str(), "envcryptctl: warning: " + path.string() +
                           ":2: name 'a' is already used on line 1 (line skipped)\n");
}

TEST_F(CrypttabFiles, ATableNamingDevZeroIsRefusedNotRead) {
  auto refused = load_envcrypttab("/dev/zero", false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(refused.error().message(), "/dev/zero: more than 1048576 bytes");
}

TEST_F(CrypttabFiles, MissingFile) {
  const auto path = dir_ / "absent";
  auto required = load_envcrypttab(path, false);
  ASSERT_FALSE(required.ok());
  EXPECT_EQ(required.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(required.error().message(), path.string() + ": no such file");

  auto optional = load_envcrypttab(path, true);
  ASSERT_TRUE(optional.ok());
  EXPECT_TRUE(optional->entries.empty());
  EXPECT_TRUE(optional->skipped.empty());
}

TEST(Crypttab, NetdevIsTheDevicesAndRemoteKmsTheKeyServers) {
  auto table = parse(
      "dev /dev/nbd0 _netdev\n"
      "kms /dev/vdb remote-kms\n"
      "old /dev/vdc netdev\n"
      "both /dev/nbd1 _netdev,remote-kms\n"
      "local /dev/vdd\n");
  ASSERT_TRUE(table.ok()) << table.error().message();
  ASSERT_EQ(table->size(), 5U);
  EXPECT_TRUE((*table)[0].remote_device);
  EXPECT_FALSE((*table)[0].remote_kms);
  EXPECT_FALSE((*table)[1].remote_device);
  EXPECT_TRUE((*table)[1].remote_kms);
  // netdev keeps the meaning it had: the key server is remote.
  EXPECT_FALSE((*table)[2].remote_device);
  EXPECT_TRUE((*table)[2].remote_kms);
  EXPECT_TRUE((*table)[3].remote_device && (*table)[3].remote_kms);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE((*table)[i].needs_network()) << (*table)[i].name;
  }
  EXPECT_FALSE((*table)[4].needs_network());
}

TEST(CrypttabDuration, UnitsAsSystemdReadsThem) {
  using std::chrono::milliseconds;
  const std::vector<std::pair<std::string, milliseconds>> accepted = {
      {"0", milliseconds(0)},
      {"90", milliseconds(90000)},
      {"1500ms", milliseconds(1500)},
      {"90s", milliseconds(90000)},
      {"90sec", milliseconds(90000)},
      {"2min", milliseconds(120000)},
      {"2m", milliseconds(120000)},
      {"1h", milliseconds(3600000)},
      {"1h30min", milliseconds(5400000)},
      {"1min500ms", milliseconds(60500)},
      {"24h", milliseconds(86400000)},
      {"1440min", milliseconds(86400000)},
      {"86400", milliseconds(86400000)},
      {"86400000ms", milliseconds(86400000)},
  };
  for (const auto& [text, expected] : accepted) {
    auto parsed = parse_duration(text, kMaxDeviceTimeout);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.error().message();
    EXPECT_EQ(*parsed, expected) << text;
  }
  for (const char* refused : {"1441min", "86400min", "86401", "24h1ms", "25h", "2d", "1 h"}) {
    EXPECT_FALSE(parse_duration(refused, kMaxDeviceTimeout).ok()) << refused;
  }
}

TEST(Crypttab, EveryBadLineIsSkippedAndCounted) {
  Envcrypttab tab = parse_envcrypttab(
      "one /dev/vda\n"
      "typo /dev/vdb nofaill\n"
      "two UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 nofail\n"
      "lonely\n"
      "one /dev/vdc\n",
      "/etc/envcrypttab");
  ASSERT_EQ(tab.entries.size(), 2U);
  EXPECT_EQ(tab.entries[0].name, "one");
  EXPECT_EQ(tab.entries[0].device_path, "/dev/vda");
  EXPECT_EQ(tab.entries[1].name, "two");
  ASSERT_EQ(tab.skipped.size(), 3U);
  EXPECT_EQ(tab.skipped[0].message(), "/etc/envcrypttab:2: unknown option 'nofaill'");
  EXPECT_EQ(tab.skipped[1].message(),
            "/etc/envcrypttab:4: expected 'name device [options]', found 1 field");
  EXPECT_EQ(tab.skipped[2].message(), "/etc/envcrypttab:5: name 'one' is already used on line 1");
}

TEST(CrypttabPath, ExplicitThenEnvironmentThenDefault) {
  ::unsetenv("ENVCRYPT_TAB");
  EXPECT_EQ(envcrypttab_path(std::nullopt), "/etc/envcrypttab");
  ::setenv("ENVCRYPT_TAB", "/run/envcrypttab", 1);
  EXPECT_EQ(envcrypttab_path(std::nullopt), "/run/envcrypttab");
  EXPECT_EQ(envcrypttab_path(std::filesystem::path("/x/tab")), "/x/tab");
  ::unsetenv("ENVCRYPT_TAB");
}

}  // namespace
}  // namespace envcrypt
