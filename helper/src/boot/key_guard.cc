#include "boot/key_guard.h"

#include <iostream>

#include "boot/rewrap.h"
#include "util/joined.h"

namespace envcrypt {

Status refuse_if_key_in_use(KeyAdministration& backend, std::string_view keyref, bool force) {
  if (force) {
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(auto table, read_envcrypttab_entries("", std::cerr));
  PreflightEnvironment env = system_preflight_environment();
  return refuse_if_key_in_use(backend, keyref, force, table, env);
}

Status refuse_if_key_in_use(KeyAdministration& backend, std::string_view keyref, bool force,
                            const std::vector<TabEntry>& table, PreflightEnvironment& env) {
  if (force) {
    return OkStatus();
  }
  ENVCRYPT_ASSIGN_OR_RETURN(KeyInfo key, backend.describe_key(keyref));
  ENVCRYPT_ASSIGN_OR_RETURN(auto disks, disks_wrapped_by(key.uri, table, env));
  if (disks.empty()) {
    return OkStatus();
  }
  return Error(ErrorCode::kConflict,
               "key " + key.uri + " still wraps " + std::to_string(disks.size()) +
                   (disks.size() == 1 ? " disk" : " disks") + " this host knows: " +
                   joined(disks, ", ") + "; rewrap them under another key first, or use --force");
}

Result<KeyInfo> schedule_key_deletion(KeyAdministration& backend, std::string_view keyref,
                                      std::uint32_t pending_window_days, bool force,
                                      bool destroy_now) {
  if (const auto immediate = backend.immediate_deletion(); immediate && !destroy_now) {
    return Error(ErrorCode::kUsage, *immediate +
                                        ": nothing would wait the pending window; add "
                                        "--destroy-now to destroy the key at once");
  }
  ENVCRYPT_TRY(refuse_if_key_in_use(backend, keyref, force));
  return backend.schedule_key_deletion(keyref, pending_window_days);
}

}  // namespace envcrypt
