#include "kms_local.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <utility>

#include "crypto.h"
#include "json_integer.h"
#include "keystore.h"
#include "root_key.h"
#include "run_dir.h"
#include "secret_io.h"
#include "uuid.h"

namespace envcrypt {
namespace {

using json = nlohmann::json;

constexpr std::string_view kUriScheme = "local://";
constexpr std::string_view kAliasPrefix = "alias/";
constexpr std::string_view kServiceAlias = "acs/ecs";
constexpr std::string_view kReservedAliasPrefix = "acs/";
constexpr std::size_t kCmkSize = 32;
constexpr std::int64_t kSecondsPerDay = 86400;
constexpr std::int64_t kImportTokenLifetime = kSecondsPerDay;
constexpr std::uint32_t kMinDeletionWindowDays = 7;
constexpr std::uint32_t kMaxDeletionWindowDays = 366;
constexpr std::uint32_t kMaxRotationIntervalDays = 3650;
constexpr int kStoreFormat = 1;

// ---------------------------------------------------------------------------
// The keystore document of one region, as stored (JSON).  Key material only
// ever appears sealed under the root key.

struct SealedBlob {
  std::string nonce;  // hex
  std::string ciphertext;
  std::string tag;
};

struct StoredVersion {
  std::uint32_t version = 0;
  std::int64_t created_at = 0;
  SealedBlob material;
};

struct StoredGrant {
  std::string id;
  std::string principal;
  std::vector<std::string> operations;
  std::string created_by;
  std::int64_t created_at = 0;
};

struct PendingImportParameters {
  std::string token;  // hex
  std::int64_t expires_at = 0;
  SealedBlob private_key;  // RSA-2048 PKCS#8 PEM
};

struct StoredKey {
  std::string id;
  KeyState state = KeyState::kEnabled;
  KeyOrigin origin = KeyOrigin::kKms;
  std::string description;
  std::string owner;
  bool service = false;
  std::int64_t created_at = 0;
  std::optional<std::uint32_t> rotation_interval_days;
  std::int64_t last_rotated_at = 0;
  std::uint32_t primary_version = 0;
  std::optional<std::int64_t> deletion_date;
  std::optional<std::int64_t> material_expires_at;
  // SHA-256 over a label and the imported material, so a re-import can be
  // checked against it after the material itself was deleted.
  std::string material_check;
  // Imported material may go into a `kms backup` (set at import).
  bool backup_allowed = false;
  std::vector<StoredVersion> versions;
  std::vector<StoredGrant> grants;
  std::optional<PendingImportParameters> pending_import;
};

struct Store {
  std::map<std::string, StoredKey> keys;
  std::map<std::string, std::string> aliases;   // name without "alias/" -> key id
  std::map<std::string, std::int64_t> deleted;  // key id -> purge time
};

template <typename T>
void put_optional(json& j, const char* name, const std::optional<T>& value) {
  j[name] = value ? json(*value) : json(nullptr);
}

// An integer field as T; anything else is a type error (json_integer.h).
template <typename T>
T integer_at(const json& j, const char* name) {
  const json& value = j.at(name);
  if (const std::optional<T> number = exact_integer<T>(value)) {
    return *number;
  }
  throw json::type_error::create(
      302, std::string(name) + " is not an integer in range: " + value.dump(), &value);
}

template <typename T>
std::optional<T> optional_integer(const json& j, const char* name) {
  if (!j.contains(name) || j.at(name).is_null()) {
    return std::nullopt;
  }
  return integer_at<T>(j, name);
}

Result<KeyState> parse_state(std::string_view text) {
  for (const KeyState state : {KeyState::kEnabled, KeyState::kDisabled, KeyState::kPendingDeletion,
                               KeyState::kPendingImport}) {
    if (to_string(state) == text) {
      return state;
    }
  }
  return Error(ErrorCode::kCorruptHeader, "unknown key state '" + std::string(text) + "'");
}

Result<KeyOrigin> parse_origin(std::string_view text) {
  for (const KeyOrigin origin : {KeyOrigin::kKms, KeyOrigin::kExternal}) {
    if (to_string(origin) == text) {
      return origin;
    }
  }
  return Error(ErrorCode::kCorruptHeader, "unknown key origin '" + std::string(text) + "'");
}

json blob_to_json(const SealedBlob& blob) {
  return {{"nonce", blob.nonce}, {"ciphertext", blob.ciphertext}, {"tag", blob.tag}};
}

SealedBlob blob_from_json(const json& j) {
  return {j.at("nonce").get<std::string>(), j.at("ciphertext").get<std::string>(),
          j.at("tag").get<std::string>()};
}

json key_to_json(const StoredKey& key) {
  json j;
  j["state"] = to_string(key.state);
  j["origin"] = to_string(key.origin);
  j["description"] = key.description;
  j["owner"] = key.owner;
  j["service"] = key.service;
  j["created_at"] = key.created_at;
  put_optional(j, "rotation_interval_days", key.rotation_interval_days);
  j["last_rotated_at"] = key.last_rotated_at;
  j["primary_version"] = key.primary_version;
  put_optional(j, "deletion_date", key.deletion_date);
  put_optional(j, "material_expires_at", key.material_expires_at);
  j["material_check"] = key.material_check;
  j["backup_allowed"] = key.backup_allowed;
  j["versions"] = json::array();
  for (const StoredVersion& version : key.versions) {
    j["versions"].push_back({{"version", version.version},
                             {"created_at", version.created_at},
                             {"material", blob_to_json(version.material)}});
  }
  j["grants"] = json::array();
  for (const StoredGrant& grant : key.grants) {
    j["grants"].push_back({{"id", grant.id},
                           {"principal", grant.principal},
                           {"operations", grant.operations},
                           {"created_by", grant.created_by},
                           {"created_at", grant.created_at}});
  }
  if (key.pending_import) {
    j["pending_import"] = {{"token", key.pending_import->token},
                           {"expires_at", key.pending_import->expires_at},
                           {"private_key", blob_to_json(key.pending_import->private_key)}};
  } else {
    j["pending_import"] = nullptr;
  }
  return j;
}

Result<StoredKey> key_from_json(const std::string& id, const json& j) {
  StoredKey key;
  key.id = id;
  ENVCRYPT_ASSIGN_OR_RETURN(key.state, parse_state(j.at("state").get<std::string>()));
  ENVCRYPT_ASSIGN_OR_RETURN(key.origin, parse_origin(j.at("origin").get<std::string>()));
  key.description = j.at("description").get<std::string>();
  key.owner = j.at("owner").get<std::string>();
  key.service = j.at("service").get<bool>();
  key.created_at = integer_at<std::int64_t>(j, "created_at");
  key.rotation_interval_days = optional_integer<std::uint32_t>(j, "rotation_interval_days");
  key.last_rotated_at = integer_at<std::int64_t>(j, "last_rotated_at");
  key.primary_version = integer_at<std::uint32_t>(j, "primary_version");
  key.deletion_date = optional_integer<std::int64_t>(j, "deletion_date");
  key.material_expires_at = optional_integer<std::int64_t>(j, "material_expires_at");
  key.material_check = j.at("material_check").get<std::string>();
  // Absent from keystores written before keystore backups existed.
  key.backup_allowed = j.contains("backup_allowed") && j.at("backup_allowed").get<bool>();
  for (const json& version : j.at("versions")) {
    key.versions.push_back({integer_at<std::uint32_t>(version, "version"),
                            integer_at<std::int64_t>(version, "created_at"),
                            blob_from_json(version.at("material"))});
  }
  for (const json& grant : j.at("grants")) {
    key.grants.push_back(
        {grant.at("id").get<std::string>(), grant.at("principal").get<std::string>(),
         grant.at("operations").get<std::vector<std::string>>(),
         grant.at("created_by").get<std::string>(), integer_at<std::int64_t>(grant, "created_at")});
  }
  if (!j.at("pending_import").is_null()) {
    const json& pending = j.at("pending_import");
    key.pending_import = PendingImportParameters{pending.at("token").get<std::string>(),
                                                 integer_at<std::int64_t>(pending, "expires_at"),
                                                 blob_from_json(pending.at("private_key"))};
  }
  return key;
}

std::string serialize_store(const Store& store, const std::string& region) {
  json j;
  j["format"] = kStoreFormat;
  j["region"] = region;
  j["keys"] = json::object();
  for (const auto& [id, key] : store.keys) {
    j["keys"][id] = key_to_json(key);
  }
  j["aliases"] = store.aliases;
  j["deleted"] = store.deleted;
  return j.dump(2) + "\n";
}

Result<Store> parse_store(const std::string& text, const std::filesystem::path& path,
                          const std::string& region) {
  auto damaged = [&path](const std::string& why) {
    return Error(ErrorCode::kCorruptHeader, "keystore " + path.string() + " is damaged: " + why);
  };
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return damaged("not a JSON object");
  }
  Store store;
  try {
    if (integer_at<int>(j, "format") != kStoreFormat) {
      return damaged("unknown format " + j.at("format").dump());
    }
    if (j.at("region").get<std::string>() != region) {
      return damaged("it belongs to region " + j.at("region").dump());
    }
    for (const auto& [id, key_json] : j.at("keys").items()) {
      Result<StoredKey> key = key_from_json(id, key_json);
      if (!key.ok()) {
        return damaged(key.error().message());
      }
      store.keys.emplace(id, std::move(key).value());
    }
    store.aliases = j.at("aliases").get<std::map<std::string, std::string>>();
    store.deleted = j.at("deleted").get<std::map<std::string, std::int64_t>>();
  } catch (const json::exception& e) {
    return damaged(e.what());
  }
  return store;
}

// ---------------------------------------------------------------------------
// Helpers without state.

ByteView as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

bool valid_region(std::string_view region) {
  return !region.empty() && region.size() <= 63 &&
         region.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") ==
             std::string_view::npos;
}

// A principal is <kind>/<name>: host/<hostname>, user/<name> or service/<name>.
bool known_principal(std::string_view principal) {
  const std::size_t slash = principal.find('/');
  if (slash == std::string_view::npos) {
    return false;
  }
  const std::string_view kind = principal.substr(0, slash);
  const std::string_view name = principal.substr(slash + 1);
  return (kind == "host" || kind == "user" || kind == "service") && !name.empty() &&
         name.size() <= 253 &&
         name.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
             "0123456789._@-") == std::string_view::npos;
}

