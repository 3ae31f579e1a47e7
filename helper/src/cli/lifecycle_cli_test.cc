// The key lifecycle commands end to end through run_cli on image files:
// rotation and rewrap (data untouched), BYOK with the real openssl CLI,
// grants between two principals sharing a keystore, the audit trail and its
// tampering, safe disable, rewrap --all, and every bad input of issue 5 with
// its exact message and exit code.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli.h"
#include "cli/cli_test_support.h"
#include "header/header.h"
#include "util/crypto.h"

namespace envcrypt {
namespace {

namespace fs = std::filesystem;

using cli_testing::CliRun;
using cli_testing::read_text;
using cli_testing::write_text;

class LifecycleCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = cli_testing::fresh_test_dir("envcrypt-lifecycle");
    config_ = write_config("host/admin");
    tab_ = dir_ / "envcrypttab";
    write_text(tab_, "");
    ::setenv("ENVCRYPT_TAB", tab_.c_str(), 1);
    image_ = make_image("disk.img");
  }
  void TearDown() override {
    ::unsetenv("ENVCRYPT_TAB");
    fs::remove_all(dir_);
  }

  fs::path write_config(const std::string& principal) {
    const fs::path path = dir_ / (principal.substr(principal.find('/') + 1) + ".conf");
    write_text(path, cli_testing::local_kms_config(dir_, "principal = \"" + principal + "\"\n"));
    return path;
  }

  fs::path make_image(const std::string& name) {
    const fs::path path = dir_ / name;
    cli_testing::make_sparse_image(path, 32 << 20);
    return path;
  }

  CliRun run(std::vector<std::string> args, const fs::path& config = {}) {
    args.insert(args.begin(), {"--config", (config.empty() ? config_ : config)});
    return cli_testing::run_envcryptctl(std::move(args));
  }

  // Runs a command that must succeed; returns its stdout.
  std::string ok(const std::vector<std::string>& args, const fs::path& config = {}) {
    CliRun result = run(args, config);
    EXPECT_EQ(result.code, 0) << result.err;
    return result.out;
  }

  void expect_failure(const std::vector<std::string>& args, int code, const std::string& err,
                      const fs::path& config = {}) {
    CliRun result = run(args, config);
    EXPECT_EQ(result.code, code) << result.err;
    EXPECT_EQ(result.err, err);
    EXPECT_EQ(result.out, "");
  }

  // Creates a key and returns its CMK URI (the last line of create-key).
  std::string create_key(std::vector<std::string> options) {
    options.insert(options.begin(), {"kms", "create-key"});
    std::string out = ok(options);
    out.pop_back();
    return out.substr(out.rfind('\n') + 1);
  }

  nlohmann::json inspect(const fs::path& image) {
    return nlohmann::json::parse(ok({"--json", "inspect", image.string()}));
  }

  // Everything after the header area: what rewrap must never change.
  std::string data_area(const fs::path& image) {
    return read_text(image).substr(kDefaultDataOffset);
  }

  void fill_data_area(const fs::path& image) {
    std::fstream file(image, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(kDefaultDataOffset));
    for (int i = 0; i < (16 << 20) / 16; ++i) {
      file << "data-block-" << std::setw(5) << std::setfill('0') << i % 100000;
    }
  }

  void openssl_wrap(const fs::path& pem, const fs::path& in, const fs::path& out) {
    const std::string command = "openssl pkeyutl -encrypt -pubin -inkey " + pem.string() + " -in " +
                                in.string() + " -out " + out.string() +
                                " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  void write_material(const fs::path& path, std::size_t bytes, char fill) {
    write_text(path, std::string(bytes, fill));
  }

  fs::path dir_;
  fs::path config_;
  fs::path tab_;
  fs::path image_;
};

