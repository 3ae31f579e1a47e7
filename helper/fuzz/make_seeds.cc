// Writes the binary seed corpora of corpus/ (header copies, TTLV messages,
// audit logs) from the project's own encoders, so every seed is a real,
// valid input: `fuzz-make-seeds helper/fuzz/corpus`.  The text seeds
// (envcrypttab, config) are kept by hand.  Deterministic (fixed keys, uuids
// and clock), so regenerating changes a seed only when an encoder changed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "backup_key.h"
#include "header/header.h"
#include "kms/kmip/kmip_messages.h"
#include "kms/kmip/ttlv.h"
#include "kms/local/keystore_backup.h"

namespace envcrypt::fuzz {
namespace {

using Bytes = std::vector<std::uint8_t>;
using kmip::Operation;
using kmip::Ttlv;
namespace tag = kmip::tag;

void put(const std::filesystem::path& path, const std::string& contents) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
}

void put(const std::filesystem::path& path, const Bytes& contents) {
  put(path, std::string(contents.begin(), contents.end()));
}

DiskHeader sample_header(std::uint64_t sequence, std::string label, std::string cmk_uri) {
  DiskHeader h;
  h.sequence = sequence;
  h.uuid = *uuid_from_string("4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11");
  h.label = std::move(label);
  h.geometry.data_size = 64ULL << 20;
  h.wrapped.cmk_uri = std::move(cmk_uri);
  h.wrapped.cmk_version = 1;
  h.wrapped.nonce = Bytes(12, 0x11);
  h.wrapped.tag = Bytes(16, 0x22);
  h.wrapped.ciphertext = Bytes(kDataKeySize, 0x33);
  h.kcv.fill(0x44);
  return h;
}

// The flags byte (0: checksums as written), then both copies.
Bytes header_pair(const DiskHeader& primary, const DiskHeader& secondary) {
  Bytes out{0};
  const HeaderBytes first = *encode_header(primary, kPrimaryOffset);
  const HeaderBytes second = *encode_header(secondary, kSecondaryOffset);
  out.insert(out.end(), first.begin(), first.end());
  out.insert(out.end(), second.begin(), second.end());
  return out;
}

void write_header_seeds(const std::filesystem::path& corpus) {
  const DiskHeader local =
      sample_header(3, "data", "local://local-1/1234abcd-0000-4000-8000-000000000000");
  const DiskHeader kmip = sample_header(7, "logs", "kmip://kms.example:5696/42");
  const DiskHeader older = sample_header(6, "logs", "kmip://kms.example:5696/41");
  DiskHeader v2_only = local;
  v2_only.version = ENVCRYPT_HDR_VERSION_RECOVERY;
  v2_only.sequence = 4;
  DiskHeader with_recovery = v2_only;
  RecoveryWrap wrap;
  wrap.key_id.fill(0x55);
  wrap.context_digest.fill(0x66);
  wrap.ephemeral_key.fill(0x77);
  wrap.nonce = Bytes(12, 0x88);
  wrap.tag = Bytes(16, 0x99);
  wrap.ciphertext = Bytes(kDataKeySize, 0xaa);
  with_recovery.recovery = wrap;
  for (const char* target : {"header", "probe"}) {
    put(corpus / target / "local-pair.bin", header_pair(local, local));
    put(corpus / target / "kmip-stale-secondary.bin", header_pair(kmip, older));
    Bytes primary_only = header_pair(local, local);
    primary_only.resize(1 + kHeaderSize);
    put(corpus / target / "primary-only.bin", primary_only);
    put(corpus / target / "v2-recovery-pair.bin", header_pair(with_recovery, with_recovery));
    put(corpus / target / "v2-no-recovery-pair.bin", header_pair(v2_only, v2_only));
    put(corpus / target / "v2-upgrade-half-done.bin", header_pair(with_recovery, local));
  }
}

// A Response Message with one batch item, as the unit tests build them.
Ttlv response(Operation operation, std::vector<Ttlv> result) {
  std::vector<Ttlv> item = {
      Ttlv::enumeration(tag::kOperation, static_cast<std::uint32_t>(operation))};
  for (Ttlv& part : result) {
    item.push_back(std::move(part));
  }
  return Ttlv::structure(
      tag::kResponseMessage,
      {Ttlv::structure(
           tag::kResponseHeader,
           {Ttlv::structure(tag::kProtocolVersion, {Ttlv::integer(tag::kProtocolVersionMajor, 1),
                                                    Ttlv::integer(tag::kProtocolVersionMinor, 4)}),
            Ttlv::date_time(tag::kTimeStamp, 1700000000), Ttlv::integer(tag::kBatchCount, 1)}),
       Ttlv::structure(tag::kBatchItem, std::move(item))});
}

Ttlv success(Operation operation, std::vector<Ttlv> payload) {
  return response(operation, {Ttlv::enumeration(tag::kResultStatus, 0),
                              Ttlv::structure(tag::kResponsePayload, std::move(payload))});
}

std::vector<std::pair<std::string, Ttlv>> kmip_messages() {
  const Ttlv attribute_state = Ttlv::structure(
      tag::kAttribute,
      {Ttlv::text(tag::kAttributeName, "State"), Ttlv::enumeration(tag::kAttributeValue, 2)});
  const Ttlv attribute_name = Ttlv::structure(
      tag::kAttribute,
      {Ttlv::text(tag::kAttributeName, "Name"),
       Ttlv::structure(tag::kAttributeValue,
                       {Ttlv::text(tag::kNameValue, "a"), Ttlv::enumeration(tag::kNameType, 1)})});
  return {
      {"create", success(Operation::kCreate, {Ttlv::enumeration(tag::kObjectType, 2),
                                              Ttlv::text(tag::kUniqueIdentifier, "42")})},
      {"activate", success(Operation::kActivate, {Ttlv::text(tag::kUniqueIdentifier, "1")})},
      {"discover-versions",
       success(Operation::kDiscoverVersions,
               {Ttlv::structure(tag::kProtocolVersion,
                                {Ttlv::integer(tag::kProtocolVersionMajor, 1),
                                 Ttlv::integer(tag::kProtocolVersionMinor, 4)})})},
      {"locate", success(Operation::kLocate, {Ttlv::text(tag::kUniqueIdentifier, "1"),
                                              Ttlv::text(tag::kUniqueIdentifier, "2")})},
      {"encrypt",
       success(Operation::kEncrypt,
               {Ttlv::text(tag::kUniqueIdentifier, "1"), Ttlv::bytes(tag::kData, Bytes(64, 1)),
                Ttlv::bytes(tag::kAuthenticatedEncryptionTag, Bytes(16, 2))})},
      {"decrypt", success(Operation::kDecrypt, {Ttlv::text(tag::kUniqueIdentifier, "1"),
                                                Ttlv::bytes(tag::kData, Bytes(64, 1))})},
      {"get-attributes",
       success(Operation::kGetAttributes,
               {Ttlv::text(tag::kUniqueIdentifier, "1"), attribute_state, attribute_name})},
      {"decrypt-denied",
       response(Operation::kDecrypt, {Ttlv::enumeration(tag::kResultStatus, 1),
                                      Ttlv::enumeration(tag::kResultReason, 0x0C),
                                      Ttlv::text(tag::kResultMessage, "server says")})},
      {"activate-request",
       kmip::make_request(Operation::kActivate, kmip::unique_identifier_request("1"))},
  };
}

void write_kmip_seeds(const std::filesystem::path& corpus) {
  for (const auto& [name, message] : kmip_messages()) {
    const Bytes encoded = kmip::encode(message);
    put(corpus / "ttlv" / (name + ".bin"), encoded);
    put(corpus / "kmip_response" / (name + ".bin"), encoded);
  }
}

std::string read_whole(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A log of three records written by AuditLog itself, then a NUL and its head.
void write_audit_seeds(const std::filesystem::path& corpus) {
  std::string pattern = (std::filesystem::temp_directory_path() / "envcrypt-seeds.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  const std::filesystem::path log = std::filesystem::path(pattern) / "audit.log";
  std::int64_t now = 1764700000;
  // Keyed like fuzz_audit.cc (a root key of 32 bytes 0x5a), so the seeds
  // are logs that verify intact there.
  std::array<std::uint8_t, 32> root{};
  root.fill(0x5a);
  Result<AuditKeys> keys = derive_audit_keys(root);
  if (!keys.ok()) {
    std::fprintf(stderr, "audit keys: %s\n", keys.error().message().c_str());
    std::exit(1);
  }
  Result<AuditLog> audit = AuditLog::open(
      log, "host/db-1", [&now] { return now++; }, std::move(keys).value());
  const EncryptionContext context = {{"disk_uuid", "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11"}};
  for (const char* operation : {"CreateKey", "GenerateDataKey", "Decrypt"}) {
    const auto appended = audit->append({operation, "1234abcd", 1, context, "ok", {}});
    if (!appended.ok()) {
      std::fprintf(stderr, "audit append: %s\n", appended.error().message().c_str());
      std::exit(1);
    }
  }
  const std::string text = read_whole(log);
  const std::string head = read_whole(log.string() + ".head");
  put(corpus / "audit" / "three-records.txt", text + std::string(1, '\0') + head);
  put(corpus / "audit" / "no-head.txt", text);
  std::filesystem::remove_all(pattern);
}

// A keystore of a service key (two versions) and an imported key whose
// material stayed out, with an alias, a grant and a purge record.
BackupContents sample_backup() {
  BackupContents contents;
  contents.records.region = "local-1";
  contents.created_at = 1764700000;
  contents.principal = "host/db-1";
  contents.audit_head = AuditAnchor{7, std::string(64, 'a')};
  CmkRecord service;
  service.id = "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11";
  service.service = true;
  service.primary_version = 2;
  for (std::uint32_t version : {1U, 2U}) {
    SecretBytes material(32);
    std::fill(material.data(), material.data() + material.size(),
              static_cast<std::uint8_t>(0x40 + version));
    service.versions.push_back({version, 1764700000, std::move(material)});
  }
  service.grants.push_back(
      {"00ff", service.id, "user/alice", {GrantOperation::kDecrypt}, "host/db-1", 1764700000});
  CmkRecord imported;
  imported.id = "7a1e2f3c-4b5d-4e6f-8a9b-0c1d2e3f4a5b";
  imported.origin = KeyOrigin::kExternal;
  imported.state = KeyState::kPendingImport;
  imported.material_withheld = true;
  imported.material_check = std::string(64, 'c');
  contents.records.keys.emplace(service.id, std::move(service));
  contents.records.keys.emplace(imported.id, std::move(imported));
  contents.records.aliases = {{"acs/ecs", "4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11"},
                              {"byok", "7a1e2f3c-4b5d-4e6f-8a9b-0c1d2e3f4a5b"}};
  contents.records.deleted = {{"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", 1764600000}};
  return contents;
}

// Seeds of fuzz_keystore_backup.cc: 0 then a whole file (which changes at
// every regeneration: its ephemeral key and nonce are fresh), and 1 then
// the creation time, key count and payload.
void write_backup_seeds(const std::filesystem::path& corpus) {
  const BackupContents contents = sample_backup();
  Result<SecretBytes> payload = encode_backup_payload(contents);
  Result<RecoveryPublicKey> key = parse_recovery_public_key(kBackupPublicKeyPem);
  Result<Bytes> file = key.ok() ? encode_backup(contents, *key) : Result<Bytes>(key.error());
  if (!payload.ok() || !file.ok()) {
    std::fprintf(stderr, "backup seeds: %s\n",
                 (payload.ok() ? file.error() : payload.error()).message().c_str());
    std::exit(1);
  }
  Bytes whole{0};
  whole.insert(whole.end(), file->begin(), file->end());
  put(corpus / "keystore_backup" / "file.bin", whole);
  Bytes inner{1};
  for (int shift = 56; shift >= 0; shift -= 8) {
    inner.push_back(
        static_cast<std::uint8_t>(static_cast<std::uint64_t>(contents.created_at) >> shift));
  }
  inner.insert(inner.end(), {0, 0, 0, 2});
  inner.insert(inner.end(), payload->data(), payload->data() + payload->size());
  put(corpus / "keystore_backup" / "payload.bin", inner);
}

}  // namespace
}  // namespace envcrypt::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path corpus = argv[1];
  envcrypt::fuzz::write_header_seeds(corpus);
  envcrypt::fuzz::write_kmip_seeds(corpus);
  envcrypt::fuzz::write_audit_seeds(corpus);
  envcrypt::fuzz::write_backup_seeds(corpus);
  return 0;
}