std::string strip_alias_prefix(std::string_view alias) {
  if (alias.starts_with(kAliasPrefix)) {
    alias.remove_prefix(kAliasPrefix.size());
  }
  return std::string(alias);
}

Status check_alias_name(const std::string& name) {
  const bool valid =
      !name.empty() && name.size() <= 256 && name.front() != '/' && name.back() != '/' &&
      name.find("//") == std::string::npos &&
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-") ==
          std::string::npos;
  if (!valid) {
    return Error(ErrorCode::kUsage, "invalid alias 'alias/" + name +
                                        "': use letters, digits, '/', '_' and '-' (at most 256)");
  }
  if (name.starts_with(kReservedAliasPrefix)) {
    return Error(ErrorCode::kUsage,
                 "alias 'alias/" + name + "' is reserved: the acs/ prefix names service keys");
  }
  return OkStatus();
}

Result<std::string> new_key_id() {
  ENVCRYPT_ASSIGN_OR_RETURN(const Uuid uuid, random_uuid());
  return uuid_to_string(uuid);
}

std::string material_check_of(const SecretBytes& material) {
  std::string input = "envcrypt/local/material-check";
  input.push_back('\0');
  input.append(reinterpret_cast<const char*>(material.data()), material.size());
  std::string check = sha256_hex(input);
  OPENSSL_cleanse(input.data(), input.size());
  return check;
}

// What a grant operation's name means for an operation a key is asked for.
bool grant_covers(const StoredGrant& grant, GrantOperation wanted) {
  return std::any_of(
      grant.operations.begin(), grant.operations.end(), [wanted](const std::string& name) {
        return name == to_string(wanted) ||
               (wanted == GrantOperation::kDescribe && name == to_string(GrantOperation::kAdmin));
      });
}

std::string import_key_aad(const std::string& key_id) {
  std::string aad = "envcrypt/local/import-key";
  aad.push_back('\0');
  return aad + key_id;
}

std::int64_t system_clock_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

}  // namespace

std::string_view to_string(GrantOperation operation) {
  switch (operation) {
    case GrantOperation::kGenerate:
      return "generate";
    case GrantOperation::kDecrypt:
      return "decrypt";
    case GrantOperation::kReencrypt:
      return "reencrypt";
    case GrantOperation::kDescribe:
      return "describe";
    case GrantOperation::kAdmin:
      return "admin";
  }
  return "unknown";
}

Result<GrantOperation> parse_grant_operation(std::string_view name) {
  for (const GrantOperation operation :
       {GrantOperation::kGenerate, GrantOperation::kDecrypt, GrantOperation::kReencrypt,
        GrantOperation::kDescribe, GrantOperation::kAdmin}) {
    if (to_string(operation) == name) {
      return operation;
    }
  }
  return Error(ErrorCode::kUsage, "unknown grant operation '" + std::string(name) +
                                      "': use generate, decrypt, reencrypt, describe or admin");
}

// ---------------------------------------------------------------------------

struct LocalKms::Impl {
  LocalKmsOptions options;
  Keystore keystore;
  AuditLog audit;
  SecretBytes root_key;
  std::string store_name;  // <region>.keystore.json
  // Events of a transaction beyond the operation's own line (automatic
  // rotation, expired material), appended to the audit log after it.
  std::vector<AuditEvent> side_events;
  // The intent line of the change being committed, for finish().
  std::optional<std::uint64_t> pending_intent;
  // Whether the store of the running transaction had no file before it.
  bool store_was_new = false;

  Impl(LocalKmsOptions opts, Keystore store, AuditLog log, SecretBytes root)
      : options(std::move(opts)),
        keystore(std::move(store)),
        audit(std::move(log)),
        root_key(std::move(root)),
        store_name(options.region + ".keystore.json") {}

  std::int64_t now() const { return options.clock(); }

  std::string uri_of(const std::string& key_id) const {
    return std::string(kUriScheme) + options.region + "/" + key_id;
  }

  // ----- sealing under the root key -----

  std::string material_aad(const std::string& key_id, std::uint32_t version) const {
    std::string aad = "envcrypt/local/cmk";
    for (const std::string& part : {options.region, key_id, std::to_string(version)}) {
      aad.push_back('\0');
      aad += part;
    }
    return aad;
  }

  Result<SealedBlob> seal(const SecretBytes& secret, const std::string& aad) const {
    ENVCRYPT_ASSIGN_OR_RETURN(const GcmSealed sealed,
                              aes256_gcm_seal(root_key.span(), secret.span(), as_bytes(aad)));
    return SealedBlob{to_hex(sealed.nonce), to_hex(sealed.ciphertext), to_hex(sealed.tag)};
  }

  Result<SecretBytes> unseal(const SealedBlob& blob, const std::string& aad,
                             const std::string& what) const {
    ENVCRYPT_ASSIGN_OR_RETURN(const Bytes nonce, from_hex(blob.nonce));
    ENVCRYPT_ASSIGN_OR_RETURN(const Bytes ciphertext, from_hex(blob.ciphertext));
    ENVCRYPT_ASSIGN_OR_RETURN(const Bytes tag, from_hex(blob.tag));
    if (nonce.size() != kGcmNonceSize) {
      return Error(ErrorCode::kCorruptHeader, what + ": bad nonce in the keystore");
    }
    Result<SecretBytes> opened =
        aes256_gcm_open(root_key.span(), nonce, ciphertext, tag, as_bytes(aad));
    if (!opened.ok()) {
      return Error(ErrorCode::kCorruptHeader, what + " does not open under root key " +
                                                  options.root_key.string() +
                                                  " (wrong root key or damaged keystore)");
    }
    return opened;
  }

