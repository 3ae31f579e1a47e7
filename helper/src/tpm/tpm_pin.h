// Asking the operator for the PIN of a TPM-sealed root key, in the order a
// script, a shell and the boot can answer: $ENVCRYPT_TPM_PIN (as systemd's
// tools read $PIN), the controlling terminal (echo off), then
// systemd-ask-password (the boot's password agents: console, plymouth).
#pragma once

#include <string>

#include "util/result.h"
#include "util/secret.h"

namespace envcrypt {

// `prompt` names the key ("TPM PIN for the envcrypt root key
// /etc/envcrypt/root.key").  kDenied when nothing can ask, or the answer
// is empty.
Result<SecretBytes> ask_tpm_pin(const std::string& prompt);

// For seal-root-key: asks twice on a terminal and refuses a mismatch.
Result<SecretBytes> ask_new_tpm_pin(const std::string& prompt);

}  // namespace envcrypt
