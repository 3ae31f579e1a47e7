#include "kms_local.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "crypto.h"

namespace envcrypt {
namespace {

constexpr std::int64_t kDay = 86400;
constexpr std::int64_t kStart = 1800000000;  // 2027-01-15

std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "kms_local_test.XXXXXX").string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

mode_t mode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

const EncryptionContext kContext = {{"disk_uuid", "0f2d7c1e-5d7a-4a51-9a1b-3c9e2f7d8a10"},
                                    {"sector_size", "4096"}};

class LocalKmsTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(root_); }

  LocalKmsOptions options(const std::string& principal = "host/test") {
    LocalKmsOptions opts;
    opts.dir = root_ / "var" / "kms";
    opts.root_key = root_ / "etc" / "root.key";
    opts.region = "local-1";
    opts.principal = principal;
    opts.clock = [now = now_] { return *now; };
    return opts;
  }

  std::unique_ptr<LocalKms> open(const std::string& principal = "host/test") {
    Result<std::unique_ptr<LocalKms>> kms = LocalKms::open(options(principal));
    EXPECT_TRUE(kms.ok()) << kms.error().message();
    return std::move(kms).value();
  }

  KeyInfo create(LocalKms& kms, CreateKeyRequest request = {}) {
    Result<KeyInfo> info = kms.create_key(request);
    EXPECT_TRUE(info.ok()) << info.error().message();
    return info.value();
  }

  void advance_days(std::int64_t days) { *now_ += days * kDay; }

  static void expect_error(const Error& error, ErrorCode code, const std::string& message) {
    EXPECT_EQ(error.code(), code) << error.message();
    EXPECT_EQ(error.message(), message);
  }

  template <typename T>
  static void expect_error(const Result<T>& result, ErrorCode code, const std::string& message) {
    ASSERT_FALSE(result.ok()) << "expected: " << message;
    expect_error(result.error(), code, message);
  }

  std::filesystem::path root_ = make_temp_dir();
  std::shared_ptr<std::int64_t> now_ = std::make_shared<std::int64_t>(kStart);
};

// ----- setup, service key, envelope -----

TEST_F(LocalKmsTest, FirstUseCreatesPrivateRootKeyKeystoreAndServiceKey) {
  auto kms = open();
  EXPECT_EQ(mode_of(root_ / "etc"), 0700U);
  EXPECT_EQ(mode_of(root_ / "etc" / "root.key"), 0600U);
  EXPECT_EQ(std::filesystem::file_size(root_ / "etc" / "root.key"), 32U);
  EXPECT_EQ(mode_of(root_ / "var" / "kms"), 0700U);

  const std::vector<KeyInfo> keys = kms->list_keys().value();
  ASSERT_EQ(keys.size(), 1U);
  EXPECT_TRUE(keys[0].service_key);
  EXPECT_EQ(keys[0].aliases, std::vector<std::string>{"alias/acs/ecs"});
  EXPECT_EQ(keys[0].uri, "local://local-1/" + keys[0].key_id);
  EXPECT_EQ(keys[0].state, KeyState::kEnabled);
  EXPECT_EQ(mode_of(root_ / "var" / "kms" / "local-1.keystore.json"), 0600U);
  EXPECT_EQ(mode_of(root_ / "var" / "kms" / "audit.log"), 0600U);

  // A second open finds the same root key and service key.
  auto again = open();
  EXPECT_EQ(again->describe_key("alias/acs/ecs").value().key_id, keys[0].key_id);
}

TEST_F(LocalKmsTest, ServiceKeyIsPerRegion) {
  auto kms = open();
  LocalKmsOptions other = options();
  other.region = "local-2";
  auto kms2 = LocalKms::open(other).value();
  const std::string id1 = kms->describe_key("alias/acs/ecs").value().key_id;
  const std::string id2 = kms2->describe_key("alias/acs/ecs").value().key_id;
  EXPECT_NE(id1, id2);
  EXPECT_TRUE(kms->supports("local://local-1/" + id1));
  EXPECT_FALSE(kms->supports("local://local-2/" + id2));
  EXPECT_FALSE(kms->supports("kmip://kms.example:5696/1"));
  expect_error(
      kms->describe_key("local://local-2/" + id2), ErrorCode::kNotFound,
      "key local://local-2/" + id2 + " is in region local-2; this KMS serves region local-1");
}

TEST_F(LocalKmsTest, GenerateDataKeyAndDecryptRoundTrip) {
  auto kms = open();
  const DataKey key = generate_data_key(*kms, "alias/acs/ecs", kContext, 64).value();
  const KeyInfo service = kms->describe_key("alias/acs/ecs").value();
  EXPECT_EQ(key.plaintext.size(), 64U);
  EXPECT_EQ(key.wrapped.cmk_uri, service.uri);
  EXPECT_EQ(key.wrapped.cmk_version, 1U);
  EXPECT_EQ(key.wrapped.nonce.size(), 12U);
  EXPECT_EQ(key.wrapped.tag.size(), 16U);
  EXPECT_EQ(key.wrapped.ciphertext.size(), 64U);
  EXPECT_FALSE(key.plaintext.equals(key.wrapped.ciphertext));
  const SecretBytes unwrapped = kms->decrypt(key.wrapped, kContext).value();
  EXPECT_TRUE(unwrapped.equals(key.plaintext.span()));

  // Another process (a fresh open) unwraps it too.
  EXPECT_TRUE(open()->decrypt(key.wrapped, kContext).value().equals(key.plaintext.span()));
}