  Result<StoredVersion> new_version(const StoredKey& key, std::uint32_t number,
                                    const SecretBytes& material) const {
    ENVCRYPT_ASSIGN_OR_RETURN(SealedBlob sealed, seal(material, material_aad(key.id, number)));
    return StoredVersion{number, now(), std::move(sealed)};
  }

  Result<SecretBytes> material_of(const StoredKey& key, std::uint32_t number) const {
    const auto found =
        std::find_if(key.versions.begin(), key.versions.end(),
                     [number](const StoredVersion& v) { return v.version == number; });
    if (found == key.versions.end()) {
      return Error(ErrorCode::kNotFound,
                   "key " + uri_of(key.id) + " has no version " + std::to_string(number));
    }
    return unseal(found->material, material_aad(key.id, number),
                  "version " + std::to_string(number) + " of key " + uri_of(key.id));
  }

  // ----- the store and its transactions -----

  Result<StoredKey> make_key(const std::string& id, KeyOrigin origin) const {
    StoredKey key;
    key.id = id;
    key.origin = origin;
    key.owner = options.principal;
    key.created_at = now();
    key.last_rotated_at = key.created_at;
    if (origin == KeyOrigin::kExternal) {
      key.state = KeyState::kPendingImport;
      return key;
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material, random_secret(kCmkSize));
    ENVCRYPT_ASSIGN_OR_RETURN(StoredVersion version, new_version(key, 1, material));
    key.versions.push_back(std::move(version));
    key.primary_version = 1;
    return key;
  }

