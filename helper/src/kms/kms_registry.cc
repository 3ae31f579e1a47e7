#include "kms/kms_registry.h"

#include <algorithm>

#include "kms/kmip/kms_kmip.h"
#include "kms/local/kms_local.h"
#include "tpm/tpm_pin.h"

namespace envcrypt {
namespace {

constexpr std::string_view kLocalScheme = "local://";
constexpr std::string_view kKmipScheme = "kmip://";

// "<authority>/<rest>" -> "<authority>"
std::string_view authority_of(std::string_view after_scheme) {
  return after_scheme.substr(0, after_scheme.find('/'));
}

}  // namespace

Result<KmsClient*> KmsRegistry::for_key(std::string_view keyref) {
  if (keyref.starts_with(kKmipScheme)) {
    return kmip(authority_of(keyref.substr(kKmipScheme.size())));
  }
  if (keyref.starts_with(kLocalScheme)) {
    const std::string_view region = authority_of(keyref.substr(kLocalScheme.size()));
    if (region.empty()) {
      return Error(ErrorCode::kUsage, "CMK URI " + std::string(keyref) + " has no region");
    }
    return local(std::string(region));
  }
  if (keyref.find("://") != std::string_view::npos) {
    return Error(ErrorCode::kUsage, "CMK URI " + std::string(keyref) +
                                        ": unknown scheme (expected local:// or kmip://)");
  }
  return local(config_.region);
}

Result<KmsClient*> KmsRegistry::for_selector(const std::optional<std::string>& selector) {
  if (!selector || *selector == "local" || *selector == "local://") {
    return local(config_.region);
  }
  return for_key(*selector);
}

Result<KmsClient*> KmsRegistry::local(const std::string& region) {
  const std::string slot = "local:" + region;
  if (auto it = open_.find(slot); it != open_.end()) {
    return it->second.get();
  }
  LocalKmsOptions options;
  options.dir = config_.local_dir;
  options.root_key = config_.local_root_key;
  options.tpm_tcti = config_.local_tpm_tcti;
  options.tpm_pin = [root_key = config_.local_root_key] {
    return ask_tpm_pin("TPM PIN for the envcrypt root key " + root_key.string());
  };
  options.region = region;
  options.principal = config_.principal;
  ENVCRYPT_ASSIGN_OR_RETURN(std::unique_ptr<KmsClient> backend, open_local_kms(options));
  return (open_[slot] = std::move(backend)).get();
}

// `authority` is a configured endpoint's name or "<host>:<port>" of one.
Result<KmsClient*> KmsRegistry::kmip(std::string_view authority) {
  const KmipEndpoint* endpoint = nullptr;
  auto serves = [&](const KmipEndpoint& candidate) {
    const auto servers = candidate.servers();
    return std::any_of(servers.begin(), servers.end(), [&](const KmipServer& server) {
      return server.host + ":" + std::to_string(server.port) == authority;
    });
  };
  // A CMK URI names one server; any endpoint listing it serves the key.
  for (const auto& [name, candidate] : config_.kmip_endpoints) {
    if (name == authority || serves(candidate)) {
      endpoint = &candidate;
      break;
    }
  }
  if (endpoint == nullptr) {
    return Error(
        ErrorCode::kUsage,
        "kmip://" + std::string(authority) + ": no such KMIP endpoint in the configuration (" +
            (config_.source.empty() ? std::string("no config file") : config_.source.string()) +
            ")");
  }
  const std::string slot = "kmip:" + endpoint->name;
  if (auto it = open_.find(slot); it != open_.end()) {
    return it->second.get();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(std::unique_ptr<KmsClient> backend, open_kmip_kms(*endpoint));
  return (open_[slot] = std::move(backend)).get();
}

Result<AuditLog*> KmsRegistry::audit_for(std::string_view cmk_uri) {
  if (auto client = for_key(cmk_uri); client.ok()) {
    if (KeyAudit* trail = (*client)->audit_trail(); trail != nullptr) {
      return &trail->audit_log();
    }
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KmsClient * local, for_selector(std::nullopt));
  ENVCRYPT_ASSIGN_OR_RETURN(KeyAudit * trail, offered(*local, local->audit_trail(), "audit"));
  return &trail->audit_log();
}

}  // namespace envcrypt