TEST_F(LifecycleCliTest, RotateThenRewrapMovesOnlyTheEnvelope) {
  const std::string uri = create_key({"--alias", "alias/web"});
  ok({"format", image_.string(), "--cmk", "alias/web"});
  fill_data_area(image_);
  const std::string data_before = data_area(image_);

  EXPECT_EQ(ok({"kms", "rotate-key", "alias/web"}),
            "rotated " + uri + ": version 2 is primary (2 versions)\n");
  EXPECT_EQ(ok({"rewrap", image_.string()}),
            "rewrapped " + image_.string() + ": " + uri + " version 1 -> " + uri +
                " version 2 (header sequence 1 -> 2, data untouched)\n");
  EXPECT_TRUE(data_area(image_) == data_before);
  const auto header = inspect(image_);
  EXPECT_EQ(header["cmk_version"], 2);
  EXPECT_EQ(header["sequence"], 2);
  EXPECT_EQ(header["copies"]["primary"]["state"], "valid");
  EXPECT_EQ(header["copies"]["secondary"]["state"], "valid");
  ok({"verify", image_.string()});

  const std::string bytes_before = read_text(image_);
  EXPECT_EQ(ok({"rewrap", image_.string()}),
            image_.string() + ": already under " + uri + " version 2, the primary version\n");
  EXPECT_TRUE(read_text(image_) == bytes_before);
}

TEST_F(LifecycleCliTest, RewrapToAnotherCmkJson) {
  create_key({"--alias", "alias/web"});
  const std::string db = create_key({"--alias", "alias/db"});
  ok({"format", image_.string(), "--cmk", "alias/web"});
  const auto j =
      nlohmann::json::parse(ok({"--json", "rewrap", image_.string(), "--cmk", "alias/db"}));
  EXPECT_EQ(j["changed"], true);
  EXPECT_EQ(j["after"]["cmk"], db);
  EXPECT_EQ(j["after"]["cmk_version"], 1);
  EXPECT_EQ(j["sequence_after"], 2);
  EXPECT_EQ(inspect(image_)["cmk"], db);
  ok({"verify", image_.string()});
}

TEST_F(LifecycleCliTest, RewrapToDisabledCmkChangesNothing) {
  create_key({"--alias", "alias/web"});
  const std::string db = create_key({"--alias", "alias/db"});
  ok({"format", image_.string(), "--cmk", "alias/web"});
  ok({"kms", "disable-key", "alias/db"});
  const std::string before = read_text(image_);
  expect_failure({"rewrap", image_.string(), "--cmk", "alias/db"}, 4,
                 "envcryptctl: rewrap " + image_.string() + ": key " + db + " is Disabled\n");
  EXPECT_TRUE(read_text(image_) == before);
}

TEST_F(LifecycleCliTest, RotationRefusals) {
  const std::string uri = create_key({"--alias", "alias/web"});
  ok({"kms", "disable-key", "alias/web"});
  expect_failure({"kms", "rotate-key", "alias/web"}, 4,
                 "envcryptctl: kms rotate-key alias/web: key " + uri +
                     " is Disabled; only an Enabled key can be rotated\n");
  expect_failure({"kms", "create-key", "--rotation-interval", "4000"}, 2,
                 "envcryptctl: kms create-key: rotation interval must be 1-3650 days, got 4000\n");
  const std::string timed = create_key({"--rotation-interval", "90"});
  EXPECT_NE(timed.find("local://local-1/"), std::string::npos);
  create_key({"--rotation-interval-days", "30"});
  EXPECT_EQ(ok({"kms", "rotate-due"}), "rotate-due: 0 rotated\n");
  EXPECT_EQ(ok({"kms", "purge-due"}), "purge-due: 0 purged\n");
  expect_failure({"kms", "rotate-key", "alias/nope"}, 3,
                 "envcryptctl: kms rotate-key alias/nope: alias alias/nope not found in region "
                 "local-1\n");
}

