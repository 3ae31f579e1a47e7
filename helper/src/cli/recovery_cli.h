// The recovery commands of envcryptctl (recovery_volume.h does the work):
//   upgrade-header DEVICE                      version 1 -> 2, nothing else
//   recovery add DEVICE --recovery-key FILE    wrap the DK to a recovery public key
//   recovery remove DEVICE                     drop the recovery wrap
//   recovery show DEVICE                       which recovery key, if any
//   recover DEVICE --recovery-private-key FILE [--cmk KEYREF]
// Documentation/admin-guide/envcryptctl.8 and
// Documentation/security/key-hierarchy.rst.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/boot_cli.h"

namespace envcrypt {

void add_recovery_commands(CLI::App& app, const BootCommandHooks& hooks);

}  // namespace envcrypt
