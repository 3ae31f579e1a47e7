#include "volume/outage_cache.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "cli/cli_test_support.h"
#include "config/config.h"
#include "kms/kms_test_support.h"
#include "tpm/tpm_test_support.h"
#include "util/crypto.h"
#include "volume/volume.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

using tpm_testing::kSwtpm;
using tpm_testing::Swtpm;

// The real local KMS, which a test can make unreachable or refusing, as a
// KMIP server that is down or that disabled the key would be.
class SwitchableKms final : public kms_testing::DelegatingKms {
 public:
  enum class Mode { kAnswer, kUnreachable, kRefuse };

  using DelegatingKms::DelegatingKms;
  void set(Mode mode) { mode_ = mode; }

 protected:
  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& context,
                                 const CallContext& call) override {
    if (mode_ == Mode::kUnreachable) {
      return Error(ErrorCode::kKmsUnreachable, "kmip://10.0.2.2:5696: connect: Connection refused");
    }
    if (mode_ == Mode::kRefuse) {
      return Error(ErrorCode::kDenied, "key " + wrapped.cmk_uri + " is Disabled");
    }
    return inner().envelope(call).unwrap(wrapped, context);
  }

 private:
  Mode mode_ = Mode::kAnswer;
};

constexpr std::int64_t kStart = 1'800'000'000;  // 2027-01-15T08:00:00Z
constexpr std::int64_t kMaxAgeSeconds = 3600;

class OutageCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kSwtpm, X_OK) != 0) {
      GTEST_SKIP() << kSwtpm << " is not installed (make deps installs swtpm)";
    }
    (void)::setenv("TSS2_LOG", "all+NONE", 0);
    dir_ = cli_testing::fresh_test_dir("envcrypt-outage-cache");
    tpm_ = std::make_unique<Swtpm>(dir_ / "tpm");
    config_path_ = dir_ / "envcrypt.conf";
    cli_testing::write_text(config_path_, cli_testing::local_kms_config(dir_));
    image_ = dir_ / "disk.img";
    cli_testing::make_sparse_image(image_, 32 << 20);
    const auto formatted = cli_testing::run_envcryptctl(
        {"--config", config_path_.string(), "format", image_.string()});
    ASSERT_EQ(formatted.code, 0) << formatted.err;
    header_ = read_volume_header(image_, std::nullopt).value().header;
    uuid_ = uuid_to_string(header_.uuid);

    Config config = load_config(config_path_).value();
    real_ = std::make_unique<KmsRegistry>(config);
    KmsClient* local = real_->for_key(header_.wrapped.cmk_uri).value();
    kms_key_ = unlock(*real_, header_).value().clone();
    registry_ = std::make_unique<KmsRegistry>(config);
    auto switchable = std::make_unique<SwitchableKms>(*local);
    kms_ = switchable.get();
    registry_->adopt("local:" + config.region, std::move(switchable));

    cache_config_.disks = {"web"};
    cache_config_.max_age = std::chrono::seconds(kMaxAgeSeconds);
    cache_config_.dir = dir_ / "outage-cache";
    now_ = kStart;
  }
  void TearDown() override {
    tpm_.reset();
    if (!dir_.empty()) {
      fs::remove_all(dir_);
    }
  }

  OutageCache cache(const std::string& tcti = "") {
    return {cache_config_, tcti.empty() ? tpm_->tcti() : tcti, [this] { return now_; }};
  }
  Result<UnlockedKey> attach_unlock(OutageCache& with) {
    return unlock_for_attach(*registry_, header_, "web", with);
  }
  [[nodiscard]] fs::path entry_file() const { return cache_config_.dir / (uuid_ + ".json"); }
  [[nodiscard]] fs::path uses_file() const { return cache_config_.dir / (uuid_ + ".uses"); }

  std::vector<AuditRecord> audit_lines(const std::string& operation) {
    AuditLog* log = real_->audit_for(header_.wrapped.cmk_uri).value();
    std::vector<AuditRecord> all = log->query({}).value();
    std::vector<AuditRecord> found;
    for (AuditRecord& record : all) {
      if (record.operation == operation) {
        found.push_back(std::move(record));
      }
    }
    return found;
  }

  fs::path dir_;
  std::unique_ptr<Swtpm> tpm_;
  fs::path config_path_;
  fs::path image_;
  DiskHeader header_;
  std::string uuid_;
  SecretBytes kms_key_;
  std::unique_ptr<KmsRegistry> real_;
  std::unique_ptr<KmsRegistry> registry_;
  SwitchableKms* kms_ = nullptr;
  OutageCacheConfig cache_config_;
  std::int64_t now_ = 0;
};