TEST_F(LifecycleCliTest, ByokImportDeleteReimport) {
  const std::string uri = create_key({"--origin", "external", "--alias", "alias/byok"});
  const fs::path pem = dir_ / "pub.pem";
  const fs::path token = dir_ / "token";
  const fs::path material = dir_ / "material.bin";
  const fs::path wrapped = dir_ / "material.wrapped";
  EXPECT_EQ(nlohmann::json::parse(ok({"--json", "kms", "describe-key", "alias/byok"}))["state"],
            "PendingImport");
  const std::string parameters = ok({"kms", "get-parameters-for-import", "alias/byok",
                                     "--public-key", pem.string(), "--token", token.string()});
  EXPECT_EQ(parameters.substr(0, parameters.find("expires:")),
            "public key:   " + pem.string() +
                " (RSA-2048, RSAES_OAEP_SHA_256)\nimport token: " + token.string() + "\n");
  EXPECT_EQ(read_text(pem).substr(0, 26), "-----BEGIN PUBLIC KEY-----");
  EXPECT_EQ(fs::status(token).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  write_material(material, 32, 'k');
  openssl_wrap(pem, material, wrapped);
  const std::vector<std::string> import = {"kms",         "import-key-material", "alias/byok",
                                           "--material",  wrapped.string(),      "--token",
                                           token.string()};
  EXPECT_EQ(ok(import), "imported key material into " + uri + ": Enabled\n");

  ok({"format", image_.string(), "--cmk", "alias/byok"});
  EXPECT_EQ(ok({"kms", "delete-key-material", "alias/byok"}),
            "deleted the key material of " + uri + ": PendingImport\n");
  expect_failure({"verify", image_.string()}, 4,
                 "envcryptctl: verify " + image_.string() + ": key " + uri + " is PendingImport\n");

  ok({"kms", "get-parameters-for-import", "alias/byok", "--public-key", pem.string(), "--token",
      token.string()});
  openssl_wrap(pem, material, wrapped);
  EXPECT_EQ(ok(import), "imported key material into " + uri + ": Enabled\n");
  ok({"verify", image_.string()});
}

TEST_F(LifecycleCliTest, ByokBadInputs) {
  const std::string uri = create_key({"--origin", "EXTERNAL", "--alias", "alias/byok"});
  const fs::path pem = dir_ / "pub.pem";
  const fs::path token = dir_ / "token";
  const fs::path old_token = dir_ / "token.old";
  const fs::path wrapped = dir_ / "material.wrapped";
  const std::vector<std::string> parameters = {"kms",         "get-parameters-for-import",
                                               "alias/byok",  "--public-key",
                                               pem.string(),  "--token",
                                               token.string()};
  auto import = [&](const fs::path& token_file) {
    return std::vector<std::string>{
        "kms",     "import-key-material", "alias/byok", "--material", wrapped.string(),
        "--token", token_file.string()};
  };
  const std::string prefix = "envcryptctl: kms import-key-material alias/byok: ";
  write_text(wrapped, "not yet wrapped");
  write_text(token, "no token yet");

  expect_failure(
      import(token), 2,
      prefix + "no import parameters for key " + uri + ": run get-parameters-for-import first\n");
  ok(parameters);
  fs::copy_file(token, old_token);
  ok(parameters);  // new parameters replace the old ones

  write_material(dir_ / "good.bin", 32, 'g');
  openssl_wrap(pem, dir_ / "good.bin", wrapped);
  expect_failure(
      import(old_token), 4,
      prefix + "import token does not match the parameters last issued for key " + uri + "\n");
  expect_failure(import(dir_ / "missing"), 3,
                 prefix + (dir_ / "missing").string() + ": No such file or directory\n");
  // A token (or material) path naming an endless file is refused unread.
  expect_failure(import("/dev/zero"), 2, prefix + "/dev/zero: more than 65536 bytes\n");

  write_material(dir_ / "short.bin", 16, 's');
  openssl_wrap(pem, dir_ / "short.bin", wrapped);
  expect_failure(import(token), 2, prefix + "key material must be 32 bytes, got 16\n");

  const fs::path other_key = dir_ / "other.key";
  const fs::path other_pem = dir_ / "other.pem";
  ASSERT_EQ(std::system(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " +
                         other_key.string() + " 2>/dev/null && openssl pkey -in " +
                         other_key.string() + " -pubout -out " + other_pem.string())
                            .c_str()),
            0);
  openssl_wrap(other_pem, dir_ / "good.bin", wrapped);
  expect_failure(import(token), 2,
                 prefix + "cannot unwrap the key material for " + uri +
                     ": it is not wrapped with RSAES_OAEP_SHA_256 under this import public key\n");

  // Expiry: the token's 24 hours, moved into the past in the keystore file.
  const fs::path store = dir_ / "kms" / "local-1.keystore.json";
  auto keystore = nlohmann::json::parse(read_text(store));
  const std::string id = uri.substr(uri.rfind('/') + 1);
  keystore["keys"][id]["pending_import"]["expires_at"] = 1000000000;
  write_text(store, keystore.dump(2));
  openssl_wrap(pem, dir_ / "good.bin", wrapped);
  expect_failure(import(token), 4,
                 prefix + "import token for key " + uri +
                     " expired at 2001-09-09T01:46:40Z: get new import parameters\n");

  ok(parameters);
  openssl_wrap(pem, dir_ / "good.bin", wrapped);
  expect_failure({"kms", "import-key-material", "alias/byok", "--material", wrapped.string(),
                  "--token", token.string(), "--expires", "2001-01-01T00:00:00Z"},
                 2, prefix + "material expiry 2001-01-01T00:00:00Z is not in the future\n");
  EXPECT_EQ(ok(import(token)), "imported key material into " + uri + ": Enabled\n");

  write_material(dir_ / "other.bin", 32, 'o');
  ok(parameters);
  openssl_wrap(pem, dir_ / "other.bin", wrapped);
  expect_failure(import(token), 8,
                 prefix + "key material differs from the material imported before into key " + uri +
                     ": only the same material can be re-imported\n");
  const std::string kms_key = create_key({"--alias", "alias/plain"});
  expect_failure({"kms", "get-parameters-for-import", "alias/plain", "--public-key", pem.string(),
                  "--token", token.string()},
                 2,
                 "envcryptctl: kms get-parameters-for-import alias/plain: key " + kms_key +
                     " has origin KMS; only keys created with origin EXTERNAL take imported "
                     "material\n");
}