  // The service key of the region exists from the first operation on.
  Status ensure_service_key(Store& store) const {
    if (store.aliases.contains(std::string(kServiceAlias))) {
      return OkStatus();
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string id, new_key_id());
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey key, make_key(id, KeyOrigin::kKms));
    key.service = true;
    key.owner.clear();
    key.description = "service key of region " + options.region;
    store.keys.emplace(id, std::move(key));
    store.aliases.emplace(kServiceAlias, id);
    return OkStatus();
  }

  // Imported material past its expiry is deleted, as DeleteKeyMaterial would.
  void expire_material(Store& store) {
    for (auto& [id, key] : store.keys) {
      if (key.material_expires_at && *key.material_expires_at <= now() && !key.versions.empty()) {
        key.versions.clear();
        key.primary_version = 0;
        key.material_expires_at.reset();
        if (key.state != KeyState::kPendingDeletion) {
          key.state = KeyState::kPendingImport;
        }
        side_events.push_back(
            {"DeleteKeyMaterial", id, std::nullopt, {}, "ok", {{"reason", "material expired"}}});
      }
    }
  }

  // Runs `body` on the region's store under its lock and commits the store
  // if anything changed.  `body` failing commits nothing.  A change is
  // announced first by an intent line for `event` (durable before the
  // commit, so no change goes unaudited); finish() names that line in the
  // operation's own.
  Status transact(const AuditEvent& event, const std::function<Status(Store&)>& body) {
    const std::filesystem::path path = keystore.path_of(store_name);
    return keystore.update(
        store_name,
        [&](const std::optional<std::string>& current) -> Result<std::optional<std::string>> {
          Store store;
          store_was_new = !current;
          if (current) {
            ENVCRYPT_ASSIGN_OR_RETURN(store, parse_store(*current, path, options.region));
          }
          ENVCRYPT_TRY(ensure_service_key(store));
          expire_material(store);
          ENVCRYPT_TRY(body(store));
          std::string next = serialize_store(store, options.region);
          if (!current || *current != next) {
            ENVCRYPT_TRY(announce(event));
          }
          return std::optional<std::string>(std::move(next));
        });
  }

  Status announce(const AuditEvent& event) {
    AuditEvent intent = event;
    intent.result = "pending";
    intent.details["store"] = store_name;
    ENVCRYPT_ASSIGN_OR_RETURN(const std::uint64_t seq, audit.append(intent, {true, std::nullopt}));
    pending_intent = seq;
    return options.before_commit ? options.before_commit() : OkStatus();
  }

  // Appends the operation's line (and any side events), and turns a failed
  // append into the operation's failure: nothing happens unaudited.
  template <typename T>
  Result<T> finish(AuditEvent& event, Result<T> result) {
    event.result = result.ok() ? "ok" : result.error().message();
    std::vector<AuditEvent> events = std::exchange(side_events, {});
    if (!result.ok()) {
      events.clear();  // a failed operation committed nothing, side effects included
    }
    events.insert(events.begin(), event);
    AuditPhase phase{false, std::exchange(pending_intent, std::nullopt)};
    for (const AuditEvent& each : events) {
      const Result<std::uint64_t> logged = audit.append(each, std::exchange(phase, {}));
      if (!logged.ok() && result.ok() && !keep_for_later(each, logged.error())) {
        return logged.error().with_context("audit log");
      }
    }
    return result;
  }

  // A read-only keystore (a read-only root, a /var not yet remounted) can
  // unwrap but not log: the line is kept in the spool and written by the
  // next append that can (AuditLog::defer).  Anything else, or a line that
  // cannot be kept either, fails the operation as before.
  bool keep_for_later(const AuditEvent& event, const Error& error) {
    const bool read_only =
        options.read_only ? options.read_only() : on_read_only_file_system(options.dir);
    return read_only && audit.defer(event, error.message()).ok();
  }

  // ----- resolution, authorisation, state -----

  Result<StoredKey*> resolve(Store& store, std::string_view keyref) const {
    std::string id;
    if (keyref.starts_with(kUriScheme)) {
      const std::string_view rest = keyref.substr(kUriScheme.size());
      const std::size_t slash = rest.find('/');
      if (slash == std::string_view::npos) {
        return Error(ErrorCode::kUsage,
                     "'" + std::string(keyref) + "' is not a CMK URI (local://<region>/<key-id>)");
      }
      if (rest.substr(0, slash) != options.region) {
        return Error(ErrorCode::kNotFound, "key " + std::string(keyref) + " is in region " +
                                               std::string(rest.substr(0, slash)) +
                                               "; this KMS serves region " + options.region);
      }
      id = std::string(rest.substr(slash + 1));
    } else if (keyref.starts_with(kAliasPrefix)) {
      const std::string name = strip_alias_prefix(keyref);
      const auto found = store.aliases.find(name);
      if (found == store.aliases.end()) {
        return Error(ErrorCode::kNotFound,
                     "alias " + std::string(keyref) + " not found in region " + options.region);
      }
      id = found->second;
    } else if (keyref.find("://") != std::string_view::npos) {
      return Error(ErrorCode::kUsage, "'" + std::string(keyref) + "' is not a local KMS key");
    } else {
      id = std::string(keyref);
    }
    const auto found = store.keys.find(id);
    if (found == store.keys.end()) {
      const auto deleted = store.deleted.find(id);
      if (deleted != store.deleted.end()) {
        return Error(ErrorCode::kNotFound,
                     "key " + uri_of(id) + " was deleted on " + format_rfc3339(deleted->second));
      }
      return Error(ErrorCode::kNotFound, "key " + uri_of(id) + " not found");
    }
    return &found->second;
  }

  // The owner holds every operation; the service key serves every principal
  // of its region; anyone else needs a grant.
  Status authorize(const StoredKey& key, GrantOperation wanted) const {
    if (key.service || key.owner == options.principal ||
        std::any_of(key.grants.begin(), key.grants.end(), [&](const StoredGrant& grant) {
          return grant.principal == options.principal && grant_covers(grant, wanted);
        })) {
      return OkStatus();
    }
    return Error(ErrorCode::kDenied, "principal " + options.principal + " holds no " +
                                         std::string(to_string(wanted)) + " grant on key " +
                                         uri_of(key.id));
  }

  Status require_enabled(const StoredKey& key) const {
    if (key.state == KeyState::kEnabled) {
      return OkStatus();
    }
    return Error(ErrorCode::kDenied,
                 "key " + uri_of(key.id) + " is " + std::string(to_string(key.state)));
  }

  Error service_key_refusal(const StoredKey& key, const std::string& action) const {
    return {ErrorCode::kDenied, "the service key alias/" + std::string(kServiceAlias) + " (" +
                                    uri_of(key.id) + ") cannot " + action};
  }

  Status require_external(const StoredKey& key) const {
    if (key.origin == KeyOrigin::kExternal) {
      return OkStatus();
    }
    return Error(ErrorCode::kUsage, "key " + uri_of(key.id) +
                                        " has origin KMS; only keys created with origin "
                                        "EXTERNAL take imported material");
  }

  KeyInfo info_of(const Store& store, const StoredKey& key) const {
    KeyInfo info;
    info.key_id = key.id;
    info.uri = uri_of(key.id);
    for (const auto& [name, target] : store.aliases) {
      if (target == key.id) {
        info.aliases.push_back(std::string(kAliasPrefix) + name);
      }
    }
    info.state = key.state;
    info.origin = key.origin;
    info.description = key.description;
    info.primary_version = key.primary_version;
    info.version_count = static_cast<std::uint32_t>(key.versions.size());
    info.created_at = key.created_at;
    info.deletion_date = key.deletion_date;
    info.service_key = key.service;
    return info;
  }

  // ----- key versions -----

  Status add_version(StoredKey& key) const {
    const std::uint32_t number = key.versions.empty() ? 1 : key.versions.back().version + 1;
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material, random_secret(kCmkSize));
    ENVCRYPT_ASSIGN_OR_RETURN(StoredVersion version, new_version(key, number, material));
    key.versions.push_back(std::move(version));
    key.primary_version = number;
    key.last_rotated_at = now();
    return OkStatus();
  }

  Status check_rotatable(const StoredKey& key) const {
    if (key.origin == KeyOrigin::kExternal) {
      return Error(ErrorCode::kUsage, "key " + uri_of(key.id) +
                                          " has imported material (origin EXTERNAL) and cannot "
                                          "be rotated");
    }
    if (key.state != KeyState::kEnabled) {
      return Error(ErrorCode::kDenied, "key " + uri_of(key.id) + " is " +
                                           std::string(to_string(key.state)) +
                                           "; only an Enabled key can be rotated");
    }
    return OkStatus();
  }

  [[nodiscard]] bool rotation_due(const StoredKey& key) const {
    return key.rotation_interval_days && key.state == KeyState::kEnabled &&
           key.origin == KeyOrigin::kKms &&
           now() >= key.last_rotated_at +
                        static_cast<std::int64_t>(*key.rotation_interval_days) * kSecondsPerDay;
  }

  Status rotate_if_due(StoredKey& key, const std::string& trigger) {
    if (!rotation_due(key)) {
      return OkStatus();
    }
    ENVCRYPT_TRY(add_version(key));
    side_events.push_back(
        {"RotateKey", key.id, key.primary_version, {}, "ok", {{"trigger", trigger}}});
    return OkStatus();
  }

  // ----- envelope operations, shared by Encrypt, Decrypt and ReEncrypt -----

  static std::string wrap_aad(const std::string& uri, std::uint32_t version,
                              const EncryptionContext& context) {
    std::string aad = "envcrypt/local/wrap/v1";
    aad.push_back('\0');
    aad += uri;
    aad.push_back('\0');
    aad += std::to_string(version);
    aad.push_back('\0');
    const std::vector<std::uint8_t> canonical = canonical_context(context);
    aad.append(canonical.begin(), canonical.end());
    return aad;
  }

  Result<WrappedKey> wrap_in(Store& store, std::string_view keyref, const SecretBytes& plaintext,
                             const EncryptionContext& context, GrantOperation operation,
                             AuditEvent& event) {
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey * key, resolve(store, keyref));
    event.key_id = key->id;
    ENVCRYPT_TRY(authorize(*key, operation));
    ENVCRYPT_TRY(require_enabled(*key));
    ENVCRYPT_TRY(rotate_if_due(*key, "interval elapsed, on use"));
    event.key_version = key->primary_version;
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material, material_of(*key, key->primary_version));
    WrappedKey wrapped;
    wrapped.cmk_uri = uri_of(key->id);
    wrapped.cmk_version = key->primary_version;
    ENVCRYPT_ASSIGN_OR_RETURN(
        GcmSealed sealed,
        aes256_gcm_seal(material.span(), plaintext.span(),
                        as_bytes(wrap_aad(wrapped.cmk_uri, wrapped.cmk_version, context))));
    wrapped.nonce = std::move(sealed.nonce);
    wrapped.tag = std::move(sealed.tag);
    wrapped.ciphertext = std::move(sealed.ciphertext);
    return wrapped;
  }

  Result<SecretBytes> unwrap_in(Store& store, const WrappedKey& wrapped,
                                const EncryptionContext& context, GrantOperation operation,
                                AuditEvent& event) {
    if (!wrapped.cmk_uri.starts_with(kUriScheme)) {
      return Error(ErrorCode::kUsage, "'" + wrapped.cmk_uri + "' is not a local KMS key");
    }
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey * key, resolve(store, wrapped.cmk_uri));
    event.key_id = key->id;
    event.key_version = wrapped.cmk_version;
    ENVCRYPT_TRY(authorize(*key, operation));
    ENVCRYPT_TRY(require_enabled(*key));
    ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material, material_of(*key, wrapped.cmk_version));
    Result<SecretBytes> plaintext =
        wrapped.nonce.size() == kGcmNonceSize
            ? aes256_gcm_open(material.span(), wrapped.nonce, wrapped.ciphertext, wrapped.tag,
                              as_bytes(wrap_aad(wrapped.cmk_uri, wrapped.cmk_version, context)))
            : Result<SecretBytes>(Error(ErrorCode::kCorruptHeader, "bad nonce"));
    if (!plaintext.ok()) {
      return Error(ErrorCode::kCorruptHeader,
                   "unwrap failed: encryption context or blob does not match");
    }
    return plaintext;
  }

  // ----- keystore backup and restore -----

  // A stored key as a backup carries it.  Imported material whose key does
  // not allow backups is never unsealed: the record is the key as
  // delete-key-material would leave it, marked withheld.
  Result<CmkRecord> record_of(const StoredKey& key) const {
    CmkRecord record;
    record.id = key.id;
    record.state = key.state;
    record.origin = key.origin;
    record.description = key.description;
    record.owner = key.owner;
    record.service = key.service;
    record.created_at = key.created_at;
    record.rotation_interval_days = key.rotation_interval_days;
    record.last_rotated_at = key.last_rotated_at;
    record.primary_version = key.primary_version;
    record.deletion_date = key.deletion_date;
    record.material_expires_at = key.material_expires_at;
    record.material_check = key.material_check;
    record.backup_allowed = key.backup_allowed;
    for (const StoredGrant& stored : key.grants) {
      Grant grant{stored.id, key.id, stored.principal, {}, stored.created_by, stored.created_at};
      for (const std::string& name : stored.operations) {
        ENVCRYPT_ASSIGN_OR_RETURN(const GrantOperation operation, parse_grant_operation(name));
        grant.operations.push_back(operation);
      }
      record.grants.push_back(std::move(grant));
    }
    if (key.origin == KeyOrigin::kExternal && !key.backup_allowed && !key.versions.empty()) {
      record.material_withheld = true;
      record.primary_version = 0;
      record.material_expires_at.reset();
      if (record.state != KeyState::kPendingDeletion) {
        record.state = KeyState::kPendingImport;
      }
      return record;
    }
    for (const StoredVersion& version : key.versions) {
      ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes material, material_of(key, version.version));
      record.versions.push_back({version.version, version.created_at, std::move(material)});
    }
    return record;
  }

  Result<KeystoreRecords> records_of(const Store& store) const {
    KeystoreRecords records;
    records.region = options.region;
    for (const auto& [id, key] : store.keys) {
      ENVCRYPT_ASSIGN_OR_RETURN(CmkRecord record, record_of(key));
      records.keys.emplace(id, std::move(record));
    }
    records.aliases = store.aliases;
    records.deleted = store.deleted;
    return records;
  }

  // A restored key, each version sealed under this host's root key; times
  // are the original ones.
  Result<StoredKey> stored_of(const CmkRecord& record) const {
    StoredKey key;
    key.id = record.id;
    key.state = record.state;
    key.origin = record.origin;
    key.description = record.description;
    key.owner = record.owner;
    key.service = record.service;
    key.created_at = record.created_at;
    key.rotation_interval_days = record.rotation_interval_days;
    key.last_rotated_at = record.last_rotated_at;
    key.primary_version = record.primary_version;
    key.deletion_date = record.deletion_date;
    key.material_expires_at = record.material_expires_at;
    key.material_check = record.material_check;
    key.backup_allowed = record.backup_allowed;
    for (const Grant& grant : record.grants) {
      StoredGrant stored{grant.grant_id, grant.principal, {}, grant.created_by, grant.created_at};
      for (const GrantOperation operation : grant.operations) {
        stored.operations.emplace_back(to_string(operation));
      }
      key.grants.push_back(std::move(stored));
    }
    for (const CmkVersionRecord& version : record.versions) {
      ENVCRYPT_ASSIGN_OR_RETURN(SealedBlob sealed,
                                seal(version.material, material_aad(record.id, version.version)));
      key.versions.push_back({version.version, version.created_at, std::move(sealed)});
    }
    return key;
  }

  // Whether `key` holds exactly the versions and material of `record`.
  Result<bool> same_material(const StoredKey& key, const CmkRecord& record) const {
    if (key.versions.size() != record.versions.size()) {
      return false;
    }
    for (std::size_t i = 0; i < key.versions.size(); ++i) {
      if (key.versions[i].version != record.versions[i].version) {
        return false;
      }
      ENVCRYPT_ASSIGN_OR_RETURN(const SecretBytes material,
                                material_of(key, record.versions[i].version));
      if (!material.equals(record.versions[i].material.span())) {
        return false;
      }
    }
    return true;
  }

  // "2 keys (local://r/<id> alias/acs/ecs, local://r/<id>)", for a refusal.
  std::string describe_keys(const Store& store) const {
    std::string list;
    for (const auto& [id, key] : store.keys) {
      list += (list.empty() ? "" : ", ") + uri_of(id);
      for (const auto& [name, target] : store.aliases) {
        if (target == id) {
          list += " alias/" + name;
        }
      }
    }
    const std::size_t count = store.keys.size();
    return std::to_string(count) + (count == 1 ? " key (" : " keys (") + list + ")";
  }

  // A key already here stays as it is (its state, grants and aliases are
  // this host's) when its material is the backup's; other material is a
  // conflict.  A withheld key never replaces one that is here.
  Status merge_key(Store& store, const CmkRecord& record, RestoreOutcome& outcome) const {
    if (const auto deleted = store.deleted.find(record.id); deleted != store.deleted.end()) {
      return Error(ErrorCode::kConflict, "key " + uri_of(record.id) + " was deleted here on " +
                                             format_rfc3339(deleted->second) +
                                             " and is in the backup: nothing restored");
    }
    const auto found = store.keys.find(record.id);
    if (found == store.keys.end()) {
      ENVCRYPT_ASSIGN_OR_RETURN(StoredKey key, stored_of(record));
      store.keys.emplace(record.id, std::move(key));
      outcome.added.push_back(record.id);
      return OkStatus();
    }
    if (!record.material_withheld) {
      ENVCRYPT_ASSIGN_OR_RETURN(const bool same, same_material(found->second, record));
      if (!same) {
        return Error(ErrorCode::kConflict, "key " + uri_of(record.id) +
                                               " is here with other material than in the "
                                               "backup: nothing restored");
      }
    }
    outcome.kept.push_back(record.id);
    return OkStatus();
  }

  Status merge_names(Store& store, const KeystoreRecords& records) const {
    for (const auto& [name, id] : records.aliases) {
      const auto [slot, inserted] = store.aliases.emplace(name, id);
      if (!inserted && slot->second != id) {
        return Error(ErrorCode::kConflict, "alias alias/" + name + " names key " +
                                               uri_of(slot->second) + " here and key " +
                                               uri_of(id) + " in the backup: nothing restored");
      }
    }
    for (const auto& [id, when] : records.deleted) {
      if (store.keys.contains(id)) {
        return Error(ErrorCode::kConflict, "key " + uri_of(id) + " is here but the backup says " +
                                               "it was deleted on " + format_rfc3339(when) +
                                               ": nothing restored");
      }
      store.deleted.emplace(id, when);
    }
    return OkStatus();
  }

  Status restore_into(Store& store, const KeystoreRecords& records, bool merge,
                      RestoreOutcome& outcome) {
    if (records.region != options.region) {
      return Error(ErrorCode::kUsage, "the backup is of region " + records.region +
                                          "; this host's local KMS serves region " +
                                          options.region + " (region in envcrypt.conf)");
    }
    outcome.fresh = store_was_new;
    if (store_was_new) {
      store = Store{};  // the service key transact() just made has served nothing
    } else if (!merge) {
      return Error(ErrorCode::kConflict, "keystore " + keystore.path_of(store_name).string() +
                                             " already holds " + describe_keys(store) +
                                             ": nothing restored (--merge adds the backup's "
                                             "keys to them)");
    }
    for (const auto& [id, record] : records.keys) {
      ENVCRYPT_TRY(merge_key(store, record, outcome));
    }
    return merge_names(store, records);
  }

  // Runs `body` on the key `keyref` resolves to, after the grant check, and
  // audits the result as `operation`.
  template <typename T>
  Result<T> with_key(const std::string& operation, std::string_view keyref, GrantOperation needed,
                     const std::function<Result<T>(Store&, StoredKey&, AuditEvent&)>& body) {
    AuditEvent event{operation, "", std::nullopt, {}, "", {}};
    std::optional<T> answer;
    const Status status = transact(event, [&](Store& store) -> Status {
      ENVCRYPT_ASSIGN_OR_RETURN(StoredKey * key, resolve(store, keyref));
      event.key_id = key->id;
      event.key_version =
          key->primary_version == 0 ? std::nullopt : std::optional(key->primary_version);
      ENVCRYPT_TRY(authorize(*key, needed));
      ENVCRYPT_ASSIGN_OR_RETURN(T value, body(store, *key, event));
      answer.emplace(std::move(value));
      return OkStatus();
    });
    if (!status.ok()) {
      return finish<T>(event, status.error());
    }
    return finish<T>(event, std::move(*answer));
  }
};

