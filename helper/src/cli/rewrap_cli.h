// envcryptctl rewrap (Documentation/kms/lifecycle.rst), registered on the
// CLI by cli_kms.cc with the lifecycle commands' hooks.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/lifecycle_cli.h"

namespace envcrypt {

void add_rewrap_command(CLI::App& app, const LifecycleCommandHooks& hooks);

}  // namespace envcrypt