TEST_F(LifecycleCliTest, GrantsAllowDenyAndAudit) {
  const std::string uri = create_key({"--alias", "alias/web"});
  const std::string id = uri.substr(uri.rfind('/') + 1);
  ok({"format", image_.string(), "--cmk", "alias/web"});
  const fs::path alice = write_config("user/alice");
  const std::string verify_err_prefix = "envcryptctl: verify " + image_.string() + ": ";

  expect_failure(
      {"verify", image_.string()}, 4,
      verify_err_prefix + "principal user/alice holds no decrypt grant on key " + uri + "\n",
      alice);
  const std::string granted =
      ok({"kms", "create-grant", "alias/web", "user/alice", "decrypt,describe"});
  const std::string grant_id = granted.substr(6, 32);
  EXPECT_EQ(granted,
            "grant " + grant_id + ": user/alice may decrypt, describe on key " + id + "\n");
  ok({"verify", image_.string()}, alice);
  const fs::path second = make_image("second.img");
  expect_failure({"format", second.string(), "--cmk", "alias/web"}, 4,
                 "envcryptctl: format " + second.string() +
                     ": principal user/alice holds no generate grant on key " + uri + "\n",
                 alice);
  const auto grants = nlohmann::json::parse(ok({"--json", "kms", "list-grants", "alias/web"}));
  ASSERT_EQ(grants.size(), 1U);
  EXPECT_EQ(grants[0]["principal"], "user/alice");
  EXPECT_EQ(grants[0]["operations"], nlohmann::json({"decrypt", "describe"}));

  expect_failure({"kms", "grant", "alias/web", "bob", "decrypt"}, 2,
                 "envcryptctl: kms create-grant alias/web: unknown principal 'bob': use "
                 "host/<hostname>, user/<name> or service/<name>\n");
  CliRun unknown_operation = run({"kms", "create-grant", "alias/web", "user/bob", "fly"});
  EXPECT_EQ(unknown_operation.code, 2);
  EXPECT_EQ(unknown_operation.err.substr(0, 70),
            "envcryptctl: kms create-grant alias/web: unknown grant operation 'fly'");

  EXPECT_EQ(ok({"kms", "revoke-grant", "alias/web", grant_id}), "revoked grant " + grant_id + "\n");
  expect_failure(
      {"verify", image_.string()}, 4,
      verify_err_prefix + "principal user/alice holds no decrypt grant on key " + uri + "\n",
      alice);

  // Every denial is an audit line naming the denied principal.
  const auto lines = nlohmann::json::parse(ok({"--json", "kms", "audit", "--key", "alias/web"}));
  int denials = 0;
  for (const auto& line : lines) {
    if (line["principal"] == "user/alice" && line["result"] != "ok") {
      ++denials;
    }
  }
  EXPECT_EQ(denials, 3);
  const std::string disk = inspect(image_)["uuid"];
  const std::string by_disk = ok({"kms", "audit", "--disk", disk});
  EXPECT_NE(by_disk.find(" user/alice Decrypt " + id + " v1 disk " + disk +
                         ": principal user/alice holds no decrypt grant on key " + uri + "\n"),
            std::string::npos)
      << by_disk;
  EXPECT_EQ(ok({"kms", "audit", "--since", "2999-01-01T00:00:00Z"}), "");
}