// ---------------------------------------------------------------------------

Result<std::unique_ptr<LocalKms>> LocalKms::open(const LocalKmsOptions& options) {
  LocalKmsOptions resolved = options;
  if (!valid_region(resolved.region)) {
    return Error(ErrorCode::kUsage, "invalid region '" + resolved.region +
                                        "': use lower-case letters, digits and '-'");
  }
  if (resolved.principal.empty()) {
    std::array<char, 256> host{};
    if (::gethostname(host.data(), host.size() - 1) != 0) {
      return Error(ErrorCode::kInternal, std::string("gethostname: ") + std::strerror(errno));
    }
    resolved.principal = std::string("host/") + host.data();
  }
  if (!resolved.clock) {
    resolved.clock = system_clock_seconds;
  }
  ENVCRYPT_ASSIGN_OR_RETURN(Keystore keystore, Keystore::open(resolved.dir));
  ENVCRYPT_ASSIGN_OR_RETURN(
      SecretBytes root_key,
      load_root_key(resolved.root_key, {resolved.tpm_tcti, resolved.tpm_pin}));
  ENVCRYPT_ASSIGN_OR_RETURN(AuditKeys audit_keys, derive_audit_keys(root_key.span()));
  ENVCRYPT_ASSIGN_OR_RETURN(
      AuditLog audit, AuditLog::open(resolved.dir / "audit.log", resolved.principal, resolved.clock,
                                     std::move(audit_keys)));
  if (resolved.audit_spool.empty()) {
    // One spool per keystore: several may share the run directory.
    resolved.audit_spool = run_dir() / "audit-deferred" /
                           sha256_hex(resolved.dir.lexically_normal().string()).substr(0, 16);
  }
  audit.defer_to(resolved.audit_spool);
  return std::unique_ptr<LocalKms>(new LocalKms(std::make_unique<Impl>(
      std::move(resolved), std::move(keystore), std::move(audit), std::move(root_key))));
}

