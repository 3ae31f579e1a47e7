// The embedded local KMS (kms_local.h): opening a keystore, resolving key
// references, authorisation, and the envelope operations Encrypt, Decrypt
// and ReEncrypt.  The other operations are in kms_local_*.cc.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "kms/local/kms_local_store.h"
#include "kms/local/root_key.h"
#include "util/run_dir.h"

namespace envcrypt {
namespace {

bool valid_region(std::string_view region) {
  return !region.empty() && region.size() <= 63 &&
         region.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") ==
             std::string_view::npos;
}

// What authorize() looks at in a stored key.  An operation name this
// version does not know (a newer keystore's) grants nothing here.
KeyAccess access_of(const StoredKey& key, std::string uri) {
  KeyAccess access{std::move(uri), key.owner, key.service, {}};
  for (const StoredGrant& stored : key.grants) {
    Grant grant{stored.id, key.id, stored.principal, {}, stored.created_by, stored.created_at};
    for (const std::string& name : stored.operations) {
      if (auto operation = parse_grant_operation(name); operation.ok()) {
        grant.operations.push_back(*operation);
      }
    }
    access.grants.push_back(std::move(grant));
  }
  return access;
}

std::int64_t system_clock_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

}  // namespace

Result<StoredKey*> LocalKms::Impl::resolve(Store& store, std::string_view keyref) const {
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

Status LocalKms::Impl::authorize(const StoredKey& key, GrantOperation wanted) const {
  return envcrypt::authorize(access_of(key, uri_of(key.id)), options.principal, wanted);
}

Status LocalKms::Impl::require_enabled(const StoredKey& key) const {
  if (key.state == KeyState::kEnabled) {
    return OkStatus();
  }
  return Error(ErrorCode::kDenied,
               "key " + uri_of(key.id) + " is " + std::string(to_string(key.state)));
}

Error LocalKms::Impl::service_key_refusal(const StoredKey& key, const std::string& action) const {
  return {ErrorCode::kDenied, "the service key alias/" + std::string(kServiceAlias) + " (" +
                                  uri_of(key.id) + ") cannot " + action};
}

Status LocalKms::Impl::require_external(const StoredKey& key) const {
  if (key.origin == KeyOrigin::kExternal) {
    return OkStatus();
  }
  return Error(ErrorCode::kUsage, "key " + uri_of(key.id) +
                                      " has origin KMS; only keys created with origin "
                                      "EXTERNAL take imported material");
}

KeyInfo LocalKms::Impl::info_of(const Store& store, const StoredKey& key) const {
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

std::string LocalKms::Impl::wrap_aad(const std::string& uri, std::uint32_t version,
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

Result<WrappedKey> LocalKms::Impl::wrap_in(Store& store, std::string_view keyref,
                                           const SecretBytes& plaintext,
                                           const EncryptionContext& context,
                                           GrantOperation operation, AuditEvent& event) {
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

Result<SecretBytes> LocalKms::Impl::unwrap_in(Store& store, const WrappedKey& wrapped,
                                              const EncryptionContext& context,
                                              GrantOperation operation, AuditEvent& event) {
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
          : Result<SecretBytes>(Error(ErrorCode::kCorrupt, "bad nonce"));
  if (!plaintext.ok()) {
    return Error(ErrorCode::kCorrupt, "unwrap failed: encryption context or blob does not match");
  }
  return plaintext;
}

Result<std::unique_ptr<LocalKms>> LocalKms::open(const LocalKmsOptions& options) {
  LocalKmsOptions resolved = options;
  if (!valid_region(resolved.region)) {
    return Error(ErrorCode::kUsage, "invalid region '" + resolved.region +
                                        "': use lower-case letters, digits and '-'");
  }
  if (resolved.principal.empty()) {
    std::array<char, 256> host{};
    if (::gethostname(host.data(), host.size() - 1) != 0) {
      return error_from_errno(ErrorCode::kInternal, "gethostname", errno);
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

Result<std::unique_ptr<KmsClient>> open_local_kms(const LocalKmsOptions& options) {
  ENVCRYPT_ASSIGN_OR_RETURN(std::unique_ptr<LocalKms> kms, LocalKms::open(options));
  return std::unique_ptr<KmsClient>(std::move(kms));
}

LocalKms::LocalKms(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalKms::~LocalKms() = default;

const std::string& LocalKms::region() const { return impl_->options.region; }
const std::string& LocalKms::principal() const { return impl_->options.principal; }
AuditLog& LocalKms::audit_log() { return impl_->audit; }

bool LocalKms::supports(std::string_view uri) const {
  if (uri.starts_with(kUriScheme)) {
    const std::string_view rest = uri.substr(kUriScheme.size());
    return rest.starts_with(impl_->options.region + "/");
  }
  return uri.find("://") == std::string_view::npos;  // key ids and aliases
}

Result<WrappedKey> LocalKms::wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                                      const EncryptionContext& context,
                                      const CallContext& /*call*/) {
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

Result<SecretBytes> LocalKms::unwrap_key(const WrappedKey& wrapped,
                                         const EncryptionContext& context,
                                         const CallContext& /*call*/) {
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

Result<WrappedKey> LocalKms::rewrap_key(const WrappedKey& wrapped,
                                        const EncryptionContext& source_context,
                                        std::string_view destination_keyref,
                                        const EncryptionContext& destination_context,
                                        const CallContext& /*call*/) {
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

}  // namespace envcrypt
