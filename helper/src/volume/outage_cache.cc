#include "volume/outage_cache.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "audit/audit.h"
#include "util/crypto.h"
#include "util/file_io.h"
#include "util/json_integer.h"
#include "util/keystore.h"
#include "util/printable.h"

namespace envcrypt {
namespace {

using nlohmann::json;

constexpr std::string_view kEntryFormat = "envcrypt-outage-cache";
constexpr std::size_t kMaxEntrySize = 64 * 1024;
constexpr std::size_t kMaxUsesSize = 256 * 1024;
constexpr std::size_t kMaxReasonSize = 1024;
constexpr std::size_t kBindingSize = 32;  // SHA-256
// A confirmation this far in the future means the clock went back: the
// entry's age cannot be told, so it does not serve.
constexpr std::int64_t kClockSlackSeconds = 300;

Error bad_entry(const std::string& why) {
  return {ErrorCode::kCorrupt, "outage cache entry: " + why};
}

std::string wrap_sha256(const WrappedKey& wrapped) {
  Bytes all(wrapped.nonce);
  all.insert(all.end(), wrapped.tag.begin(), wrapped.tag.end());
  all.insert(all.end(), wrapped.ciphertext.begin(), wrapped.ciphertext.end());
  return to_hex(sha256(ByteView(all)));
}

// What the TPM seals beside the key: every field of the entry but the
// sealed blob, so none can be edited without the entry failing.
Sha256Digest binding_of(const CacheEntry& entry) {
  std::ostringstream text;
  text << kEntryFormat << " v1\n"
       << entry.disk_uuid << '\n'
       << entry.cmk_uri << '\n'
       << entry.cmk_version << '\n'
       << entry.wrap_sha256 << '\n'
       << entry.confirmed_at;
  return sha256(std::string_view(text.str()));
}

bool is_lower_hex(std::string_view text, std::size_t size) {
  return text.size() == size && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Result<std::string> string_field(const json& object, const char* name, std::size_t max_size) {
  const auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    return bad_entry(std::string("\"") + name + "\" is missing or not a string");
  }
  const std::string value = it->get<std::string>();
  if (value.empty() || value.size() > max_size || printable(value) != value) {
    return bad_entry(std::string("\"") + name + "\" is empty, too long or not printable");
  }
  return value;
}

template <typename T>
Result<T> integer_field(const json& object, const char* name) {
  const auto it = object.find(name);
  const std::optional<T> value = it == object.end() ? std::nullopt : exact_integer<T>(*it);
  if (!value) {
    return bad_entry(std::string("\"") + name + "\" is missing or not an integer in range");
  }
  return *value;
}

Status check_known_fields(const json& object, const std::set<std::string>& known) {
  for (const auto& [key, value] : object.items()) {
    if (known.count(key) == 0) {
      return bad_entry("unknown field \"" + printable(key) + "\"");
    }
  }
  return OkStatus();
}

// max_age as configured: whole hours, whole seconds, or milliseconds.
std::string describe_age(std::chrono::milliseconds age) {
  const auto ms = age.count();
  if (ms % 3'600'000 == 0) {
    return std::to_string(ms / 3'600'000) + "h";
  }
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

}  // namespace

std::int64_t system_clock_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

std::string encode_cache_entry(const CacheEntry& entry) {
  const json object = {{"format", kEntryFormat},
                       {"version", 1},
                       {"disk", entry.disk_uuid},
                       {"cmk", entry.cmk_uri},
                       {"cmk_version", entry.cmk_version},
                       {"wrap_sha256", entry.wrap_sha256},
                       {"confirmed_at", entry.confirmed_at},
                       {"sealed", json::parse(encode_sealed_blob(entry.sealed))}};
  return object.dump(2) + "\n";
}

Result<CacheEntry> decode_cache_entry(std::string_view text) {
  if (text.size() > kMaxEntrySize) {
    return bad_entry("larger than 64 KiB");
  }
  const json object = json::parse(text, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return bad_entry("not a JSON object");
  }
  ENVCRYPT_TRY(check_known_fields(object, {"format", "version", "disk", "cmk", "cmk_version",
                                           "wrap_sha256", "confirmed_at", "sealed"}));
  if (object.value("format", json()) != kEntryFormat) {
    return bad_entry("\"format\" is not \"" + std::string(kEntryFormat) + "\"");
  }
  if (object.value("version", json()) != 1) {
    return bad_entry("\"version\" is not 1");
  }
  CacheEntry entry;
  ENVCRYPT_ASSIGN_OR_RETURN(entry.disk_uuid, string_field(object, "disk", 36));
  if (!uuid_from_string(entry.disk_uuid).ok()) {
    return bad_entry("\"disk\" is not a disk uuid");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(entry.cmk_uri, string_field(object, "cmk", 1024));
  ENVCRYPT_ASSIGN_OR_RETURN(entry.cmk_version, integer_field<std::uint32_t>(object, "cmk_version"));
  ENVCRYPT_ASSIGN_OR_RETURN(entry.wrap_sha256, string_field(object, "wrap_sha256", 64));
  if (!is_lower_hex(entry.wrap_sha256, 64)) {
    return bad_entry("\"wrap_sha256\" is not 64 lower-case hex digits");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(entry.confirmed_at,
                            integer_field<std::int64_t>(object, "confirmed_at"));
  if (entry.confirmed_at < 0) {
    return bad_entry("\"confirmed_at\" is negative");
  }
  const auto sealed = object.find("sealed");
  if (sealed == object.end() || !sealed->is_object()) {
    return bad_entry("\"sealed\" is missing or not an object");
  }
  auto blob = decode_sealed_blob(sealed->dump());
  if (!blob.ok()) {
    return bad_entry("\"sealed\": " + blob.error().message());
  }
  if (blob->policy.pin) {
    return bad_entry("\"sealed\" asks for a PIN, which the outage cache never sets");
  }
  entry.sealed = std::move(*blob);
  return entry;
}

std::string encode_cache_use(const CacheUse& use) {
  return json({{"time", use.time},
               {"reason", use.reason},
               {"valid_until", use.valid_until},
               {"cmk", use.cmk_uri},
               {"cmk_version", use.cmk_version}})
      .dump();
}

Result<CacheUse> decode_cache_use(std::string_view line) {
  const json object = json::parse(line, nullptr, false);
  if (object.is_discarded() || !object.is_object()) {
    return bad_entry("use record is not a JSON object");
  }
  ENVCRYPT_TRY(check_known_fields(object, {"time", "reason", "valid_until", "cmk", "cmk_version"}));
  CacheUse use;
  ENVCRYPT_ASSIGN_OR_RETURN(use.time, integer_field<std::int64_t>(object, "time"));
  ENVCRYPT_ASSIGN_OR_RETURN(use.reason, string_field(object, "reason", kMaxReasonSize));
  ENVCRYPT_ASSIGN_OR_RETURN(use.valid_until, integer_field<std::int64_t>(object, "valid_until"));
  ENVCRYPT_ASSIGN_OR_RETURN(use.cmk_uri, string_field(object, "cmk", 1024));
  ENVCRYPT_ASSIGN_OR_RETURN(use.cmk_version, integer_field<std::uint32_t>(object, "cmk_version"));
  return use;
}

OutageCache::OutageCache(OutageCacheConfig config, std::string tcti, Clock clock)
    : config_(std::move(config)), tcti_(std::move(tcti)), clock_(std::move(clock)) {}

std::filesystem::path OutageCache::entry_path(const std::string& disk_uuid) const {
  return config_.dir / (disk_uuid + ".json");
}

std::filesystem::path OutageCache::uses_path(const std::string& disk_uuid) const {
  return config_.dir / (disk_uuid + ".uses");
}

Result<std::optional<CacheEntry>> OutageCache::read_entry(const std::string& disk_uuid) const {
  const std::filesystem::path path = entry_path(disk_uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(std::optional<std::string> text, read_private_file(path));
  if (!text) {
    return std::optional<CacheEntry>();
  }
  auto entry = decode_cache_entry(*text);
  if (!entry.ok()) {
    return entry.error().with_context(path.string());
  }
  if (entry->disk_uuid != disk_uuid) {
    return bad_entry("is for disk " + entry->disk_uuid).with_context(path.string());
  }
  return std::optional<CacheEntry>(std::move(*entry));
}

Status OutageCache::store(const DiskHeader& header, const SecretBytes& data_key) {
  ENVCRYPT_TRY(check_data_key(header, data_key));
  if (data_key.size() + kBindingSize > 128) {
    return Error(ErrorCode::kUsage,
                 "a " + std::to_string(data_key.size()) + "-byte data key is too long to seal");
  }
  CacheEntry entry;
  entry.disk_uuid = uuid_to_string(header.uuid);
  entry.cmk_uri = header.wrapped.cmk_uri;
  entry.cmk_version = header.wrapped.cmk_version;
  entry.wrap_sha256 = wrap_sha256(header.wrapped);
  entry.confirmed_at = clock_();
  const Sha256Digest binding = binding_of(entry);
  SecretBytes secret(data_key.size() + kBindingSize);
  std::copy(data_key.span().begin(), data_key.span().end(), secret.data());
  std::copy(binding.begin(), binding.end(), secret.data() + data_key.size());
  ENVCRYPT_ASSIGN_OR_RETURN(entry.sealed,
                            tpm_seal(tcti_, secret, TpmSealPolicy{config_.pcrs, false}, {}));
  ENVCRYPT_TRY(ensure_private_directory(config_.dir));
  return write_file_durably(entry_path(entry.disk_uuid), encode_cache_entry(entry));
}

Result<bool> OutageCache::forget(const std::string& disk_uuid) {
  const std::filesystem::path path = entry_path(disk_uuid);
  // Looked up first: unlink(2) of a missing file on a read-only file system
  // fails with EROFS, and most attaches have no entry to remove.
  if (::access(path.c_str(), F_OK) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
    return false;
  }
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return false;
    }
    return error_from_errno(ErrorCode::kIo, "remove " + path.string(), errno);
  }
  ENVCRYPT_TRY(fsync_directory(config_.dir));
  return true;
}

Result<SecretBytes> OutageCache::use(const DiskHeader& header, const std::string& reason,
                                     std::int64_t* valid_until) {
  const std::string disk_uuid = uuid_to_string(header.uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(std::optional<CacheEntry> entry, read_entry(disk_uuid));
  if (!entry) {
    return Error(ErrorCode::kNotFound, "no entry for this disk in " + config_.dir.string());
  }
  if (entry->cmk_uri != header.wrapped.cmk_uri ||
      entry->cmk_version != header.wrapped.cmk_version ||
      entry->wrap_sha256 != wrap_sha256(header.wrapped)) {
    return Error(ErrorCode::kNotFound, "the entry is for " + entry->cmk_uri + " version " +
                                           std::to_string(entry->cmk_version) +
                                           ", not the disk's wrap under " + header.wrapped.cmk_uri +
                                           " version " +
                                           std::to_string(header.wrapped.cmk_version));
  }
  const std::int64_t now = clock_();
  const std::int64_t until =
      entry->confirmed_at +
      std::chrono::duration_cast<std::chrono::seconds>(config_.max_age).count();
  if (entry->confirmed_at > now + kClockSlackSeconds) {
    return Error(ErrorCode::kDenied, "the entry was confirmed at " +
                                         format_rfc3339(entry->confirmed_at) +
                                         ", later than now: the clock went back");
  }
  if (now > until) {
    return Error(ErrorCode::kDenied, "the entry expired at " + format_rfc3339(until) +
                                         " (confirmed " + format_rfc3339(entry->confirmed_at) +
                                         ", max_age " + describe_age(config_.max_age) + ")");
  }
  ENVCRYPT_ASSIGN_OR_RETURN(SecretBytes secret, tpm_unseal(tcti_, entry->sealed, {}));
  const Sha256Digest binding = binding_of(*entry);
  if (secret.size() <= kBindingSize || CRYPTO_memcmp(secret.data() + secret.size() - kBindingSize,
                                                     binding.data(), kBindingSize) != 0) {
    return bad_entry("does not match what was sealed with it (edited?)");
  }
  SecretBytes data_key(secret.data(), secret.size() - kBindingSize);
  ENVCRYPT_TRY(check_data_key(header, data_key));
  CacheUse record{now, reason.substr(0, kMaxReasonSize), until, header.wrapped.cmk_uri,
                  header.wrapped.cmk_version};
  if (auto recorded = record_use(disk_uuid, record); !recorded.ok()) {
    return recorded.error().with_context("cannot record the use, so it is not made");
  }
  *valid_until = until;
  return data_key;
}

Status OutageCache::record_use(const std::string& disk_uuid, const CacheUse& use) {
  const std::filesystem::path path = uses_path(disk_uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(std::optional<std::string> text, read_private_file(path));
  std::string uses = text.value_or("");
  if (uses.size() > kMaxUsesSize) {
    return Error(ErrorCode::kIo, path.string() + " is over 256 KiB: attach once with the KMS up");
  }
  uses += encode_cache_use(use) + "\n";
  return write_file_durably(path, uses);
}

Result<std::vector<CacheUse>> OutageCache::pending_uses(const std::string& disk_uuid) const {
  const std::filesystem::path path = uses_path(disk_uuid);
  ENVCRYPT_ASSIGN_OR_RETURN(std::optional<std::string> text, read_private_file(path));
  std::vector<CacheUse> uses;
  std::istringstream lines(text.value_or(""));
  std::string line;
  while (std::getline(lines, line)) {
    auto use = decode_cache_use(line);
    if (use.ok()) {
      uses.push_back(std::move(*use));
      continue;
    }
    CacheUse unreadable;
    unreadable.reason = "unreadable use record in " + path.string() + ": " + use.error().message() +
                        ": " + printable(line.substr(0, 200));
    uses.push_back(std::move(unreadable));
  }
  return uses;
}

Status OutageCache::clear_uses(const std::string& disk_uuid) {
  const std::filesystem::path path = uses_path(disk_uuid);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return error_from_errno(ErrorCode::kIo, "remove " + path.string(), errno);
  }
  return OkStatus();
}

CacheState OutageCache::state(const std::string& name, const std::string& disk_uuid) const {
  CacheState state;
  state.enabled = enabled_for(name, disk_uuid);
  if (disk_uuid.empty()) {
    return state;
  }
  auto entry = read_entry(disk_uuid);
  if (!entry.ok()) {
    state.problem = entry.error().message();
    return state;
  }
  state.entry = std::move(*entry);
  if (state.entry) {
    state.valid_until = state.entry->confirmed_at +
                        std::chrono::duration_cast<std::chrono::seconds>(config_.max_age).count();
  }
  return state;
}

std::string CacheState::condition(std::int64_t now) const {
  if (!problem.empty()) {
    return "unreadable";
  }
  if (!entry) {
    return "none";
  }
  return now > valid_until ? "expired" : "valid";
}

std::string CacheState::describe(std::int64_t now) const {
  const std::string state = condition(now);
  std::string text = state;
  if (state == "valid") {
    text = "valid until " + format_rfc3339(valid_until);
  } else if (state == "expired") {
    text = "expired at " + format_rfc3339(valid_until);
  } else if (state == "unreadable") {
    text = "unreadable: " + printable(problem);
  }
  if (!enabled && state != "none") {
    text += " (disk not enabled: removed at its next attach)";
  }
  return text;
}

nlohmann::json CacheState::to_json(std::int64_t now) const {
  json object = {{"enabled", enabled},
                 {"condition", condition(now)},
                 {"valid_until", entry ? json(format_rfc3339(valid_until)) : json()}};
  if (!problem.empty()) {
    object["problem"] = problem;
  }
  return object;
}

OutageCache system_outage_cache(const Config& config) {
  return {config.outage_cache, config.local_tpm_tcti, system_clock_seconds};
}

}  // namespace envcrypt