// A principal (from the configuration) or a result (which may quote a key
// server) holding control bytes is shown escaped, one record per line.
TEST_F(LifecycleCliTest, AuditQueryPrintsLogFieldsEscaped) {
  const fs::path config = write_config("host/a\\u001b[2Jb");
  ASSERT_EQ(run({"kms", "list-keys"}, config).code, 0);
  const std::string shown = ok({"kms", "audit"});
  EXPECT_EQ(shown.find('\x1b'), std::string::npos) << shown;
  EXPECT_NE(shown.find(" host/a\\x1b[2Jb ListKeys -: ok\n"), std::string::npos) << shown;
}

TEST_F(LifecycleCliTest, AuditVerifyFindsTampering) {
  create_key({"--alias", "alias/web"});
  ok({"kms", "describe-key", "alias/web"});
  ok({"kms", "list-keys"});
  const fs::path log = dir_ / "kms" / "audit.log";
  const std::string intact = ok({"kms", "audit", "--verify"});
  // create-key: its intent line and its own; describe-key; list-keys.
  EXPECT_EQ(intact.substr(0, intact.find(';')), log.string() + ": 4 lines, MAC chain intact");

  std::string text = read_text(log);
  const std::size_t second_line = text.find('\n') + 1;
  const std::size_t at = text.find("\"ok\"", second_line);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 4, "\"OK\"");
  write_text(log, text);
  CliRun tampered = run({"--json", "kms", "audit", "--verify"});
  EXPECT_EQ(tampered.code, 5);
  EXPECT_EQ(tampered.err, "envcryptctl: kms audit: " + log.string() +
                              ": line 2 was altered: its MAC does not verify under this root "
                              "key\n");
  const auto report = nlohmann::json::parse(tampered.out);
  EXPECT_EQ(report["intact"], false);
  EXPECT_EQ(report["first_bad_line"], 2);
}

// What anyone who can write the log could do to envcryptctl 0.1's chain:
// alter a line, recompute the SHA-256 of every line after it into its
// "prev", and write a matching head.
TEST_F(LifecycleCliTest, AuditVerifyRefusesARewriteWithARecomputedChain) {
  create_key({"--alias", "alias/web"});
  ok({"kms", "describe-key", "alias/web"});
  ok({"kms", "list-keys"});
  const fs::path log = dir_ / "kms" / "audit.log";
  std::vector<std::string> lines;
  std::istringstream in(read_text(log));
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  ASSERT_GE(lines.size(), 3U);
  lines[1].replace(lines[1].find("\"ok\""), 4, "\"OK\"");
  std::string text = lines[0] + "\n" + lines[1] + "\n";
  for (std::size_t index = 2; index < lines.size(); ++index) {
    auto record = nlohmann::ordered_json::parse(lines[index]);
    if (record.contains("prev")) {
      record["prev"] = sha256_hex(lines[index - 1]);
      lines[index] = record.dump();
    }
    text += lines[index] + "\n";
  }
  write_text(log, text);
  write_text(
      dir_ / "kms" / "audit.log.head",
      nlohmann::json({{"seq", lines.size()}, {"hash", sha256_hex(lines.back())}}).dump() + "\n");
  expect_failure({"kms", "audit", "--verify"}, 5,
                 "envcryptctl: kms audit: " + log.string() +
                     ": line 2 was altered: its MAC does not verify under this root key\n");
}

