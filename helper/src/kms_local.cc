#include "kms_local.h"

namespace envcrypt {

Result<std::unique_ptr<KmsBackend>> open_local_kms(const LocalKmsOptions& options) {
  (void)options;
  return Error(ErrorCode::kInternal, "local KMS: not implemented yet");
}

}  // namespace envcrypt