TEST_F(OutageCacheTest, AnAnsweredAttachSealsAnEntryThatHoldsNoKeyInTheClear) {
  OutageCache c = cache();
  auto unlocked = attach_unlock(c);
  ASSERT_TRUE(unlocked.ok()) << unlocked.error().message();
  EXPECT_FALSE(unlocked->from_cache.has_value());
  EXPECT_TRUE(unlocked->notes.empty());
  EXPECT_TRUE(unlocked->data_key.equals(kms_key_.span()));

  struct stat st {};
  ASSERT_EQ(::stat(entry_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  ASSERT_EQ(::stat(cache_config_.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700U);
  const std::string text = cli_testing::read_text(entry_file());
  const auto entry = decode_cache_entry(text);
  ASSERT_TRUE(entry.ok()) << entry.error().message();
  EXPECT_EQ(entry->disk_uuid, uuid_);
  EXPECT_EQ(entry->cmk_uri, header_.wrapped.cmk_uri);
  EXPECT_EQ(entry->cmk_version, header_.wrapped.cmk_version);
  EXPECT_EQ(entry->confirmed_at, kStart);
  const std::string key_bytes(reinterpret_cast<const char*>(kms_key_.data()), kms_key_.size());
  EXPECT_EQ(text.find(key_bytes), std::string::npos);
  EXPECT_EQ(text.find(to_hex(kms_key_.span())), std::string::npos);

  const CacheState state = c.state("web", uuid_);
  EXPECT_TRUE(state.enabled);
  EXPECT_EQ(state.condition(kStart), "valid");
  EXPECT_EQ(state.describe(kStart), "valid until 2027-01-15T09:00:00Z");
}

TEST_F(OutageCacheTest, AnUnreachableKmsIsBridgedAndTheUseReachesTheAuditTrailLater) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  kms_->set(SwitchableKms::Mode::kUnreachable);
  now_ = kStart + 600;
  auto bridged = attach_unlock(c);
  ASSERT_TRUE(bridged.ok()) << bridged.error().message();
  EXPECT_TRUE(bridged->data_key.equals(kms_key_.span()));
  ASSERT_TRUE(bridged->from_cache.has_value());
  EXPECT_EQ(bridged->from_cache->reason, "kmip://10.0.2.2:5696: connect: Connection refused");
  EXPECT_EQ(bridged->from_cache->valid_until, kStart + kMaxAgeSeconds);
  // A use does not extend the entry: only the KMS confirms.
  EXPECT_EQ(decode_cache_entry(cli_testing::read_text(entry_file()))->confirmed_at, kStart);
  const auto pending = c.pending_uses(uuid_);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1U);
  EXPECT_EQ(pending->front().time, kStart + 600);
  EXPECT_TRUE(audit_lines("OutageCacheUse").empty());

  kms_->set(SwitchableKms::Mode::kAnswer);
  now_ = kStart + 1200;
  auto answered = attach_unlock(c);
  ASSERT_TRUE(answered.ok()) << answered.error().message();
  EXPECT_FALSE(answered->from_cache.has_value());
  EXPECT_TRUE(answered->notes.empty()) << answered->notes.front();
  EXPECT_FALSE(fs::exists(uses_file()));
  EXPECT_EQ(decode_cache_entry(cli_testing::read_text(entry_file()))->confirmed_at, kStart + 1200);
  const auto lines = audit_lines("OutageCacheUse");
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_EQ(lines[0].disk, uuid_);
  EXPECT_EQ(lines[0].key_version, header_.wrapped.cmk_version);
  EXPECT_NE(lines[0].line.find("\"used_at\":\"2027-01-15T08:10:00Z\""), std::string::npos)
      << lines[0].line;
  EXPECT_NE(lines[0].line.find("\"valid_until\":\"2027-01-15T09:00:00Z\""), std::string::npos)
      << lines[0].line;
  EXPECT_NE(lines[0].line.find(
                "\"kms_unreachable\":\"kmip://10.0.2.2:5696: connect: Connection refused\""),
            std::string::npos)
      << lines[0].line;
}

TEST_F(OutageCacheTest, AnEntryPastMaxAgeIsRefused) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  kms_->set(SwitchableKms::Mode::kUnreachable);
  now_ = kStart + kMaxAgeSeconds + 1;
  auto refused = attach_unlock(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(refused.error().message(),
            "kmip://10.0.2.2:5696: connect: Connection refused (outage cache not used: the entry "
            "expired at 2027-01-15T09:00:00Z (confirmed 2027-01-15T08:00:00Z, max_age 1h))");
  EXPECT_FALSE(fs::exists(uses_file()));
  EXPECT_EQ(c.state("web", uuid_).describe(now_), "expired at 2027-01-15T09:00:00Z");
}

// max_age takes milliseconds; the message must not round them away.
TEST_F(OutageCacheTest, AnExpiryMessageNamesMaxAgeAsConfigured) {
  cache_config_.max_age = std::chrono::milliseconds(1500);
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  kms_->set(SwitchableKms::Mode::kUnreachable);
  now_ = kStart + 2;
  auto refused = attach_unlock(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "kmip://10.0.2.2:5696: connect: Connection refused (outage cache not used: the entry "
            "expired at 2027-01-15T08:00:01Z (confirmed 2027-01-15T08:00:00Z, max_age 1500ms))");
}

TEST_F(OutageCacheTest, ARefusalDestroysTheEntryAndTheCacheNeverAnswersForIt) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  kms_->set(SwitchableKms::Mode::kRefuse);
  auto refused = attach_unlock(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(refused.error().message(), "key " + header_.wrapped.cmk_uri +
                                           " is Disabled (its outage cache entry is destroyed)");
  EXPECT_FALSE(fs::exists(entry_file()));
  kms_->set(SwitchableKms::Mode::kUnreachable);
  auto unreachable = attach_unlock(c);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_EQ(unreachable.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_EQ(unreachable.error().message(),
            "kmip://10.0.2.2:5696: connect: Connection refused (outage cache not used: no entry "
            "for this disk in " +
                cache_config_.dir.string() + ")");
}

TEST_F(OutageCacheTest, AnEditedEntryIsRefused) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  // A later confirmation time would stretch the entry's life.
  CacheEntry entry = decode_cache_entry(cli_testing::read_text(entry_file())).value();
  entry.confirmed_at += 1800;
  cli_testing::write_text(entry_file(), encode_cache_entry(entry));
  kms_->set(SwitchableKms::Mode::kUnreachable);
  now_ = kStart + kMaxAgeSeconds + 60;
  auto refused = attach_unlock(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "kmip://10.0.2.2:5696: connect: Connection refused (outage cache not used: outage "
            "cache entry: does not match what was sealed with it (edited?))");
  EXPECT_FALSE(fs::exists(uses_file()));
}

TEST_F(OutageCacheTest, AnEntryCopiedToAnotherTpmIsRefused) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  const Swtpm other(dir_ / "other-tpm");
  OutageCache elsewhere = cache(other.tcti());
  kms_->set(SwitchableKms::Mode::kUnreachable);
  auto refused = attach_unlock(elsewhere);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kKmsUnreachable);
  EXPECT_NE(refused.error().message().find(
                ": the sealed key does not load (sealed on another TPM, the TPM was cleared, or "
                "the file is damaged)"),
            std::string::npos)
      << refused.error().message();
  EXPECT_FALSE(fs::exists(uses_file()));
}

