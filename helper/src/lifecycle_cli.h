// The key lifecycle commands of envcryptctl (Documentation/kms/lifecycle.rst):
// under `kms`, rotate-key, rotate-due, purge-due, get-parameters-for-import,
// import-key-material, delete-key-material, create-grant, revoke-grant,
// list-grants and audit; at the top level, rewrap.  Registered on the CLI by
// cli.cc, like the boot commands (boot_cli.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include "kms.h"
#include "kms_registry.h"
#include "result.h"

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
void add_rewrap_command(CLI::App& app, const LifecycleCommandHooks& hooks);

// Safe disable: on the local KMS, refuses with ErrorCode::kConflict, naming
// the disks, when `keyref` still wraps a disk this host knows (envcrypttab
// or attached).  `force` skips the check; other backends are not checked.
Status refuse_if_key_in_use(KmsBackend& backend, std::string_view keyref, bool force);

}  // namespace envcrypt
