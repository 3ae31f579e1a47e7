#include "kms/local/keystore_backup.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "util/json_integer.h"
#include "util/uuid.h"

namespace envcrypt {
namespace {

using json = nlohmann::json;

constexpr std::string_view kMagic{"ENVCRYPT-KSBACK\n", 16};
constexpr std::size_t kMaterialSize = 32;
constexpr std::size_t kLengthSize = 4;
constexpr std::string_view kIncluded = "included";
constexpr std::string_view kWithheld = "not-in-backup";

// Offsets of the header fields (keystore_backup.h).
constexpr std::size_t kVersionAt = 16;
constexpr std::size_t kFlagsAt = 18;
constexpr std::size_t kCreatedAt = 20;
constexpr std::size_t kKeyCountAt = 28;
constexpr std::size_t kKeyIdAt = 32;
constexpr std::size_t kEphemeralAt = 64;
constexpr std::size_t kNonceAt = 96;
constexpr std::size_t kTagAt = 108;
constexpr std::size_t kPayloadLengthAt = 124;

// ----- big-endian integers -----

void put_be(Bytes& out, std::uint64_t value, std::size_t size) {
  for (std::size_t i = size; i > 0; --i) {
    out.push_back(static_cast<std::uint8_t>(value >> (8 * (i - 1))));
  }
}

std::uint64_t get_be(ByteView in, std::size_t at, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) {
    value = (value << 8) | in[at + i];
  }
  return value;
}

// What the AEAD binds besides the recovery key id and ephemeral key: every
// other header field, so none can be changed without failing the open.
EncryptionContext backup_context(std::int64_t created_at, std::uint32_t key_count,
                                 std::size_t payload_size) {
  return {{"purpose", "envcrypt keystore backup"},
          {"format", std::to_string(kBackupFormatVersion)},
          {"flags", "0"},
          {"created_at", std::to_string(created_at)},
          {"keys", std::to_string(key_count)},
          {"payload_bytes", std::to_string(payload_size)}};
}

// ----- the metadata document, encoding -----

template <typename T>
json or_null(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

json grant_json(const Grant& grant) {
  json operations = json::array();
  for (const GrantOperation operation : grant.operations) {
    operations.push_back(std::string(to_string(operation)));
  }
  return {{"id", grant.grant_id},
          {"principal", grant.principal},
          {"operations", operations},
          {"created_by", grant.created_by},
          {"created_at", grant.created_at}};
}

json key_json(const CmkRecord& key) {
  json j = {{"id", key.id},
            {"state", std::string(to_string(key.state))},
            {"origin", std::string(to_string(key.origin))},
            {"description", key.description},
            {"owner", key.owner},
            {"service", key.service},
            {"created_at", key.created_at},
            {"rotation_interval_days", or_null(key.rotation_interval_days)},
            {"last_rotated_at", key.last_rotated_at},
            {"primary_version", key.primary_version},
            {"deletion_date", or_null(key.deletion_date)},
            {"material_expires_at", or_null(key.material_expires_at)},
            {"material_check", key.material_check},
            {"backup_allowed", key.backup_allowed},
            {"material", std::string(key.material_withheld ? kWithheld : kIncluded)},
            {"versions", json::array()},
            {"grants", json::array()}};
  for (const CmkVersionRecord& version : key.versions) {
    j["versions"].push_back({{"version", version.version}, {"created_at", version.created_at}});
  }
  for (const Grant& grant : key.grants) {
    j["grants"].push_back(grant_json(grant));
  }
  return j;
}

std::string metadata_of(const BackupContents& contents) {
  json j = {{"format", kBackupFormatVersion},
            {"region", contents.records.region},
            {"created_at", contents.created_at},
            {"principal", contents.principal},
            {"audit_head", nullptr},
            {"keys", json::array()},
            {"aliases", contents.records.aliases},
            {"deleted", contents.records.deleted}};
  if (contents.audit_head) {
    j["audit_head"] = {{"seq", contents.audit_head->seq}, {"mac", contents.audit_head->mac}};
  }
  for (const auto& [id, key] : contents.records.keys) {
    j["keys"].push_back(key_json(key));
  }
  return j.dump();
}

// ----- the metadata document, decoding: every field checked -----

// Thrown inside decode_backup_payload only, and turned there into an Error.
class PayloadError : public std::runtime_error {
 public:
  explicit PayloadError(const std::string& what) : std::runtime_error(what) {}
};

const json& field(const json& j, const std::string& name) {
  if (!j.is_object() || !j.contains(name)) {
    throw PayloadError("missing field " + name);
  }
  return j.at(name);
}

std::string string_at(const json& j, const std::string& name) {
  const json& value = field(j, name);
  if (!value.is_string()) {
    throw PayloadError(name + " is not a string");
  }
  return value.get<std::string>();
}

bool bool_at(const json& j, const std::string& name) {
  const json& value = field(j, name);
  if (!value.is_boolean()) {
    throw PayloadError(name + " is not true or false");
  }
  return value.get<bool>();
}

// An integer of T's range; a float, or an integer out of range, is refused
// rather than converted (json_integer.h).
template <typename T>
T integer_value(const json& value, const std::string& name) {
  if (const std::optional<T> number = exact_integer<T>(value)) {
    return *number;
  }
  throw PayloadError(name + " is not an integer in range");
}

template <typename T>
T integer_at(const json& j, const std::string& name) {
  return integer_value<T>(field(j, name), name);
}

template <typename T>
std::optional<T> optional_integer_at(const json& j, const std::string& name) {
  const json& value = field(j, name);
  return value.is_null() ? std::nullopt : std::optional<T>(integer_value<T>(value, name));
}

const json& array_at(const json& j, const std::string& name) {
  const json& value = field(j, name);
  if (!value.is_array()) {
    throw PayloadError(name + " is not an array");
  }
  return value;
}

const json& object_at(const json& j, const std::string& name) {
  const json& value = field(j, name);
  if (!value.is_object()) {
    throw PayloadError(name + " is not an object");
  }
  return value;
}

bool only_of(std::string_view text, std::string_view allowed) {
  return text.find_first_not_of(allowed) == std::string_view::npos;
}

// A key id as new_key_id() makes them: a lower-case RFC 4122 UUID.
void check_key_id(const std::string& id) {
  if (!is_canonical_uuid(id)) {
    throw PayloadError("key id '" + id + "' is not a UUID");
  }
}

void check_region(const std::string& region) {
  if (region.empty() || region.size() > 63 ||
      !only_of(region, "abcdefghijklmnopqrstuvwxyz0123456789-")) {
    throw PayloadError("region '" + region + "' is not a region name");
  }
}

void check_alias(const std::string& name) {
  const bool valid =
      !name.empty() && name.size() <= 256 && name.front() != '/' && name.back() != '/' &&
      name.find("//") == std::string::npos &&
      only_of(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-");
  if (!valid) {
    throw PayloadError("alias '" + name + "' is not an alias name");
  }
}

KeyState state_of(const std::string& text) {
  for (const KeyState state : {KeyState::kEnabled, KeyState::kDisabled, KeyState::kPendingDeletion,
                               KeyState::kPendingImport}) {
    if (to_string(state) == text) {
      return state;
    }
  }
  throw PayloadError("unknown key state '" + text + "'");
}

KeyOrigin origin_of(const std::string& text) {
  for (const KeyOrigin origin : {KeyOrigin::kKms, KeyOrigin::kExternal}) {
    if (to_string(origin) == text) {
      return origin;
    }
  }
  throw PayloadError("unknown key origin '" + text + "'");
}

// The material after the document: handed out 32 bytes at a time, each
// straight into locked memory.
class MaterialCursor {
 public:
  explicit MaterialCursor(ByteView rest) : rest_(rest) {}
  SecretBytes take(const std::string& what) {
    if (rest_.size() < kMaterialSize) {
      throw PayloadError("the material ends before " + what);
    }
    SecretBytes material(rest_.data(), kMaterialSize);
    rest_ = rest_.subspan(kMaterialSize);
    return material;
  }
  [[nodiscard]] std::size_t left() const { return rest_.size(); }

 private:
  ByteView rest_;
};

Grant grant_of(const json& j, const std::string& key_id) {
  Grant grant;
  grant.grant_id = string_at(j, "id");
  grant.key_id = key_id;
  grant.principal = string_at(j, "principal");
  if (grant.grant_id.empty() || grant.principal.empty()) {
    throw PayloadError("a grant of key " + key_id + " has no id or principal");
  }
  for (const json& name : array_at(j, "operations")) {
    Result<GrantOperation> operation =
        name.is_string() ? parse_grant_operation(name.get<std::string>())
                         : Result<GrantOperation>(Error(ErrorCode::kUsage, "not a string"));
    if (!operation.ok()) {
      throw PayloadError("grant " + grant.grant_id + ": " + operation.error().message());
    }
    grant.operations.push_back(*operation);
  }
  if (grant.operations.empty()) {
    throw PayloadError("grant " + grant.grant_id + " has no operation");
  }
  grant.created_by = string_at(j, "created_by");
  grant.created_at = integer_at<std::int64_t>(j, "created_at");
  return grant;
}

void read_versions(const json& j, CmkRecord& key, MaterialCursor& material) {
  for (const json& version : array_at(j, "versions")) {
    CmkVersionRecord record;
    record.version = integer_at<std::uint32_t>(version, "version");
    record.created_at = integer_at<std::int64_t>(version, "created_at");
    const std::uint32_t previous = key.versions.empty() ? 0 : key.versions.back().version;
    if (record.version <= previous) {
      throw PayloadError("versions of key " + key.id + " are not 1, 2, ... ascending");
    }
    if (key.material_withheld) {
      throw PayloadError("key " + key.id + " has versions but no material in the backup");
    }
    record.material =
        material.take("version " + std::to_string(record.version) + " of key " + key.id);
    key.versions.push_back(std::move(record));
  }
}

// What the keystore could never hold: a primary version the key does not
// have, usable state without material, withheld material of a key that
// was not imported.
void check_key(const CmkRecord& key) {
  const bool has_primary =
      std::any_of(key.versions.begin(), key.versions.end(),
                  [&](const CmkVersionRecord& v) { return v.version == key.primary_version; });
  if (key.versions.empty() ? key.primary_version != 0 : !has_primary) {
    throw PayloadError("key " + key.id + " has no version " + std::to_string(key.primary_version));
  }
  if (key.versions.empty() && key.state != KeyState::kPendingImport &&
      key.state != KeyState::kPendingDeletion) {
    throw PayloadError("key " + key.id + " is " + std::string(to_string(key.state)) +
                       " without material");
  }
  if (key.material_withheld && key.origin != KeyOrigin::kExternal) {
    throw PayloadError("key " + key.id + " has origin KMS and withheld material");
  }
}

CmkRecord key_of(const json& j, MaterialCursor& material) {
  CmkRecord key;
  key.id = string_at(j, "id");
  check_key_id(key.id);
  key.state = state_of(string_at(j, "state"));
  key.origin = origin_of(string_at(j, "origin"));
  key.description = string_at(j, "description");
  key.owner = string_at(j, "owner");
  key.service = bool_at(j, "service");
  key.created_at = integer_at<std::int64_t>(j, "created_at");
  key.rotation_interval_days = optional_integer_at<std::uint32_t>(j, "rotation_interval_days");
  key.last_rotated_at = integer_at<std::int64_t>(j, "last_rotated_at");
  key.primary_version = integer_at<std::uint32_t>(j, "primary_version");
  key.deletion_date = optional_integer_at<std::int64_t>(j, "deletion_date");
  key.material_expires_at = optional_integer_at<std::int64_t>(j, "material_expires_at");
  key.material_check = string_at(j, "material_check");
  key.backup_allowed = bool_at(j, "backup_allowed");
  const std::string held = string_at(j, "material");
  if (held != kIncluded && held != kWithheld) {
    throw PayloadError("material of key " + key.id + " is '" + held + "'");
  }
  key.material_withheld = held == kWithheld;
  read_versions(j, key, material);
  for (const json& grant : array_at(j, "grants")) {
    key.grants.push_back(grant_of(grant, key.id));
  }
  check_key(key);
  return key;
}

std::optional<AuditAnchor> audit_head_of(const json& j) {
  const json& head = field(j, "audit_head");
  if (head.is_null()) {
    return std::nullopt;
  }
  AuditAnchor anchor{integer_at<std::uint64_t>(head, "seq"), string_at(head, "mac")};
  if (anchor.seq == 0 || anchor.mac.size() != 2 * kSha256Size ||
      !only_of(anchor.mac, "0123456789abcdef")) {
    throw PayloadError("audit_head is not a line number and a 64-digit MAC");
  }
  return anchor;
}

void read_names(const json& j, KeystoreRecords& records) {
  for (const auto& item : object_at(j, "aliases").items()) {
    const std::string& name = item.key();
    const json& id = item.value();
    check_alias(name);
    if (!id.is_string() || !records.keys.contains(id.get<std::string>())) {
      throw PayloadError("alias " + name + " names no key of the backup");
    }
    records.aliases.emplace(name, id.get<std::string>());
  }
  for (const auto& item : object_at(j, "deleted").items()) {
    const std::string& id = item.key();
    check_key_id(id);
    if (records.keys.contains(id)) {
      throw PayloadError("key " + id + " is both held and deleted");
    }
    records.deleted.emplace(id, integer_value<std::int64_t>(item.value(), "deleted." + id));
  }
}

BackupContents contents_of(const json& j, MaterialCursor& material, std::int64_t created_at,
                           std::uint32_t key_count) {
  if (integer_at<std::uint32_t>(j, "format") != kBackupFormatVersion) {
    throw PayloadError("format is not " + std::to_string(kBackupFormatVersion));
  }
  BackupContents contents;
  contents.records.region = string_at(j, "region");
  check_region(contents.records.region);
  contents.created_at = integer_at<std::int64_t>(j, "created_at");
  if (contents.created_at != created_at) {
    throw PayloadError("created_at differs from the header's");
  }
  contents.principal = string_at(j, "principal");
  contents.audit_head = audit_head_of(j);
  const json& keys = array_at(j, "keys");
  if (keys.size() != key_count) {
    throw PayloadError(std::to_string(keys.size()) + " keys, the header says " +
                       std::to_string(key_count));
  }
  for (const json& entry : keys) {
    CmkRecord key = key_of(entry, material);
    const std::string id = key.id;
    if (!contents.records.keys.emplace(id, std::move(key)).second) {
      throw PayloadError("key " + id + " appears twice");
    }
  }
  read_names(j, contents.records);
  return contents;
}

Error payload_error(const std::string& why) { return {ErrorCode::kCorrupt, "payload: " + why}; }

}  // namespace

Result<SecretBytes> encode_backup_payload(const BackupContents& contents) {
  const std::string metadata = metadata_of(contents);
  std::size_t versions = 0;
  for (const auto& [id, key] : contents.records.keys) {
    versions += key.versions.size();
  }
  const std::size_t size = kLengthSize + metadata.size() + versions * kMaterialSize;
  if (size > kMaxBackupPayload) {
    return Error(ErrorCode::kUsage, "the keystore is too large for one backup (" +
                                        std::to_string(size) + " bytes, at most " +
                                        std::to_string(kMaxBackupPayload) + ")");
  }
  SecretBytes payload(size);
  Bytes length;
  put_be(length, metadata.size(), kLengthSize);
  std::uint8_t* at = payload.data();
  at = std::copy(length.begin(), length.end(), at);
  at = std::copy(metadata.begin(), metadata.end(), at);
  for (const auto& [id, key] : contents.records.keys) {
    for (const CmkVersionRecord& version : key.versions) {
      if (version.material.size() != kMaterialSize) {
        return Error(ErrorCode::kInternal, "version " + std::to_string(version.version) +
                                               " of key " + id + " has no 32-byte material");
      }
      at = std::copy(version.material.data(), version.material.data() + kMaterialSize, at);
    }
  }
  return payload;
}

Result<Bytes> encode_backup(const BackupContents& contents, const RecoveryPublicKey& key) {
  ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes payload, encode_backup_payload(contents));
  const auto key_count = static_cast<std::uint32_t>(contents.records.keys.size());
  ENVCRYPT_ASSIGN_OR_RETURN(
      const RecoveryWrap wrap,
      wrap_for_recovery(key, payload,
                        backup_context(contents.created_at, key_count, payload.size())));
  Bytes file(kMagic.begin(), kMagic.end());
  put_be(file, kBackupFormatVersion, 2);
  put_be(file, 0, 2);
  put_be(file, static_cast<std::uint64_t>(contents.created_at), 8);
  put_be(file, key_count, 4);
  file.insert(file.end(), wrap.key_id.begin(), wrap.key_id.end());
  file.insert(file.end(), wrap.ephemeral_key.begin(), wrap.ephemeral_key.end());
  file.insert(file.end(), wrap.nonce.begin(), wrap.nonce.end());
  file.insert(file.end(), wrap.tag.begin(), wrap.tag.end());
  put_be(file, wrap.ciphertext.size(), kLengthSize);
  file.insert(file.end(), wrap.ciphertext.begin(), wrap.ciphertext.end());
  return file;
}

Result<BackupHeader> decode_backup_header(ByteView file) {
  if (file.empty()) {
    return Error(ErrorCode::kUsage, "empty file: not a keystore backup");
  }
  const std::size_t prefix = std::min(file.size(), kMagic.size());
  if (std::memcmp(file.data(), kMagic.data(), prefix) != 0) {
    return Error(ErrorCode::kUsage, "not a keystore backup (no ENVCRYPT-KSBACK magic)");
  }
  if (file.size() < kBackupHeaderSize) {
    return Error(ErrorCode::kCorrupt, "truncated: " + std::to_string(file.size()) +
                                          " bytes, shorter than the " +
                                          std::to_string(kBackupHeaderSize) + "-byte header");
  }
  const std::uint64_t version = get_be(file, kVersionAt, 2);
  if (version != kBackupFormatVersion) {
    return Error(ErrorCode::kUsage, "unsupported backup format version " + std::to_string(version) +
                                        " (this envcryptctl reads " +
                                        std::to_string(kBackupFormatVersion) + ")");
  }
  if (get_be(file, kFlagsAt, 2) != 0) {
    return Error(ErrorCode::kCorrupt, "unknown flags 0x" + to_hex(file.subspan(kFlagsAt, 2)) +
                                          ": tampered, or made by a newer envcryptctl");
  }
  const std::uint64_t length = get_be(file, kPayloadLengthAt, kLengthSize);
  if (length == 0 || length > kMaxBackupPayload) {
    return Error(ErrorCode::kCorrupt, "payload length " + std::to_string(length) + " is not 1-" +
                                          std::to_string(kMaxBackupPayload) + ": tampered");
  }
  const std::size_t expected = kBackupHeaderSize + length;
  if (file.size() < expected) {
    return Error(ErrorCode::kCorrupt, "truncated: " + std::to_string(file.size()) +
                                          " bytes, the header announces " +
                                          std::to_string(expected));
  }
  if (file.size() > expected) {
    return Error(ErrorCode::kCorrupt, std::to_string(file.size() - expected) +
                                          " bytes after the end of the backup: tampered");
  }
  BackupHeader header;
  header.created_at = static_cast<std::int64_t>(get_be(file, kCreatedAt, 8));
  header.key_count = static_cast<std::uint32_t>(get_be(file, kKeyCountAt, 4));
  std::copy_n(file.begin() + kKeyIdAt, header.key_id.size(), header.key_id.begin());
  header.wrap.key_id = header.key_id;
  std::copy_n(file.begin() + kEphemeralAt, kX25519KeySize, header.wrap.ephemeral_key.begin());
  header.wrap.nonce.assign(file.begin() + kNonceAt, file.begin() + kNonceAt + kGcmNonceSize);
  header.wrap.tag.assign(file.begin() + kTagAt, file.begin() + kTagAt + kGcmTagSize);
  header.wrap.ciphertext.assign(file.begin() + kBackupHeaderSize, file.end());
  return header;
}

Result<BackupContents> decode_backup(ByteView file, const RecoveryPrivateKey& key) {
  ENVCRYPT_ASSIGN_OR_RETURN(BackupHeader header, decode_backup_header(file));
  if (header.key_id != key.public_key.id) {
    return Error(ErrorCode::kDenied, "encrypted to recovery key " + to_hex(header.key_id) +
                                         ", not to " + to_hex(key.public_key.id) +
                                         " (wrong recovery private key)");
  }
  // The digest is not stored: it is the context's, rebuilt from the header,
  // so a changed header field fails authentication like any other byte.
  const EncryptionContext context =
      backup_context(header.created_at, header.key_count, header.wrap.ciphertext.size());
  header.wrap.context_digest = sha256(canonical_context(context));
  Result<SecretBytes> payload = unwrap_recovery(key, header.wrap, context);
  if (!payload.ok()) {
    if (payload.error().code() != ErrorCode::kCorrupt) {
      return payload.error();
    }
    return Error(ErrorCode::kCorrupt,
                 "authentication failed: the backup was altered or damaged (tampered)");
  }
  return decode_backup_payload(*payload, header.created_at, header.key_count);
}

Result<BackupContents> decode_backup_payload(const SecretBytes& payload, std::int64_t created_at,
                                             std::uint32_t key_count) {
  if (payload.size() < kLengthSize) {
    return payload_error("shorter than its length field");
  }
  const ByteView bytes = payload.span();
  const std::uint64_t length = get_be(bytes, 0, kLengthSize);
  if (length > bytes.size() - kLengthSize) {
    return payload_error("the document's length " + std::to_string(length) +
                         " runs past the payload's end");
  }
  const auto* text = reinterpret_cast<const char*>(bytes.data() + kLengthSize);
  const json document = json::parse(text, text + length, nullptr, false);
  if (!document.is_object()) {
    return payload_error("the document is not a JSON object");
  }
  MaterialCursor material(bytes.subspan(kLengthSize + length));
  try {
    BackupContents contents = contents_of(document, material, created_at, key_count);
    if (material.left() != 0) {
      return payload_error(std::to_string(material.left()) +
                           " bytes of material beyond the last key version");
    }
    return contents;
  } catch (const PayloadError& e) {
    return payload_error(e.what());
  } catch (const json::exception& e) {
    return payload_error(e.what());
  }
}

}  // namespace envcrypt
