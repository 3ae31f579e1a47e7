// kms backup and kms restore (keystore_backup.h, keystore_backup_cli.h):
// a backup restored on a fresh configuration opens every disk formatted
// before; each refusal has its own message and writes nothing (a wrong
// recovery key, every byte of the file flipped, the file cut short, a
// keystore that holds keys, a merge that collides); imported material
// leaves only when its key allows it; a host whose root key is sealed to a
// TPM (swtpm) restores under it; the decoder refuses hostile payloads that
// authenticate.
#include "kms/local/keystore_backup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_test_support.h"
#include "kms/recovery.h"
#include "tpm/tpm_test_support.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;
using cli_testing::CliRun;
using cli_testing::read_text;
using cli_testing::write_text;
using json = nlohmann::json;

ByteView view(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

class KeystoreBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-ksbackup");
    host1_ = dir_ / "host1.conf";
    host2_ = dir_ / "host2.conf";
    fs::create_directories(dir_ / "host2");
    write_text(host1_, cli_testing::local_kms_config(dir_));
    write_text(host2_, cli_testing::local_kms_config(dir_ / "host2"));
    backup_ = dir_ / "keystore.backup";
    write_key_pair("recovery");
    write_key_pair("stranger");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_key_pair(const std::string& name) { cli_testing::write_recovery_key_pair(dir_, name); }
  std::string pub(const std::string& name) { return (dir_ / (name + ".pub")).string(); }
  std::string key(const std::string& name) { return (dir_ / (name + ".key")).string(); }

  static CliRun run(const fs::path& config, std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config.string()});
    return cli_testing::run_envcryptctl(std::move(args));
  }
  static std::string ok(const fs::path& config, std::vector<std::string> args) {
    CliRun r = run(config, std::move(args));
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  }
  static void expect_failure(const fs::path& config, const std::vector<std::string>& args, int code,
                             const std::string& err) {
    CliRun r = run(config, args);
    EXPECT_EQ(r.code, code) << r.err;
    EXPECT_EQ(r.err, err);
    EXPECT_EQ(r.out, "");
  }
  // The last line of create-key is the key's URI.
  static std::string create_key(const fs::path& config, std::vector<std::string> args) {
    args.insert(args.begin(), {"kms", "create-key"});
    std::string out = ok(config, std::move(args));
    out.pop_back();
    return out.substr(out.rfind('\n') + 1);
  }
  static std::string id_of(const std::string& uri) { return uri.substr(uri.rfind('/') + 1); }

  CliRun backup() {
    return run(host1_,
               {"kms", "backup", "--to", backup_.string(), "--recovery-key", pub("recovery")});
  }
  std::vector<std::string> restore_args(const std::string& private_key = "") {
    return {"kms", "restore", backup_.string(), "--recovery-private-key",
            private_key.empty() ? key("recovery") : private_key};
  }
  // The anchor the backup recorded: the audit line just before its own
  // BackupKeystore line.
  std::string anchor_before_backup() {
    std::istringstream log(read_text(dir_ / "kms" / "audit.log"));
    json previous;
    for (std::string line; std::getline(log, line);) {
      const json j = json::parse(line);
      if (j["operation"] == "BackupKeystore" && !j.contains("phase")) {
        return "audit-v1:" + std::to_string(previous["seq"].get<std::uint64_t>()) + ":" +
               previous["mac"].get<std::string>();
      }
      previous = j;
    }
    return "no BackupKeystore line";
  }
  // Nothing of a keystore exists for host 2.
  void expect_host2_untouched() {
    EXPECT_FALSE(fs::exists(dir_ / "host2" / "kms"));
    EXPECT_FALSE(fs::exists(dir_ / "host2" / "root.key"));
  }
  std::string restore_prefix() {
    return "envcryptctl: kms restore: backup " + backup_.string() + ": ";
  }

  fs::path dir_, host1_, host2_, backup_;
};

