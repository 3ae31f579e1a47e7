// The in-use guard of the key commands: a CMK that still wraps a disk this
// host knows (envcrypttab or attached) is not disabled, scheduled for
// deletion or stripped of its material without --force, whatever the
// backend (Documentation/kms/lifecycle.rst, "Refusals").
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "boot/preflight.h"
#include "config/crypttab.h"
#include "kms/kms.h"
#include "util/result.h"

namespace envcrypt {

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
