// The TPM-sealed root-key file (tpm_seal.h, decode_sealed_blob) from its
// text.  Properties: no sanitizer finding (nlohmann-json and tpm2-tss's
// unmarshalling included); an accepted file has ascending PCRs, a 32-byte
// value for each and nothing else, and encodes back to a file that decodes
// to the same blob.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "tpm/tpm_seal.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using envcrypt::fuzz::require;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const envcrypt::Result<envcrypt::TpmSealedBlob> blob = envcrypt::decode_sealed_blob(text);
  if (!blob.ok()) {
    return 0;
  }
  const auto& pcrs = blob->policy.pcrs;
  for (std::size_t i = 1; i < pcrs.size(); ++i) {
    require(pcrs[i - 1] < pcrs[i], "accepted PCRs are ascending without repeats");
  }
  require(blob->pcr_values.size() == pcrs.size(), "one value for each accepted PCR");
  for (const auto& [pcr, value] : blob->pcr_values) {
    require(pcr <= 23 && value.size() == 32, "each PCR value is 32 bytes of PCR 0 to 23");
  }
  const envcrypt::Result<envcrypt::TpmSealedBlob> again =
      envcrypt::decode_sealed_blob(envcrypt::encode_sealed_blob(*blob));
  require(again.ok(), "an accepted file encodes back to one that decodes");
  require(again->policy.pcrs == pcrs && again->policy.pin == blob->policy.pin &&
              again->pcr_values == blob->pcr_values && again->public_area == blob->public_area &&
              again->private_area == blob->private_area,
          "decode(encode(blob)) == blob");
  return 0;
}