// Lines cut off the end and the head rewritten to match: 0.1 accepted it.
TEST_F(LifecycleCliTest, AuditVerifyRefusesAReplacedHead) {
  create_key({"--alias", "alias/web"});
  ok({"kms", "describe-key", "alias/web"});
  ok({"kms", "list-keys"});
  const fs::path log = dir_ / "kms" / "audit.log";
  const fs::path head = dir_ / "kms" / "audit.log.head";
  std::string text = read_text(log);
  text.resize(text.find('\n', text.find('\n') + 1) + 1);  // two lines
  write_text(log, text);
  const std::string second = text.substr(text.find('\n') + 1, text.size() - text.find('\n') - 2);
  write_text(head, nlohmann::json({{"seq", 2}, {"hash", sha256_hex(second)}}).dump() + "\n");
  expect_failure(
      {"kms", "audit", "--verify"}, 5,
      "envcryptctl: kms audit: " + log.string() + ": the head file is damaged or unsealed\n");
  const auto mac = nlohmann::json::parse(second).value("mac", std::string(64, '0'));
  write_text(head, nlohmann::json(
                       {{"version", 2}, {"seq", 2}, {"mac", mac}, {"seal", sha256_hex("2" + mac)}})
                           .dump() +
                       "\n");
  expect_failure({"kms", "audit", "--verify"}, 5,
                 "envcryptctl: kms audit: " + log.string() +
                     ": the head file is not sealed under this root key (replaced)\n");
}

// An older copy of the log and its head passes on its own; the anchor kept
// off the host finds the rollback.
TEST_F(LifecycleCliTest, AuditAnchorFindsARollback) {
  create_key({"--alias", "alias/web"});
  const fs::path log = dir_ / "kms" / "audit.log";
  const fs::path head = dir_ / "kms" / "audit.log.head";
  const std::string old_log = read_text(log);
  const std::string old_head = read_text(head);
  ok({"kms", "disable-key", "alias/web"});
  // The anchor names the last line: disable-key's (after its intent line).
  const std::string anchor = ok({"kms", "audit", "--anchor"});
  const std::string text = read_text(log);
  const std::string lines = std::to_string(std::count(text.begin(), text.end(), '\n'));
  const std::string prefix = "audit-v1:" + lines + ":";
  ASSERT_EQ(anchor.size(), prefix.size() + 64 + 1) << anchor;
  EXPECT_EQ(anchor.substr(0, prefix.size()), prefix);
  const std::string value = anchor.substr(0, anchor.size() - 1);
  EXPECT_EQ(ok({"kms", "audit", "--verify", "--anchor", value}),
            log.string() + ": " + lines + " lines, MAC chain intact, matches anchor " + value +
                "; head " + value + "\n");

  write_text(log, old_log);
  write_text(head, old_head);
  ok({"kms", "audit", "--verify"});
  expect_failure({"kms", "audit", "--verify", "--anchor", value}, 5,
                 "envcryptctl: kms audit: " + log.string() +
                     ": the log ends at line 2 but the anchor records line " + lines +
                     ": the log was "
                     "truncated or rolled back\n");
  expect_failure({"kms", "audit", "--verify", "--anchor", "audit-v1:4:xyz"}, 2,
                 "envcryptctl: kms audit: the anchor is not of the form "
                 "audit-v1:<sequence>:<64 hex digits> (as kms audit --anchor prints it)\n");
}

TEST_F(LifecycleCliTest, SafeDisableRefusesWhileAKnownDiskIsWrapped) {
  const std::string uri = create_key({"--alias", "alias/web"});
  ok({"format", image_.string(), "--cmk", "alias/web"});
  write_text(tab_, "data " + image_.string() + " none\nghost /nonexistent/disk none nofail\n");
  const std::string why = "key " + uri + " still wraps 1 disk this host knows: data (" +
                          image_.string() + "); rewrap them under another key first, or use " +
                          "--force\n";
  expect_failure({"kms", "disable-key", "alias/web"}, 8,
                 "envcryptctl: kms disable-key alias/web: " + why);
  expect_failure({"kms", "schedule-key-deletion", "alias/web"}, 8,
                 "envcryptctl: kms schedule-key-deletion alias/web: " + why);
  EXPECT_EQ(nlohmann::json::parse(ok({"--json", "kms", "describe-key", "alias/web"}))["state"],
            "Enabled");
  EXPECT_EQ(ok({"kms", "disable-key", "alias/web", "--force"}), "disabled alias/web\n");
  ok({"kms", "enable-key", "alias/web"});

  // Once the disk is rewrapped elsewhere, the key is free.
  create_key({"--alias", "alias/db"});
  ok({"rewrap", image_.string(), "--cmk", "alias/db"});
  EXPECT_EQ(ok({"kms", "disable-key", "alias/web"}), "disabled alias/web\n");

  const std::string byok = create_key({"--origin", "EXTERNAL", "--alias", "alias/byok"});
  ok({"kms", "get-parameters-for-import", "alias/byok", "--public-key", (dir_ / "pub.pem"),
      "--token", (dir_ / "token")});
  write_material(dir_ / "m.bin", 32, 'm');
  openssl_wrap(dir_ / "pub.pem", dir_ / "m.bin", dir_ / "m.wrapped");
  ok({"kms", "import-key-material", "alias/byok", "--material", (dir_ / "m.wrapped"), "--token",
      (dir_ / "token")});
  ok({"rewrap", image_.string(), "--cmk", "alias/byok"});
  expect_failure({"kms", "delete-key-material", "alias/byok"}, 8,
                 "envcryptctl: kms delete-key-material alias/byok: key " + byok +
                     " still wraps 1 disk this host knows: data (" + image_.string() +
                     "); rewrap them under another key first, or use --force\n");
  EXPECT_EQ(ok({"kms", "delete-key-material", "alias/byok", "--force"}),
            "deleted the key material of " + byok + ": PendingImport\n");
}

