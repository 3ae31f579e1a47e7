// `envcryptctl image encrypt` (image_encrypt.h): its command line, progress
// line and report.  Documentation/admin-guide/image-encrypt.rst.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/boot_cli.h"

namespace envcrypt {

void add_image_commands(CLI::App& app, const BootCommandHooks& hooks);

}  // namespace envcrypt