TEST_F(LocalKmsTest, AReadOnlyKeystoreUnwrapsAndKeepsTheAuditLineForLater) {
  auto read_only = std::make_shared<bool>(false);
  LocalKmsOptions opts = options();
  opts.audit_spool = root_ / "run" / "audit-deferred";
  opts.read_only = [read_only] { return *read_only; };
  auto kms = LocalKms::open(opts).value();
  const DataKey key = generate_data_key(*kms, "alias/acs/ecs", kContext, 64).value();
  const std::filesystem::path log = opts.dir / "audit.log";
  const std::filesystem::path saved = root_ / "audit.log.saved";
  // The log cannot be opened for writing, as on a read-only root.
  std::filesystem::rename(log, saved);
  std::filesystem::create_directory(log);

  // On a writable file system that is a failure: nothing happens unaudited.
  EXPECT_FALSE(kms->decrypt(key.wrapped, kContext).ok());
  // On a read-only one the unwrap works and its line is kept.
  *read_only = true;
  *now_ += 60;
  const Result<SecretBytes> unwrapped = kms->decrypt(key.wrapped, kContext);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.error().message();
  EXPECT_TRUE(unwrapped->equals(key.plaintext.span()));
  EXPECT_FALSE(std::filesystem::is_empty(opts.audit_spool));

  // Writable again: the next operation writes the kept line first.
  *read_only = false;
  std::filesystem::remove(log);
  std::filesystem::rename(saved, log);
  *now_ += 60;
  ASSERT_TRUE(kms->decrypt(key.wrapped, kContext).ok());
  EXPECT_TRUE(std::filesystem::is_empty(opts.audit_spool));
  const std::vector<AuditRecord> records = kms->audit_log().query({}).value();
  ASSERT_GE(records.size(), 2U);
  const AuditRecord& kept = records[records.size() - 2];
  EXPECT_EQ(kept.operation, "Decrypt");
  EXPECT_EQ(kept.result, "ok");
  EXPECT_EQ(kept.unix_time, kStart + 120);
  EXPECT_NE(kept.line.find(R"("deferred_time":")" + format_rfc3339(kStart + 60) + "\""),
            std::string::npos)
      << kept.line;
  EXPECT_EQ(records.back().operation, "Decrypt");
  EXPECT_EQ(records.back().line.find("deferred"), std::string::npos);
  EXPECT_TRUE(kms->audit_log().verify().value().intact);
}

TEST_F(LocalKmsTest, KeyReferencesByIdAliasAndUri) {
  auto kms = open();
  CreateKeyRequest request;
  request.description = "data disks";
  request.alias = "data";
  const KeyInfo key = create(*kms, request);
  for (const std::string& ref : {key.key_id, std::string("alias/data"), key.uri}) {
    const KeyInfo found = kms->describe_key(ref).value();
    EXPECT_EQ(found.key_id, key.key_id) << ref;
    EXPECT_EQ(found.description, "data disks");
    EXPECT_EQ(found.aliases, std::vector<std::string>{"alias/data"});
    EXPECT_FALSE(found.service_key);
  }
  expect_error(kms->describe_key("alias/nope"), ErrorCode::kNotFound,
               "alias alias/nope not found in region local-1");
  expect_error(kms->describe_key("0000"), ErrorCode::kNotFound,
               "key local://local-1/0000 not found");
  expect_error(kms->describe_key("kmip://h:5696/1"), ErrorCode::kUsage,
               "'kmip://h:5696/1' is not a local KMS key");
}

TEST_F(LocalKmsTest, WrongContextOrTamperedBlobFailsToUnwrap) {
  auto kms = open();
  const DataKey key = generate_data_key(*kms, "alias/acs/ecs", kContext, 64).value();
  const std::string message = "unwrap failed: encryption context or blob does not match";

  EncryptionContext other = kContext;
  other["sector_size"] = "512";
  expect_error(kms->decrypt(key.wrapped, other), ErrorCode::kCorruptHeader, message);
  expect_error(kms->decrypt(key.wrapped, {}), ErrorCode::kCorruptHeader, message);

  WrappedKey tampered = key.wrapped;
  tampered.ciphertext[10] ^= 1;
  expect_error(kms->decrypt(tampered, kContext), ErrorCode::kCorruptHeader, message);
  tampered = key.wrapped;
  tampered.tag[0] ^= 1;
  expect_error(kms->decrypt(tampered, kContext), ErrorCode::kCorruptHeader, message);

  // The version is bound too: a blob relabelled to another version of the
  // same key does not unwrap.
  ASSERT_TRUE(kms->rotate_key("alias/acs/ecs").ok());
  tampered = key.wrapped;
  tampered.cmk_version = 2;
  expect_error(kms->decrypt(tampered, kContext), ErrorCode::kCorruptHeader, message);
  tampered.cmk_version = 9;
  expect_error(kms->decrypt(tampered, kContext), ErrorCode::kNotFound,
               "key " + key.wrapped.cmk_uri + " has no version 9");
}

