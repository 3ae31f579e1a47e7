// `envcryptctl kms seal-root-key [--pcrs LIST] [--pin]` and `kms
// unseal-root-key`: the local KMS root key into the TPM and back
// (root_key.h).  Registered on the CLI by cli.cc, like the lifecycle commands.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/lifecycle_cli.h"

namespace envcrypt {

void add_root_key_commands(CLI::App& kms, const LifecycleCommandHooks& hooks);

}  // namespace envcrypt
