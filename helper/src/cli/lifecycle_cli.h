// The key lifecycle commands of envcryptctl (Documentation/kms/lifecycle.rst):
// under `kms`, rotate-key, rotate-due, purge-due, get-parameters-for-import,
// import-key-material, delete-key-material, create-grant, revoke-grant,
// list-grants and audit (rewrap: rewrap_cli.h; the in-use guard:
// boot/key_guard.h).  Registered on the CLI by cli_kms.cc, like the boot
// commands (boot_cli.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "kms/kms.h"
#include "kms/kms_registry.h"
#include "util/result.h"

namespace envcrypt {

// What a command needs from the CLI that runs it.
struct LifecycleCommandHooks {
  std::function<Result<KmsRegistry*>()> registry;  // the KMS, opened on first use
  const std::string* kms_selector = nullptr;       // `kms --kms`; empty: the local KMS
  const bool* json = nullptr;                      // --json given
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  // Makes `action` the command to run; `what` names it in error messages.
  std::function<void(std::string what, std::function<Status()> action)> select;
};

void add_lifecycle_kms_commands(CLI::App& kms, const LifecycleCommandHooks& hooks);

}  // namespace envcrypt