TEST_F(OutageCacheTest, AClockThatWentBackIsNotTrusted) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  kms_->set(SwitchableKms::Mode::kUnreachable);
  now_ = kStart - 3600;
  auto refused = attach_unlock(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "kmip://10.0.2.2:5696: connect: Connection refused (outage cache not used: the entry "
            "was confirmed at 2027-01-15T08:00:00Z, later than now: the clock went back)");
}

TEST_F(OutageCacheTest, ADiskNotEnabledGetsNoEntryAndLosesAnOldOne) {
  OutageCache c = cache();
  ASSERT_TRUE(attach_unlock(c).ok());
  ASSERT_TRUE(fs::exists(entry_file()));
  cache_config_.disks = {"another-disk", "01234567-89ab-cdef-0123-456789abcdef"};
  OutageCache off = cache();
  EXPECT_EQ(off.state("web", uuid_).describe(kStart),
            "valid until 2027-01-15T09:00:00Z (disk not enabled: removed at its next attach)");
  ASSERT_TRUE(attach_unlock(off).ok());
  EXPECT_FALSE(fs::exists(entry_file()));
  kms_->set(SwitchableKms::Mode::kUnreachable);
  auto refused = attach_unlock(off);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(), "kmip://10.0.2.2:5696: connect: Connection refused");
  // By uuid as well as by name.
  cache_config_.disks = {uuid_};
  kms_->set(SwitchableKms::Mode::kAnswer);
  OutageCache by_uuid = cache();
  ASSERT_TRUE(attach_unlock(by_uuid).ok());
  EXPECT_TRUE(fs::exists(entry_file()));
}

