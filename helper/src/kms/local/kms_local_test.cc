#include "kms/local/kms_local.h"

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
  const DataKey key = kms->envelope().generate("alias/acs/ecs", kContext, 64).value();
  const KeyInfo service = kms->describe_key("alias/acs/ecs").value();
  EXPECT_EQ(key.plaintext.size(), 64U);
  EXPECT_EQ(key.wrapped.cmk_uri, service.uri);
  EXPECT_EQ(key.wrapped.cmk_version, 1U);
  EXPECT_EQ(key.wrapped.nonce.size(), 12U);
  EXPECT_EQ(key.wrapped.tag.size(), 16U);
  EXPECT_EQ(key.wrapped.ciphertext.size(), 64U);
  EXPECT_FALSE(key.plaintext.equals(key.wrapped.ciphertext));
  const SecretBytes unwrapped = kms->envelope().unwrap(key.wrapped, kContext).value();
  EXPECT_TRUE(unwrapped.equals(key.plaintext.span()));

  // Another process (a fresh open) unwraps it too.
  EXPECT_TRUE(
      open()->envelope().unwrap(key.wrapped, kContext).value().equals(key.plaintext.span()));
}

TEST_F(LocalKmsTest, AReadOnlyKeystoreUnwrapsAndKeepsTheAuditLineForLater) {
  auto read_only = std::make_shared<bool>(false);
  LocalKmsOptions opts = options();
  opts.audit_spool = root_ / "run" / "audit-deferred";
  opts.read_only = [read_only] { return *read_only; };
  auto kms = LocalKms::open(opts).value();
  const DataKey key = kms->envelope().generate("alias/acs/ecs", kContext, 64).value();
  const std::filesystem::path log = opts.dir / "audit.log";
  const std::filesystem::path saved = root_ / "audit.log.saved";
  // The log cannot be opened for writing, as on a read-only root.
  std::filesystem::rename(log, saved);
  std::filesystem::create_directory(log);

  // On a writable file system that is a failure: nothing happens unaudited.
  EXPECT_FALSE(kms->envelope().unwrap(key.wrapped, kContext).ok());
  // On a read-only one the unwrap works and its line is kept.
  *read_only = true;
  *now_ += 60;
  const Result<SecretBytes> unwrapped = kms->envelope().unwrap(key.wrapped, kContext);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.error().message();
  EXPECT_TRUE(unwrapped->equals(key.plaintext.span()));
  EXPECT_FALSE(std::filesystem::is_empty(opts.audit_spool));

  // Writable again: the next operation writes the kept line first.
  *read_only = false;
  std::filesystem::remove(log);
  std::filesystem::rename(saved, log);
  *now_ += 60;
  ASSERT_TRUE(kms->envelope().unwrap(key.wrapped, kContext).ok());
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
  const DataKey key = kms->envelope().generate("alias/acs/ecs", kContext, 64).value();
  const std::string message = "unwrap failed: encryption context or blob does not match";

  EncryptionContext other = kContext;
  other["sector_size"] = "512";
  expect_error(kms->envelope().unwrap(key.wrapped, other), ErrorCode::kCorrupt, message);
  expect_error(kms->envelope().unwrap(key.wrapped, {}), ErrorCode::kCorrupt, message);

  WrappedKey tampered = key.wrapped;
  tampered.ciphertext[10] ^= 1;
  expect_error(kms->envelope().unwrap(tampered, kContext), ErrorCode::kCorrupt, message);
  tampered = key.wrapped;
  tampered.tag[0] ^= 1;
  expect_error(kms->envelope().unwrap(tampered, kContext), ErrorCode::kCorrupt, message);

  // The version is bound too: a blob relabelled to another version of the
  // same key does not unwrap.
  ASSERT_TRUE(kms->rotate_key("alias/acs/ecs").ok());
  tampered = key.wrapped;
  tampered.cmk_version = 2;
  expect_error(kms->envelope().unwrap(tampered, kContext), ErrorCode::kCorrupt, message);
  tampered.cmk_version = 9;
  expect_error(kms->envelope().unwrap(tampered, kContext), ErrorCode::kNotFound,
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
  const DataKey data_key = kms->envelope().generate(key.key_id, kContext, 64).value();

  // Enabled -> Disabled: no GenerateDataKey, no Decrypt.
  ASSERT_TRUE(kms->disable_key(uri).ok());
  EXPECT_EQ(kms->describe_key(uri).value().state, KeyState::kDisabled);
  expect_error(kms->envelope().generate(uri, kContext, 64), ErrorCode::kDenied,
               "key " + uri + " is Disabled");
  expect_error(kms->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + uri + " is Disabled");
  EXPECT_TRUE(kms->disable_key(uri).ok());  // idempotent

  // Disabled -> Enabled.
  ASSERT_TRUE(kms->enable_key(uri).ok());
  EXPECT_TRUE(kms->envelope().unwrap(data_key.wrapped, kContext).ok());

  // Enabled -> PendingDeletion.
  const KeyInfo pending = kms->schedule_key_deletion(uri, 7).value();
  EXPECT_EQ(pending.state, KeyState::kPendingDeletion);
  EXPECT_EQ(pending.deletion_date, kStart + 7 * kDay);
  expect_error(kms->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kDenied,
               "key " + uri + " is PendingDeletion");
  expect_error(kms->envelope().generate(uri, kContext, 64), ErrorCode::kDenied,
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
  const DataKey data_key = kms->envelope().generate(key.uri, kContext, 64).value();
  ASSERT_TRUE(kms->schedule_key_deletion(key.uri, 7).ok());
  advance_days(6);
  EXPECT_TRUE(kms->purge_due().value().empty());
  advance_days(1);
  EXPECT_EQ(kms->purge_due().value(), std::vector<std::string>{key.key_id});
  expect_error(kms->describe_key(key.uri), ErrorCode::kNotFound,
               "key " + key.uri + " was deleted on 2027-01-22T08:00:00Z");
  expect_error(kms->envelope().unwrap(data_key.wrapped, kContext), ErrorCode::kNotFound,
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
    EXPECT_EQ(listed.error().code(), ErrorCode::kCorrupt);
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
  const DataKey data_key = kms->envelope().generate("alias/acs/ecs", kContext, 64).value();
  std::filesystem::remove(root_ / "etc" / "root.key");
  auto other = open();  // creates a new, different root key
  const Result<SecretBytes> refused = other->envelope().unwrap(data_key.wrapped, kContext);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kCorrupt);
  EXPECT_NE(refused.error().message().find("does not open under root key"), std::string::npos);
}

// ----- no key material in plaintext anywhere -----

TEST_F(LocalKmsTest, NoKeyBytesInKeystoreOrAuditLog) {
  auto kms = open();
  const KeyInfo key = create(*kms);
  std::vector<SecretBytes> data_keys;
  for (const std::string& ref : {std::string("alias/acs/ecs"), key.uri}) {
    DataKey data_key = kms->envelope().generate(ref, kContext, 64).value();
    ASSERT_TRUE(kms->envelope().unwrap(data_key.wrapped, kContext).ok());
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

}  // namespace
}  // namespace envcrypt