TEST_F(KeystoreBackupTest, RestoredOnAFreshHostEveryDiskOpens) {
  const std::string web = create_key(host1_, {"--alias", "alias/web"});
  const fs::path image1 = dir_ / "web.img";
  const fs::path image2 = dir_ / "service.img";
  cli_testing::make_sparse_image(image1, 32 << 20);
  cli_testing::make_sparse_image(image2, 32 << 20);
  ok(host1_, {"format", image1.string(), "--cmk", "alias/web"});
  ok(host1_, {"format", image2.string()});
  ok(host1_, {"kms", "rotate-key", "alias/web"});
  ok(host1_, {"kms", "create-grant", "alias/web", "host/db-1", "decrypt"});

  const CliRun made = backup();
  ASSERT_EQ(made.code, 0) << made.err;
  const RecoveryPublicKey recovery = read_recovery_public_key(pub("recovery")).value();
  EXPECT_EQ(made.out, "backed up 2 keys (3 versions) of region local-1 to " + backup_.string() +
                          ", encrypted to recovery key " + short_key_id(recovery.id) +
                          "; audit head " + anchor_before_backup() + "\n");
  EXPECT_EQ(made.err, "");
  EXPECT_EQ(fs::status(backup_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  EXPECT_EQ(ok(host2_, restore_args()),
            "restored 2 keys of region local-1 from " + backup_.string() + "\n");
  ok(host2_, {"verify", image1.string()});
  ok(host2_, {"verify", image2.string()});
  const json described = json::parse(ok(host2_, {"--json", "kms", "describe-key", "alias/web"}));
  EXPECT_EQ(described["uri"].get<std::string>(), web);
  EXPECT_EQ(described["primary_version"], 2);
  EXPECT_NE(ok(host2_, {"kms", "list-grants", "alias/web"}).find("host/db-1"), std::string::npos);
  // Host 2 made its own root key; the keystore is sealed under it.
  EXPECT_NE(read_text(dir_ / "host2" / "root.key"), read_text(dir_ / "root.key"));
  const std::string audit = read_text(dir_ / "host2" / "kms" / "audit.log");
  EXPECT_NE(audit.find("\"source_audit_head\":\"" + anchor_before_backup() + "\""),
            std::string::npos);
  EXPECT_NE(audit.find("\"RestoreKeystore\""), std::string::npos);
  ok(host2_, {"kms", "audit", "--verify"});
}

TEST_F(KeystoreBackupTest, BackupNeverOverwritesAFile) {
  write_text(backup_, "keep me");
  CliRun r = backup();
  EXPECT_EQ(r.code, 8);
  EXPECT_EQ(r.err, "envcryptctl: kms backup: " + backup_.string() +
                       " exists: kms backup never overwrites a file\n");
  EXPECT_EQ(read_text(backup_), "keep me");
}

TEST_F(KeystoreBackupTest, RestoreRefusesAKeystoreThatHoldsKeys) {
  ok(host1_, {"kms", "list-keys"});
  ASSERT_EQ(backup().code, 0);
  create_key(host2_, {"--alias", "alias/mine"});
  const json keys = json::parse(ok(host2_, {"--json", "kms", "list-keys"}));
  std::map<std::string, std::string> described;  // id -> "uri aliases"
  for (const json& k : keys) {
    std::string text = k["uri"].get<std::string>();
    for (const json& alias : k["aliases"]) {
      text += " " + alias.get<std::string>();
    }
    described[k["key_id"].get<std::string>()] = text;
  }
  ASSERT_EQ(described.size(), 2U);
  const fs::path store = dir_ / "host2" / "kms" / "local-1.keystore.json";
  const std::string before = read_text(store);
  expect_failure(host2_, restore_args(), 8,
                 "envcryptctl: kms restore: keystore " + store.string() +
                     " already holds 2 keys (" + described.begin()->second + ", " +
                     described.rbegin()->second +
                     "): nothing restored (--merge adds the backup's keys to them)\n");
  EXPECT_EQ(read_text(store), before);
  // Merging host 1's region into host 2's: both have a service key.
  std::vector<std::string> merge = restore_args();
  merge.emplace_back("--merge");
  const auto service_of = [](const fs::path& config) {
    return json::parse(ok(config, {"--json", "kms", "describe-key", "alias/acs/ecs"}))["uri"]
        .get<std::string>();
  };
  const std::string service2 = service_of(host2_);
  const std::string service1 = service_of(host1_);
  expect_failure(host2_, merge, 8,
                 "envcryptctl: kms restore: alias alias/acs/ecs names key " + service2 +
                     " here and key " + service1 + " in the backup: nothing restored\n");
  EXPECT_EQ(read_text(store), before);
}

TEST_F(KeystoreBackupTest, MergeKeepsIdenticalKeysAndRefusesOtherMaterial) {
  const std::string web = create_key(host1_, {"--alias", "alias/web"});
  ASSERT_EQ(backup().code, 0);
  ok(host2_, restore_args());
  std::vector<std::string> merge = restore_args();
  merge.emplace_back("--merge");
  EXPECT_EQ(ok(host2_, merge), "restored 0 keys of region local-1 from " + backup_.string() +
                                   " (2 already here with the same material, kept)\n");

  // Host 1 rotates: the key's versions differ from host 2's now.
  ok(host1_, {"kms", "rotate-key", "alias/web"});
  fs::remove(backup_);
  ASSERT_EQ(backup().code, 0);
  const fs::path store = dir_ / "host2" / "kms" / "local-1.keystore.json";
  const std::string before = read_text(store);
  expect_failure(host2_, merge, 8,
                 "envcryptctl: kms restore: key " + web +
                     " is here with other material than in the backup: nothing restored\n");
  EXPECT_EQ(read_text(store), before);
}

TEST_F(KeystoreBackupTest, WrongRecoveryPrivateKeyIsRefused) {
  ok(host1_, {"kms", "list-keys"});
  ASSERT_EQ(backup().code, 0);
  const RecoveryPublicKey recovery = read_recovery_public_key(pub("recovery")).value();
  const RecoveryPublicKey stranger = read_recovery_public_key(pub("stranger")).value();
  expect_failure(host2_, restore_args(key("stranger")), 4,
                 restore_prefix() + "encrypted to recovery key " + to_hex(recovery.id) +
                     ", not to " + to_hex(stranger.id) + " (wrong recovery private key)\n");
  expect_host2_untouched();
}

TEST_F(KeystoreBackupTest, BackupOfAnotherRegionIsRefusedBeforeAnythingIsWritten) {
  ok(host1_, {"kms", "list-keys"});
  ASSERT_EQ(backup().code, 0);
  write_text(host2_, cli_testing::local_kms_config(dir_ / "host2", "region = \"local-2\"\n"));
  expect_failure(host2_, restore_args(), 2,
                 "envcryptctl: kms restore: the backup is of region local-1; this host's local "
                 "KMS serves region local-2 (region in envcrypt.conf)\n");
  expect_host2_untouched();
}

TEST_F(KeystoreBackupTest, RestoresUnderARootKeySealedToTheTpm) {
  if (::access(tpm_testing::kSwtpm, X_OK) != 0) {
    GTEST_SKIP() << tpm_testing::kSwtpm << " is not installed (make deps installs swtpm)";
  }
  (void)::setenv("TSS2_LOG", "all+NONE", 0);
  const tpm_testing::Swtpm tpm(dir_ / "tpm");
  create_key(host1_, {"--alias", "alias/web"});
  const fs::path image = dir_ / "web.img";
  cli_testing::make_sparse_image(image, 32 << 20);
  ok(host1_, {"format", image.string(), "--cmk", "alias/web"});
  ASSERT_EQ(backup().code, 0);

  // Host 2's root key is in its TPM before its keystore holds anything.
  write_text(host2_,
             cli_testing::local_kms_config(dir_ / "host2") + "tpm_tcti = \"" + tpm.tcti() + "\"\n");
  const fs::path root_key = dir_ / "host2" / "root.key";
  write_text(root_key, std::string(32, 'r'));
  fs::permissions(root_key, fs::perms::owner_read | fs::perms::owner_write);
  ok(host2_, {"kms", "seal-root-key"});
  ASSERT_FALSE(fs::exists(root_key));

  EXPECT_EQ(ok(host2_, restore_args()),
            "restored 2 keys of region local-1 from " + backup_.string() + "\n");
  ok(host2_, {"verify", image.string()});
  EXPECT_FALSE(fs::exists(root_key));
  EXPECT_TRUE(fs::exists(dir_ / "host2" / "root.key.tpm"));
}

// What decode_backup_header says of the file with bit 0 of byte `at`
// flipped, by the field that byte belongs to (keystore_backup.h).
std::pair<int, std::string> flipped_refusal(const std::string& file, std::size_t at,
                                            const std::string& key_id_hex,
                                            const std::string& stranger_hex) {
  const std::string tampered =
      "authentication failed: the backup was altered or damaged (tampered)";
  if (at < 16) {
    return {2, "not a keystore backup (no ENVCRYPT-KSBACK magic)"};
  }
  if (at < 18) {
    return {2, "unsupported backup format version " + std::to_string(at == 16 ? 257 : 0) +
                   " (this envcryptctl reads 1)"};
  }
  if (at < 20) {
    return {5, std::string("unknown flags 0x") + (at == 18 ? "0100" : "0001") +
                   ": tampered, or made by a newer envcryptctl"};
  }
  if (at >= 32 && at < 64) {
    return {4, "encrypted to recovery key " + stranger_hex + ", not to " + key_id_hex +
                   " (wrong recovery private key)"};
  }
  if (at >= 124 && at < 128) {
    std::uint64_t length = 0;
    for (std::size_t i = 124; i < 128; ++i) {
      length = (length << 8) | static_cast<std::uint8_t>(file[i]);
    }
    const std::uint64_t flipped = length ^ (std::uint64_t{1} << (8 * (127 - at)));
    if (flipped == 0 || flipped > kMaxBackupPayload) {
      return {5, "payload length " + std::to_string(flipped) + " is not 1-524288: tampered"};
    }
    if (flipped > length) {
      return {5, "truncated: " + std::to_string(file.size()) + " bytes, the header announces " +
                     std::to_string(128 + flipped)};
    }
    return {5, std::to_string(length - flipped) + " bytes after the end of the backup: tampered"};
  }
  return {5, tampered};
}

TEST_F(KeystoreBackupTest, EveryFlippedByteIsRefusedAndNothingWritten) {
  ok(host1_, {"kms", "create-key", "--alias", "alias/web"});
  ASSERT_EQ(backup().code, 0);
  const std::string good = read_text(backup_);
  const std::string key_id_hex = to_hex(read_recovery_public_key(pub("recovery")).value().id);
  ASSERT_GT(good.size(), 300U);
  for (std::size_t at = 0; at < good.size(); ++at) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 1);
    fs::remove(backup_);
    write_text(backup_, bad);
    std::string flipped_id = to_hex(view(bad.substr(32, 32)));
    const auto [code, message] = flipped_refusal(good, at, key_id_hex, flipped_id);
    const CliRun r = run(host2_, restore_args());
    ASSERT_EQ(r.code, code) << "byte " << at << ": " << r.err;
    ASSERT_EQ(r.err, restore_prefix() + message + "\n") << "byte " << at;
  }
  expect_host2_untouched();
}

