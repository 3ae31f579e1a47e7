// The boot and hot-plug commands of envcryptctl (attach-all, detach-all,
// tab-match, generate-units), registered on the CLI by cli.cc.  They live
// apart from cli.cc because udev and systemd are their only callers besides
// the operator; see Documentation/admin-guide/boot.rst.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iosfwd>
#include <string>

#include "kms/kms_registry.h"
#include "util/result.h"

namespace envcrypt {

// What a command needs from the CLI that runs it.
struct BootCommandHooks {
  std::function<Result<KmsRegistry*>()> registry;  // the KMS, opened on first use
  const bool* json = nullptr;                      // --json given
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  // Makes `action` the command to run; `what` names it in error messages.
  std::function<void(std::string what, std::function<Status()> action)> select;
};

void add_boot_commands(CLI::App& app, const BootCommandHooks& hooks);

}  // namespace envcrypt