// ----- service key -----

TEST_F(LocalKmsTest, ServiceKeyRefusesDisableDeletionAndAliasRemoval) {
  auto kms = open();
  const std::string uri = kms->describe_key("alias/acs/ecs").value().uri;
  const std::string prefix = "the service key alias/acs/ecs (" + uri + ") cannot ";
  expect_error(kms->disable_key("alias/acs/ecs"), ErrorCode::kDenied, prefix + "be disabled");
  expect_error(kms->schedule_key_deletion("alias/acs/ecs", 30), ErrorCode::kDenied,
               prefix + "be scheduled for deletion");
  expect_error(kms->cancel_key_deletion(uri), ErrorCode::kDenied,
               prefix + "be scheduled for deletion or cancelled");
  expect_error(kms->delete_key_material(uri), ErrorCode::kDenied,
               prefix + "have its material deleted");
  expect_error(kms->delete_alias("alias/acs/ecs"), ErrorCode::kDenied,
               "alias alias/acs/ecs names a service key and cannot be deleted");
  expect_error(kms->create_alias("alias/acs/mine", uri), ErrorCode::kUsage,
               "alias 'alias/acs/mine' is reserved: the acs/ prefix names service keys");
  EXPECT_EQ(kms->describe_key(uri).value().state, KeyState::kEnabled);
  EXPECT_TRUE(kms->enable_key(uri).ok());
}

// ----- customer key state machine -----

TEST_F(LocalKmsTest, StateMachineTransitionsAndRefusals) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  const std::string& uri = key.uri;
  EXPECT_EQ(key.state, KeyState::kEnabled);
  const DataKey data_key = generate_data_key(*kms, key.key_id, kContext, 64).value();

  // Enabled -> Disabled: no GenerateDataKey, no Decrypt.
  ASSERT_TRUE(kms->disable_key(uri).ok());
  EXPECT_EQ(kms->describe_key(uri).value().state, KeyState::kDisabled);
  expect_error(generate_data_key(*kms, uri, kContext, 64), ErrorCode::kDenied,
               "key " + uri + " is Disabled");
  expect_error(kms->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + uri + " is Disabled");
  EXPECT_TRUE(kms->disable_key(uri).ok());  // idempotent

  // Disabled -> Enabled.
  ASSERT_TRUE(kms->enable_key(uri).ok());
  EXPECT_TRUE(kms->decrypt(data_key.wrapped, kContext).ok());

  // Enabled -> PendingDeletion.
  const KeyInfo pending = kms->schedule_key_deletion(uri, 7).value();
  EXPECT_EQ(pending.state, KeyState::kPendingDeletion);
  EXPECT_EQ(pending.deletion_date, kStart + 7 * kDay);
  expect_error(kms->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + uri + " is PendingDeletion");
  expect_error(generate_data_key(*kms, uri, kContext, 64), ErrorCode::kDenied,
               "key " + uri + " is PendingDeletion");
  expect_error(kms->enable_key(uri), ErrorCode::kDenied,
               "key " + uri + " is PendingDeletion: cancel the deletion first");
  expect_error(kms->disable_key(uri), ErrorCode::kDenied,
               "key " + uri + " is PendingDeletion: only an Enabled key can be disabled");
  expect_error(kms->schedule_key_deletion(uri, 30), ErrorCode::kDenied,
               "key " + uri + " is already PendingDeletion (deletion date 2027-01-22T08:00:00Z)");

  // PendingDeletion -> Disabled (never straight back to Enabled).
  ASSERT_TRUE(kms->cancel_key_deletion(uri).ok());
  const KeyInfo cancelled = kms->describe_key(uri).value();
  EXPECT_EQ(cancelled.state, KeyState::kDisabled);
  EXPECT_FALSE(cancelled.deletion_date.has_value());
  expect_error(kms->cancel_key_deletion(uri), ErrorCode::kDenied,
               "key " + uri + " is Disabled, not PendingDeletion");

  // Disabled -> PendingDeletion is allowed as well.
  EXPECT_TRUE(kms->schedule_key_deletion(uri, 366).ok());
}

TEST_F(LocalKmsTest, DeletionWindowBounds) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  for (const std::uint32_t days : {0U, 6U, 367U, 1000U}) {
    expect_error(kms->schedule_key_deletion(key.uri, days), ErrorCode::kUsage,
                 "pending window must be 7-366 days, got " + std::to_string(days));
  }
  EXPECT_EQ(kms->describe_key(key.uri).value().state, KeyState::kEnabled);
  EXPECT_TRUE(kms->schedule_key_deletion(key.uri, 7).ok());
  ASSERT_TRUE(kms->cancel_key_deletion(key.uri).ok());
  EXPECT_EQ(kms->schedule_key_deletion(key.uri, 366).value().deletion_date, kStart + 366 * kDay);
}