// Most attaches have no entry to remove; on a read-only file system that
// must not become a warning on every attach (unlink(2) says EROFS there
// even for a file that does not exist).
TEST(OutageCacheForget, NoEntryOnAReadOnlyFileSystemIsNoError) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "mounting a read-only tmpfs needs root";
  }
  const fs::path dir = cli_testing::fresh_test_dir("envcrypt-outage-cache-ro");
  ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m,mode=0700"), 0)
      << std::strerror(errno);
  fs::create_directories(dir / "outage-cache");
  ASSERT_EQ(::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  OutageCacheConfig config;
  config.dir = dir / "outage-cache";
  OutageCache cache(config, "device:/nonexistent", [] { return kStart; });
  const auto forgotten = cache.forget("01234567-89ab-cdef-0123-456789abcdef");
  ::umount(dir.c_str());
  fs::remove_all(dir);
  ASSERT_TRUE(forgotten.ok()) << forgotten.error().message();
  EXPECT_FALSE(*forgotten);
}

TEST(OutageCacheEntry, HostileTextIsRefusedWithItsReason) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::string uuid = "01234567-89ab-cdef-0123-456789abcdef";
  const std::string hex(64, 'a');
  const std::string good_head = R"({"format": "envcrypt-outage-cache", "version": 1, "disk": ")" +
                                uuid + R"(", "cmk": "kmip://k/1", "cmk_version": 1, )";
  const std::vector<Case> cases = {
      {"[]", "outage cache entry: not a JSON object"},
      {"{", "outage cache entry: not a JSON object"},
      {std::string(65 * 1024, ' '), "outage cache entry: larger than 64 KiB"},
      {R"({"format": "envcrypt-outage-cache", "extra": 1})",
       "outage cache entry: unknown field \"extra\""},
      {R"({"format": "x", "version": 1})",
       "outage cache entry: \"format\" is not \"envcrypt-outage-cache\""},
      {R"({"format": "envcrypt-outage-cache", "version": 2})",
       "outage cache entry: \"version\" is not 1"},
      {R"({"format": "envcrypt-outage-cache", "version": 1, "disk": "../../etc"})",
       "outage cache entry: \"disk\" is not a disk uuid"},
      {good_head + R"("wrap_sha256": "AB", "confirmed_at": 1, "sealed": {}})",
       "outage cache entry: \"wrap_sha256\" is not 64 lower-case hex digits"},
      {good_head + R"("wrap_sha256": ")" + hex + R"(", "confirmed_at": 1e300, "sealed": {}})",
       "outage cache entry: \"confirmed_at\" is missing or not an integer in range"},
      {good_head + R"("wrap_sha256": ")" + hex + R"(", "confirmed_at": -5, "sealed": {}})",
       "outage cache entry: \"confirmed_at\" is negative"},
      {good_head + R"("wrap_sha256": ")" + hex + R"(", "confirmed_at": 5, "sealed": []})",
       "outage cache entry: \"sealed\" is missing or not an object"},
      {good_head + R"("wrap_sha256": ")" + hex + R"(", "confirmed_at": 5, "sealed": {}})",
       "outage cache entry: \"sealed\": sealed key file: \"format\" is not "
       "\"envcrypt-tpm-sealed\""},
  };
  for (const Case& c : cases) {
    const auto decoded = decode_cache_entry(c.text);
    ASSERT_FALSE(decoded.ok()) << c.text.substr(0, 80);
    EXPECT_EQ(decoded.error().code(), ErrorCode::kCorrupt);
    EXPECT_EQ(decoded.error().message(), c.message) << c.text.substr(0, 80);
  }
}

