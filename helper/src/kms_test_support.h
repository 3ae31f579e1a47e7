// A KMS backend for unit tests that passes every call to a real one; tests
// derive from it and override the calls they make fail or lie
// (rewrap_test.cc's corrupting KMS, outage_cache_test.cc's unreachable or
// refusing one).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kms.h"

namespace envcrypt::kms_testing {

class DelegatingKms : public KmsBackend {
 public:
  explicit DelegatingKms(KmsBackend& inner) : inner_(inner) {}

  [[nodiscard]] bool supports(std::string_view uri) const override { return inner_.supports(uri); }
  Result<WrappedKey> encrypt(std::string_view keyref, const SecretBytes& plaintext,
                             const EncryptionContext& context) override {
    return inner_.encrypt(keyref, plaintext, context);
  }
  Result<WrappedKey> reencrypt(const WrappedKey& wrapped, const EncryptionContext& source_context,
                               std::string_view destination_keyref,
                               const EncryptionContext& destination_context) override {
    return inner_.reencrypt(wrapped, source_context, destination_keyref, destination_context);
  }
  Result<SecretBytes> decrypt(const WrappedKey& wrapped,
                              const EncryptionContext& context) override {
    return inner_.decrypt(wrapped, context);
  }
  Result<KeyInfo> create_key(const CreateKeyRequest& request) override {
    return inner_.create_key(request);
  }
  Result<KeyInfo> describe_key(std::string_view keyref) override {
    return inner_.describe_key(keyref);
  }
  Result<std::vector<KeyInfo>> list_keys() override { return inner_.list_keys(); }
  Status enable_key(std::string_view keyref) override { return inner_.enable_key(keyref); }
  Status disable_key(std::string_view keyref) override { return inner_.disable_key(keyref); }
  Result<KeyInfo> schedule_key_deletion(std::string_view keyref, std::uint32_t days) override {
    return inner_.schedule_key_deletion(keyref, days);
  }
  Status cancel_key_deletion(std::string_view keyref) override {
    return inner_.cancel_key_deletion(keyref);
  }
  Result<AuditLog*> audit() override { return inner_.audit(); }

 protected:
  KmsBackend& inner() { return inner_; }

 private:
  KmsBackend& inner_;
};

}  // namespace envcrypt::kms_testing