Result<std::unique_ptr<KmsBackend>> open_local_kms(const LocalKmsOptions& options) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::unique_ptr<LocalKms> kms, LocalKms::open(options));
  return std::unique_ptr<KmsBackend>(std::move(kms));
}

LocalKms::LocalKms(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalKms::~LocalKms() = default;

const std::string& LocalKms::region() const { return impl_->options.region; }
const std::string& LocalKms::principal() const { return impl_->options.principal; }
AuditLog& LocalKms::audit_log() { return impl_->audit; }
Result<AuditLog*> LocalKms::audit() { return &impl_->audit; }

bool LocalKms::supports(std::string_view uri) const {
  if (uri.starts_with(kUriScheme)) {
    const std::string_view rest = uri.substr(kUriScheme.size());
    return rest.starts_with(impl_->options.region + "/");
  }
  return uri.find("://") == std::string_view::npos;  // key ids and aliases
}

Result<WrappedKey> LocalKms::encrypt(std::string_view keyref, const SecretBytes& plaintext,
                                     const EncryptionContext& context) {
  AuditEvent event{"GenerateDataKey", "", std::nullopt, context, "", {}};
  event.details["bytes"] = std::to_string(plaintext.size());
  std::optional<WrappedKey> wrapped;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_ASSIGN_OR_RETURN(wrapped, impl_->wrap_in(store, keyref, plaintext, context,
                                                      GrantOperation::kGenerate, event));
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<WrappedKey>(event, status.error());
  }
  return impl_->finish<WrappedKey>(event, std::move(*wrapped));
}

Result<SecretBytes> LocalKms::decrypt(const WrappedKey& wrapped, const EncryptionContext& context) {
  AuditEvent event{"Decrypt", "", std::nullopt, context, "", {}};
  std::optional<SecretBytes> plaintext;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_ASSIGN_OR_RETURN(
        plaintext, impl_->unwrap_in(store, wrapped, context, GrantOperation::kDecrypt, event));
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<SecretBytes>(event, status.error());
  }
  return impl_->finish<SecretBytes>(event, std::move(*plaintext));
}

Result<WrappedKey> LocalKms::reencrypt(const WrappedKey& wrapped,
                                       const EncryptionContext& source_context,
                                       std::string_view destination_keyref,
                                       const EncryptionContext& destination_context) {
  AuditEvent event{"ReEncrypt", "", std::nullopt, destination_context, "", {}};
  std::optional<WrappedKey> rewrapped;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    AuditEvent source{"ReEncrypt", "", std::nullopt, source_context, "", {}};
    ENVCRYPT_ASSIGN_OR_RETURN(
        const SecretBytes plaintext,
        impl_->unwrap_in(store, wrapped, source_context, GrantOperation::kReencrypt, source));
    event.details["source_key_id"] = source.key_id;
    event.details["source_key_version"] = std::to_string(wrapped.cmk_version);
    ENVCRYPT_ASSIGN_OR_RETURN(
        rewrapped, impl_->wrap_in(store, destination_keyref, plaintext, destination_context,
                                  GrantOperation::kReencrypt, event));
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<WrappedKey>(event, status.error());
  }
  return impl_->finish<WrappedKey>(event, std::move(*rewrapped));
}

Result<KeyInfo> LocalKms::create_key(const CreateKeyRequest& request) {
  AuditEvent event{"CreateKey", "", std::nullopt, {}, "", {}};
  event.details["origin"] = std::string(to_string(request.origin));
  std::optional<KeyInfo> info;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    std::optional<std::string> alias;
    if (request.alias) {
      alias = strip_alias_prefix(*request.alias);
      event.details["alias"] = "alias/" + *alias;
      ENVCRYPT_TRY(check_alias_name(*alias));
      if (store.aliases.contains(*alias)) {
        return Error(ErrorCode::kConflict, "alias alias/" + *alias + " already exists (key " +
                                               impl_->uri_of(store.aliases.at(*alias)) + ")");
      }
    }
    if (request.rotation_interval_days) {
      const std::uint32_t days = *request.rotation_interval_days;
      if (request.origin == KeyOrigin::kExternal) {
        return Error(ErrorCode::kUsage,
                     "a key with origin EXTERNAL cannot rotate automatically: its material is "
                     "imported");
      }
      if (days < 1 || days > kMaxRotationIntervalDays) {
        return Error(ErrorCode::kUsage, "rotation interval must be 1-" +
                                            std::to_string(kMaxRotationIntervalDays) +
                                            " days, got " + std::to_string(days));
      }
    }
    ENVCRYPT_ASSIGN_OR_RETURN(const std::string id, new_key_id());
    ENVCRYPT_ASSIGN_OR_RETURN(StoredKey key, impl_->make_key(id, request.origin));
    key.description = request.description;
    key.rotation_interval_days = request.rotation_interval_days;
    event.key_id = id;
    event.key_version =
        key.primary_version == 0 ? std::nullopt : std::optional(key.primary_version);
    auto [slot, inserted] = store.keys.emplace(id, std::move(key));
    (void)inserted;
    if (alias) {
      store.aliases.emplace(*alias, id);
    }
    info = impl_->info_of(store, slot->second);
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<KeyInfo>(event, status.error());
  }
  return impl_->finish<KeyInfo>(event, std::move(*info));
}

Result<KeyInfo> LocalKms::describe_key(std::string_view keyref) {
  return impl_->with_key<KeyInfo>(
      "DescribeKey", keyref, GrantOperation::kDescribe,
      [&](Store& store, StoredKey& key, AuditEvent&) -> Result<KeyInfo> {
        return impl_->info_of(store, key);
      });
}

Result<LocalKeyDetails> LocalKms::describe_key_details(std::string_view keyref) {
  return impl_->with_key<LocalKeyDetails>(
      "DescribeKey", keyref, GrantOperation::kDescribe,
      [&](Store& store, StoredKey& key, AuditEvent&) -> Result<LocalKeyDetails> {
        LocalKeyDetails details;
        details.info = impl_->info_of(store, key);
        details.owner = key.owner;
        details.rotation_interval_days = key.rotation_interval_days;
        details.last_rotated_at = key.last_rotated_at;
        for (const StoredVersion& version : key.versions) {
          details.versions.push_back({version.version, version.created_at});
        }
        details.material_expires_at = key.material_expires_at;
        return details;
      });
}

Result<std::vector<KeyInfo>> LocalKms::list_keys() {
  AuditEvent event{"ListKeys", "", std::nullopt, {}, "", {}};
  std::vector<KeyInfo> keys;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (const auto& [id, key] : store.keys) {
      keys.push_back(impl_->info_of(store, key));
    }
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<std::vector<KeyInfo>>(event, status.error());
  }
  return impl_->finish<std::vector<KeyInfo>>(event, std::move(keys));
}

Status LocalKms::enable_key(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "EnableKey", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.state == KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is PendingDeletion: cancel the deletion first");
        }
        if (key.state == KeyState::kPendingImport) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is PendingImport: import its material first");
        }
        key.state = KeyState::kEnabled;
        return Ok{};
      });
}

Status LocalKms::disable_key(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "DisableKey", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.service) {
          return impl_->service_key_refusal(key, "be disabled");
        }
        if (key.state == KeyState::kPendingDeletion || key.state == KeyState::kPendingImport) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) + " is " +
                                               std::string(to_string(key.state)) +
                                               ": only an Enabled key can be disabled");
        }
        key.state = KeyState::kDisabled;
        return Ok{};
      });
}