TEST(OutageCacheConfig, ParsesAndRefusesWithTheKeyNamed) {
  const auto config = parse_config(
      "[outage_cache]\ndisks = [\"web\", \"*\"]\nmax_age = \"72h\"\ndir = \"/srv/cache\"\n"
      "pcrs = [7, 0]\n",
      "/etc/envcrypt/envcrypt.conf");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->outage_cache.disks, (std::vector<std::string>{"web", "*"}));
  EXPECT_EQ(config->outage_cache.max_age, std::chrono::hours(72));
  EXPECT_EQ(config->outage_cache.dir, "/srv/cache");
  EXPECT_EQ(config->outage_cache.pcrs, (std::vector<std::uint32_t>{0, 7}));
  EXPECT_TRUE(config->outage_cache.enabled_for("anything", ""));

  const auto defaults = parse_config("", "/etc/envcrypt/envcrypt.conf");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->outage_cache.disks.empty());
  EXPECT_FALSE(defaults->outage_cache.enabled_for("web", "01234567-89ab-cdef-0123-456789abcdef"));
  EXPECT_EQ(defaults->outage_cache.max_age, std::chrono::hours(24));
  EXPECT_EQ(defaults->outage_cache.dir, "/var/lib/envcrypt/outage-cache");

  const std::vector<std::pair<std::string, std::string>> refused = {
      {"max_age = \"721h\"", "outage_cache.max_age: '721h' is longer than 30 days (720h)"},
      {"max_age = \"0s\"", "outage_cache.max_age: must be longer than 0"},
      {"max_age = \"3d\"",
       "outage_cache.max_age: '3d' is not a duration (a number of ms, s, min or h; a bare number "
       "is seconds)"},
      {"max_age = 3600", "outage_cache.max_age: expected a string, got an integer"},
      {"disks = [\"a/b\"]",
       "outage_cache.disks: 'a/b' is not \"*\", a disk uuid or an envcrypttab name"},
      {"pcrs = [7, 7]", "outage_cache.pcrs: PCR 7 is listed twice"},
      {"pcrs = [24]", "outage_cache.pcrs: must be between 0 and 23, got 24"},
      {"dir = \"relative\"", "outage_cache.dir: expected an absolute path, got 'relative'"},
      {"ttl = 1", "unknown key 'outage_cache.ttl'"},
  };
  for (const auto& [line, message] : refused) {
    const auto parsed = parse_config("[outage_cache]\n" + line + "\n", "/e.conf");
    ASSERT_FALSE(parsed.ok()) << line;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kUsage);
    EXPECT_EQ(parsed.error().message(), "config /e.conf: " + message) << line;
  }
}

}  // namespace
}  // namespace envcrypt