TEST_F(LifecycleCliTest, RewrapAllReportsEachDisk) {
  const std::string web = create_key({"--alias", "alias/web"});
  const std::string db = create_key({"--alias", "alias/db"});
  const fs::path second = make_image("second.img");
  ok({"format", image_.string(), "--cmk", "alias/web"});
  ok({"format", second.string(), "--cmk", "alias/db"});
  write_text(tab_, "one " + image_.string() + " none\ntwo " + second.string() +
                       " none\nghost /nonexistent/disk none nofail\n");
  ok({"kms", "rotate-key", "alias/web"});
  EXPECT_EQ(ok({"rewrap", "--all"}),
            "one: rewrapped " + image_.string() + ": " + web + " version 1 -> " + web +
                " version 2 (header sequence 1 -> 2, data untouched)\n" + "two: current " +
                second.string() + ": already under " + db + " version 1, the primary version\n" +
                "ghost: missing /nonexistent/disk: /nonexistent/disk does not exist (nofail: "
                "ignored)\n" +
                "rewrap --all: 1 rewrapped, 1 current, 1 missing, 0 failed\n");

  const auto moved = nlohmann::json::parse(ok({"--json", "rewrap", "--all", "--cmk", "alias/db"}));
  EXPECT_EQ(moved["summary"], "1 rewrapped, 1 current, 1 missing, 0 failed");
  EXPECT_EQ(inspect(image_)["cmk"], db);

  write_text(tab_, "one " + image_.string() + " none\nlost /nonexistent/disk none\n");
  ok({"kms", "rotate-key", "alias/db"});
  CliRun failed = run({"rewrap", "--all"});
  EXPECT_EQ(failed.code, 3);
  EXPECT_EQ(failed.err,
            "envcryptctl: rewrap --all: 1 of 2 disks failed, first lost: /nonexistent/disk does "
            "not exist\n");
  EXPECT_EQ(inspect(image_)["cmk_version"], 2);

  expect_failure({"rewrap"}, 2, "envcryptctl: rewrap: name a DEVICE or give --all, not both\n");
}

// The public key and token are replaced whole, never written through a
// symlink planted at their names.
TEST_F(LifecycleCliTest, ImportParametersRefuseASymlinkAtTheirFile) {
  create_key({"--origin", "EXTERNAL", "--alias", "alias/byok"});
  const fs::path victim = dir_ / "victim";
  write_text(victim, "not a public key");
  const fs::path pem = dir_ / "pub.pem";
  fs::create_symlink(victim, pem);
  CliRun r = run({"kms", "get-parameters-for-import", "alias/byok", "--public-key", pem.string(),
                  "--token", (dir_ / "token").string()});
  EXPECT_EQ(r.code, static_cast<int>(ErrorCode::kConflict)) << r.err;
  EXPECT_TRUE(r.err.ends_with(pem.string() + " is a symbolic link: refusing to replace it\n"))
      << r.err;
  EXPECT_EQ(read_text(victim), "not a public key");
  EXPECT_TRUE(fs::is_symlink(pem));
}

}  // namespace
}  // namespace envcrypt
