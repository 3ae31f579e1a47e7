// envcryptctl initramfs-plan: what the initramfs-tools hook puts in the
// initramfs (initramfs_plan.h), registered by add_boot_commands().
#pragma once

#include <CLI/CLI.hpp>

#include "cli/boot_cli.h"

namespace envcrypt {

void add_initramfs_commands(CLI::App& app, const BootCommandHooks& hooks);

}  // namespace envcrypt
