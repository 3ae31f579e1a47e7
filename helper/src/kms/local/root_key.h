// The local KMS root key: 32 bytes that seal every CMK of the keystore and
// key its audit chain.  It lives in one of two forms:
//   <root_key>       the plaintext file (mode 0600), created on first use;
//   <root_key>.tpm   the key sealed to this host's TPM (tpm_seal.h), which
//                    only that TPM, with the PCR values and PIN it was
//                    sealed with, gives back.
// When the sealed form exists it is the one used, and no plaintext key is
// ever created beside it.  `envcryptctl kms seal-root-key` moves the key
// into the TPM, `kms unseal-root-key` back into the plaintext file.
// Documentation/kms/local.rst ("Root key in a TPM") and
// Documentation/security/key-hierarchy.rst.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "tpm/tpm_seal.h"
#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

struct RootKeyTpm {
  std::string tcti = kDefaultTpmTcti;
  // Asks for the PIN of a key sealed with one; unset: such a key is refused.
  std::function<Result<SecretBytes>()> pin;
};

std::filesystem::path sealed_root_key_path(const std::filesystem::path& root_key);

// The root key: unsealed from <root_key>.tpm when that exists, else read from
// <root_key>, which is created (32 random bytes) when missing.
Result<SecretBytes> load_root_key(const std::filesystem::path& root_key, const RootKeyTpm& tpm);

// What seal_root_key did, for the command's output.
struct SealOutcome {
  std::filesystem::path sealed;  // the file written
  std::filesystem::path wiped;   // the plaintext file overwritten and removed
};

// Seals the plaintext root key to the TPM: writes <root_key>.tpm (checked by
// unsealing it), then overwrites the plaintext file's bytes with zeros,
// syncs, and removes it.  Run again after an interruption, it finishes the
// job when the sealed file holds the same key.  `pin` only with policy.pin.
Result<SealOutcome> seal_root_key(const std::filesystem::path& root_key, const RootKeyTpm& tpm,
                                  const TpmSealPolicy& policy, const SecretBytes& pin);

// The reverse: unseals <root_key>.tpm into a new plaintext <root_key> (mode
// 0600, read back and compared) and removes the sealed file.
Result<std::filesystem::path> unseal_root_key(const std::filesystem::path& root_key,
                                              const RootKeyTpm& tpm);

}  // namespace envcrypt
