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
#include <vector>

#include "crypttab.h"
#include "kms.h"
#include "kms_registry.h"
#include "preflight.h"
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

// Safe disable: whatever the backend (local or KMIP), refuses with
// ErrorCode::kConflict, naming the disks, when `keyref` still wraps a disk
// this host knows (envcrypttab or attached).  `force` skips the check.
Status refuse_if_key_in_use(KeyAdministration& backend, std::string_view keyref, bool force);
// The same over a given table and environment (the attached disks), which
// unit tests inject.
Status refuse_if_key_in_use(KeyAdministration& backend, std::string_view keyref, bool force,
                            const std::vector<TabEntry>& table, PreflightEnvironment& env);

// `kms schedule-key-deletion`: a backend without a pending-deletion window
// (KMIP: Destroy is immediate and final) is refused with ErrorCode::kUsage
// unless `destroy_now`; then the in-use guard, then the backend's
// schedule_key_deletion().
Result<KeyInfo> schedule_key_deletion(KeyAdministration& backend, std::string_view keyref,
                                      std::uint32_t pending_window_days, bool force,
                                      bool destroy_now);

}  // namespace envcrypt
