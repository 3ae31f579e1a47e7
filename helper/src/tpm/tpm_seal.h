// Sealing a small secret (the local KMS root key) to a TPM 2.0 through the
// tpm2-tss ESAPI library, optionally bound to PCR values and a PIN.
//
// The sealed object is a keyed-hash object under the owner hierarchy's
// storage primary key (the TCG ECC P-256 storage template, re-created from
// the TPM's seed on every use, never made persistent), so only this TPM can
// load it.  The secret crosses the bus only encrypted: every command that
// carries it runs in an HMAC or policy session salted by that primary key
// with AES-128-CFB parameter encryption.  With PCRs, the object's authPolicy
// is PolicyPCR over their SHA-256 bank values at sealing time; with a PIN,
// PolicyAuthValue is added and the object's auth value is SHA-256(PIN), and
// the TPM's dictionary-attack protection applies (it does not without a PIN).
// Documentation/kms/local.rst ("Root key in a TPM") has the operator's view.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

// The highest PCR index of a TPM 2.0 PC client (24 PCRs).
inline constexpr std::uint32_t kMaxPcr = 23;

// What a sealed blob is bound to, besides the TPM itself.
struct TpmSealPolicy {
  std::vector<std::uint32_t> pcrs;  // SHA-256 bank, ascending, each 0..23
  bool pin = false;
};

// SHA-256 bank values by PCR index.
using PcrValues = std::map<std::uint32_t, std::vector<std::uint8_t>>;

// A sealed secret, as kept in the sealed root-key file.
struct TpmSealedBlob {
  TpmSealPolicy policy;
  // The PCR values at sealing time, to name the PCR that changed.
  PcrValues pcr_values;
  std::vector<std::uint8_t> public_area;   // marshalled TPM2B_PUBLIC
  std::vector<std::uint8_t> private_area;  // marshalled TPM2B_PRIVATE
};

// The TCTI configuration string of tpm2-tss ("device:/dev/tpmrm0",
// "swtpm:host=127.0.0.1,port=2321", ...).
inline constexpr const char* kDefaultTpmTcti = "device:/dev/tpmrm0";

// Seals `secret` (at most 128 bytes) on the TPM reached through `tcti`.
// `pin` is used only when policy.pin is set.
Result<TpmSealedBlob> tpm_seal(const std::string& tcti, const SecretBytes& secret,
                               const TpmSealPolicy& policy, const SecretBytes& pin);

// Unseals `blob`.  Errors: kNotFound when there is no TPM at `tcti`, kDenied
// when a PCR differs from its sealing-time value (named) or the PIN is
// wrong, kCorrupt when the blob does not load on this TPM.
Result<SecretBytes> tpm_unseal(const std::string& tcti, const TpmSealedBlob& blob,
                               const SecretBytes& pin);

// A PCR list in ascending order without repeats, each PCR 0 to 23
// (ErrorCode::kUsage otherwise).
Status check_seal_policy(const TpmSealPolicy& policy);

// The sealed root-key file: one JSON object
//   {"format": "envcrypt-tpm-sealed", "version": 1, "pcr_bank": "sha256",
//    "pcrs": [7], "pcr_values": {"7": "<64 hex>"}, "pin": false,
//    "public": "<hex TPM2B_PUBLIC>", "private": "<hex TPM2B_PRIVATE>"}
// decode_sealed_blob treats the text as hostile: every field checked, the
// TPM structures unmarshalled, no unknown fields, at most 64 KiB.
std::string encode_sealed_blob(const TpmSealedBlob& blob);
Result<TpmSealedBlob> decode_sealed_blob(std::string_view text);

// Parses a PCR list such as "7" or "0,2,7" (ascending order not required;
// duplicates and values above 23 refused).
Result<std::vector<std::uint32_t>> parse_pcr_list(const std::string& text);

}  // namespace envcrypt
