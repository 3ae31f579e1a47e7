// A KMS backend for unit tests that passes every call to a real one; tests
// derive from it and override the calls they make fail or lie
// (rewrap_test.cc's corrupting KMS, outage_cache_test.cc's unreachable or
// refusing one).
#pragma once

#include <string_view>

#include "kms/kms.h"

namespace envcrypt::kms_testing {

class DelegatingKms : public KmsClient {
 public:
  explicit DelegatingKms(KmsClient& inner) : inner_(inner) {}

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
  KeyAdministration* administration() override { return inner_.administration(); }
  KeyAudit* audit_trail() override { return inner_.audit_trail(); }

 protected:
  KmsClient& inner() { return inner_; }

 private:
  KmsClient& inner_;
};

}  // namespace envcrypt::kms_testing
