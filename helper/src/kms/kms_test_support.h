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
  KeyAdministration* administration() override { return inner_.administration(); }
  KeyAudit* audit_trail() override { return inner_.audit_trail(); }

 protected:
  Result<WrappedKey> wrap_key(std::string_view keyref, const SecretBytes& plaintext,
                              const EncryptionContext& context, const CallContext& call) override {
    return inner_.envelope(call).wrap(keyref, plaintext, context);
  }
  Result<WrappedKey> rewrap_key(const WrappedKey& wrapped, const EncryptionContext& source_context,
                                std::string_view destination_keyref,
                                const EncryptionContext& destination_context,
                                const CallContext& call) override {
    return inner_.envelope(call).rewrap(wrapped, source_context, destination_keyref,
                                        destination_context);
  }
  Result<SecretBytes> unwrap_key(const WrappedKey& wrapped, const EncryptionContext& context,
                                 const CallContext& call) override {
    return inner_.envelope(call).unwrap(wrapped, context);
  }
  KmsClient& inner() { return inner_; }

 private:
  KmsClient& inner_;
};

}  // namespace envcrypt::kms_testing