Result<KeyInfo> LocalKms::schedule_key_deletion(std::string_view keyref,
                                                std::uint32_t pending_window_days) {
  return impl_->with_key<KeyInfo>(
      "ScheduleKeyDeletion", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<KeyInfo> {
        event.details["pending_window_days"] = std::to_string(pending_window_days);
        if (key.service) {
          return impl_->service_key_refusal(key, "be scheduled for deletion");
        }
        if (pending_window_days < kMinDeletionWindowDays ||
            pending_window_days > kMaxDeletionWindowDays) {
          return Error(ErrorCode::kUsage, "pending window must be " +
                                              std::to_string(kMinDeletionWindowDays) + "-" +
                                              std::to_string(kMaxDeletionWindowDays) +
                                              " days, got " + std::to_string(pending_window_days));
        }
        if (key.state == KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) +
                                               " is already PendingDeletion (deletion date " +
                                               format_rfc3339(key.deletion_date.value_or(0)) + ")");
        }
        key.state = KeyState::kPendingDeletion;
        key.deletion_date =
            impl_->now() + static_cast<std::int64_t>(pending_window_days) * kSecondsPerDay;
        event.details["deletion_date"] = format_rfc3339(*key.deletion_date);
        return impl_->info_of(store, key);
      });
}

Status LocalKms::cancel_key_deletion(std::string_view keyref) {
  return impl_->with_key<Ok>(
      "CancelKeyDeletion", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<Ok> {
        if (key.service) {
          return impl_->service_key_refusal(key, "be scheduled for deletion or cancelled");
        }
        if (key.state != KeyState::kPendingDeletion) {
          return Error(ErrorCode::kDenied, "key " + impl_->uri_of(key.id) + " is " +
                                               std::string(to_string(key.state)) +
                                               ", not PendingDeletion");
        }
        // A key without material (imported, then deleted) cannot be Disabled:
        // it waits for its material again.
        key.state = key.versions.empty() ? KeyState::kPendingImport : KeyState::kDisabled;
        key.deletion_date.reset();
        return Ok{};
      });
}

Status LocalKms::create_alias(std::string_view alias, std::string_view keyref) {
  const std::string name = strip_alias_prefix(alias);
  return impl_->with_key<Ok>("CreateAlias", keyref, GrantOperation::kAdmin,
                             [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<Ok> {
                               event.details["alias"] = "alias/" + name;
                               ENVCRYPT_TRY(check_alias_name(name));
                               if (store.aliases.contains(name)) {
                                 return Error(ErrorCode::kConflict,
                                              "alias alias/" + name + " already exists (key " +
                                                  impl_->uri_of(store.aliases.at(name)) + ")");
                               }
                               store.aliases.emplace(name, key.id);
                               return Ok{};
                             });
}

Status LocalKms::delete_alias(std::string_view alias) {
  const std::string name = strip_alias_prefix(alias);
  const std::string reference = "alias/" + name;
  if (name.starts_with(kReservedAliasPrefix)) {
    AuditEvent event{"DeleteAlias", "", std::nullopt, {}, "", {{"alias", reference}}};
    return impl_->finish<Ok>(event, Error(ErrorCode::kDenied, "alias " + reference +
                                                                  " names a service key and "
                                                                  "cannot be deleted"));
  }
  return impl_->with_key<Ok>("DeleteAlias", reference, GrantOperation::kAdmin,
                             [&](Store& store, StoredKey&, AuditEvent& event) -> Result<Ok> {
                               event.details["alias"] = reference;
                               store.aliases.erase(name);
                               return Ok{};
                             });
}

Result<std::map<std::string, std::string>> LocalKms::list_aliases() {
  AuditEvent event{"ListAliases", "", std::nullopt, {}, "", {}};
  std::map<std::string, std::string> aliases;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (const auto& [name, id] : store.aliases) {
      aliases.emplace(std::string(kAliasPrefix) + name, id);
    }
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<std::map<std::string, std::string>>(event, status.error());
  }
  return impl_->finish<std::map<std::string, std::string>>(event, std::move(aliases));
}

Result<KeyInfo> LocalKms::rotate_key(std::string_view keyref) {
  return impl_->with_key<KeyInfo>(
      "RotateKey", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<KeyInfo> {
        ENVCRYPT_TRY(impl_->check_rotatable(key));
        ENVCRYPT_TRY(impl_->add_version(key));
        event.key_version = key.primary_version;
        event.details["trigger"] = "request";
        return impl_->info_of(store, key);
      });
}

Result<std::vector<KeyInfo>> LocalKms::rotate_due() {
  AuditEvent event{"RotateDue", "", std::nullopt, {}, "", {}};
  std::vector<KeyInfo> rotated;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (auto& [id, key] : store.keys) {
      if (impl_->rotation_due(key)) {
        ENVCRYPT_TRY(impl_->rotate_if_due(key, "interval elapsed, rotate-due"));
        rotated.push_back(impl_->info_of(store, key));
      }
    }
    return OkStatus();
  });
  event.details["rotated"] = std::to_string(rotated.size());
  if (!status.ok()) {
    return impl_->finish<std::vector<KeyInfo>>(event, status.error());
  }
  return impl_->finish<std::vector<KeyInfo>>(event, std::move(rotated));
}

Result<ImportParameters> LocalKms::get_parameters_for_import(std::string_view keyref) {
  return impl_->with_key<ImportParameters>(
      "GetParametersForImport", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<ImportParameters> {
        ENVCRYPT_TRY(impl_->require_external(key));
        if (key.state == KeyState::kPendingDeletion) {
          return impl_->require_enabled(key).error();
        }
        ENVCRYPT_ASSIGN_OR_RETURN(const RsaKeyPair pair, generate_rsa2048());
        ENVCRYPT_ASSIGN_OR_RETURN(const Bytes token, random_bytes(32));
        PendingImportParameters pending;
        pending.token = to_hex(token);
        pending.expires_at = impl_->now() + kImportTokenLifetime;
        ENVCRYPT_ASSIGN_OR_RETURN(pending.private_key,
                                  impl_->seal(pair.private_key_pem, import_key_aad(key.id)));
        ImportParameters parameters;
        parameters.key_id = key.id;
        parameters.public_key_pem = pair.public_key_pem;
        parameters.import_token = pending.token;
        parameters.expires_at = pending.expires_at;
        key.pending_import = std::move(pending);
        return parameters;
      });
}

