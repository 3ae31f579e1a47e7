// The keystore document of one region: its JSON form, sealing under the
// root key, and the locked, audited transactions every operation runs in.
#include "kms/local/kms_local_store.h"

#include <nlohmann/json.hpp>

#include "util/json_integer.h"
#include "util/secret_io.h"
#include "util/uuid.h"

namespace envcrypt {
namespace {

using json = nlohmann::json;

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
  return Error(ErrorCode::kCorrupt, "unknown key state '" + std::string(text) + "'");
}

Result<KeyOrigin> parse_origin(std::string_view text) {
  for (const KeyOrigin origin : {KeyOrigin::kKms, KeyOrigin::kExternal}) {
    if (to_string(origin) == text) {
      return origin;
    }
  }
  return Error(ErrorCode::kCorrupt, "unknown key origin '" + std::string(text) + "'");
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

}  // namespace

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
    return Error(ErrorCode::kCorrupt, "keystore " + path.string() + " is damaged: " + why);
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

ByteView as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string strip_alias_prefix(std::string_view alias) {
  if (alias.starts_with(kAliasPrefix)) {
    alias.remove_prefix(kAliasPrefix.size());
  }
  return std::string(alias);
}

Result<std::string> new_key_id() {
  ENVCRYPT_ASSIGN_OR_RETURN(const Uuid uuid, random_uuid());
  return uuid_to_string(uuid);
}

std::string LocalKms::Impl::material_aad(const std::string& key_id, std::uint32_t version) const {
  std::string aad = "envcrypt/local/cmk";
  for (const std::string& part : {options.region, key_id, std::to_string(version)}) {
    aad.push_back('\0');
    aad += part;
  }
  return aad;
}

Result<SealedBlob> LocalKms::Impl::seal(const SecretBytes& secret, const std::string& aad) const {
  ENVCRYPT_ASSIGN_OR_RETURN(const GcmSealed sealed,
                            aes256_gcm_seal(root_key.span(), secret.span(), as_bytes(aad)));
  return SealedBlob{to_hex(sealed.nonce), to_hex(sealed.ciphertext), to_hex(sealed.tag)};
}

Result<SecretBytes> LocalKms::Impl::unseal(const SealedBlob& blob, const std::string& aad,
                                           const std::string& what) const {
  ENVCRYPT_ASSIGN_OR_RETURN(const Bytes nonce, from_hex(blob.nonce));
  ENVCRYPT_ASSIGN_OR_RETURN(const Bytes ciphertext, from_hex(blob.ciphertext));
  ENVCRYPT_ASSIGN_OR_RETURN(const Bytes tag, from_hex(blob.tag));
  if (nonce.size() != kGcmNonceSize) {
    return Error(ErrorCode::kCorrupt, what + ": bad nonce in the keystore");
  }
  Result<SecretBytes> opened =
      aes256_gcm_open(root_key.span(), nonce, ciphertext, tag, as_bytes(aad));
  if (!opened.ok()) {
    return Error(ErrorCode::kCorrupt, what + " does not open under root key " +
                                          options.root_key.string() +
                                          " (wrong root key or damaged keystore)");
  }
  return opened;
}

Result<StoredVersion> LocalKms::Impl::new_version(const StoredKey& key, std::uint32_t number,
                                                  const SecretBytes& material) const {
  ENVCRYPT_ASSIGN_OR_RETURN(SealedBlob sealed, seal(material, material_aad(key.id, number)));
  return StoredVersion{number, now(), std::move(sealed)};
}

Result<SecretBytes> LocalKms::Impl::material_of(const StoredKey& key, std::uint32_t number) const {
  const auto found = std::find_if(key.versions.begin(), key.versions.end(),
                                  [number](const StoredVersion& v) { return v.version == number; });
  if (found == key.versions.end()) {
    return Error(ErrorCode::kNotFound,
                 "key " + uri_of(key.id) + " has no version " + std::to_string(number));
  }
  return unseal(found->material, material_aad(key.id, number),
                "version " + std::to_string(number) + " of key " + uri_of(key.id));
}

Result<StoredKey> LocalKms::Impl::make_key(const std::string& id, KeyOrigin origin) const {
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

Status LocalKms::Impl::ensure_service_key(Store& store) const {
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

void LocalKms::Impl::expire_material(Store& store) {
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

Status LocalKms::Impl::transact(const AuditEvent& event,
                                const std::function<Status(Store&)>& body) {
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

Status LocalKms::Impl::announce(const AuditEvent& event) {
  AuditEvent intent = event;
  intent.result = "pending";
  intent.details["store"] = store_name;
  ENVCRYPT_ASSIGN_OR_RETURN(const std::uint64_t seq, audit.append(intent, {true, std::nullopt}));
  pending_intent = seq;
  return options.before_commit ? options.before_commit() : OkStatus();
}

bool LocalKms::Impl::keep_for_later(const AuditEvent& event, const Error& error) {
  const bool read_only =
      options.read_only ? options.read_only() : on_read_only_file_system(options.dir);
  return read_only && audit.defer(event, error.message()).ok();
}

}  // namespace envcrypt
