// The operations commands of envcryptctl: preflight, header-backup and
// header-restore, and the parts of `status` that read envcrypttab (the last
// attach error of each configured disk; --keys, the CMK version wrapping
// each disk's data key).  Documentation/admin-guide/operations.rst.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/boot_cli.h"
#include "util/result.h"

namespace envcrypt {

void add_ops_commands(CLI::App& app, const BootCommandHooks& hooks);

// status: the last attach error of each disk in the table (`tab`, or the
// default), as text lines after the mappings or as a JSON array.
Status print_attach_errors(const std::string& tab, std::ostream& out);
Result<nlohmann::ordered_json> attach_errors_json(const std::string& tab);

// status --keys: per known disk, its CMK, the version wrapping its DK, the
// CMK's primary version, and whether the wrap is current.
Status print_key_versions(const std::string& tab, const BootCommandHooks& hooks);

}  // namespace envcrypt