TEST_F(LocalKmsTest, PurgeDueDestroysKeysAfterTheirWindow) {
  auto kms = open();
  const KeyInfo key = create(*kms, {"doomed", "doomed", KeyOrigin::kKms, std::nullopt});
  const DataKey data_key = generate_data_key(*kms, key.uri, kContext, 64).value();
  ASSERT_TRUE(kms->schedule_key_deletion(key.uri, 7).ok());
  advance_days(6);
  EXPECT_TRUE(kms->purge_due().value().empty());
  advance_days(1);
  EXPECT_EQ(kms->purge_due().value(), std::vector<std::string>{key.key_id});
  expect_error(kms->describe_key(key.uri), ErrorCode::kNotFound,
               "key " + key.uri + " was deleted on 2027-01-22T08:00:00Z");
  expect_error(kms->decrypt(data_key.wrapped, kContext), ErrorCode::kNotFound,
               "key " + key.uri + " was deleted on 2027-01-22T08:00:00Z");
  expect_error(kms->describe_key("alias/doomed"), ErrorCode::kNotFound,
               "alias alias/doomed not found in region local-1");
  EXPECT_EQ(kms->list_keys().value().size(), 1U);  // the service key
  EXPECT_EQ(slurp(root_ / "var" / "kms" / "local-1.keystore.json").find("\"doomed\""),
            std::string::npos);
}

// ----- aliases -----

TEST_F(LocalKmsTest, Aliases) {
  auto kms = open();
  const KeyInfo a = create(*kms, {"a", "team/a", KeyOrigin::kKms, std::nullopt});
  const KeyInfo b = create(*kms);
  expect_error(kms->create_key({"dup", "alias/team/a", KeyOrigin::kKms, std::nullopt}),
               ErrorCode::kConflict, "alias alias/team/a already exists (key " + a.uri + ")");
  ASSERT_TRUE(kms->create_alias("b-disks", b.key_id).ok());
  ASSERT_TRUE(kms->create_alias("alias/b-backup", b.uri).ok());
  expect_error(kms->create_alias("alias/b-disks", a.uri), ErrorCode::kConflict,
               "alias alias/b-disks already exists (key " + b.uri + ")");
  expect_error(kms->create_alias("bad alias", a.uri), ErrorCode::kUsage,
               "invalid alias 'alias/bad alias': use letters, digits, '/', '_' and '-' (at "
               "most 256)");
  expect_error(kms->create_alias("x", "alias/missing"), ErrorCode::kNotFound,
               "alias alias/missing not found in region local-1");

  const auto aliases = kms->list_aliases().value();
  EXPECT_EQ(aliases.size(), 4U);
  EXPECT_EQ(aliases.at("alias/team/a"), a.key_id);
  EXPECT_EQ(aliases.at("alias/b-disks"), b.key_id);
  EXPECT_EQ(aliases.at("alias/b-backup"), b.key_id);
  EXPECT_TRUE(aliases.contains("alias/acs/ecs"));
  EXPECT_EQ(kms->describe_key(b.uri).value().aliases,
            (std::vector<std::string>{"alias/b-backup", "alias/b-disks"}));

  ASSERT_TRUE(kms->delete_alias("alias/b-disks").ok());
  expect_error(kms->delete_alias("b-disks"), ErrorCode::kNotFound,
               "alias alias/b-disks not found in region local-1");
  EXPECT_EQ(kms->describe_key(b.uri).value().aliases, std::vector<std::string>{"alias/b-backup"});
}

// ----- permissions -----

TEST_F(LocalKmsTest, RefusesGroupOrWorldAccessibleRootKey) {
  open();
  const std::filesystem::path key = root_ / "etc" / "root.key";
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  const Result<std::unique_ptr<LocalKms>> refused = LocalKms::open(options());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDenied);
  EXPECT_EQ(refused.error().message(),
            key.string() +
                " has mode 0644: refusing a key file or directory that group or "
                "others can access (chmod go-rwx " +
                key.string() + ")");
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  EXPECT_TRUE(LocalKms::open(options()).ok());
}

TEST_F(LocalKmsTest, RefusesGroupOrWorldAccessibleKeystore) {
  auto kms = open();
  const std::filesystem::path dir = root_ / "var" / "kms";
  const std::filesystem::path file = dir / "local-1.keystore.json";
  ASSERT_TRUE(kms->list_keys().ok());
  ASSERT_EQ(::chmod(file.c_str(), 0604), 0);
  const Result<std::vector<KeyInfo>> listed = kms->list_keys();
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.error().code(), ErrorCode::kDenied);
  EXPECT_NE(listed.error().message().find(file.string() + " has mode 0604"), std::string::npos);
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);

  ASSERT_EQ(::chmod(dir.c_str(), 0750), 0);
  const Result<std::unique_ptr<LocalKms>> refused = LocalKms::open(options());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find(dir.string() + " has mode 0750"), std::string::npos);
}

