// BYOK in the local KMS: import parameters (an RSA-2048 wrapping key and a
// one-time token), importing key material under them, and deleting it.
#include <openssl/crypto.h>

#include "kms/local/kms_local_store.h"

namespace envcrypt {
namespace {

std::string material_check_of(const SecretBytes& material) {
  std::string input = "envcrypt/local/material-check";
  input.push_back('\0');
  input.append(reinterpret_cast<const char*>(material.data()), material.size());
  std::string check = sha256_hex(input);
  OPENSSL_cleanse(input.data(), input.size());
  return check;
}

std::string import_key_aad(const std::string& key_id) {
  std::string aad = "envcrypt/local/import-key";
  aad.push_back('\0');
  return aad + key_id;
}

}  // namespace

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

}  // namespace envcrypt
