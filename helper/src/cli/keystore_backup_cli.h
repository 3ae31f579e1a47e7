// `envcryptctl kms backup --to FILE --recovery-key PUBKEY.pem` and `kms
// restore FILE --recovery-private-key KEY.pem [--merge]`: the local KMS
// keystore to and from a backup file (keystore_backup.h).  Registered on
// the CLI by cli.cc, like the root key commands.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/lifecycle_cli.h"

namespace envcrypt {

void add_keystore_backup_commands(CLI::App& kms, const LifecycleCommandHooks& hooks);

}  // namespace envcrypt