TEST_F(LocalKmsTest, RefusesKeystoreNumbersThatDoNotFitTheirField) {
  auto kms = open();
  ASSERT_TRUE(kms->list_keys().ok());
  const std::filesystem::path file = root_ / "var" / "kms" / "local-1.keystore.json";
  const std::string good = slurp(file);
  // A float out of range (undefined when converted), a negative count and
  // one above 32 bits: each refused, never read as another number.
  struct Edit {
    std::string field;  // as written in the file, up to the value
    std::string value;
    std::string message;  // what the error says
  };
  const std::vector<Edit> edits = {
      {"\"created_at\": ", "1e300", "created_at is not an integer in range: 1e+300"},
      {"\"primary_version\": ", "-1", "primary_version is not an integer in range: -1"},
      {"\"version\": ", "4294967296", "version is not an integer in range: 4294967296"},
      {"\"format\": ", "1.5", "format is not an integer in range: 1.5"}};
  for (const auto& [field, value, message] : edits) {
    std::string text = good;
    const std::size_t at = text.find(field);
    ASSERT_NE(at, std::string::npos) << field;
    const std::size_t start = at + field.size();
    text.replace(start, text.find_first_of(",\n", start) - start, value);
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << text;
    }
    const Result<std::vector<KeyInfo>> listed = kms->list_keys();
    ASSERT_FALSE(listed.ok()) << field << value;
    EXPECT_EQ(listed.error().code(), ErrorCode::kCorruptHeader);
    EXPECT_NE(listed.error().message().find(message), std::string::npos)
        << listed.error().message();
  }
}

TEST_F(LocalKmsTest, RefusesARootKeyOfTheWrongSizeAndABadRegion) {
  ASSERT_EQ(::mkdir((root_ / "etc").c_str(), 0700), 0);
  {
    std::ofstream out(root_ / "etc" / "root.key");
    out << "short";
  }
  ASSERT_EQ(::chmod((root_ / "etc" / "root.key").c_str(), 0600), 0);
  Result<std::unique_ptr<LocalKms>> refused = LocalKms::open(options());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(), "root key " + (root_ / "etc" / "root.key").string() +
                                           " must be exactly 32 bytes, it has 5");
  LocalKmsOptions bad = options();
  bad.region = "Local 1";
  refused = LocalKms::open(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUsage);
}

TEST_F(LocalKmsTest, AnotherRootKeyCannotOpenTheKeystore) {
  auto kms = open();
  const DataKey data_key = generate_data_key(*kms, "alias/acs/ecs", kContext, 64).value();
  std::filesystem::remove(root_ / "etc" / "root.key");
  auto other = open();  // creates a new, different root key
  const Result<SecretBytes> refused = other->decrypt(data_key.wrapped, kContext);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kCorruptHeader);
  EXPECT_NE(refused.error().message().find("does not open under root key"), std::string::npos);
}

// ----- no key material in plaintext anywhere -----

TEST_F(LocalKmsTest, NoKeyBytesInKeystoreOrAuditLog) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  std::vector<SecretBytes> data_keys;
  for (const std::string& ref : {std::string("alias/acs/ecs"), key.uri}) {
    DataKey data_key = generate_data_key(*kms, ref, kContext, 64).value();
    ASSERT_TRUE(kms->decrypt(data_key.wrapped, kContext).ok());
    data_keys.push_back(std::move(data_key.plaintext));
  }
  data_keys.push_back(SecretBytes(
      reinterpret_cast<const std::uint8_t*>(slurp(root_ / "etc" / "root.key").data()), 32));
  for (const auto& entry : std::filesystem::directory_iterator(root_ / "var" / "kms")) {
    const std::string contents = slurp(entry.path());
    for (const SecretBytes& secret : data_keys) {
      const std::string raw(reinterpret_cast<const char*>(secret.data()), secret.size());
      // Any 8-byte window of a key, raw or in hex, would be a leak.
      for (std::size_t offset = 0; offset + 8 <= secret.size(); offset += 8) {
        EXPECT_EQ(contents.find(raw.substr(offset, 8)), std::string::npos) << entry.path();
        EXPECT_EQ(contents.find(to_hex(secret.span().subspan(offset, 8))), std::string::npos)
            << entry.path();
      }
    }
  }
}

// ----- audit -----

TEST_F(LocalKmsTest, EveryOperationIsAuditedWithItsResult) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  const DataKey data_key = generate_data_key(*kms, key.uri, kContext, 64).value();
  ASSERT_TRUE(kms->disable_key(key.uri).ok());
  ASSERT_FALSE(kms->decrypt(data_key.wrapped, kContext).ok());

  const std::vector<AuditRecord> records = kms->audit_log().query({}).value();
  // generate_data_key decrypts its new wrap back (kms.h verify_wrap).
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
  const DataKey data_key = generate_data_key(*kms, "alias/acs/ecs", kContext, 64).value();
  std::mt19937 random(4242);
  std::size_t last_count = 1;
  // Kill delays scale with how long one creation takes on this machine;
  // rounds go on until the writers have made progress.
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(kms->create_key({}).ok());
  const auto one_create = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::steady_clock::now() - started)
                              .count();
  last_count = 2;
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
    ::usleep(std::uniform_int_distribution<useconds_t>(
        0, static_cast<useconds_t>(20000 + 6 * one_create))(random));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status));
    const Result<std::vector<KeyInfo>> keys = kms->list_keys();
    ASSERT_TRUE(keys.ok()) << keys.error().message();
    EXPECT_GE(keys->size(), last_count);
    last_count = keys->size();
    EXPECT_TRUE(kms->decrypt(data_key.wrapped, kContext).ok());
  }
  EXPECT_GT(last_count, 6U) << "the writers made too little progress to test anything";
}

