// Chooses the KMS client for a key reference by its URI scheme, as Tink's
// KmsClients does: `kmip://` goes to the KMIP endpoint it names, everything
// else (local:// URIs, key ids, aliases) to the embedded local KMS.
// Backends are opened once and kept for the life of the registry.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "kms/kms.h"
#include "util/result.h"

namespace envcrypt {

class KmsRegistry {
 public:
  explicit KmsRegistry(Config config) : config_(std::move(config)) {}

  // The backend serving `keyref`: a key id, alias/<name>, local://<region>/<id>
  // or kmip://<host>:<port>/<uid>.
  Result<KmsClient*> for_key(std::string_view keyref);

  // The backend `kms` commands act on: the local KMS of the configured region,
  // or with --kms, kmip://<endpoint-name> or kmip://<host>:<port>.
  Result<KmsClient*> for_selector(const std::optional<std::string>& selector);

  // The audit trail for events about disks under `cmk_uri`: its backend's
  // when it keeps one, else the local KMS's (a KMIP server keeps its own
  // log, which this host cannot append to).
  Result<AuditLog*> audit_for(std::string_view cmk_uri);

  [[nodiscard]] const Config& config() const { return config_; }

  // Serves `slot` ("local:<region>" or "kmip:<endpoint name>") with `backend`
  // instead of opening it from the configuration: how unit tests put a
  // faulty KMS under format and rewrap.
  void adopt(const std::string& slot, std::unique_ptr<KmsClient> backend) {
    open_[slot] = std::move(backend);
  }

 private:
  Result<KmsClient*> local(const std::string& region);
  Result<KmsClient*> kmip(std::string_view authority);

  Config config_;
  std::map<std::string, std::unique_ptr<KmsClient>> open_;  // by "local:<region>" / "kmip:<name>"
};

}  // namespace envcrypt
