// Grants in the local KMS: who besides the owner may use a key, and for what.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "kms/local/kms_local_store.h"

namespace envcrypt {
namespace {

using json = nlohmann::json;

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

}  // namespace

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

}  // namespace envcrypt