// ----- rotation (issue 5) -----

TEST_F(LocalKmsTest, RotationAddsAPrimaryVersionAndKeepsOldOnesForDecrypt) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  const DataKey before = generate_data_key(*kms, key.uri, kContext, 64).value();
  const KeyInfo rotated = kms->rotate_key(key.uri).value();
  EXPECT_EQ(rotated.primary_version, 2U);
  EXPECT_EQ(rotated.version_count, 2U);
  const DataKey after = generate_data_key(*kms, key.uri, kContext, 64).value();
  EXPECT_EQ(before.wrapped.cmk_version, 1U);
  EXPECT_EQ(after.wrapped.cmk_version, 2U);
  EXPECT_TRUE(kms->decrypt(before.wrapped, kContext).value().equals(before.plaintext.span()));
  EXPECT_TRUE(kms->decrypt(after.wrapped, kContext).value().equals(after.plaintext.span()));
  const KeyDetails details = kms->describe_key_details(key.uri).value();
  ASSERT_EQ(details.versions.size(), 2U);
  EXPECT_EQ(details.owner, "host/test");

  ASSERT_TRUE(kms->disable_key(key.uri).ok());
  expect_error(kms->rotate_key(key.uri), ErrorCode::kDenied,
               "key " + key.uri + " is Disabled; only an Enabled key can be rotated");
}

TEST_F(LocalKmsTest, RotationIntervalRotatesOnUseAndByRotateDue) {
  auto kms = open();
  const KeyInfo on_use = create(*kms, {"", std::nullopt, KeyOrigin::kKms, 30});
  const KeyInfo by_timer = create(*kms, {"", std::nullopt, KeyOrigin::kKms, 30});
  const KeyInfo manual = create(*kms);
  expect_error(kms->create_key({"", std::nullopt, KeyOrigin::kKms, 0}), ErrorCode::kUsage,
               "rotation interval must be 1-3650 days, got 0");

  advance_days(29);
  EXPECT_EQ(generate_data_key(*kms, on_use.uri, kContext, 64).value().wrapped.cmk_version, 1U);
  EXPECT_TRUE(kms->rotate_due().value().empty());
  advance_days(1);
  EXPECT_EQ(generate_data_key(*kms, on_use.uri, kContext, 64).value().wrapped.cmk_version, 2U);
  const std::vector<KeyInfo> rotated = kms->rotate_due().value();
  ASSERT_EQ(rotated.size(), 1U);
  EXPECT_EQ(rotated[0].key_id, by_timer.key_id);
  EXPECT_EQ(rotated[0].primary_version, 2U);
  EXPECT_EQ(kms->describe_key(manual.uri).value().primary_version, 1U);
  EXPECT_TRUE(kms->rotate_due().value().empty());

  const auto audited =
      kms->audit_log().query({on_use.key_id, std::nullopt, std::nullopt, std::nullopt}).value();
  EXPECT_TRUE(std::any_of(audited.begin(), audited.end(), [](const AuditRecord& record) {
    return record.operation == "RotateKey" && record.key_version == 2U &&
           record.line.find("on use") != std::string::npos;
  }));
}

// ----- ReEncrypt (rewrap) -----

TEST_F(LocalKmsTest, ReEncryptMovesADataKeyToAnotherKeyOrVersion) {
  auto kms = open();
  const KeyInfo source = create(*kms);
  const KeyInfo destination = create(*kms);
  const DataKey data_key = generate_data_key(*kms, source.uri, kContext, 64).value();

  const WrappedKey moved =
      kms->reencrypt(data_key.wrapped, kContext, destination.uri, kContext).value();
  EXPECT_EQ(moved.cmk_uri, destination.uri);
  EXPECT_TRUE(kms->decrypt(moved, kContext).value().equals(data_key.plaintext.span()));

  ASSERT_TRUE(kms->rotate_key(source.uri).ok());
  const WrappedKey refreshed =
      kms->reencrypt(data_key.wrapped, kContext, source.uri, kContext).value();
  EXPECT_EQ(refreshed.cmk_version, 2U);
  EXPECT_TRUE(kms->decrypt(refreshed, kContext).value().equals(data_key.plaintext.span()));

  EncryptionContext wrong = kContext;
  wrong["disk_uuid"] = "another";
  expect_error(kms->reencrypt(data_key.wrapped, wrong, destination.uri, kContext),
               ErrorCode::kCorruptHeader,
               "unwrap failed: encryption context or blob does not match");
  ASSERT_TRUE(kms->disable_key(destination.uri).ok());
  expect_error(kms->reencrypt(data_key.wrapped, kContext, destination.uri, kContext),
               ErrorCode::kDenied, "key " + destination.uri + " is Disabled");
}

// ----- BYOK -----

class ByokTest : public LocalKmsTest {
 protected:
  void SetUp() override {
    kms_ = open();
    key_ = create(*kms_, {"imported", std::nullopt, KeyOrigin::kExternal, std::nullopt});
    material_ = random_secret(32).value();
  }