TEST_F(KeystoreBackupTest, TruncatedBackupsAreRefusedAsTruncated) {
  ok(host1_, {"kms", "list-keys"});
  ASSERT_EQ(backup().code, 0);
  const std::string good = read_text(backup_);
  for (const std::size_t length :
       {std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{100}, std::size_t{127},
        std::size_t{128}, std::size_t{129}, good.size() / 2, good.size() - 1}) {
    fs::remove(backup_);
    write_text(backup_, good.substr(0, length));
    const std::string why = length < 128 ? "shorter than the 128-byte header"
                                         : "the header announces " + std::to_string(good.size());
    expect_failure(
        host2_, restore_args(), 5,
        restore_prefix() + "truncated: " + std::to_string(length) + " bytes, " + why + "\n");
  }
  fs::remove(backup_);
  write_text(backup_, "");
  expect_failure(host2_, restore_args(), 2,
                 restore_prefix() + "empty file: not a keystore backup\n");
  fs::remove(backup_);
  write_text(backup_, "{\"format\": 1}\n");
  expect_failure(host2_, restore_args(), 2,
                 restore_prefix() + "not a keystore backup (no ENVCRYPT-KSBACK magic)\n");
  expect_host2_untouched();
}

// Imports 32 bytes of `fill` into `keyref` through the BYOK commands.
void import_material(const fs::path& config, const fs::path& dir, const std::string& keyref,
                     char fill, bool allow_backup) {
  const fs::path pem = dir / "import.pem";
  const fs::path token = dir / "import.token";
  const fs::path wrapped = dir / "material.wrapped";
  fs::remove(pem);
  fs::remove(token);
  CliRun r = cli_testing::run_envcryptctl({"--config", config.string(), "kms",
                                           "get-parameters-for-import", keyref, "--public-key",
                                           pem.string(), "--token", token.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string material(32, fill);
  const Bytes encrypted = rsa_oaep_sha256_encrypt(read_text(pem), view(material)).value();
  fs::remove(wrapped);
  write_text(wrapped, std::string(encrypted.begin(), encrypted.end()));
  std::vector<std::string> args = {
      "--config",   config.string(),  "kms",     "import-key-material", keyref,
      "--material", wrapped.string(), "--token", token.string()};
  if (allow_backup) {
    args.emplace_back("--allow-backup");
  }
  r = cli_testing::run_envcryptctl(args);
  ASSERT_EQ(r.code, 0) << r.err;
}

TEST_F(KeystoreBackupTest, ImportedMaterialLeavesOnlyWhenItsKeyAllowsIt) {
  const std::string kept = create_key(host1_, {"--origin", "EXTERNAL", "--alias", "alias/kept"});
  const std::string sent = create_key(host1_, {"--origin", "EXTERNAL", "--alias", "alias/sent"});
  import_material(host1_, dir_, "alias/kept", 'k', false);
  import_material(host1_, dir_, "alias/sent", 's', true);
  const fs::path kept_image = dir_ / "kept.img";
  const fs::path sent_image = dir_ / "sent.img";
  cli_testing::make_sparse_image(kept_image, 32 << 20);
  cli_testing::make_sparse_image(sent_image, 32 << 20);
  ok(host1_, {"format", kept_image.string(), "--cmk", "alias/kept"});
  ok(host1_, {"format", sent_image.string(), "--cmk", "alias/sent"});

  const CliRun made = backup();
  ASSERT_EQ(made.code, 0) << made.err;
  EXPECT_EQ(made.err, "kms backup: key " + kept +
                          ": imported material not in the backup (its key does not allow it); "
                          "after a restore the key is PendingImport\n");
  // The file holds no version of the withheld key.
  const std::string file = read_text(backup_);
  const BackupContents contents =
      decode_backup(view(file), read_recovery_private_key(key("recovery")).value()).value();
  EXPECT_TRUE(contents.records.keys.at(id_of(kept)).material_withheld);
  EXPECT_TRUE(contents.records.keys.at(id_of(kept)).versions.empty());
  EXPECT_EQ(contents.records.keys.at(id_of(sent)).versions.size(), 1U);

  EXPECT_EQ(ok(host2_, restore_args()),
            "restored 3 keys of region local-1 from " + backup_.string() + "\nkey " + kept +
                ": imported material was not in the backup: PendingImport, import it again\n");
  ok(host2_, {"verify", sent_image.string()});
  expect_failure(
      host2_, {"verify", kept_image.string()}, 4,
      "envcryptctl: verify " + kept_image.string() + ": key " + kept + " is PendingImport\n");
  // The same material imported again opens the disk.
  import_material(host2_, dir_ / "host2", "alias/kept", 'k', false);
  ok(host2_, {"verify", kept_image.string()});
}

// Payloads that authenticate (anyone with the recovery public key can make
// one) but that envcryptctl never writes.
class BackupPayloadTest : public ::testing::Test {
 protected:
  static BackupContents sample() {
    BackupContents contents;
    contents.records.region = "local-1";
    contents.created_at = 1800000000;
    contents.principal = "host/web-1";
    CmkRecord key;
    key.id = "4d0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11";
    key.primary_version = 1;
    key.versions.push_back({1, 1800000000, SecretBytes(32)});
    contents.records.keys.emplace(key.id, std::move(key));
    contents.records.aliases.emplace("web", "4d0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11");
    return contents;
  }
  // The sample's payload with `from` replaced by `to` in its document.
  static std::string decode_edited(const std::string& from, const std::string& to) {
    const SecretBytes payload = encode_backup_payload(sample()).value();
    std::string text(reinterpret_cast<const char*>(payload.data()), payload.size());
    const std::size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    const std::size_t length = text.size() - 4 - 32;
    text[0] = static_cast<char>(length >> 24);
    text[1] = static_cast<char>(length >> 16);
    text[2] = static_cast<char>(length >> 8);
    text[3] = static_cast<char>(length);
    const SecretBytes edited(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    Result<BackupContents> decoded = decode_backup_payload(edited, 1800000000, 1);
    return decoded.ok() ? "accepted" : decoded.error().message();
  }
};

TEST_F(BackupPayloadTest, RoundTripsThroughTheFile) {
  const RecoveryKeyPair pair = generate_recovery_key_pair().value();
  const RecoveryPublicKey public_key = parse_recovery_public_key(pair.public_pem).value();
  const Bytes file = encode_backup(sample(), public_key).value();
  EXPECT_EQ(std::string(file.begin(), file.begin() + 16), "ENVCRYPT-KSBACK\n");
  const BackupContents back =
      decode_backup(file, parse_recovery_private_key(pair.private_pem.clone()).value()).value();
  EXPECT_EQ(back.records.region, "local-1");
  EXPECT_EQ(back.principal, "host/web-1");
  EXPECT_EQ(back.records.aliases, sample().records.aliases);
  ASSERT_EQ(back.records.keys.size(), 1U);
  EXPECT_EQ(back.records.keys.begin()->second.versions.at(0).material.size(), 32U);
}

TEST_F(BackupPayloadTest, HostileDocumentsAreRefusedFieldByField) {
  EXPECT_EQ(decode_edited("\"web\"", "\"web\""), "accepted");
  EXPECT_EQ(decode_edited("\"primary_version\":1", "\"primary_version\":2"),
            "payload: key 4d0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 has no version 2");
  EXPECT_EQ(decode_edited("\"primary_version\":1", "\"primary_version\":1.5"),
            "payload: primary_version is not an integer in range");
  EXPECT_EQ(decode_edited("\"state\":\"Enabled\"", "\"state\":\"Gone\""),
            "payload: unknown key state 'Gone'");
  EXPECT_EQ(decode_edited("\"region\":\"local-1\"", "\"region\":\"../x\""),
            "payload: region '../x' is not a region name");
  EXPECT_EQ(decode_edited("\"web\":\"4d0c", "\"web\":\"5d0c"),
            "payload: alias web names no key of the backup");
  EXPECT_EQ(decode_edited("\"material\":\"included\"", "\"material\":\"not-in-backup\""),
            "payload: key 4d0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 has versions but no material in "
            "the backup");
  EXPECT_EQ(decode_edited("\"created_at\":1800000000,\"deleted\"",
                          "\"created_at\":1800000001,\"deleted\""),
            "payload: created_at differs from the header's");
}

}  // namespace
}  // namespace envcrypt
