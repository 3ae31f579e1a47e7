#include "kmip/kms_kmip.h"

#include <string>

namespace envcrypt {

Result<std::unique_ptr<KmsBackend>> open_kmip_kms(const KmipEndpoint& endpoint) {
  return Error(ErrorCode::kUsage,
               "kmip://" + endpoint.host + ":" + std::to_string(endpoint.port) +
                   ": KMIP backend not implemented yet");
}

}  // namespace envcrypt