  Bytes wrap(const ImportParameters& parameters, const SecretBytes& material) {
    return rsa_oaep_sha256_encrypt(parameters.public_key_pem, material.span()).value();
  }

  Result<KeyInfo> import(const SecretBytes& material) {
    const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
    return kms_->import_key_material(key_.uri,
                                     {wrap(parameters, material), parameters.import_token, {}});
  }

  std::unique_ptr<LocalKms> kms_;
  KeyInfo key_;
  SecretBytes material_;
};

TEST_F(ByokTest, ExternalKeyWaitsForItsMaterial) {
  EXPECT_EQ(key_.state, KeyState::kPendingImport);
  EXPECT_EQ(key_.origin, KeyOrigin::kExternal);
  EXPECT_EQ(key_.version_count, 0U);
  expect_error(generate_data_key(*kms_, key_.uri, kContext, 64), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");
  expect_error(kms_->enable_key(key_.uri), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport: import its material first");
  expect_error(
      kms_->rotate_key(key_.uri), ErrorCode::kUsage,
      "key " + key_.uri + " has imported material (origin EXTERNAL) and cannot be rotated");
  const KeyInfo native = create(*kms_);
  expect_error(kms_->get_parameters_for_import(native.uri), ErrorCode::kUsage,
               "key " + native.uri +
                   " has origin KMS; only keys created with origin EXTERNAL "
                   "take imported material");
}

TEST_F(ByokTest, ImportWithOpensslPkeyutlAsAUserWould) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  EXPECT_EQ(parameters.wrapping_algorithm, "RSAES_OAEP_SHA_256");
  EXPECT_EQ(parameters.expires_at, kStart + kDay);
  const std::filesystem::path pub = root_ / "import.pub.pem";
  const std::filesystem::path plain = root_ / "material.bin";
  const std::filesystem::path wrapped = root_ / "material.wrapped";
  std::ofstream(pub) << parameters.public_key_pem;
  std::ofstream(plain, std::ios::binary).write(reinterpret_cast<const char*>(material_.data()), 32);
  const std::string command = "openssl pkeyutl -encrypt -pubin -inkey " + pub.string() + " -in " +
                              plain.string() + " -out " + wrapped.string() +
                              " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::string blob = slurp(wrapped);
  const KeyInfo imported =
      kms_->import_key_material(key_.uri,
                                {Bytes(blob.begin(), blob.end()), parameters.import_token, {}})
          .value();
  EXPECT_EQ(imported.state, KeyState::kEnabled);
  EXPECT_EQ(imported.primary_version, 1U);
  const DataKey data_key = generate_data_key(*kms_, key_.uri, kContext, 64).value();
  EXPECT_TRUE(kms_->decrypt(data_key.wrapped, kContext).value().equals(data_key.plaintext.span()));
}

TEST_F(ByokTest, BadTokensAndBadMaterialAreRefused) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  const Bytes good = wrap(parameters, material_);

  expect_error(
      kms_->import_key_material(key_.uri, {good, "00" + parameters.import_token.substr(2), {}}),
      ErrorCode::kDenied,
      "import token does not match the parameters last issued for key " + key_.uri);

  const SecretBytes short_material = random_secret(16).value();
  expect_error(kms_->import_key_material(
                   key_.uri, {wrap(parameters, short_material), parameters.import_token, {}}),
               ErrorCode::kUsage, "key material must be 32 bytes, got 16");

  const RsaKeyPair stranger = generate_rsa2048().value();
  expect_error(
      kms_->import_key_material(
          key_.uri, {rsa_oaep_sha256_encrypt(stranger.public_key_pem, material_.span()).value(),
                     parameters.import_token,
                     {}}),
      ErrorCode::kUsage,
      "cannot unwrap the key material for " + key_.uri +
          ": it is not wrapped with RSAES_OAEP_SHA_256 under this import public key");

  advance_days(1);
  expect_error(kms_->import_key_material(key_.uri, {good, parameters.import_token, {}}),
               ErrorCode::kDenied,
               "import token for key " + key_.uri +
                   " expired at 2027-01-16T08:00:00Z: get new import parameters");
  EXPECT_EQ(kms_->describe_key(key_.uri).value().state, KeyState::kPendingImport);
}

