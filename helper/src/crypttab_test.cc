#include "crypttab.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace envcrypt {
namespace {

Result<std::vector<TabEntry>> parse(const std::string& text) {
  return parse_envcrypttab(text, "/etc/envcrypttab");
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
  EXPECT_FALSE(data.read_only || data.nofail || data.netdev || data.noauto);
  EXPECT_EQ(data.source, "/etc/envcrypttab:4");
  EXPECT_EQ(data.line, 4U);

  const TabEntry& logs = (*table)[1];
  EXPECT_EQ(logs.device_path, "/dev/disk/by-id/virtio-logs");
  EXPECT_TRUE(logs.read_only);
  EXPECT_TRUE(logs.nofail);

  const TabEntry& arch = (*table)[2];
  EXPECT_TRUE(arch.netdev);
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

TEST_P(CrypttabErrors, NameFileLineAndProblem) {
  auto table = parse("# header comment\ngood /dev/vda\n" + GetParam().text + "\n");
  ASSERT_FALSE(table.ok()) << GetParam().text;
  EXPECT_EQ(table.error().code(), ErrorCode::kUsage);
  EXPECT_EQ(table.error().message(), GetParam().message);
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
                "/etc/envcrypttab:3: 'soon' is not a duration (seconds, or N s / N min, at most a "
                "day)"},
        BadLine{"a /dev/vdb device-timeout=2h",
                "/etc/envcrypttab:3: '2h' is not a duration (seconds, or N s / N min, at most a "
                "day)"},
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

TEST_F(CrypttabFiles, LoadsAFileAndNamesItInErrors) {
  const auto path = dir_ / "tab";
  std::ofstream(path) << "a /dev/vda\nb /dev/vdb nofaill\n";
  auto table = load_envcrypttab(path, false);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.error().message(), path.string() + ":2: unknown option 'nofaill'");
}

TEST_F(CrypttabFiles, MissingFile) {
  const auto path = dir_ / "absent";
  auto required = load_envcrypttab(path, false);
  ASSERT_FALSE(required.ok());
  EXPECT_EQ(required.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(required.error().message(), path.string() + ": no such file");

  auto optional = load_envcrypttab(path, true);
  ASSERT_TRUE(optional.ok());
  EXPECT_TRUE(optional->empty());
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