Result<KeyInfo> LocalKms::import_key_material(std::string_view keyref,
                                              const ImportMaterialRequest& request) {
  return impl_->with_key<KeyInfo>(
      "ImportKeyMaterial", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent& event) -> Result<KeyInfo> {
        const std::string uri = impl_->uri_of(key.id);
        ENVCRYPT_TRY(impl_->require_external(key));
        if (key.state == KeyState::kPendingDeletion) {
          return impl_->require_enabled(key).error();
        }
        if (!key.pending_import) {
          return Error(ErrorCode::kUsage, "no import parameters for key " + uri +
                                              ": run get-parameters-for-import first");
        }
        const PendingImportParameters& pending = *key.pending_import;
        if (request.import_token.size() != pending.token.size() ||
            CRYPTO_memcmp(request.import_token.data(), pending.token.data(),
                          pending.token.size()) != 0) {
          return Error(ErrorCode::kDenied,
                       "import token does not match the parameters last "
                       "issued for key " +
                           uri);
        }
        if (impl_->now() >= pending.expires_at) {
          return Error(ErrorCode::kDenied, "import token for key " + uri + " expired at " +
                                               format_rfc3339(pending.expires_at) +
                                               ": get new import parameters");
        }
        if (request.material_expires_at && *request.material_expires_at <= impl_->now()) {
          return Error(ErrorCode::kUsage, "material expiry " +
                                              format_rfc3339(*request.material_expires_at) +
                                              " is not in the future");
        }
        ENVCRYPT_ASSIGN_OR_RETURN(
            const SecretBytes private_key,
            impl_->unseal(pending.private_key, import_key_aad(key.id), "import key of " + uri));
        Result<SecretBytes> material =
            rsa_oaep_sha256_decrypt(private_key, request.encrypted_material);
        if (!material.ok()) {
          return Error(ErrorCode::kUsage, "cannot unwrap the key material for " + uri +
                                              ": it is not wrapped with RSAES_OAEP_SHA_256 "
                                              "under this import public key");
        }
        if (material->size() != kCmkSize) {
          return Error(ErrorCode::kUsage,
                       "key material must be 32 bytes, got " + std::to_string(material->size()));
        }
        const std::string check = material_check_of(*material);
        if (!key.material_check.empty() && key.material_check != check) {
          return Error(ErrorCode::kConflict,
                       "key material differs from the material imported before into key " + uri +
                           ": only the same material can be re-imported");
        }
        if (key.versions.empty()) {
          ENVCRYPT_ASSIGN_OR_RETURN(StoredVersion version, impl_->new_version(key, 1, *material));
          key.versions.push_back(std::move(version));
          key.primary_version = 1;
        }
        key.material_check = check;
        key.material_expires_at = request.material_expires_at;
        key.backup_allowed = request.allow_backup;
        key.pending_import.reset();  // a token serves one import
        if (key.state == KeyState::kPendingImport) {
          key.state = KeyState::kEnabled;
        }
        event.key_version = key.primary_version;
        if (request.material_expires_at) {
          event.details["material_expires_at"] = format_rfc3339(*request.material_expires_at);
        }
        if (request.allow_backup) {
          event.details["allow_backup"] = "true";
        }
        return impl_->info_of(store, key);
      });
}

Result<KeyInfo> LocalKms::delete_key_material(std::string_view keyref) {
  return impl_->with_key<KeyInfo>(
      "DeleteKeyMaterial", keyref, GrantOperation::kAdmin,
      [&](Store& store, StoredKey& key, AuditEvent&) -> Result<KeyInfo> {
        if (key.service) {
          return impl_->service_key_refusal(key, "have its material deleted");
        }
        ENVCRYPT_TRY(impl_->require_external(key));
        key.versions.clear();
        key.primary_version = 0;
        key.material_expires_at.reset();
        if (key.state != KeyState::kPendingDeletion) {
          key.state = KeyState::kPendingImport;
        }
        return impl_->info_of(store, key);
      });
}

Result<Grant> LocalKms::create_grant(std::string_view keyref, std::string_view principal,
                                     const std::vector<GrantOperation>& operations) {
  return impl_->with_key<Grant>(
      "CreateGrant", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent& event) -> Result<Grant> {
        event.details["grantee"] = std::string(principal);
        if (key.service) {
          return Error(ErrorCode::kUsage, "the service key " + impl_->uri_of(key.id) +
                                              " serves every principal of region " +
                                              impl_->options.region + " and takes no grants");
        }
        if (!known_principal(principal)) {
          return Error(ErrorCode::kUsage,
                       "unknown principal '" + std::string(principal) +
                           "': use host/<hostname>, user/<name> or service/<name>");
        }
        if (operations.empty()) {
          return Error(ErrorCode::kUsage, "a grant needs at least one operation");
        }
        ENVCRYPT_ASSIGN_OR_RETURN(const Bytes id, random_bytes(16));
        StoredGrant stored{
            to_hex(id), std::string(principal), {}, impl_->options.principal, impl_->now()};
        Grant grant{stored.id, key.id, stored.principal, {}, stored.created_by, stored.created_at};
        for (const GrantOperation operation : operations) {
          const std::string name(to_string(operation));
          if (std::find(stored.operations.begin(), stored.operations.end(), name) ==
              stored.operations.end()) {
            stored.operations.push_back(name);
            grant.operations.push_back(operation);
          }
        }
        event.details["grant_id"] = stored.id;
        event.details["operations"] = json(stored.operations).dump();
        key.grants.push_back(std::move(stored));
        return grant;
      });
}

Status LocalKms::revoke_grant(std::string_view keyref, std::string_view grant_id) {
  return impl_->with_key<Ok>(
      "RevokeGrant", keyref, GrantOperation::kAdmin,
      [&](Store&, StoredKey& key, AuditEvent& event) -> Result<Ok> {
        event.details["grant_id"] = std::string(grant_id);
        const auto found = std::find_if(key.grants.begin(), key.grants.end(),
                                        [&](const StoredGrant& g) { return g.id == grant_id; });
        if (found == key.grants.end()) {
          return Error(ErrorCode::kNotFound, "grant " + std::string(grant_id) +
                                                 " not found on key " + impl_->uri_of(key.id));
        }
        key.grants.erase(found);
        return Ok{};
      });
}

Result<std::vector<Grant>> LocalKms::list_grants(std::string_view keyref) {
  return impl_->with_key<std::vector<Grant>>(
      "ListGrants", keyref, GrantOperation::kDescribe,
      [&](Store&, StoredKey& key, AuditEvent&) -> Result<std::vector<Grant>> {
        std::vector<Grant> grants;
        for (const StoredGrant& stored : key.grants) {
          Grant grant{stored.id,         key.id,           stored.principal, {},
                      stored.created_by, stored.created_at};
          for (const std::string& name : stored.operations) {
            ENVCRYPT_ASSIGN_OR_RETURN(const GrantOperation operation, parse_grant_operation(name));
            grant.operations.push_back(operation);
          }
          grants.push_back(std::move(grant));
        }
        return grants;
      });
}

Result<std::vector<std::string>> LocalKms::purge_due() {
  AuditEvent event{"PurgeDue", "", std::nullopt, {}, "", {}};
  std::vector<std::string> purged;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    for (auto it = store.keys.begin(); it != store.keys.end();) {
      const StoredKey& key = it->second;
      if (key.state != KeyState::kPendingDeletion || !key.deletion_date ||
          *key.deletion_date > impl_->now()) {
        ++it;
        continue;
      }
      purged.push_back(key.id);
      impl_->side_events.push_back(
          {"DeleteKey",
           key.id,
           std::nullopt,
           {},
           "ok",
           {{"reason", "deletion date " + format_rfc3339(*key.deletion_date) + " reached"}}});
      std::erase_if(store.aliases, [&](const auto& alias) { return alias.second == key.id; });
      store.deleted[key.id] = impl_->now();
      it = store.keys.erase(it);
    }
    return OkStatus();
  });
  event.details["purged"] = std::to_string(purged.size());
  if (!status.ok()) {
    return impl_->finish<std::vector<std::string>>(event, status.error());
  }
  return impl_->finish<std::vector<std::string>>(event, std::move(purged));
}

Status LocalKms::backup_keystore(
    const std::function<Status(KeystoreRecords&, AuditEvent&)>& write) {
  AuditEvent event{"BackupKeystore", "", std::nullopt, {}, "", {}};
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_ASSIGN_OR_RETURN(KeystoreRecords records, impl_->records_of(store));
    return write(records, event);
  });
  return impl_->finish<Ok>(event, status);
}

Result<RestoreOutcome> LocalKms::restore_keystore(
    const KeystoreRecords& records, bool merge, const std::map<std::string, std::string>& details) {
  AuditEvent event{"RestoreKeystore", "", std::nullopt, {}, "", details};
  event.details["merge"] = merge ? "true" : "false";
  RestoreOutcome outcome;
  const Status status = impl_->transact(event, [&](Store& store) -> Status {
    ENVCRYPT_TRY(impl_->restore_into(store, records, merge, outcome));
    event.details["added"] = std::to_string(outcome.added.size());
    event.details["kept"] = std::to_string(outcome.kept.size());
    return OkStatus();
  });
  if (!status.ok()) {
    return impl_->finish<RestoreOutcome>(event, status.error());
  }
  return impl_->finish<RestoreOutcome>(event, std::move(outcome));
}

}  // namespace envcrypt