TEST_F(ByokTest, DeleteMaterialMakesDisksUnusableUntilTheSameMaterialReturns) {
  ASSERT_TRUE(import(material_).ok());
  const DataKey data_key = generate_data_key(*kms_, key_.uri, kContext, 64).value();

  const KeyInfo deleted = kms_->delete_key_material(key_.uri).value();
  EXPECT_EQ(deleted.state, KeyState::kPendingImport);
  EXPECT_EQ(deleted.version_count, 0U);
  expect_error(kms_->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");

  const SecretBytes other = random_secret(32).value();
  expect_error(import(other), ErrorCode::kConflict,
               "key material differs from the material imported before into key " + key_.uri +
                   ": only the same material can be re-imported");

  ASSERT_TRUE(import(material_).ok());
  EXPECT_TRUE(kms_->decrypt(data_key.wrapped, kContext).value().equals(data_key.plaintext.span()));
}

TEST_F(ByokTest, MaterialExpiryDeletesTheMaterial) {
  const ImportParameters parameters = kms_->get_parameters_for_import(key_.uri).value();
  ASSERT_TRUE(kms_->import_key_material(key_.uri, {wrap(parameters, material_),
                                                   parameters.import_token, kStart + 3600})
                  .ok());
  const DataKey data_key = generate_data_key(*kms_, key_.uri, kContext, 64).value();
  *now_ += 3600;
  expect_error(kms_->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + key_.uri + " is PendingImport");
  // A token serves one import.
  expect_error(
      kms_->import_key_material(key_.uri,
                                {wrap(parameters, material_), parameters.import_token, {}}),
      ErrorCode::kUsage,
      "no import parameters for key " + key_.uri + ": run get-parameters-for-import first");
}

// ----- grants -----

TEST_F(LocalKmsTest, GrantsGovernOtherPrincipals) {
  auto owner = open("host/owner");
  auto other = open("host/other");
  const KeyInfo key = create(*owner);
  const DataKey data_key = generate_data_key(*owner, key.uri, kContext, 64).value();

  expect_error(other->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "principal host/other holds no decrypt grant on key " + key.uri);
  expect_error(other->describe_key(key.uri), ErrorCode::kDenied,
               "principal host/other holds no describe grant on key " + key.uri);
  expect_error(other->create_grant(key.uri, "host/other", {GrantOperation::kAdmin}),
               ErrorCode::kDenied, "principal host/other holds no admin grant on key " + key.uri);

  const Grant grant = owner
                          ->create_grant(key.uri, "host/other",
                                         {GrantOperation::kDecrypt, GrantOperation::kDescribe})
                          .value();
  EXPECT_TRUE(other->decrypt(data_key.wrapped, kContext).value().equals(data_key.plaintext.span()));
  EXPECT_TRUE(other->describe_key(key.uri).ok());
  expect_error(generate_data_key(*other, key.uri, kContext, 64), ErrorCode::kDenied,
               "principal host/other holds no generate grant on key " + key.uri);
  expect_error(other->disable_key(key.uri), ErrorCode::kDenied,
               "principal host/other holds no admin grant on key " + key.uri);
  const std::vector<Grant> grants = owner->list_grants(key.uri).value();
  ASSERT_EQ(grants.size(), 1U);
  EXPECT_EQ(grants[0].principal, "host/other");
  EXPECT_EQ(grants[0].created_by, "host/owner");
  EXPECT_EQ(grants[0].operations,
            (std::vector<GrantOperation>{GrantOperation::kDecrypt, GrantOperation::kDescribe}));

  ASSERT_TRUE(owner->revoke_grant(key.uri, grant.grant_id).ok());
  expect_error(other->decrypt(data_key.wrapped, kContext), ErrorCode::kDenied,
               "principal host/other holds no decrypt grant on key " + key.uri);
  expect_error(owner->revoke_grant(key.uri, grant.grant_id), ErrorCode::kNotFound,
               "grant " + grant.grant_id + " not found on key " + key.uri);

  // Denials are audited under the denied principal.
  const auto denied =
      other->audit_log().query({key.key_id, std::nullopt, std::nullopt, std::nullopt}).value();
  EXPECT_TRUE(std::any_of(denied.begin(), denied.end(), [](const AuditRecord& record) {
    return record.principal == "host/other" && record.operation == "Decrypt" &&
           record.result.find("holds no decrypt grant") != std::string::npos;
  }));
}

TEST_F(LocalKmsTest, GrantRefusals) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  for (const char* principal : {"bob", "group/admins", "host/", "host/a b"}) {
    expect_error(kms->create_grant(key.uri, principal, {GrantOperation::kDecrypt}),
                 ErrorCode::kUsage,
                 std::string("unknown principal '") + principal +
                     "': use host/<hostname>, user/<name> or service/<name>");
  }
  expect_error(kms->create_grant(key.uri, "user/alice", {}), ErrorCode::kUsage,
               "a grant needs at least one operation");
  const std::string service = kms->describe_key("alias/acs/ecs").value().uri;
  expect_error(kms->create_grant("alias/acs/ecs", "host/x", {GrantOperation::kDecrypt}),
               ErrorCode::kUsage,
               "the service key " + service +
                   " serves every principal of region local-1 and "
                   "takes no grants");
  EXPECT_EQ(parse_grant_operation("reencrypt").value(), GrantOperation::kReencrypt);
  expect_error(
      parse_grant_operation("encrypt"), ErrorCode::kUsage,
      "unknown grant operation 'encrypt': use generate, decrypt, reencrypt, describe or admin");
}

TEST_F(LocalKmsTest, ServiceKeyServesEveryPrincipalOfItsRegion) {
  auto first = open("host/a");
  auto second = open("host/b");
  const DataKey data_key = generate_data_key(*first, "alias/acs/ecs", kContext, 64).value();
  EXPECT_TRUE(
      second->decrypt(data_key.wrapped, kContext).value().equals(data_key.plaintext.span()));
}

}  // namespace
}  // namespace envcrypt
